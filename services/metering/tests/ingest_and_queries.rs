//! Ingest, pricing and every query, each against SQLite and Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::{TestStore, at, ev, prices};
use retort_metering::{pricing::Prices, query, service::Metering};
use retort_proto::v1 as pb;

async fn metering(ts: &TestStore) -> Metering {
    let p = Prices::load(&ts.store, prices()).await.unwrap();
    Metering::new(ts.store.clone(), p)
}

async fn ingest(m: &Metering, events: Vec<pb::UsageEvent>) -> pb::IngestSummary {
    let mut s = pb::IngestSummary::default();
    m.ingest(events, &mut s).await.unwrap();
    s
}

fn q(group_by: &[&str]) -> pb::UsageQuery {
    pb::UsageQuery {
        group_by: group_by.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn total(m: &Metering) -> pb::UsageRow {
    query::grouped(&m.store, &q(&[]))
        .await
        .unwrap()
        .rows
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[tokio::test]
async fn ingest_is_idempotent_and_keeps_the_good_part_of_a_bad_batch() {
    for ts in TestStore::both().await {
        let kind = ts.store.kind();
        let m = metering(&ts).await;
        let day = at("2025-03-01", 10);
        let batch = vec![
            ev("a", day, "alice", "big", 1000, 100),
            ev("b", day, "bob", "small", 2000, 200),
        ];
        let s1 = ingest(&m, batch.clone()).await;
        assert_eq!(
            (s1.received, s1.recorded, s1.duplicates),
            (2, 2, 0),
            "{kind}"
        );
        let s2 = ingest(&m, batch.clone()).await;
        assert_eq!(
            (s2.recorded, s2.duplicates),
            (0, 2),
            "{kind}: the same batch twice is counted once"
        );
        // A duplicate inside one batch too.
        let s3 = ingest(
            &m,
            vec![
                ev("c", day, "alice", "big", 1, 1),
                ev("c", day, "alice", "big", 1, 1),
            ],
        )
        .await;
        assert_eq!((s3.recorded, s3.duplicates), (1, 1), "{kind}");
        let t = total(&m).await;
        assert_eq!(t.requests, 3, "{kind}");
        assert_eq!(t.input_tokens, 3001, "{kind}");

        // Malformed events are rejected by field; the rest of the batch is kept.
        let mut no_model = ev("d", day, "alice", "", 1, 1);
        no_model.model.clear();
        let mut bad_time = ev("e", day, "alice", "big", 1, 1);
        bad_time.time_ms = 12;
        let mut bad_reasoning = ev("f", day, "alice", "big", 1, 1);
        bad_reasoning.reasoning_tokens = 5;
        let no_id = ev("", day, "alice", "big", 1, 1);
        let good = ev("g", day, "carol", "big", 10, 10);
        let s = ingest(&m, vec![no_model, bad_time, good, bad_reasoning, no_id]).await;
        assert_eq!((s.recorded, s.rejected_count), (1, 4), "{kind}");
        let fields: Vec<(u32, &str)> = s
            .rejected
            .iter()
            .map(|r| (r.index, r.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                (0, "model"),
                (1, "time_ms"),
                (3, "reasoning_tokens"),
                (4, "event_id")
            ],
            "{kind}"
        );
        assert!(
            s.rejected[0].reason.contains("model"),
            "{kind}: {}",
            s.rejected[0].reason
        );
        ts.cleanup().await;
    }
}

#[tokio::test]
async fn unknown_users_and_models_are_recorded_and_flagged() {
    for ts in TestStore::both().await {
        let kind = ts.store.kind();
        let m = metering(&ts).await;
        let day = at("2025-03-01", 10);
        let s = ingest(
            &m,
            vec![
                ev("u1", day, "", "big", 10, 10),
                ev("u2", day, "dave", "mystery-model", 500, 50),
            ],
        )
        .await;
        assert_eq!((s.recorded, s.unpriced), (2, 1), "{kind}");
        let by_user = query::grouped(&m.store, &q(&["user"])).await.unwrap();
        assert!(
            by_user.rows.iter().any(|r| r.key[0] == "(unknown)"),
            "{kind}"
        );
        let by_model = query::grouped(&m.store, &q(&["model", "tier"]))
            .await
            .unwrap();
        let mystery = by_model
            .rows
            .iter()
            .find(|r| r.key[0] == "mystery-model")
            .expect("unknown model kept");
        assert_eq!(
            (
                mystery.cost_micros,
                mystery.unpriced,
                mystery.input_tokens,
                mystery.key[1].as_str()
            ),
            (0, 1, 500, "unpriced"),
            "{kind}"
        );
        let csv = query::export_page(&m.store, &Default::default(), None, 100)
            .await
            .unwrap()
            .0;
        assert!(
            csv.contains("mystery-model") && csv.contains(",true\n"),
            "{kind}: {csv}"
        );
        ts.cleanup().await;
    }
}

#[tokio::test]
async fn cost_is_tokens_times_the_price_version_in_force() {
    for ts in TestStore::both().await {
        let kind = ts.store.kind();
        let m = metering(&ts).await;
        let mut march = ev(
            "m1",
            at("2025-03-01", 1),
            "alice",
            "big",
            1_000_000,
            1_000_000,
        );
        march.reasoning_tokens = 500_000;
        march.cache_read_tokens = 1_000_000;
        let july = ev(
            "m2",
            at("2025-07-01", 1),
            "alice",
            "big",
            1_000_000,
            1_000_000,
        );
        ingest(&m, vec![march, july]).await;
        let csv = query::export_page(&m.store, &Default::default(), None, 100)
            .await
            .unwrap()
            .0;
        let lines: Vec<&str> = csv.lines().collect();
        // March: 3 + 15 (output incl. reasoning at the output price) + 0.3 = $18.30 at big@2025-01-01.
        assert!(
            lines[0].contains(",18.300000,big@2025-01-01,frontier,false"),
            "{kind}: {}",
            lines[0]
        );
        // July: 2 + 10 = $12 at big@2025-06-01.
        assert!(
            lines[1].contains(",12.000000,big@2025-06-01,frontier,false"),
            "{kind}: {}",
            lines[1]
        );
        assert_eq!(total(&m).await.cost_micros, 30_300_000, "{kind}");

        // A runtime price edit applies to events recorded afterwards, and is persisted.
        m.set_price(pb::MeteringPrice {
            model: "small".into(),
            effective_from: "2025-08-01".into(),
            input: 1.0,
            output: 2.0,
            ..Default::default()
        })
        .await
        .unwrap();
        ingest(
            &m,
            vec![ev("m3", at("2025-08-02", 0), "bob", "small", 1_000_000, 0)],
        )
        .await;
        let bob = query::grouped(
            &m.store,
            &pb::UsageQuery {
                group_by: vec!["user".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            bob.rows
                .iter()
                .find(|r| r.key[0] == "bob")
                .unwrap()
                .cost_micros,
            1_000_000,
            "{kind}"
        );
        let reloaded = Prices::load(&m.store, vec![]).await.unwrap().snapshot();
        assert_eq!(
            reloaded
                .lookup("small", retort_time::parse_day("2025-08-05").unwrap())
                .unwrap()
                .input,
            1.0,
            "{kind}"
        );
        // A bad price is refused with the field named.
        let bad = m
            .set_price(pb::MeteringPrice {
                model: "x".into(),
                effective_from: "2025-01-01".into(),
                input: -1.0,
                ..Default::default()
            })
            .await;
        assert!(bad.unwrap_err().to_string().contains("input"), "{kind}");
        ts.cleanup().await;
    }
}

#[tokio::test]
async fn failed_attempts_cost_nothing_and_fallback_is_attributed_to_the_serving_model() {
    for ts in TestStore::both().await {
        let kind = ts.store.kind();
        let m = metering(&ts).await;
        let t = at("2025-03-01", 3);
        // One request through the alias: the first target fails (no usage), the fallback serves it.
        let mut failed = ev("f1", t, "alice", "big", 0, 0);
        failed.outcome = "unavailable".into();
        failed.status = 503;
        failed.provider = "down-provider".into();
        let mut served = ev("f2", t, "alice", "small", 1_000_000, 1_000_000);
        served.provider = "fallback-provider".into();
        ingest(&m, vec![failed, served]).await;
        let r = query::grouped(&m.store, &q(&["model", "provider"]))
            .await
            .unwrap();
        let big = r.rows.iter().find(|r| r.key[0] == "big").unwrap();
        let small = r.rows.iter().find(|r| r.key[0] == "small").unwrap();
        assert_eq!(
            (big.cost_micros, big.failed, big.requests),
            (0, 1, 1),
            "{kind}"
        );
        assert_eq!(
            (small.cost_micros, small.failed, small.key[1].as_str()),
            (500_000, 0, "fallback-provider"),
            "{kind}"
        );
        let route = query::grouped(&m.store, &q(&["route"])).await.unwrap();
        assert_eq!(
            route.rows[0].cost_micros, 500_000,
            "{kind}: the alias is charged the serving model's price"
        );
        ts.cleanup().await;
    }
}

/// A small world: two teams, three users, two models, reasoning, sessions over two days.
fn world() -> Vec<pb::UsageEvent> {
    let d1 = at("2025-03-01", 9);
    let d2 = at("2025-03-02", 15);
    let mut v = Vec::new();
    let mut e = |id: &str,
                 t: i64,
                 user: &str,
                 team: &str,
                 disc: &str,
                 level: &str,
                 model: &str,
                 harness: &str,
                 inp: u64,
                 out: u64,
                 reas: u64,
                 reas_ms: u64| {
        let mut x = ev(id, t, user, model, inp, out);
        x.team = team.into();
        x.discipline = disc.into();
        x.level = level.into();
        x.harness = harness.into();
        x.reasoning_tokens = reas;
        x.reasoning_ms = reas_ms;
        v.push(x);
    };
    e(
        "w1",
        d1,
        "alice",
        "core",
        "backend",
        "senior",
        "big",
        "claude_code",
        1_000_000,
        100_000,
        50_000,
        4000,
    );
    e(
        "w2",
        d1 + 60_000,
        "alice",
        "core",
        "backend",
        "senior",
        "big",
        "claude_code",
        1_000_000,
        100_000,
        0,
        0,
    );
    e(
        "w3", d1, "bob", "core", "frontend", "junior", "small", "cursor", 2_000_000, 500_000, 0, 0,
    );
    e(
        "w4", d2, "bob", "core", "frontend", "junior", "big", "cursor", 100_000, 10_000, 0, 0,
    );
    e(
        "w5", d2, "carol", "ml", "research", "staff", "small", "codex", 5_000_000, 900_000,
        800_000, 60_000,
    );
    v
}

#[tokio::test]
async fn every_query_answers_on_both_databases() {
    for ts in TestStore::both().await {
        let kind = ts.store.kind();
        let m = metering(&ts).await;
        ingest(&m, world()).await;
        // big@2025-01-01: alice 2 × (3 + 1.5) = 9.0; bob 0.3 + 0.15 = 0.45. small: bob 0.2 + 0.2 = 0.4; carol 0.5 + 0.36 = 0.86.
        let by = |dims: &[&str]| {
            let m = &m;
            let dims: Vec<String> = dims.iter().map(|s| s.to_string()).collect();
            async move {
                query::grouped(
                    &m.store,
                    &pb::UsageQuery {
                        group_by: dims,
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
            }
        };
        let users = by(&["user"]).await;
        let got: Vec<(String, i64)> = users
            .rows
            .iter()
            .map(|r| (r.key[0].clone(), r.cost_micros))
            .collect();
        assert_eq!(
            got,
            vec![
                ("alice".into(), 9_000_000),
                ("carol".into(), 860_000),
                ("bob".into(), 850_000)
            ],
            "{kind}"
        );
        for dim in query::DIMENSIONS.map(|(d, _)| d) {
            let r = by(&[dim]).await;
            assert_eq!(
                r.rows.iter().map(|r| r.cost_micros).sum::<i64>(),
                10_710_000,
                "{kind}: group by {dim}"
            );
        }
        let days = by(&["day"]).await;
        assert_eq!(
            days.rows
                .iter()
                .map(|r| r.key[0].as_str())
                .collect::<Vec<_>>(),
            vec!["2025-03-01", "2025-03-02"],
            "{kind}"
        );
        let hours = by(&["hour", "team"]).await;
        assert_eq!(
            hours.rows[0].key,
            vec!["2025-03-01 09:00".to_string(), "core".into()],
            "{kind}"
        );

        // Filters and time ranges.
        let f = pb::UsageFilter {
            teams: vec!["core".into()],
            since_ms: at("2025-03-02", 0),
            ..Default::default()
        };
        let r = query::grouped(
            &m.store,
            &pb::UsageQuery {
                group_by: vec!["user".into()],
                filter: Some(f),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            r.rows
                .iter()
                .map(|r| (r.key[0].as_str(), r.cost_micros))
                .collect::<Vec<_>>(),
            vec![("bob", 450_000)],
            "{kind}"
        );
        let bad = query::grouped(
            &m.store,
            &pb::UsageQuery {
                group_by: vec!["colour".into()],
                ..Default::default()
            },
        )
        .await;
        assert!(bad.unwrap_err().to_string().contains("colour"), "{kind}");

        // Top users on the most expensive tier (frontier: big).
        let top = query::top_users(&m.store, &m.prices, &pb::TopRequest::default())
            .await
            .unwrap();
        assert_eq!(top.tier, "frontier", "{kind}");
        assert_eq!(
            top.rows
                .iter()
                .map(|r| (r.key[0].as_str(), r.cost_micros))
                .collect::<Vec<_>>(),
            vec![("alice", 9_000_000), ("bob", 450_000)],
            "{kind}"
        );
        // Reasoning leaders.
        let reas = query::top_reasoning(&m.store, &pb::TopRequest::default())
            .await
            .unwrap();
        assert_eq!(
            reas.rows
                .iter()
                .map(|r| (r.key[0].as_str(), r.reasoning_tokens, r.reasoning_ms))
                .collect::<Vec<_>>(),
            vec![("carol", 800_000, 60_000), ("alice", 50_000, 4000)],
            "{kind}"
        );
        // Model mix by discipline and level.
        let mix = query::model_mix(&m.store, &pb::UsageQuery::default())
            .await
            .unwrap();
        assert_eq!(mix.group_by, vec!["discipline", "level", "model"], "{kind}");
        assert_eq!(
            mix.rows[0].key,
            vec!["backend".to_string(), "senior".into(), "big".into()],
            "{kind}"
        );
        assert_eq!(mix.rows.len(), 4, "{kind}");
        // Sessions by spend and by duration.
        let s = query::sessions(&m.store, &pb::SessionsRequest::default())
            .await
            .unwrap();
        assert_eq!(
            s.sessions
                .iter()
                .map(|s| s.session_id.as_str())
                .collect::<Vec<_>>(),
            vec!["sess-alice", "sess-carol", "sess-bob"],
            "{kind}"
        );
        assert_eq!(s.sessions[0].requests, 2, "{kind}");
        let s = query::sessions(
            &m.store,
            &pb::SessionsRequest {
                order_by: "duration".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            s.sessions[0].session_id, "sess-bob",
            "{kind}: bob's session spans two days"
        );
        assert!(
            s.sessions[0].models.contains("big") && s.sessions[0].models.contains("small"),
            "{kind}"
        );
        // CSV export, paged.
        let (page1, next) = query::export_page(&m.store, &Default::default(), None, 3)
            .await
            .unwrap();
        let (page2, end) = query::export_page(&m.store, &Default::default(), next, 3)
            .await
            .unwrap();
        assert_eq!(
            (page1.lines().count(), page2.lines().count(), end),
            (3, 2, None),
            "{kind}"
        );
        // Retention deletes raw events, the rollup keeps the totals.
        let n = m
            .store
            .delete_events_before(at("2025-03-02", 0))
            .await
            .unwrap();
        assert_eq!(n, 3, "{kind}");
        assert_eq!(total(&m).await.cost_micros, 10_710_000, "{kind}");
        ts.cleanup().await;
    }
}
