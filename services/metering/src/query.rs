//! The queries behind gRPC, the JSON API, the dashboard and the CLI. Grouped queries read the
//! hourly rollup (time ranges resolve to whole hours); sessions and the CSV export read raw events.
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
pub const ORDERS: [&str; 6] = ["cost", "tokens", "reasoning_tokens", "reasoning_ms", "requests", "key"];

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 10_000;

fn limit(l: u32) -> i64 {
    i64::from(if l == 0 { DEFAULT_LIMIT } else { l.min(MAX_LIMIT) })
}

/// `WHERE ...` for a filter; `time_col` is `hour_ms` (rollup, whole hours) or `ts_ms` (raw).
fn where_clause(f: &pb::UsageFilter, time_col: &str, args: &mut Vec<Arg>) -> String {
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
    let hourly = time_col == "hour_ms";
    if f.since_ms > 0 {
        args.push(Arg::I(if hourly { time::hour_floor(f.since_ms) } else { f.since_ms }));
        conds.push(format!("{time_col} >= ${}", args.len()));
    }
    if f.until_ms > 0 {
        args.push(Arg::I(if hourly { time::hour_ceil(f.until_ms) } else { f.until_ms }));
        conds.push(format!("{time_col} < ${}", args.len()));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

const SUMS: &str = "COALESCE(CAST(SUM(cost_micros) AS BIGINT), 0) AS c_cost, COALESCE(CAST(SUM(requests) AS BIGINT), 0) AS c_requests, \
    COALESCE(CAST(SUM(failed) AS BIGINT), 0), COALESCE(CAST(SUM(input_tokens) AS BIGINT), 0), COALESCE(CAST(SUM(output_tokens) AS BIGINT), 0) AS c_output, \
    COALESCE(CAST(SUM(reasoning_tokens) AS BIGINT), 0) AS c_reasoning, COALESCE(CAST(SUM(cache_read_tokens) AS BIGINT), 0), \
    COALESCE(CAST(SUM(cache_write_tokens) AS BIGINT), 0), COALESCE(CAST(SUM(reasoning_ms) AS BIGINT), 0) AS c_reasoning_ms, \
    COALESCE(CAST(SUM(latency_ms) AS BIGINT), 0), COALESCE(CAST(SUM(unpriced) AS BIGINT), 0), \
    COALESCE(CAST(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS BIGINT), 0) AS c_tokens";

/// Spend and tokens grouped by `q.group_by`, filtered, ordered and limited.
pub async fn grouped(store: &Store, q: &pb::UsageQuery) -> Result<pb::UsageQueryResponse, MeteringError> {
    let mut dims = Vec::new();
    for g in &q.group_by {
        let g = g.trim();
        let (name, expr) = DIMENSIONS
            .iter()
            .find(|(n, _)| *n == g)
            .ok_or_else(|| MeteringError::Invalid(format!("group_by {g:?}: expected one of {}", dim_names())))?;
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
    let mut args = Vec::new();
    let filter = q.filter.clone().unwrap_or_default();
    let wh = where_clause(&filter, "hour_ms", &mut args);
    let select: Vec<String> = dims.iter().map(|(_, e)| e.to_string()).collect();
    let positions: Vec<String> = (1..=dims.len()).map(|i| i.to_string()).collect();
    let order_sql = match order {
        "key" if !dims.is_empty() => positions.iter().map(|p| format!("{p} ASC")).collect::<Vec<_>>().join(", "),
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
        "SELECT {sel}{SUMS} FROM usage_hourly{wh}{group} ORDER BY {order_sql}{tie} LIMIT ${n}",
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
        .map(|(n, _)| if *n == "day" || *n == "hour" { Col::Int } else { Col::Text })
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
    DIMENSIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// Users by spend on one price tier: the one asked for, or the most expensive tier with usage.
pub async fn top_users(store: &Store, prices: &Prices, r: &pb::TopRequest) -> Result<pb::UsageQueryResponse, MeteringError> {
    let filter = r.filter.clone().unwrap_or_default();
    let tier = if r.tier.is_empty() {
        let tiers = grouped(
            store,
            &pb::UsageQuery {
                group_by: vec!["tier".into()],
                filter: Some(filter.clone()),
                ..Default::default()
            },
        )
        .await?;
        let used: Vec<&str> = tiers.rows.iter().filter(|r| r.cost_micros > 0).map(|r| r.key[0].as_str()).collect();
        prices
            .tiers_by_price()
            .into_iter()
            .find(|t| used.contains(&t.as_str()))
            .or_else(|| used.first().map(|s| s.to_string()))
            .unwrap_or_default()
    } else {
        r.tier.clone()
    };
    let mut f = filter;
    if !tier.is_empty() {
        f.tiers = vec![tier.clone()];
    }
    let mut resp = grouped(
        store,
        &pb::UsageQuery {
            group_by: vec!["user".into()],
            filter: Some(f),
            order_by: "cost".into(),
            limit: r.limit,
        },
    )
    .await?;
    resp.tier = tier;
    Ok(resp)
}

/// Users by reasoning tokens, then reasoning time.
pub async fn top_reasoning(store: &Store, r: &pb::TopRequest) -> Result<pb::UsageQueryResponse, MeteringError> {
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
    resp.rows.retain(|row| row.reasoning_tokens > 0 || row.reasoning_ms > 0);
    Ok(resp)
}

/// Spend and tokens by discipline, level and model (or the grouping asked for).
pub async fn model_mix(store: &Store, q: &pb::UsageQuery) -> Result<pb::UsageQueryResponse, MeteringError> {
    let mut q = q.clone();
    if q.group_by.is_empty() {
        q.group_by = vec!["discipline".into(), "level".into(), "model".into()];
    }
    grouped(store, &q).await
}

/// Sessions (raw events that carry a session id) ranked by spend or duration.
pub async fn sessions(store: &Store, r: &pb::SessionsRequest) -> Result<pb::SessionsResponse, MeteringError> {
    let mut args = Vec::new();
    let wh = where_clause(&r.filter.clone().unwrap_or_default(), "ts_ms", &mut args);
    let wh = if wh.is_empty() {
        " WHERE session_id <> ''".to_string()
    } else {
        format!("{wh} AND session_id <> ''")
    };
    let having = if r.live_within_ms > 0 {
        args.push(Arg::I(time::now_ms() - r.live_within_ms));
        format!(" HAVING MAX(ts_ms) >= ${}", args.len())
    } else {
        String::new()
    };
    let order = match r.order_by.as_str() {
        "" | "cost" => "c_cost DESC, c_dur DESC",
        "duration" => "c_dur DESC, c_cost DESC",
        o => return Err(MeteringError::Invalid(format!("order_by {o:?}: expected cost or duration"))),
    };
    let models = if store.is_postgres() {
        "string_agg(DISTINCT model, ',')"
    } else {
        "group_concat(DISTINCT model)"
    };
    args.push(Arg::I(limit(r.limit)));
    let sql = format!(
        "SELECT session_id, MIN(user_name), MIN(harness), MIN(ts_ms), MAX(ts_ms), COALESCE(CAST(SUM(cost_micros) AS BIGINT), 0) AS c_cost, \
         COUNT(*), COALESCE(CAST(SUM(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS BIGINT), 0), {models}, \
         MAX(ts_ms) - MIN(ts_ms) AS c_dur FROM usage_events{wh} GROUP BY session_id{having} ORDER BY {order}, session_id LIMIT ${}",
        args.len()
    );
    use Col::{Int, Text};
    let rows = store
        .select(&sql, &args, &[Text, Text, Text, Int, Int, Int, Int, Int, Text, Int])
        .await?;
    Ok(pb::SessionsResponse {
        sessions: rows
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
            .collect(),
    })
}

/// The CSV header of the raw-event export.
pub const CSV_HEADER: &str = "event_id,time,user,team,discipline,level,session_id,harness,route,provider,model,outcome,status,\
input_tokens,output_tokens,reasoning_tokens,cache_read_tokens,cache_write_tokens,latency_ms,ttft_ms,reasoning_ms,cost_usd,price_version,tier,unpriced\n";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
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
    let mut wh = where_clause(f, "ts_ms", &mut args);
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
        Text, Int, Text, Text, Text, Text, Text, Text, Text, Text, Text, Text, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Text,
        Text, Int,
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
    Ok((out, if (rows.len() as i64) < page { None } else { next }))
}
