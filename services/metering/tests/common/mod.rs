//! Shared test helpers: a SQLite store in a temp dir, a Postgres store in a schema of its own
//! (at RETORT_TEST_DATABASE_URL; dropped by `TestStore::cleanup`), and event builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;

use retort_metering::{Store, store::StoreOptions};
use retort_proto::v1 as pb;

pub const DEFAULT_PG: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";

pub fn pg_url() -> String {
    std::env::var("RETORT_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_PG.into())
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retort-metering-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct TestStore {
    pub store: Store,
    pub schema: Option<String>,
    pub dir: Option<PathBuf>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = temp_dir("db");
        let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
        let store = Store::connect(&StoreOptions::new(url))
            .await
            .expect("sqlite store");
        TestStore {
            store,
            schema: None,
            dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestStore {
        TestStore::postgres_with(|o| o).await
    }

    /// Postgres without the background compactor: the rollup deltas wait for a query or for
    /// `Store::compact`.
    pub async fn postgres_manual() -> TestStore {
        TestStore::postgres_with(|o| StoreOptions {
            pg_compact_every: None,
            ..o
        })
        .await
    }

    pub async fn postgres_with(f: impl FnOnce(StoreOptions) -> StoreOptions) -> TestStore {
        let schema = format!("metering_test_{}", uuid::Uuid::new_v4().simple());
        let opts = f(StoreOptions {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..StoreOptions::new(pg_url())
        });
        let store = Store::connect(&opts)
            .await
            .expect("postgres store (RETORT_TEST_DATABASE_URL; ./scripts/test starts PostgreSQL)");
        TestStore {
            store,
            schema: Some(schema),
            dir: None,
        }
    }

    pub async fn both() -> Vec<TestStore> {
        vec![TestStore::sqlite().await, TestStore::postgres().await]
    }

    /// SQLite and Postgres without the background compactor.
    pub async fn both_manual() -> Vec<TestStore> {
        vec![
            TestStore::sqlite().await,
            TestStore::postgres_manual().await,
        ]
    }

    pub async fn cleanup(self) {
        if let Some(s) = &self.schema {
            self.store.drop_schema(s).await.expect("drop schema");
        }
        self.store.close().await;
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub const PRICES: &str = r#"
[[prices]]
model = "big"
effective_from = "2025-01-01"
input = 3.0
output = 15.0
cache_read = 0.3
[[prices]]
model = "big"
effective_from = "2025-06-01"
input = 2.0
output = 10.0
[[prices]]
model = "small"
effective_from = "2025-01-01"
input = 0.1
output = 0.4
"#;

pub fn prices() -> Vec<retort_pricing::Price> {
    retort_metering::MeteringConfig::from_toml(PRICES)
        .unwrap()
        .1
}

/// Epoch ms of a UTC date plus hours.
pub fn at(day: &str, hour: i64) -> i64 {
    retort_time::parse_day(day).unwrap() * 86_400_000 + hour * 3_600_000
}

pub fn ev(
    id: &str,
    time_ms: i64,
    user: &str,
    model: &str,
    input: u64,
    output: u64,
) -> pb::UsageEvent {
    pb::UsageEvent {
        event_id: id.into(),
        time_ms,
        request_id: format!("req-{id}"),
        user: user.into(),
        team: "core".into(),
        discipline: "backend".into(),
        level: "senior".into(),
        session_id: format!("sess-{user}"),
        harness: "claude_code".into(),
        route: "frontier".into(),
        provider: "prov".into(),
        model: model.into(),
        outcome: "ok".into(),
        input_tokens: input,
        output_tokens: output,
        latency_ms: 1000,
        ..Default::default()
    }
}
