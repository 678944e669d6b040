//! The rollups (hourly, daily, sessions, dimensions) answer exactly what the raw events say: every
//! query is compared with the same aggregate computed from `usage_events`, over ranges that start
//! and end mid-day (so whole days come from the daily rollup and the edges from the hourly one), on
//! SQLite and Postgres, after concurrent ingest calls (one group commit) with duplicates across them.
//! On Postgres the first half of the events is folded into the rollups before the second half
//! arrives and the second half is still in the rollup deltas when the queries begin (they fold it in).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::{collections::BTreeMap, sync::Arc};

use common::{TestStore, at, ev, prices};
use retort_metering::{
    pricing::Prices,
    query,
    service::Metering,
    store::{Arg, Col},
    time,
};
use retort_proto::v1 as pb;

/// A deterministic spread: 5 users, 3 models (one unpriced), 3 harnesses, failures, reasoning,
/// sessions that span hours and days, over 2025-03-01 .. 2025-03-06.
fn events() -> Vec<pb::UsageEvent> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = at("2025-03-01", 0);
    (0..900)
        .map(|i| {
            let r = next();
            let user = ["alice", "bob", "carol", "dave", ""][(r % 5) as usize];
            let model = ["big", "small", "mystery"][(r / 5 % 3) as usize];
            let t = start + (next() % (5 * time::DAY_MS as u64)) as i64;
            let mut e = ev(
                &format!("e{i}"),
                t,
                user,
                model,
                1000 + r % 5000,
                100 + r % 900,
            );
            e.harness = ["claude_code", "codex", "cursor"][(r / 15 % 3) as usize].into();
            e.team = if user == "carol" {
                "ml".into()
            } else {
                "core".into()
            };
            e.session_id = if r % 7 == 0 {
                String::new()
            } else {
                format!("s-{user}-{}", r / 105 % 6)
            };
            e.reasoning_tokens = r % 90;
            e.reasoning_ms = r % 3000;
            e.cache_read_tokens = r % 300;
            if r % 11 == 0 {
                e.outcome = "unavailable".into();
                e.status = 503;
            }
            e
        })
        .collect()
}

fn filter(since: i64, until: i64) -> pb::UsageFilter {
    pb::UsageFilter {
        since_ms: since,
        until_ms: until,
        ..Default::default()
    }
}

/// `ts_ms` conditions for a filter as the rollups resolve it (whole hours).
fn raw_range(f: &pb::UsageFilter, args: &mut Vec<Arg>) -> String {
    let mut c = vec!["1 = 1".to_string()];
    if f.since_ms > 0 {
        args.push(Arg::I(time::hour_floor(f.since_ms)));
        c.push(format!("ts_ms >= ${}", args.len()));
    }
    if f.until_ms > 0 {
        args.push(Arg::I(time::hour_ceil(f.until_ms)));
        c.push(format!("ts_ms < ${}", args.len()));
    }
    c.join(" AND ")
}

/// The sessions answer computed from raw events: `matching` is the dimension filter as SQL ("" for
/// none). Columns: id, user, cost, requests, tokens, duration, first, last.
async fn raw_sessions(
    m: &Metering,
    f: &pb::UsageFilter,
    matching: &str,
    order: &str,
) -> Vec<Vec<retort_metering::store::Val>> {
    let mut args = Vec::new();
    let (first, last) = if matching.is_empty() {
        ("MIN(ts_ms)", "MAX(ts_ms)")
    } else {
        ("f", "l")
    };
    let mut active = vec!["1 = 1".to_string()];
    if f.since_ms > 0 {
        args.push(Arg::I(f.since_ms));
        active.push(format!("{last} >= ${}", args.len()));
    }
    if f.until_ms > 0 {
        args.push(Arg::I(f.until_ms));
        active.push(format!("{first} < ${}", args.len()));
    }
    let active = active.join(" AND ");
    let (source, having) = if matching.is_empty() {
        (
            "usage_events WHERE session_id <> ''".to_string(),
            format!(" HAVING {active}"),
        )
    } else {
        let keys = "user_name, team, discipline, level, model, provider, harness, route, tier";
        (
            format!(
                "usage_events WHERE session_id <> '' AND {matching} AND session_id IN \
                 (SELECT session_id FROM (SELECT session_id, MIN(ts_ms) AS f, MAX(ts_ms) AS l FROM usage_events \
                 WHERE session_id <> '' AND {matching} GROUP BY session_id, {keys}) AS k WHERE {active})"
            ),
            String::new(),
        )
    };
    let ord = if order == "cost" {
        "3 DESC, 6 DESC"
    } else {
        "6 DESC, 3 DESC"
    };
    let sql = format!(
        "SELECT session_id, MIN(user_name), CAST(SUM(cost_micros) AS BIGINT), COUNT(*), \
         CAST(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS BIGINT), MAX(ts_ms) - MIN(ts_ms), \
         MIN(ts_ms), MAX(ts_ms) FROM {source} GROUP BY session_id{having} ORDER BY {ord}, 1"
    );
    use Col::{Int, Text};
    m.store
        .select(&sql, &args, &[Text, Text, Int, Int, Int, Int, Int, Int])
        .await
        .unwrap()
}

type Sums = [i64; 8];

fn raw_expr(dim: &str) -> &'static str {
    match dim {
        "" => "''",
        "day" => "ts_ms - ts_ms % 86400000",
        "hour" => "ts_ms - ts_ms % 3600000",
        d => query::DIMENSIONS.iter().find(|(n, _)| *n == d).unwrap().1,
    }
}

async fn raw_grouped(m: &Metering, dim: &str, f: &pb::UsageFilter) -> BTreeMap<String, Sums> {
    let mut args = Vec::new();
    let wh = raw_range(f, &mut args);
    let expr = raw_expr(dim);
    let sql = format!(
        "SELECT CAST({expr} AS TEXT), CAST(SUM(cost_micros) AS BIGINT), COUNT(*), CAST(SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT), \
         CAST(SUM(cache_read_tokens) AS BIGINT), CAST(SUM(reasoning_ms) AS BIGINT) FROM usage_events WHERE {wh} GROUP BY 1"
    );
    let mut cols = vec![Col::Text];
    cols.extend([Col::Int; 8]);
    let rows = m.store.select(&sql, &args, &cols).await.unwrap();
    rows.into_iter()
        .map(|r| {
            let key = match dim {
                "" => String::new(),
                "day" => time::day_label(r[0].int()),
                "hour" => time::hour_label(r[0].int()),
                _ => r[0].text(),
            };
            let mut s = [0; 8];
            for (i, v) in s.iter_mut().enumerate() {
                *v = r[i + 1].int();
            }
            (key, s)
        })
        .collect()
}

async fn rollup_grouped(m: &Metering, dim: &str, f: &pb::UsageFilter) -> BTreeMap<String, Sums> {
    let q = pb::UsageQuery {
        group_by: if dim.is_empty() {
            vec![]
        } else {
            vec![dim.into()]
        },
        filter: Some(f.clone()),
        limit: 10_000,
        ..Default::default()
    };
    let r = query::grouped(&m.store, &q).await.unwrap();
    r.rows
        .into_iter()
        .map(|r| {
            let key = r.key.first().cloned().unwrap_or_default();
            let s = [
                r.cost_micros,
                r.requests as i64,
                r.failed as i64,
                r.input_tokens as i64,
                r.output_tokens as i64,
                r.reasoning_tokens as i64,
                r.cache_read_tokens as i64,
                r.reasoning_ms as i64,
            ];
            (key, s)
        })
        .collect()
}

/// Ranges that start and end mid-day, span whole days, stay inside one day, or are open-ended.
fn ranges() -> Vec<pb::UsageFilter> {
    let h = time::HOUR_MS;
    vec![
        filter(0, 0),
        filter(at("2025-03-02", 7) + 123, 0),
        filter(0, at("2025-03-04", 13) + 5),
        filter(at("2025-03-01", 22) + 1, at("2025-03-05", 3) + 7),
        filter(at("2025-03-02", 0), at("2025-03-04", 0)),
        filter(at("2025-03-03", 5), at("2025-03-03", 9) + h / 2),
        filter(at("2025-03-05", 23), at("2025-03-06", 1)),
    ]
}

#[tokio::test]
async fn rollups_answer_exactly_what_the_raw_events_say() {
    for ts in TestStore::both_manual().await {
        let kind = ts.store.kind();
        let p = Prices::load(&ts.store, prices()).await.unwrap();
        let m = Arc::new(Metering::new(ts.store.clone(), p));
        let all = events();
        let (mut recorded, mut duplicates) = (0, 0);
        // Two rounds of four concurrent callers (their batches share group commits); the last
        // caller also resends events of its round, so a duplicate can sit in the same group as its
        // original, and in the second round events of the first (already folded into the rollups).
        for round in 0..2 {
            let part = &all[round * 450..(round + 1) * 450];
            let mut tasks = Vec::new();
            for k in 0..4 {
                let m = Arc::clone(&m);
                let mut mine: Vec<pb::UsageEvent> =
                    part.iter().skip(k).step_by(4).cloned().collect();
                if k == 3 {
                    mine.extend(part.iter().take(50).cloned());
                    if round == 1 {
                        mine.extend(all.iter().take(50).cloned());
                    }
                }
                tasks.push(tokio::spawn(async move {
                    let mut s = pb::IngestSummary::default();
                    for b in mine.chunks(37) {
                        m.ingest(b.to_vec(), &mut s).await.unwrap();
                    }
                    s
                }));
            }
            for t in tasks {
                let s = t.await.unwrap();
                recorded += s.recorded;
                duplicates += s.duplicates;
            }
            if round == 0 {
                ts.store.compact().await.unwrap();
            }
        }
        assert_eq!(
            (recorded, duplicates),
            (900, 150),
            "{kind}: every event recorded once"
        );
        if ts.store.is_postgres() {
            let pending = |sql: &'static str| {
                let m = Arc::clone(&m);
                async move { m.store.select(sql, &[], &[Col::Int]).await.unwrap()[0][0].int() }
            };
            let (h, s) = (
                "SELECT COUNT(*) FROM usage_delta_hourly",
                "SELECT COUNT(*) FROM usage_delta_sessions",
            );
            assert!(
                pending(h).await > 0 && pending(s).await > 0,
                "the second round waits in the deltas"
            );
            let folded = rollup_grouped(&m, "", &filter(0, 0)).await;
            assert_eq!(
                folded.values().map(|s| s[1]).sum::<i64>(),
                900,
                "a query folds the deltas in first"
            );
            assert_eq!(
                (pending(h).await, pending(s).await),
                (0, 0),
                "nothing left pending"
            );
        }

        for f in ranges() {
            for dim in [
                "", "user", "model", "tier", "harness", "team", "day", "hour",
            ] {
                let want = raw_grouped(&m, dim, &f).await;
                let got = rollup_grouped(&m, dim, &f).await;
                assert_eq!(got, want, "{kind}: group by {dim:?}, {f:?}");
            }
            // A dimension filter together with the range.
            let mut ff = f.clone();
            ff.models = vec!["big".into(), "mystery".into()];
            let got = rollup_grouped(&m, "user", &ff).await;
            let want: BTreeMap<String, Sums> = {
                let mut args = Vec::new();
                let wh = raw_range(&ff, &mut args);
                let rows = m
                    .store
                    .select(
                        &format!(
                            "SELECT user_name, CAST(SUM(cost_micros) AS BIGINT), COUNT(*), CAST(SUM(CASE WHEN outcome <> 'ok' THEN 1 ELSE 0 END) AS BIGINT), \
                             CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(reasoning_tokens) AS BIGINT), \
                             CAST(SUM(cache_read_tokens) AS BIGINT), CAST(SUM(reasoning_ms) AS BIGINT) FROM usage_events \
                             WHERE {wh} AND model IN ('big', 'mystery') GROUP BY 1"
                        ),
                        &args,
                        &[Col::Text, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int],
                    )
                    .await
                    .unwrap();
                rows.into_iter()
                    .map(|r| {
                        let mut s = [0; 8];
                        for (i, v) in s.iter_mut().enumerate() {
                            *v = r[i + 1].int();
                        }
                        (r[0].text(), s)
                    })
                    .collect()
            };
            assert_eq!(got, want, "{kind}: by user, models big+mystery, {f:?}");

            // The filter pickers: the distinct values of each dimension in the range.
            let dims = query::dimensions(&m.store, &f).await.unwrap();
            for (name, vals) in dims {
                let mut args = Vec::new();
                let wh = raw_range(&f, &mut args);
                let sql = format!(
                    "SELECT DISTINCT {} FROM usage_events WHERE {wh} ORDER BY 1",
                    raw_expr(name)
                );
                let want: Vec<String> = m
                    .store
                    .select(&sql, &args, &[Col::Text])
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r[0].text())
                    .collect();
                assert_eq!(vals, want, "{kind}: dimension {name}, {f:?}");
            }

            // Sessions: those active in the range, whole-session totals; with a dimension filter,
            // those whose matching events (one rollup key's first and last) were active in the
            // range, with the matching events' totals. By cost and by duration.
            let filters: [(&str, pb::UsageFilter); 3] = [
                ("", f.clone()),
                (
                    "model IN ('small')",
                    pb::UsageFilter {
                        models: vec!["small".into()],
                        ..f.clone()
                    },
                ),
                (
                    "user_name IN ('alice', 'bob') AND harness IN ('codex')",
                    pb::UsageFilter {
                        users: vec!["alice".into(), "bob".into()],
                        harnesses: vec!["codex".into()],
                        ..f.clone()
                    },
                ),
            ];
            for (matching, sf) in filters {
                for order in ["cost", "duration"] {
                    let got = query::sessions(
                        &m.store,
                        &pb::SessionsRequest {
                            filter: Some(sf.clone()),
                            order_by: order.into(),
                            limit: 1000,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap()
                    .sessions;
                    let want = raw_sessions(&m, &sf, matching, order).await;
                    assert_eq!(got.len(), want.len(), "{kind}: sessions in {sf:?}");
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(
                            (
                                g.session_id.as_str(),
                                g.user.as_str(),
                                g.cost_micros,
                                g.requests as i64,
                                g.tokens as i64,
                                g.first_ms,
                                g.last_ms
                            ),
                            (
                                w[0].text().as_str(),
                                w[1].text().as_str(),
                                w[2].int(),
                                w[3].int(),
                                w[4].int(),
                                w[6].int(),
                                w[7].int()
                            ),
                            "{kind}: sessions by {order} in {sf:?}"
                        );
                    }
                }
            }
        }

        // Sessions with a dimension filter list only the matching models, and never more than the whole session.
        let f = pb::UsageFilter {
            models: vec!["small".into()],
            since_ms: at("2025-03-03", 0),
            ..Default::default()
        };
        let got = query::sessions(
            &m.store,
            &pb::SessionsRequest {
                filter: Some(f),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .sessions;
        assert!(!got.is_empty(), "{kind}");
        assert!(
            got.iter().all(|s| s.models == "small"),
            "{kind}: only the matching model"
        );
        let whole = query::sessions(
            &m.store,
            &pb::SessionsRequest {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .sessions;
        for g in &got {
            let w = whole.iter().find(|w| w.session_id == g.session_id).unwrap();
            assert!(
                g.cost_micros <= w.cost_micros && g.requests <= w.requests,
                "{kind}"
            );
            assert!(w.models.contains("small"), "{kind}: {}", w.models);
        }
        ts.cleanup().await;
    }
}
