//! Metering and distill share one Postgres database: each keeps its tables and its migration
//! history in a schema of its own by default (`metering`, `distill`), so neither sees the other's
//! migrations (both in `public._sqlx_migrations`, the second to start refused with "migration N
//! was previously applied but is missing"). Each test makes a database of its own on the server of
//! RETORT_TEST_DATABASE_URL, connects both stores with their defaults in either order, twice, and
//! drops the database.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;

use retort_distill::{
    JobState, Stage,
    store::{JobRow, Store as DistillStore},
};
use retort_metering::store::{Col, Record, Store as MeteringStore, StoreOptions, Val};
use sqlx::{Connection, PgConnection};

const DEFAULT_PG: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";

fn server_url() -> String {
    std::env::var("RETORT_TEST_DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_PG.into())
}

/// A database of the test's own on the test server; dropped by [`Database::remove`].
struct Database {
    name: String,
    url: String,
}

impl Database {
    async fn create() -> Database {
        let name = format!("retort_shared_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server_url())
            .await
            .expect("Postgres (RETORT_TEST_DATABASE_URL; ./scripts/test starts PostgreSQL)");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        // The same server, user and options; the test's own database.
        let mut url: reqwest::Url = server_url().parse().unwrap();
        url.set_path(&format!("/{name}"));
        let url = url.to_string();
        Database { name, url }
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// The migrations recorded in `schema` (none when it has no `_sqlx_migrations`).
    async fn migrations(&self, schema: &str) -> Vec<i64> {
        let mut c = self.connect().await;
        let table: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("{schema}._sqlx_migrations"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        let versions = match table {
            Some(_) => sqlx::query_scalar(&format!(
                "SELECT version FROM {schema}._sqlx_migrations WHERE success ORDER BY version"
            ))
            .fetch_all(&mut c)
            .await
            .unwrap(),
            None => Vec::new(),
        };
        c.close().await.unwrap();
        versions
    }

    /// The schemas holding a table named `table`.
    async fn schema_of(&self, table: &str) -> Vec<String> {
        let mut c = self.connect().await;
        let s = sqlx::query_scalar(
            "SELECT table_schema::text FROM information_schema.tables WHERE table_name = $1 ORDER BY 1",
        )
        .bind(table)
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        s
    }

    async fn remove(self) {
        let mut admin = PgConnection::connect(&server_url()).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.unwrap();
    }
}

/// The versions of a service's Postgres migrations, from its migrations folder.
fn versions(service: &str) -> Vec<i64> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../services")
        .join(service)
        .join("migrations/postgres");
    let mut v: Vec<i64> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.split('_').next().unwrap().parse().unwrap()
        })
        .collect();
    v.sort_unstable();
    assert!(!v.is_empty(), "no migrations in {}", dir.display());
    v
}

async fn metering(db: &Database, schema: Option<&str>) -> MeteringStore {
    MeteringStore::connect(&StoreOptions {
        schema: schema.map(str::to_string),
        max_connections: 4,
        ..StoreOptions::new(db.url.clone())
    })
    .await
    .expect("metering store")
}

async fn distill(db: &Database) -> DistillStore {
    DistillStore::connect(&db.url, None)
        .await
        .expect("distill store")
}

fn record(id: &str) -> Record {
    Record {
        event_id: id.into(),
        ts_ms: 1_750_000_000_000,
        user: "alice".into(),
        team: "payments".into(),
        model: "m".into(),
        provider: "p".into(),
        outcome: "ok".into(),
        input: 10,
        output: 5,
        ..Record::default()
    }
}

fn job(id: &str) -> JobRow {
    JobRow {
        id: id.into(),
        teacher: "frontier".into(),
        target: "linear/small".into(),
        state: JobState::Queued,
        stage: Stage::Validate,
        error: String::new(),
        request_json: "{}".into(),
        progress_json: "{}".into(),
        eval_json: String::new(),
        report_json: String::new(),
        report_md: String::new(),
        deployed_model: String::new(),
        description: "shared database".into(),
        created_ms: 1,
        updated_ms: 1,
        lease_owner: String::new(),
        lease_expires_ms: 0,
    }
}

async fn event_ids(m: &MeteringStore) -> Vec<String> {
    m.select(
        "SELECT event_id FROM usage_events ORDER BY event_id",
        &[],
        &[Col::Text],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| match &r[0] {
        Val::S(s) => s.clone(),
        Val::I(i) => i.to_string(),
    })
    .collect()
}

/// Both stores on their defaults, `metering_first` or not, twice: each round writes a row to
/// each and reads every row written so far; each service's migrations are recorded in its own
/// schema only.
async fn both_in_one_database(metering_first: bool) {
    let db = Database::create().await;
    for round in 0..2 {
        let (m, d) = if metering_first {
            let m = metering(&db, None).await;
            (m, distill(&db).await)
        } else {
            let d = distill(&db).await;
            (metering(&db, None).await, d)
        };
        let id = format!("e{round}");
        assert_eq!(m.insert(vec![record(&id)]).await.unwrap().len(), 1);
        d.insert_job(&job(&format!("j{round}"))).await.unwrap();
        let expected: Vec<String> = (0..=round).map(|r| format!("e{r}")).collect();
        assert_eq!(event_ids(&m).await, expected, "round {round}");
        for r in 0..=round {
            let j = d.job(&format!("j{r}")).await.unwrap();
            assert_eq!(
                j.map(|j| j.description),
                Some("shared database".to_string()),
                "round {round}: job j{r}"
            );
        }
        m.close().await;
        d.close().await;
        assert_eq!(db.migrations("metering").await, versions("metering"));
        assert_eq!(db.migrations("distill").await, versions("distill"));
        assert_eq!(db.migrations("public").await, Vec::<i64>::new());
        assert_eq!(db.schema_of("usage_events").await, ["metering"]);
        assert_eq!(db.schema_of("distill_jobs").await, ["distill"]);
    }
    db.remove().await;
}

#[tokio::test]
async fn metering_then_distill_migrate_in_one_database_twice() {
    both_in_one_database(true).await;
}

#[tokio::test]
async fn distill_then_metering_migrate_in_one_database_twice() {
    both_in_one_database(false).await;
}

/// A database where metering was migrated into `public` before it had a schema of its own (the
/// old default): metering on its defaults keeps using those tables and their events, and distill
/// now migrates beside it (in `distill`) where it used to be refused for metering's migrations.
#[tokio::test]
async fn a_database_migrated_before_the_default_schemas_keeps_its_tables() {
    let db = Database::create().await;
    let old = metering(&db, Some("public")).await;
    old.insert(vec![record("old")]).await.unwrap();
    old.close().await;
    assert_eq!(db.migrations("public").await, versions("metering"));
    for round in 0..2 {
        let m = metering(&db, None).await;
        assert_eq!(event_ids(&m).await, ["old"], "round {round}");
        let d = distill(&db).await;
        d.insert_job(&job(&format!("j{round}"))).await.unwrap();
        assert!(d.job("j0").await.unwrap().is_some());
        m.close().await;
        d.close().await;
    }
    assert_eq!(db.schema_of("usage_events").await, ["public"]);
    assert_eq!(db.schema_of("distill_jobs").await, ["distill"]);
    assert_eq!(db.migrations("metering").await, Vec::<i64>::new());
    assert_eq!(db.migrations("distill").await, versions("distill"));
    db.remove().await;
}

/// A schema named in the configuration is used as named (and created), not the default.
#[tokio::test]
async fn a_configured_schema_is_used_instead_of_the_default() {
    let db = Database::create().await;
    let m = metering(&db, Some("usage")).await;
    m.insert(vec![record("x")]).await.unwrap();
    m.close().await;
    let d = DistillStore::connect(&db.url, Some("jobs")).await.unwrap();
    d.insert_job(&job("j")).await.unwrap();
    d.close().await;
    assert_eq!(db.schema_of("usage_events").await, ["usage"]);
    assert_eq!(db.schema_of("distill_jobs").await, ["jobs"]);
    assert_eq!(db.migrations("usage").await, versions("metering"));
    assert_eq!(db.migrations("jobs").await, versions("distill"));
    assert_eq!(db.migrations("metering").await, Vec::<i64>::new());
    db.remove().await;
}
