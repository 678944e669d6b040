//! The queries behind gRPC, the JSON API, the dashboard and the CLI. Grouped queries read the
//! hourly and daily rollups (time ranges resolve to whole hours), sessions the session rollups;
//! only the CSV export reads raw events.
//! Every query that reads a rollup first has the store fold in its pending rollup deltas
//! ([`Store::compact`], Postgres), so it answers for every event acknowledged before it began.
use retort_proto::v1 as pb;

use crate::{
    error::MeteringError,
    pricing::Prices,
    store::{Arg, Col, Store, Val},
    time,
};

/// Dimensions a query may group by, and the column (or expression) each reads.
pub const DIMENSIONS: [(&str, &str); 11] = [
    ("user", "user_name"),
    ("team", "team"),
    ("discipline", "discipline"),
    ("level", "level"),
    ("model", "model"),
    ("provider", "provider"),
    ("harness", "harness"),
    ("route", "route"),
    ("tier", "tier"),
    ("day", "(hour_ms / 86400000) * 86400000"),
    ("hour", "hour_ms"),
];

/// Orderings a grouped query accepts.
pub const ORDERS: [&str; 6] = [
    "cost",
    "tokens",
    "reasoning_tokens",
    "reasoning_ms",
    "requests",
    "key",
];

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

fn limit(l: u32) -> i64 {
    i64::from(if l == 0 {
        DEFAULT_LIMIT
    } else {
        l.min(MAX_LIMIT)
    })
}

/// `col IN (...)` conditions for the filter's dimension lists (arguments appended to `args`).
fn dim_conditions(f: &pb::UsageFilter, args: &mut Vec<Arg>) -> Vec<String> {
    let mut conds = Vec::new();
    let lists: [(&str, &Vec<String>); 9] = [
        ("user_name", &f.users),
        ("team", &f.teams),
        ("discipline", &f.disciplines),
        ("level", &f.levels),
        ("model", &f.models),
        ("provider", &f.providers),
        ("harness", &f.harnesses),
        ("route", &f.routes),
        ("tier", &f.tiers),
    ];
    for (col, vals) in lists {
        let vals: Vec<&String> = vals.iter().filter(|v| !v.is_empty()).collect();
        if vals.is_empty() {
            continue;
        }
        let mut ph = Vec::new();
        for v in vals {
            args.push(Arg::S(v.clone()));
            ph.push(format!("${}", args.len()));
        }
        conds.push(format!("{col} IN ({})", ph.join(", ")));
    }
    conds
}

fn where_of(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// `WHERE ...` over raw events (`ts_ms`, to the millisecond).
fn where_clause(f: &pb::UsageFilter, args: &mut Vec<Arg>) -> String {
    let mut conds = dim_conditions(f, args);
    if f.since_ms > 0 {
        args.push(Arg::I(f.since_ms));
        conds.push(format!("ts_ms >= ${}", args.len()));
    }
    if f.until_ms > 0 {
        args.push(Arg::I(f.until_ms));
        conds.push(format!("ts_ms < ${}", args.len()));
    }
    where_of(&conds)
}

/// A half-open range of bucket starts; `None` is unbounded.
type Range = (Option<i64>, Option<i64>);

/// Which rollup rows cover a filter's time range (resolved to whole hours): whole days from the
/// daily table, the range's partial first and last days from the hourly one. `hourly_only` when
/// the query groups by hour.
fn split_range(f: &pb::UsageFilter, hourly_only: bool) -> (Option<Range>, Vec<Range>) {
    let s = (f.since_ms > 0).then(|| time::hour_floor(f.since_ms));
    let u = (f.until_ms > 0).then(|| time::hour_ceil(f.until_ms));
    if hourly_only {
        return (None, vec![(s, u)]);
    }
    let d0 = s.map(time::day_ceil);
    let d1 = u.map(time::day_floor);
    if let (Some(a), Some(b)) = (d0, d1)
        && a >= b
    {
        return (None, vec![(s, u)]);
    }
    let mut hourly = Vec::new();
    if let (Some(s), Some(d0)) = (s, d0)
        && s < d0
    {
        hourly.push((Some(s), Some(d0)));
    }
    if let (Some(d1), Some(u)) = (d1, u)
        && d1 < u
    {
        hourly.push((Some(d1), Some(u)));
    }
    (Some((d0, d1)), hourly)
}

/// The rollup rows for a filter: one `SELECT` (or a `UNION ALL` of the daily and hourly parts)
/// exposing `hour_ms` (a day's start for daily rows), the dimensions and the sums.
fn rollup_source(f: &pb::UsageFilter, hourly_only: bool, args: &mut Vec<Arg>) -> String {
    let conds = dim_conditions(f, args);
    let (daily, hourly) = split_range(f, hourly_only);
    let cols = "user_name, team, discipline, level, model, provider, harness, route, tier, requests, failed, input_tokens, \
        output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, cost_micros, reasoning_ms, latency_ms, unpriced";
    let mut branches = Vec::new();
    let mut branch = |table: &str, time_col: &str, (from, to): Range, args: &mut Vec<Arg>| {
        let mut c = conds.clone();
        if let Some(from) = from {
            args.push(Arg::I(from));
            c.push(format!("{time_col} >= ${}", args.len()));
        }
        if let Some(to) = to {
            args.push(Arg::I(to));
            c.push(format!("{time_col} < ${}", args.len()));
        }
        let wh = where_of(&c);
        branches.push((
            table == "usage_hourly",
            format!("SELECT {time_col} AS hour_ms, {cols} FROM {table}{wh}"),
            wh,
        ));
    };
    if let Some(r) = daily {
        branch("usage_daily", "day_ms", r, args);
    }
    for r in hourly {
        branch("usage_hourly", "hour_ms", r, args);
    }
    match branches.as_slice() {
        // Hourly alone: read the table itself (its `hour_ms` is what the grouping expressions use).
        [(true, _, wh)] => format!("usage_hourly{wh}"),
        _ => format!(
            "({}) AS u",
            branches
                .iter()
                .map(|(_, sql, _)| sql.as_str())
                .collect::<Vec<_>>()
                .join(" UNION ALL ")
        ),
    }
}

const SUMS: &str = "COALESCE(CAST(SUM(cost_micros) AS BIGINT), 0) AS c_cost, COALESCE(CAST(SUM(requests) AS BIGINT), 0) AS c_requests, \
    COALESCE(CAST(SUM(failed) AS BIGINT), 0), COALESCE(CAST(SUM(input_tokens) AS BIGINT), 0), COALESCE(CAST(SUM(output_tokens) AS BIGINT), 0) AS c_output, \
    COALESCE(CAST(SUM(reasoning_tokens) AS BIGINT), 0) AS c_reasoning, COALESCE(CAST(SUM(cache_read_tokens) AS BIGINT), 0), \
    COALESCE(CAST(SUM(cache_write_tokens) AS BIGINT), 0), COALESCE(CAST(SUM(reasoning_ms) AS BIGINT), 0) AS c_reasoning_ms, \
    COALESCE(CAST(SUM(latency_ms) AS BIGINT), 0), COALESCE(CAST(SUM(unpriced) AS BIGINT), 0), \
    COALESCE(CAST(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS BIGINT), 0) AS c_tokens";

/// Spend and tokens grouped by `q.group_by`, filtered, ordered and limited.
pub async fn grouped(
    store: &Store,
    q: &pb::UsageQuery,
) -> Result<pb::UsageQueryResponse, MeteringError> {
    let mut dims = Vec::new();
    for g in &q.group_by {
        let g = g.trim();
        let (name, expr) = DIMENSIONS.iter().find(|(n, _)| *n == g).ok_or_else(|| {
            MeteringError::Invalid(format!("group_by {g:?}: expected one of {}", dim_names()))
        })?;
        if !dims.iter().any(|(n, _)| n == name) {
            dims.push((*name, *expr));
        }
    }
    let order = match q.order_by.trim() {
        "" if dims.iter().any(|(n, _)| *n == "day" || *n == "hour") => "key",
        "" | "cost" => "cost",
        o if ORDERS.contains(&o) => o,
        o => {
            return Err(MeteringError::Invalid(format!(
                "order_by {o:?}: expected one of {}",
                ORDERS.join(", ")
            )));
        }
    };
    store.compact().await?;
    let mut args = Vec::new();
    let filter = q.filter.clone().unwrap_or_default();
    let hourly_only = dims.iter().any(|(n, _)| *n == "hour");
    let source = rollup_source(&filter, hourly_only, &mut args);
    let select: Vec<String> = dims.iter().map(|(_, e)| e.to_string()).collect();
    let positions: Vec<String> = (1..=dims.len()).map(|i| i.to_string()).collect();
    let order_sql = match order {
        "key" if !dims.is_empty() => positions
            .iter()
            .map(|p| format!("{p} ASC"))
            .collect::<Vec<_>>()
            .join(", "),
        "tokens" => "c_tokens DESC".into(),
        "reasoning_tokens" => "c_reasoning DESC, c_reasoning_ms DESC".into(),
        "reasoning_ms" => "c_reasoning_ms DESC, c_reasoning DESC".into(),
        "requests" => "c_requests DESC".into(),
        _ => "c_cost DESC".into(),
    };
    let tie = if positions.is_empty() {
        String::new()
    } else {
        format!(", {}", positions.join(", "))
    };
    args.push(Arg::I(limit(q.limit)));
    let sql = format!(
        "SELECT {sel}{SUMS} FROM {source}{group} ORDER BY {order_sql}{tie} LIMIT ${n}",
        sel = select.iter().map(|s| format!("{s}, ")).collect::<String>(),
        group = if dims.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", positions.join(", "))
        },
        n = args.len(),
    );
    let mut cols: Vec<Col> = dims
        .iter()
        .map(|(n, _)| {
            if *n == "day" || *n == "hour" {
                Col::Int
            } else {
                Col::Text
            }
        })
        .collect();
    cols.extend([Col::Int; 12]);
    let rows = store.select(&sql, &args, &cols).await?;
    let nd = dims.len();
    let rows = rows
        .into_iter()
        .filter(|r| r[nd + 1].int() > 0)
        .map(|r| {
            let key = dims
                .iter()
                .zip(&r)
                .map(|((n, _), v)| match *n {
                    "day" => time::day_label(v.int()),
                    "hour" => time::hour_label(v.int()),
                    _ => v.text(),
                })
                .collect();
            let u = |i: usize| r[nd + i].int().max(0) as u64;
            pb::UsageRow {
                key,
                cost_micros: r[nd].int(),
                requests: u(1),
                failed: u(2),
                input_tokens: u(3),
                output_tokens: u(4),
                reasoning_tokens: u(5),
                cache_read_tokens: u(6),
                cache_write_tokens: u(7),
                reasoning_ms: u(8),
                latency_ms: u(9),
                unpriced: u(10),
            }
        })
        .collect();
    Ok(pb::UsageQueryResponse {
        group_by: dims.iter().map(|(n, _)| n.to_string()).collect(),
        rows,
        tier: String::new(),
    })
}

pub fn dim_names() -> String {
    DIMENSIONS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Users by spend on one price tier: the one asked for, or the most expensive tier with spend in
/// the range (tiers are tried from the most expensive: usually one query).
pub async fn top_users(
    store: &Store,
    prices: &Prices,
    r: &pb::TopRequest,
) -> Result<pb::UsageQueryResponse, MeteringError> {
    let filter = r.filter.clone().unwrap_or_default();
    let users_on = |tier: &str| {
        let mut f = filter.clone();
        if !tier.is_empty() {
            f.tiers = vec![tier.to_string()];
        }
        pb::UsageQuery {
            group_by: vec!["user".into()],
            filter: Some(f),
            order_by: "cost".into(),
            limit: r.limit,
        }
    };
    if !r.tier.is_empty() {
        let mut resp = grouped(store, &users_on(&r.tier)).await?;
        resp.tier = r.tier.clone();
        return Ok(resp);
    }
    let allowed =
        |t: &str| filter.tiers.iter().all(|x| x.is_empty()) || filter.tiers.iter().any(|x| x == t);
    // Only tiers seen in the range are tried (the dimension rollup answers that cheaply).
    let seen: Vec<String> = dimensions(store, &filter)
        .await?
        .into_iter()
        .find(|(d, _)| *d == "tier")
        .map(|(_, v)| v)
        .unwrap_or_default();
    for tier in prices.tiers_by_price() {
        if !allowed(&tier) || !seen.contains(&tier) {
            continue;
        }
        let mut resp = grouped(store, &users_on(&tier)).await?;
        // Users are ranked by cost: the tier had spend in the range when the first one has.
        if resp.rows.first().is_some_and(|u| u.cost_micros > 0) {
            resp.tier = tier;
            return Ok(resp);
        }
    }
    // No priced tier has spend here: the first tier with any (one no longer in the price table).
    let tiers = grouped(
        store,
        &pb::UsageQuery {
            group_by: vec!["tier".into()],
            filter: Some(filter.clone()),
            ..Default::default()
        },
    )
    .await?;
    let tier = tiers
        .rows
        .iter()
        .find(|r| r.cost_micros > 0)
        .map(|r| r.key[0].clone())
        .unwrap_or_default();
    let mut resp = grouped(store, &users_on(&tier)).await?;
    resp.tier = tier;
    Ok(resp)
}

/// Users by reasoning tokens, then reasoning time.
pub async fn top_reasoning(
    store: &Store,
    r: &pb::TopRequest,
) -> Result<pb::UsageQueryResponse, MeteringError> {
    let mut resp = grouped(
        store,
        &pb::UsageQuery {
            group_by: vec!["user".into()],
            filter: r.filter.clone(),
            order_by: "reasoning_tokens".into(),
            limit: r.limit,
        },
    )
    .await?;
    resp.rows
        .retain(|row| row.reasoning_tokens > 0 || row.reasoning_ms > 0);
    Ok(resp)
}

/// Spend and tokens by discipline, level and model (or the grouping asked for).
pub async fn model_mix(
    store: &Store,
    q: &pb::UsageQuery,
) -> Result<pb::UsageQueryResponse, MeteringError> {
    let mut q = q.clone();
    if q.group_by.is_empty() {
        q.group_by = vec!["discipline".into(), "level".into(), "model".into()];
    }
    grouped(store, &q).await
}

/// Sessions ranked by spend or duration. A session is in the answer when it was active in the
/// time range (its first event before `until`, its last at or after `since`, and after
/// `now - live_within` when asked). Without dimension filters its whole-session totals come from
/// `usage_sessions`. With them, a session is its events that match the filter: it is in the answer
/// when those were active in the range (by the same test, on one rollup key's first and last
/// event), with their totals, from `usage_session_dims` (one row per session and rollup key, so
/// the sums are exact).
pub async fn sessions(
    store: &Store,
    r: &pb::SessionsRequest,
) -> Result<pb::SessionsResponse, MeteringError> {
    store.compact().await?;
    let f = r.filter.clone().unwrap_or_default();
    let mut args = Vec::new();
    let mut active = Vec::new();
    if f.since_ms > 0 {
        args.push(Arg::I(f.since_ms));
        active.push(format!("last_ms >= ${}", args.len()));
    }
    if f.until_ms > 0 {
        args.push(Arg::I(f.until_ms));
        active.push(format!("first_ms < ${}", args.len()));
    }
    if r.live_within_ms > 0 {
        args.push(Arg::I(time::now_ms() - r.live_within_ms));
        active.push(format!("last_ms >= ${}", args.len()));
    }
    let order = match r.order_by.as_str() {
        "" | "cost" => "c_cost DESC, c_dur DESC",
        "duration" => "c_dur DESC, c_cost DESC",
        o => {
            return Err(MeteringError::Invalid(format!(
                "order_by {o:?}: expected cost or duration"
            )));
        }
    };
    let from_rollup = dim_conditions(&f, &mut Vec::new()).is_empty();
    let sql = if from_rollup {
        args.push(Arg::I(limit(r.limit)));
        let n = args.len();
        format!(
            "SELECT session_id, user_name, harness, first_ms, last_ms, cost_micros AS c_cost, requests, tokens, '', \
             last_ms - first_ms AS c_dur FROM usage_sessions{} ORDER BY {order}, session_id LIMIT ${n}",
            where_of(&active)
        )
    } else {
        let models = if store.is_postgres() {
            "string_agg(DISTINCT model, ',')"
        } else {
            "group_concat(DISTINCT model)"
        };
        // The sessions with a matching key active in the range, then all their matching keys
        // (the filter's arguments are bound once for each use).
        let mut candidates = active;
        candidates.extend(dim_conditions(&f, &mut args));
        let mut conds = dim_conditions(&f, &mut args);
        conds.push(format!(
            "session_id IN (SELECT session_id FROM usage_session_dims{})",
            where_of(&candidates)
        ));
        args.push(Arg::I(limit(r.limit)));
        format!(
            "SELECT session_id, MIN(user_name), MIN(harness), MIN(first_ms), MAX(last_ms), CAST(SUM(cost_micros) AS BIGINT) AS c_cost, \
             CAST(SUM(requests) AS BIGINT), CAST(SUM(tokens) AS BIGINT), {models}, MAX(last_ms) - MIN(first_ms) AS c_dur \
             FROM usage_session_dims{} GROUP BY session_id ORDER BY {order}, session_id LIMIT ${}",
            where_of(&conds),
            args.len()
        )
    };
    use Col::{Int, Text};
    let rows = store
        .select(
            &sql,
            &args,
            &[Text, Text, Text, Int, Int, Int, Int, Int, Text, Int],
        )
        .await?;
    let mut sessions: Vec<pb::SessionRow> = rows
        .into_iter()
        .map(|r| pb::SessionRow {
            session_id: r[0].text(),
            user: r[1].text(),
            harness: r[2].text(),
            first_ms: r[3].int(),
            last_ms: r[4].int(),
            cost_micros: r[5].int(),
            requests: r[6].int().max(0) as u64,
            tokens: r[7].int().max(0) as u64,
            models: r[8].text(),
        })
        .collect();
    if from_rollup && !sessions.is_empty() {
        // The rollup path: the models of the sessions shown, in one query.
        let ids: Vec<Arg> = sessions
            .iter()
            .map(|s| Arg::S(s.session_id.clone()))
            .collect();
        let ph: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT session_id, model FROM usage_session_dims WHERE session_id IN ({})",
            ph.join(", ")
        );
        let rows = store.select(&sql, &ids, &[Text, Text]).await?;
        for s in &mut sessions {
            let models: Vec<String> = rows
                .iter()
                .filter(|r| r[0].text() == s.session_id)
                .map(|r| r[1].text())
                .collect();
            s.models = models.join(",");
        }
    }
    for s in &mut sessions {
        let mut m: Vec<&str> = s.models.split(',').filter(|m| !m.is_empty()).collect();
        m.sort_unstable();
        m.dedup();
        s.models = m.join(",");
    }
    Ok(pb::SessionsResponse { sessions })
}

/// Most values listed for one dimension by [`dimensions`].
pub const MAX_DIMENSION_VALUES: usize = 500;

/// The values seen for each filterable dimension in the filter's time range (whole hours; other
/// filters are ignored), in key order, at most [`MAX_DIMENSION_VALUES`] each: what the filter
/// pickers offer. Read from the dimension rollups (whole days daily, partial days hourly).
pub async fn dimensions(
    store: &Store,
    f: &pb::UsageFilter,
) -> Result<Vec<(&'static str, Vec<String>)>, MeteringError> {
    store.compact().await?;
    let (daily, hourly) = split_range(f, false);
    let mut args = Vec::new();
    let mut branches = Vec::new();
    let mut branch = |table: &str, time_col: &str, (from, to): Range| {
        let mut c = Vec::new();
        if let Some(from) = from {
            args.push(Arg::I(from));
            c.push(format!("{time_col} >= ${}", args.len()));
        }
        if let Some(to) = to {
            args.push(Arg::I(to));
            c.push(format!("{time_col} < ${}", args.len()));
        }
        branches.push(format!("SELECT dim, value FROM {table}{}", where_of(&c)));
    };
    if let Some(r) = daily {
        branch("usage_dims_daily", "day_ms", r);
    }
    for r in hourly {
        branch("usage_dims_hourly", "hour_ms", r);
    }
    // UNION (not ALL) removes the duplicates across the parts.
    let sql = format!("{} ORDER BY 1, 2", branches.join(" UNION "));
    let sql = if branches.len() == 1 {
        sql.replacen("SELECT dim, value", "SELECT DISTINCT dim, value", 1)
    } else {
        sql
    };
    let rows = store.select(&sql, &args, &[Col::Text, Col::Text]).await?;
    Ok(crate::store::DIM_NAMES
        .iter()
        .map(|(name, _)| {
            let vals: Vec<String> = rows
                .iter()
                .filter(|r| r[0].text() == *name)
                .map(|r| r[1].text())
                .take(MAX_DIMENSION_VALUES)
                .collect();
            (*name, vals)
        })
        .collect())
}

/// The CSV header of the raw-event export.
pub const CSV_HEADER: &str = "event_id,time,user,team,discipline,level,session_id,harness,route,provider,model,outcome,status,\
input_tokens,output_tokens,reasoning_tokens,cache_read_tokens,cache_write_tokens,latency_ms,ttft_ms,reasoning_ms,cost_usd,price_version,tier,unpriced\n";

/// A text field of the export. A value a spreadsheet would run as a formula (leading `=`, `+`, `-`,
/// `@`, tab or carriage return: a session header can carry `=HYPERLINK(...)`) gets a leading `'`.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

/// One page of the export after the keyset `after` (ts_ms, event_id): CSV lines and the next key.
pub async fn export_page(
    store: &Store,
    f: &pb::UsageFilter,
    after: Option<(i64, String)>,
    page: i64,
) -> Result<(String, Option<(i64, String)>), MeteringError> {
    let mut args = Vec::new();
    let mut wh = where_clause(f, &mut args);
    if let Some((ts, id)) = after {
        args.push(Arg::I(ts));
        let a = args.len();
        args.push(Arg::S(id));
        let cond = format!("(ts_ms > ${a} OR (ts_ms = ${a} AND event_id > ${}))", a + 1);
        wh = if wh.is_empty() {
            format!(" WHERE {cond}")
        } else {
            format!("{wh} AND {cond}")
        };
    }
    args.push(Arg::I(page));
    let sql = format!(
        "SELECT event_id, ts_ms, user_name, team, discipline, level, session_id, harness, route, provider, model, outcome, status, \
         input_tokens, output_tokens, reasoning_tokens, cache_read_tokens, cache_write_tokens, latency_ms, ttft_ms, reasoning_ms, \
         cost_micros, price_version, tier, unpriced FROM usage_events{wh} ORDER BY ts_ms, event_id LIMIT ${}",
        args.len()
    );
    use Col::{Int, Text};
    let cols = [
        Text, Int, Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, Int, Int,
        Int, Int, Int, Int, Int, Int, Text, Text, Int,
    ];
    let rows = store.select(&sql, &args, &cols).await?;
    let mut out = String::new();
    let mut next = None;
    for r in &rows {
        let fields: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| match (i, v) {
                (1, v) => time::iso(v.int()),
                (21, v) => format!("{:.6}", v.int() as f64 / 1e6),
                (24, v) => (v.int() != 0).to_string(),
                (_, Val::S(s)) => csv_field(s),
                (_, Val::I(n)) => n.to_string(),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
        next = Some((r[1].int(), r[0].text()));
    }
    Ok((
        out,
        if (rows.len() as i64) < page {
            None
        } else {
            next
        },
    ))
}

#[cfg(test)]
mod csv_tests {
    use super::csv_field;

    #[test]
    fn formulas_are_defused_and_separators_quoted() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("gpt-4o"), "gpt-4o");
    }
}
