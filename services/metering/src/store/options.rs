//! How to open a [`Store`](super::Store): the database URL and the Postgres writers' settings.
use std::time::Duration;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Postgres only: the schema to create (if absent) and use; default `metering`
    /// ([`DEFAULT_SCHEMA`](super::DEFAULT_SCHEMA)), so metering shares a database with
    /// distill. Tests and benches isolate runs with one of their own.
    pub schema: Option<String>,
    pub max_connections: u32,
    /// Postgres only: write events with a binary `COPY` (the default; it probes for stored ids only
    /// after meeting one); `false` writes them with `INSERT ... SELECT FROM UNNEST ... ON CONFLICT
    /// DO NOTHING RETURNING` (the slower path, kept to compare against and as the fallback under
    /// races).
    pub pg_copy: bool,
    /// Postgres only: group commits written at once, each on its own connection.
    pub pg_writers: usize,
    /// Postgres only: how often the background compactor folds the rollup deltas in; `None`
    /// leaves them to the queries (which always compact first) and to [`Store::compact`](super::Store::compact).
    pub pg_compact_every: Option<Duration>,
}

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> Self {
        StoreOptions {
            url: url.into(),
            schema: None,
            max_connections: 8,
            pg_copy: true,
            pg_writers: PG_WRITERS,
            pg_compact_every: Some(super::deltas::COMPACT_EVERY),
        }
    }
}

/// Concurrent writers: SQLite has one (a thread); Postgres by default takes three groups at once
/// (they only append to unindexed delta tables and insert events, so they never wait on each
/// other's rows; a third overlaps the commits' WAL flushes: at 4 bench streams 86–94k → 100–106k
/// events/s once the compactor's CPU had shrunk, where it had been within noise before).
const PG_WRITERS: usize = 3;
