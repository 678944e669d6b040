//! Rollup maintenance in Rust: what a group of newly recorded events adds to the rollups (hourly,
//! daily, sessions, sessions by dimension, dimension values), aggregated to one row per distinct
//! key, and the multi-row writes ([`Rows`]) and upsert `SET` lists that apply it. SQLite's writer
//! upserts these directly; Postgres appends deltas instead and its compactor reuses the `SET`
//! lists (see [`super::deltas`]).
use std::collections::{BTreeMap, BTreeSet};

use super::record::{DIM_NAMES, ROLL_DIMS, ROLL_SUMS, Record, SessionSums};
use crate::time;

/// A rollup key: the bucket start and every dimension the dashboard groups by.
type RollKey<'a> = (i64, [&'a str; 9]);

/// Everything one write adds to the rollups.
#[derive(Default)]
pub(super) struct Rollups<'a> {
    pub(super) hourly: BTreeMap<RollKey<'a>, [i64; 11]>,
    pub(super) daily: BTreeMap<RollKey<'a>, [i64; 11]>,
    pub(super) sessions: BTreeMap<&'a str, SessionSums<'a>>,
    pub(super) session_dims: BTreeMap<(&'a str, [&'a str; 9]), SessionSums<'a>>,
    pub(super) dims_hourly: BTreeSet<(i64, &'static str, &'a str)>,
    pub(super) dims_daily: BTreeSet<(i64, &'static str, &'a str)>,
}

pub(super) fn rollups<'a>(records: &[&'a Record]) -> Rollups<'a> {
    let mut r = Rollups::default();
    for e in records {
        let (dims, add) = (e.dims(), e.sums());
        let hour = time::hour_floor(e.ts_ms);
        let day = time::day_floor(e.ts_ms);
        for (map, t) in [(&mut r.hourly, hour), (&mut r.daily, day)] {
            let s = map.entry((t, dims)).or_default();
            for (a, b) in s.iter_mut().zip(add) {
                *a += b;
            }
        }
        if !e.session_id.is_empty() {
            let one = SessionSums::of(e);
            r.sessions
                .entry(&e.session_id)
                .and_modify(|s| s.add(&one))
                .or_insert_with(|| one.clone());
            r.session_dims
                .entry((&e.session_id, dims))
                .and_modify(|s| s.add(&one))
                .or_insert(one);
        }
    }
    // The dimension values come from the distinct rollup keys, not from every event.
    for (map, set) in [
        (&r.hourly, &mut r.dims_hourly),
        (&r.daily, &mut r.dims_daily),
    ] {
        for (t, dims) in map.keys() {
            for ((name, _), v) in DIM_NAMES.iter().zip(dims) {
                set.insert((*t, name, v));
            }
        }
    }
    r
}

/// A value of a row written in one multi-row statement.
#[derive(Clone, Copy)]
pub(super) enum V<'a> {
    I(i64),
    S(&'a str),
}

/// One multi-row write: `INSERT INTO table (cols) <rows> tail`.
pub(super) struct Rows<'a> {
    pub(super) table: &'static str,
    pub(super) cols: Vec<&'static str>,
    pub(super) rows: Vec<Vec<V<'a>>>,
    pub(super) tail: String,
}

/// The `SET` list of an upsert into `table` that adds each of `cols`: `c = table.c + excluded.c`.
pub(super) fn add_set(table: &str, cols: &[&str]) -> String {
    cols.iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `SET` list of an upsert into a session rollup (`usage_sessions`, `usage_session_dims`):
/// `first_ms` and every column of `also_least` by `least`, `last_ms` by `greatest` (the database's
/// names for them: `MIN`/`MAX` in SQLite, `LEAST`/`GREATEST` in Postgres), the sums added.
pub(super) fn session_set(table: &str, least: &str, greatest: &str, also_least: &[&str]) -> String {
    let by_least = also_least
        .iter()
        .chain(&["first_ms"])
        .map(|c| format!("{c} = {least}({table}.{c}, excluded.{c})"));
    by_least
        .chain([format!(
            "last_ms = {greatest}({table}.last_ms, excluded.last_ms)"
        )])
        .chain([add_set(table, &["requests", "cost_micros", "tokens"])])
        .collect::<Vec<_>>()
        .join(", ")
}

fn sums_rows<'a>(
    table: &'static str,
    time_col: &'static str,
    m: &BTreeMap<RollKey<'a>, [i64; 11]>,
) -> Rows<'a> {
    let set = add_set(table, &ROLL_SUMS);
    Rows {
        table,
        cols: std::iter::once(time_col)
            .chain(ROLL_DIMS)
            .chain(ROLL_SUMS)
            .collect(),
        rows: m
            .iter()
            .map(|((t, d), s)| {
                std::iter::once(V::I(*t))
                    .chain(d.iter().map(|v| V::S(v)))
                    .chain(s.iter().map(|v| V::I(*v)))
                    .collect()
            })
            .collect(),
        tail: format!(
            " ON CONFLICT ({time_col}, {}) DO UPDATE SET {set}",
            ROLL_DIMS.join(", ")
        ),
    }
}

/// The rollup upserts of one SQLite group, in a fixed table order (and key order within a table).
pub(super) fn rollup_rows<'a>(r: &'a Rollups<'a>) -> Vec<Rows<'a>> {
    let dims = |table: &'static str,
                time_col: &'static str,
                set: &'a BTreeSet<(i64, &'static str, &'a str)>| Rows {
        table,
        cols: vec![time_col, "dim", "value"],
        rows: set
            .iter()
            .map(|(t, d, v)| vec![V::I(*t), V::S(d), V::S(v)])
            .collect(),
        tail: " ON CONFLICT DO NOTHING".into(),
    };
    vec![
        sums_rows("usage_hourly", "hour_ms", &r.hourly),
        sums_rows("usage_daily", "day_ms", &r.daily),
        Rows {
            table: "usage_sessions",
            cols: vec![
                "session_id",
                "user_name",
                "harness",
                "first_ms",
                "last_ms",
                "requests",
                "cost_micros",
                "tokens",
            ],
            rows: r
                .sessions
                .iter()
                .map(|(id, s)| {
                    vec![
                        V::S(id),
                        V::S(s.user),
                        V::S(s.harness),
                        V::I(s.first),
                        V::I(s.last),
                        V::I(s.requests),
                        V::I(s.cost),
                        V::I(s.tokens),
                    ]
                })
                .collect(),
            tail: format!(
                " ON CONFLICT (session_id) DO UPDATE SET {}",
                session_set("usage_sessions", "MIN", "MAX", &["user_name", "harness"])
            ),
        },
        Rows {
            table: "usage_session_dims",
            cols: std::iter::once("session_id")
                .chain(ROLL_DIMS)
                .chain(["first_ms", "last_ms", "requests", "cost_micros", "tokens"])
                .collect(),
            rows: r
                .session_dims
                .iter()
                .map(|((id, d), s)| {
                    std::iter::once(V::S(id))
                        .chain(d.iter().map(|v| V::S(v)))
                        .chain([s.first, s.last, s.requests, s.cost, s.tokens].map(V::I))
                        .collect()
                })
                .collect(),
            tail: format!(
                " ON CONFLICT (session_id, {}) DO UPDATE SET {}",
                ROLL_DIMS.join(", "),
                session_set("usage_session_dims", "MIN", "MAX", &[])
            ),
        },
        dims("usage_dims_hourly", "hour_ms", &r.dims_hourly),
        dims("usage_dims_daily", "day_ms", &r.dims_daily),
    ]
}
