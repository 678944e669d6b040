//! `retort-sim`: a stand-in LLM provider for demos, tests and benchmarks. It speaks the OpenAI
//! (chat completions, responses, models) and Anthropic (messages, count_tokens) HTTP APIs over
//! real sockets, answers deterministically, and injects faults on demand: per model in the
//! configuration, or per request with the `x-sim-fault` header.
//!
//! ```no_run
//! # async fn demo() -> Result<(), retort_sim::SimError> {
//! let sim = retort_sim::spawn(retort_sim::SimConfig::demo()).await?;
//! let openai_base = format!("{}/v1", sim.base_url());
//! # let _ = openai_base;
//! assert_eq!(sim.attempts("sim-fast"), 0);
//! # Ok(()) }
//! ```

mod answer;
mod anthropic;
mod config;
mod faults;
mod openai;
mod responses;
mod server;
mod stream;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

pub use config::{AnswerMode, Fault, ModelBehavior, SimConfig, WrongAnswers};

/// Everything that can go wrong setting the simulator up (requests never fail this way: they get
/// an HTTP error in the API's own shape).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("model {model}: {reason}")]
    InvalidModel { model: String, reason: String },
    #[error("invalid fault {input:?}: {reason}")]
    InvalidFault { input: String, reason: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset {path}, line {line}: {reason}")]
    Dataset {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("binding the listener: {0}")]
    Bind(std::io::Error),
}

/// A running simulator (see [`spawn`]). Dropping it stops the server and every open connection.
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<server::Sim>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without `/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen for `model` (the name as requested), faulted ones included.
    pub fn attempts(&self, model: &str) -> u64 {
        self.sim.attempts(model)
    }

    /// The last request received for `model` (the name as requested):
    /// `{"path", "headers": {"anthropic-beta", "anthropic-version"}, "body"}` (the body as JSON).
    pub fn last_request(&self, model: &str) -> Option<serde_json::Value> {
        self.sim.last_request(model).map(|r| r.to_json())
    }

    /// Requests seen for all models.
    pub fn total_attempts(&self) -> u64 {
        self.sim.total_attempts()
    }

    /// Clears the counts and the state of `error_once`, `fail_every`, `unavailable_for` and scripts.
    pub fn reset(&self) {
        self.sim.reset();
    }

    /// Stops the server (the same as dropping the handle).
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Binds `127.0.0.1:0` and serves in a background tokio task until the handle is dropped.
pub async fn spawn(cfg: SimConfig) -> Result<SimHandle, SimError> {
    let sim = Arc::new(server::Sim::new(cfg)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(SimError::Bind)?;
    let addr = listener.local_addr().map_err(SimError::Bind)?;
    let task = tokio::spawn(server::serve_listener(listener, Arc::clone(&sim)));
    Ok(SimHandle { addr, sim, task })
}

/// Serves on an existing listener until the future is dropped (which also closes every
/// connection it opened).
pub async fn serve(listener: tokio::net::TcpListener, cfg: SimConfig) -> Result<(), SimError> {
    let sim = Arc::new(server::Sim::new(cfg)?);
    server::serve_listener(listener, sim).await;
    Ok(())
}
