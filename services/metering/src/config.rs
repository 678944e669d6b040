//! The `[metering]` section of a Retort configuration (the top-level `[[prices]]` entries are read
//! beside it by `retort`'s loader). Every field has a default, so an absent section runs metering on
//! a SQLite file. [`MeteringConfig::load`] applies the environment overrides.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use retort_server::auth::KeyRing;

use serde::Deserialize;

use crate::{error::MeteringError, store::StoreOptions};

/// `DATABASE_URL` overrides `[metering] database_url`.
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
/// Overrides `[metering] grpc_addr`.
pub const ENV_GRPC_ADDR: &str = "RETORT_METERING_GRPC_ADDR";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeteringConfig {
    /// `retort up` runs metering unless this is false.
    pub enabled: bool,
    /// gRPC listen address of `retort.v1.Metering` (default 127.0.0.1:50052).
    pub grpc_addr: SocketAddr,
    /// HTTP address of the dashboard when metering runs alone (`retort metering`); under
    /// `retort up` the dashboard is served on the gateway's HTTP listener instead.
    pub http_addr: SocketAddr,
    /// `sqlite://FILE?mode=rwc` or `postgres://...`; default: `retort-metering.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Where the default SQLite file and spool live. Empty (the default): `retort` puts the
    /// configuration's top-level `data_dir` here; otherwise the current directory.
    pub data_dir: PathBuf,
    /// Raw events older than this many days are deleted (hourly rollups are kept); 0 keeps them all.
    pub retention_days: u32,
    /// Database connections in the pool.
    pub max_connections: u32,
    /// The gateway's side: how it sends events here.
    pub client: ClientConfig,
    /// The keys every gRPC call and HTTP route (but health and metrics) must carry; `retort` sets it
    /// from `[[users]]` and `[[services]]`. Without it (metering embedded in a test or tool) no key
    /// is asked and every caller is trusted.
    #[serde(skip)]
    pub keys: Option<Arc<KeyRing>>,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        MeteringConfig {
            enabled: true,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50052)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8082)),
            database_url: None,
            data_dir: PathBuf::new(),
            retention_days: 90,
            max_connections: 8,
            client: ClientConfig::default(),
            keys: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Metering's gRPC endpoint (default: `http://` + `grpc_addr`).
    pub endpoint: Option<String>,
    /// Events held in memory before they spill straight to the spool. With `batch_interval_ms`
    /// this bounds what a SIGKILL of the gateway can lose.
    pub queue_size: usize,
    /// Events per batch sent to metering.
    pub batch_size: usize,
    /// A partial batch is sent after this long.
    pub batch_interval_ms: u64,
    /// Where undeliverable events are written (append-only JSONL); default `data_dir/metering-spool`.
    pub spool_dir: Option<PathBuf>,
    /// One send may take this long before the batch is spooled.
    pub send_timeout_ms: u64,
    /// While metering is away, how often the spool is replayed.
    pub retry_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: None,
            queue_size: 10_000,
            batch_size: 500,
            batch_interval_ms: 200,
            spool_dir: None,
            send_timeout_ms: 2_000,
            retry_ms: 1_000,
        }
    }
}

/// The client's resolved settings.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub endpoint: String,
    pub queue_size: usize,
    pub batch_size: usize,
    pub batch_interval: Duration,
    pub spool_dir: PathBuf,
    pub send_timeout: Duration,
    pub retry: Duration,
    /// The service key `Ingest` is called with (metering refuses ingest from any other identity).
    pub key: Option<String>,
}

/// A file that holds only `[metering]` and `[[prices]]` (metering embedded in tests and tools;
/// `retort` reads whole configuration files with its own loader and calls [`MeteringConfig::load`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeteringFile {
    #[serde(default)]
    metering: Option<MeteringConfig>,
    #[serde(default)]
    prices: Vec<retort_pricing::Price>,
}

impl MeteringConfig {
    /// Parses a file of `[metering]` and `[[prices]]` only (any other key is refused) and loads it.
    pub fn from_toml(
        text: &str,
    ) -> Result<(MeteringConfig, Vec<retort_pricing::Price>), MeteringError> {
        let file: MeteringFile = toml::from_str(text)?;
        Ok((file.metering.unwrap_or_default().load()?, file.prices))
    }

    /// The section as written, with the environment overrides applied (`DATABASE_URL`,
    /// `RETORT_METERING_GRPC_ADDR`).
    pub fn load(mut self) -> Result<Self, MeteringError> {
        if let Ok(url) = std::env::var(ENV_DATABASE_URL)
            && !url.is_empty()
        {
            self.database_url = Some(url);
        }
        if let Ok(a) = std::env::var(ENV_GRPC_ADDR)
            && !a.is_empty()
        {
            self.grpc_addr = a.parse().map_err(|source| MeteringError::EnvAddr {
                var: ENV_GRPC_ADDR,
                value: a.clone(),
                source,
            })?;
        }
        Ok(self)
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("retort-metering.db").display()
            )
        })
    }

    pub fn store_options(&self) -> Result<StoreOptions, MeteringError> {
        if self.max_connections == 0 {
            return Err(MeteringError::Config(
                "[metering] max_connections must be at least 1".into(),
            ));
        }
        Ok(StoreOptions {
            max_connections: self.max_connections,
            ..StoreOptions::new(self.database_url())
        })
    }

    pub fn client_settings(&self) -> Result<ClientSettings, MeteringError> {
        let c = &self.client;
        if c.queue_size == 0 || c.batch_size == 0 {
            return Err(MeteringError::Config(
                "[metering.client] queue_size and batch_size must be at least 1".into(),
            ));
        }
        Ok(ClientSettings {
            endpoint: c
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.grpc_addr)),
            queue_size: c.queue_size,
            batch_size: c.batch_size,
            batch_interval: Duration::from_millis(c.batch_interval_ms.max(1)),
            spool_dir: c
                .spool_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("metering-spool")),
            send_timeout: Duration::from_millis(c.send_timeout_ms.max(1)),
            retry: Duration::from_millis(c.retry_ms.max(1)),
            key: None,
        })
    }
}
