//! The `[selector]` section of a Retort configuration.
use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

/// `[selector]`, every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorConfig {
    /// `false` turns the service off under `retort up`.
    pub enabled: bool,
    /// gRPC listener of `retort.v1.Selector`.
    pub grpc_addr: SocketAddr,
    /// The model's state lives in `DATA_DIR/selector/`, and the SQLite file in `DATA_DIR` unless
    /// `database_url` says otherwise. Empty: `retort` puts the top-level `data_dir` here.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; default `sqlite://DATA_DIR/retort-selector.db`.
    pub database_url: Option<String>,
    /// Postgres only: the schema the selector's tables live in (default `retort_selector`).
    pub database_schema: Option<String>,
    /// The network is refitted after this many new runs (each run updates the posteriors at once).
    pub retrain_every: usize,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            enabled: true,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50055)),
            data_dir: PathBuf::new(),
            database_url: None,
            database_schema: None,
            retrain_every: 20,
        }
    }
}

impl SelectorConfig {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("retort-selector.db").display()
            )
        })
    }

    /// The persisted model state.
    pub fn state_path(&self) -> PathBuf {
        self.data_dir.join("selector").join("state.json")
    }
}
