//! The `[distill]` section of a Retort configuration (`retort`'s loader reads the top-level
//! `[[prices]]` beside it; they price the teacher's tokens in reports). [`DistillConfig::load`] fills
//! in what the rest of the file implies and applies the environment overrides.
use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use crate::Error;

/// `[distill]`, every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// `false` turns the service off under `retort up`.
    pub enabled: bool,
    /// gRPC listener of `retort.v1.Distill`.
    pub grpc_addr: SocketAddr,
    /// Job folders (inputs, teacher labels, checkpoints, artefacts) live under `DATA_DIR/distill/`;
    /// the SQLite file too, unless `database_url` says otherwise. Empty (the default): `retort`
    /// puts the configuration's top-level `data_dir` here; otherwise the current directory.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default `sqlite://DATA_DIR/retort-distill.db`.
    pub database_url: Option<String>,
    /// Postgres only: a schema to create and use.
    pub database_schema: Option<String>,
    /// The gateway's HTTP base URL (teacher calls, latency of deployed students). Absent from the
    /// file: `http://` + `[server] http_addr` (see [`DistillConfig::load`]).
    #[serde(default)]
    pub gateway_url: String,
    /// The gateway's gRPC endpoint (`retort.v1.Students`). Absent from the file: `http://` +
    /// `[server] grpc_addr`.
    #[serde(default)]
    pub gateway_grpc: String,
    /// API key of a gateway user for teacher calls (env `RETORT_DISTILL_GATEWAY_KEY` overrides).
    pub gateway_key: String,
    /// API key of a gateway admin for `Deploy` (env `RETORT_DISTILL_ADMIN_KEY`); default `gateway_key`.
    pub admin_key: Option<String>,
    /// The selector's gRPC endpoint (`retort.v1.Selector`): `target: "auto"` asks it which student
    /// to train, and every finished job records its result with it. Empty (the default): no
    /// selector — auto-target is refused and results are not recorded (`retort up` sets it to the
    /// in-process selector).
    pub selector_addr: String,
    /// The key distill records runs with (a service identity or an admin); default `admin_key`.
    pub selector_key: Option<String>,
    /// The price of one CPU core for an hour, in USD: the student's cost is its measured compute
    /// time at this price.
    pub compute_usd_per_cpu_hour: f64,
    /// `max_tokens` of a teacher call (labels are short).
    pub teacher_max_tokens: u32,
    /// `max_tokens` of a teacher call in a generation job (answers of up to ~64 tokens).
    pub generation_max_tokens: u32,
    /// Attempts per teacher call (retries on connection errors, 429 and 5xx).
    pub teacher_attempts: u32,
    /// Timeout of one teacher call, in ms.
    pub teacher_timeout_ms: u64,
    /// Jobs training at once (training uses every core).
    pub max_parallel_training: usize,
    /// Requests sent through the gateway to time a freshly deployed student (0 = none).
    pub gateway_latency_samples: usize,
    /// A job is run by the one distill process holding its lease, renewed every second while it
    /// runs (with its progress, which a `Watch` served by another process reads); a process that
    /// dies lets it lapse after this many seconds and another process sharing the database (and
    /// `data_dir`) takes the job over at its last finished stage.
    pub lease_secs: u64,
    /// This process's name in job leases (e.g. the pod name). A process restarted under the same
    /// name takes its unfinished jobs back at once; by default each start is a new name, so a
    /// restarted process resumes its jobs once their leases lapse (`lease_secs`).
    pub instance: Option<String>,
    /// The folder server paths in `Submit` must lie under (admins only; absent: no server paths).
    pub data_root: Option<PathBuf>,
    /// The largest data file read from a server path, in bytes. Default 256 MiB.
    pub max_path_bytes: u64,
    /// Caps for callers who are not admins: inline data per submit (bytes, default 16 MiB),
    /// teacher calls in flight per job (default 8), unfinished jobs at once (default 2).
    pub user_max_inline_bytes: u64,
    pub user_max_teacher_concurrency: u32,
    pub user_max_jobs: u32,
    /// The keys every call must carry (`retort` sets it from `[[users]]` and `[[services]]`);
    /// without it (distill embedded in a test or tool) every caller is trusted.
    #[serde(skip)]
    pub keys: Option<std::sync::Arc<retort_server::auth::KeyRing>>,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            enabled: true,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50054)),
            data_dir: PathBuf::new(),
            database_url: None,
            database_schema: None,
            gateway_url: "http://127.0.0.1:8080".into(),
            gateway_grpc: "http://127.0.0.1:50051".into(),
            gateway_key: String::new(),
            admin_key: None,
            selector_addr: String::new(),
            selector_key: None,
            compute_usd_per_cpu_hour: 0.05,
            teacher_max_tokens: 32,
            generation_max_tokens: 128,
            teacher_attempts: 3,
            teacher_timeout_ms: 60_000,
            max_parallel_training: 1,
            gateway_latency_samples: 200,
            lease_secs: 30,
            instance: None,
            data_root: None,
            max_path_bytes: 256 << 20,
            user_max_inline_bytes: 16 << 20,
            user_max_teacher_concurrency: 8,
            user_max_jobs: 2,
            keys: None,
        }
    }
}

impl DistillConfig {
    /// The section as written, completed and checked: an empty `gateway_url` / `gateway_grpc` (absent
    /// from the file) becomes `http://` + the gateway's address given here (the `[server]` addresses
    /// of the same file), and the environment overrides the keys (`RETORT_DISTILL_GATEWAY_KEY`,
    /// `RETORT_DISTILL_ADMIN_KEY`).
    pub fn load(
        mut self,
        gateway_http: SocketAddr,
        gateway_grpc: SocketAddr,
    ) -> Result<Self, Error> {
        if self.gateway_url.is_empty() {
            self.gateway_url = format!("http://{gateway_http}");
        }
        if self.gateway_grpc.is_empty() {
            self.gateway_grpc = format!("http://{gateway_grpc}");
        }
        self.with_env()
    }

    fn with_env(mut self) -> Result<Self, Error> {
        if let Ok(k) = std::env::var("RETORT_DISTILL_GATEWAY_KEY")
            && !k.is_empty()
        {
            self.gateway_key = k;
        }
        if let Ok(k) = std::env::var("RETORT_DISTILL_ADMIN_KEY")
            && !k.is_empty()
        {
            self.admin_key = Some(k);
        }
        // As metering reads it: one database for the mesh's services, each in its own schema.
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            self.database_url = Some(url);
        }
        // A pod's name (Kubernetes' downward API) as the lease holder's name.
        if let Ok(name) = std::env::var("RETORT_DISTILL_INSTANCE")
            && !name.is_empty()
        {
            self.instance = Some(name);
        }
        if !(self.compute_usd_per_cpu_hour >= 0.0 && self.compute_usd_per_cpu_hour.is_finite()) {
            return Err(Error::Config(
                "compute_usd_per_cpu_hour must be a non-negative number".into(),
            ));
        }
        if self.teacher_attempts == 0 || self.max_parallel_training == 0 || self.lease_secs < 2 {
            return Err(Error::Config(
                "teacher_attempts and max_parallel_training must be at least 1, lease_secs at least 2"
                    .into(),
            ));
        }
        Ok(self)
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("retort-distill.db").display()
            )
        })
    }

    /// The admin key for `DeployStudent`.
    pub fn admin_key(&self) -> &str {
        self.admin_key.as_deref().unwrap_or(&self.gateway_key)
    }

    /// The key for the selector's `Record` and `Recommend`.
    pub fn selector_key(&self) -> &str {
        self.selector_key
            .as_deref()
            .unwrap_or_else(|| self.admin_key())
    }

    /// Where job folders live.
    pub fn jobs_dir(&self) -> PathBuf {
        self.data_dir.join("distill")
    }
}
