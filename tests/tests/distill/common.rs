//! The distill end-to-end set-up: the simulator with a dataset-mode teacher, the gateway in front of
//! it (with a `local` provider for deployed students), and the distill service on SQLite or
//! Postgres. The data are the distill crate's fixtures, read where they live.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::{path::PathBuf, time::Duration};

use retort_distill::{DistillConfig, Running, store::Store};
use retort_proto::v1::{self as pb, distill_client::DistillClient};
use tonic::transport::Channel;

pub const DEFAULT_PG: &str = "postgres://postgres:postgres@127.0.0.1:5432/test";
pub const TEMPLATE: &str = "Is this email spam or ham? Answer with one word.\n\n{input}";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../services/distill/fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retort-distill-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Where a test's jobs are stored.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    pub fn sqlite() -> Db {
        Db::Sqlite(temp_dir("db").join("distill.db"))
    }

    pub fn postgres() -> Db {
        Db::Postgres(format!("distill_test_{}", uuid::Uuid::new_v4().simple()))
    }

    pub fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite://{}?mode=rwc", p.display()),
            Db::Postgres(_) => std::env::var("RETORT_TEST_DATABASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| DEFAULT_PG.into()),
        }
    }

    pub fn schema(&self) -> Option<&str> {
        match self {
            Db::Sqlite(_) => None,
            Db::Postgres(s) => Some(s),
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url(), self.schema())
            .await
            .expect("database (RETORT_TEST_DATABASE_URL; ./scripts/test starts PostgreSQL)")
    }
}

/// The teacher's behaviour in the simulator.
pub struct TeacherSpec {
    pub error_rate: f64,
    /// Training inputs left out of the answer key: the teacher answers "unknown" to them.
    pub unknown: usize,
    pub latency_ms: u64,
    /// The first request fails with a 500 (distill retries it).
    pub error_once: bool,
    /// The answer key (a fixture of `{"prompt", "answer"}` lines).
    pub key: &'static str,
    /// Wrong answers are the right one with one character changed (generation), not another
    /// answer of the key.
    pub typos: bool,
}

impl Default for TeacherSpec {
    fn default() -> Self {
        TeacherSpec {
            error_rate: 0.0,
            unknown: 0,
            latency_ms: 0,
            error_once: false,
            key: "spam_teacher.jsonl",
            typos: false,
        }
    }
}

pub struct World {
    pub sim: retort_sim::SimHandle,
    pub gateway: retort_gateway::Running,
    pub dir: PathBuf,
    pub db: Db,
    pub cfg: DistillConfig,
}

pub const KEY: &str = "sk-distill-test";

impl World {
    pub async fn new(db: Db, teacher: TeacherSpec) -> World {
        let dir = temp_dir("world");
        // The answer key: every mail and its label, less the first `unknown` training mails.
        let text = String::from_utf8(fixture_bytes(teacher.key)).unwrap();
        let key: Vec<&str> = text.lines().collect();
        let answers = dir.join("teacher.jsonl");
        std::fs::write(&answers, key[teacher.unknown..].join("\n")).unwrap();
        let sim_cfg = format!(
            r#"
            strict_models = false
            [models.sim-teacher]
            mode = "dataset"
            dataset = "{}"
            error_rate = {}
            wrong_answers = "{}"
            seed = 7
            latency_ms = {}
            {}
            "#,
            answers.display(),
            teacher.error_rate,
            if teacher.typos { "typo" } else { "other" },
            teacher.latency_ms,
            if teacher.error_once {
                "fault = \"error_once\""
            } else {
                ""
            }
        );
        let sim = retort_sim::spawn(retort_sim::SimConfig::from_toml(&sim_cfg).unwrap())
            .await
            .unwrap();
        let gw_cfg = retort_gateway::config::Config::from_toml(&format!(
            r#"
            [server]
            http_addr = "127.0.0.1:0"
            grpc_addr = "127.0.0.1:0"
            [[users]]
            name = "distiller"
            team = "ml"
            discipline = "ml"
            level = "senior"
            key = "{KEY}"
            admin = true
            [providers.sim]
            kind = "openai"
            base_url = "{}/v1"
            [providers.students]
            kind = "local"
            dir = "{}"
            [models.teacher]
            provider = "sim"
            model = "sim-teacher"
            [aliases.spam-check]
            targets = ["teacher"]
            [routing]
            max_retries_per_target = 0
            [circuit]
            failure_threshold = 1000
            "#,
            sim.base_url(),
            dir.join("students").display()
        ))
        .unwrap();
        let gateway = retort_gateway::start(gw_cfg).await.unwrap();
        let cfg = DistillConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.join("data"),
            gateway_url: format!("http://{}", gateway.http_addr),
            gateway_grpc: format!("http://{}", gateway.grpc_addr),
            gateway_key: KEY.into(),
            gateway_latency_samples: 50,
            // Short leases: a killed service's jobs are taken over within ~3 s.
            lease_secs: 2,
            ..DistillConfig::default()
        };
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        World {
            sim,
            gateway,
            dir,
            db,
            cfg,
        }
    }

    pub fn prices() -> Vec<retort_pricing::Price> {
        vec![retort_pricing::Price {
            model: "sim-teacher".into(),
            effective_from: "2024-01-01".into(),
            input: 3.0,
            output: 15.0,
            reasoning: None,
            cache_read: None,
            cache_write: None,
            tier: None,
        }]
    }

    /// Starts (or restarts) the distill service on the world's database and data folder.
    pub async fn distill(&self) -> Running {
        retort_distill::grpc::start_with_store(
            self.cfg.clone(),
            Self::prices(),
            self.db.store().await,
        )
        .await
        .unwrap()
    }
}

pub async fn client(r: &Running) -> DistillClient<Channel> {
    DistillClient::connect(format!("http://{}", r.addr))
        .await
        .unwrap()
}

pub fn inline(bytes: Vec<u8>) -> Option<pb::DataSource> {
    Some(pb::DataSource {
        source: Some(pb::data_source::Source::Inline(bytes)),
    })
}

/// The spam task, labels given, linear/tiny.
pub fn spam_request() -> pb::SubmitRequest {
    pb::SubmitRequest {
        teacher: "teacher".into(),
        train: inline(fixture_bytes("spam_train.jsonl")),
        evals: inline(fixture_bytes("spam_evals.jsonl")),
        prompt_template: TEMPLATE.into(),
        target: "linear/tiny".into(),
        labels: vec!["spam".into(), "ham".into()],
        limits: Some(pb::ResourceLimits {
            max_teacher_concurrency: 4,
            max_epochs: 8,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub const DATE_TEMPLATE: &str = "Normalise the date to YYYY-MM-DD: {input}";

/// The date normalisation task (generation), seq2seq/tiny, a few epochs.
pub fn dates_request() -> pb::SubmitRequest {
    pb::SubmitRequest {
        task: "generation".into(),
        teacher: "teacher".into(),
        train: inline(fixture_bytes("dates_train.jsonl")),
        evals: inline(fixture_bytes("dates_evals.jsonl")),
        prompt_template: DATE_TEMPLATE.into(),
        target: "seq2seq/tiny".into(),
        limits: Some(pb::ResourceLimits {
            max_teacher_concurrency: 4,
            max_epochs: 3,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Watches a job to its end; returns every progress message seen.
pub async fn watch_to_end(c: &mut DistillClient<Channel>, id: &str) -> Vec<pb::JobProgress> {
    let mut s = c
        .watch(pb::WatchJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), s.message()).await {
            Ok(Ok(Some(p))) => {
                let done = p.done;
                seen.push(p);
                if done {
                    break;
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => panic!("watch failed: {e}"),
            Err(_) => panic!("job {id} did not end within 120 s"),
        }
    }
    seen
}

pub async fn get(c: &mut DistillClient<Channel>, id: &str) -> pb::Job {
    c.get(pb::GetJobRequest { job_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// Distinct rendered prompts of the spam task (what the teacher is asked).
pub fn distinct_prompts() -> u64 {
    let mut all = std::collections::HashSet::new();
    for f in ["spam_train.jsonl", "spam_evals.jsonl"] {
        for l in std::str::from_utf8(&fixture_bytes(f)).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            all.insert(v["text"].as_str().unwrap().to_owned());
        }
    }
    all.len() as u64
}
