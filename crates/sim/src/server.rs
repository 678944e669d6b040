//! Shared state, routes, and the accept loop (hyper connections served by hand, so that a handler
//! can make the connection close without any response).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::json;
use tokio::{net::TcpListener, task::JoinSet};
use tower::ServiceExt;

use crate::{
    SimConfig, SimError,
    answer::Model,
    faults::{Api, ApiError},
};

/// The per-model-name state behind attempt counts and the stateful faults.
#[derive(Debug)]
pub(crate) struct ModelState {
    attempts: AtomicU64,
    /// When the first request for this name arrived (for `unavailable_for`).
    pub first_seen: Instant,
    /// `error_once` has fired.
    pub error_once_fired: AtomicBool,
    /// Requests that met a `fail_every` fault (which of them fails is counted here).
    pub fail_every_seen: AtomicU64,
    /// Position in the script.
    pub script_cursor: AtomicU64,
}

/// The simulator: configuration compiled for serving, and counters.
#[derive(Debug)]
pub(crate) struct Sim {
    api_key: Option<String>,
    strict: bool,
    default: Arc<Model>,
    models: HashMap<String, Arc<Model>>,
    /// Configured model names, sorted (for `/v1/models`).
    names: Vec<String>,
    runtime: RwLock<HashMap<String, Arc<ModelState>>>,
    total: AtomicU64,
    created: u64,
    /// The last request received per model name, as received (for fidelity tests).
    last: std::sync::Mutex<HashMap<String, Received>>,
    /// Prompt-cache prefixes written so far (hashes): the first request with a `cache_control`
    /// prefix writes it, later ones read it.
    cached_prefixes: std::sync::Mutex<std::collections::HashSet<u64>>,
}

/// One request as the simulator received it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub path: &'static str,
    /// `anthropic-beta` and `anthropic-version`, when sent.
    pub headers: BTreeMap<String, String>,
    pub body: bytes::Bytes,
}

impl Received {
    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "path": self.path,
            "headers": self.headers,
            "body": serde_json::from_slice::<serde_json::Value>(&self.body)
                .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(&self.body).into_owned())),
        })
    }
}

/// A response extension asking the connection to close without writing this response.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection reset by the simulator (fault `reset`)")]
struct ResetError;

impl Sim {
    pub(crate) fn new(cfg: SimConfig) -> Result<Sim, SimError> {
        cfg.validate()?;
        let default = Arc::new(Model::compile(cfg.default)?);
        let mut models = HashMap::new();
        let mut names = Vec::new();
        for (name, b) in cfg.models {
            models.insert(name.clone(), Arc::new(Model::compile(b)?));
            names.push(name);
        }
        Ok(Sim {
            api_key: cfg.api_key,
            strict: cfg.strict_models,
            default,
            models,
            names,
            runtime: RwLock::new(HashMap::new()),
            total: AtomicU64::new(0),
            created: unix_now(),
            last: std::sync::Mutex::new(HashMap::new()),
            cached_prefixes: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Keeps `body` as the last request received for `model`.
    pub(crate) fn remember(
        &self,
        model: &str,
        path: &'static str,
        headers: &HeaderMap,
        body: &bytes::Bytes,
    ) {
        let kept: BTreeMap<String, String> = ["anthropic-beta", "anthropic-version"]
            .iter()
            .filter_map(|h| {
                let v = headers.get(*h)?.to_str().ok()?;
                Some(((*h).to_string(), v.to_string()))
            })
            .collect();
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                model.to_owned(),
                Received {
                    path,
                    headers: kept,
                    body: body.clone(),
                },
            );
    }

    /// The last request received for `model`.
    pub(crate) fn last_request(&self, model: &str) -> Option<Received> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned()
    }

    /// Whether the cache prefix `key` was written before (and records it as written).
    pub(crate) fn cache_hit(&self, key: u64) -> bool {
        !self
            .cached_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key)
    }

    /// Counts one attempt for `model` and returns its state.
    pub(crate) fn record(&self, model: &str) -> Arc<ModelState> {
        self.total.fetch_add(1, Ordering::Relaxed);
        let found = self
            .runtime
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(model)
            .cloned();
        let state = match found {
            Some(s) => s,
            None => {
                let mut map = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
                Arc::clone(map.entry(model.to_owned()).or_insert_with(|| {
                    Arc::new(ModelState {
                        attempts: AtomicU64::new(0),
                        first_seen: Instant::now(),
                        error_once_fired: AtomicBool::new(false),
                        fail_every_seen: AtomicU64::new(0),
                        script_cursor: AtomicU64::new(0),
                    })
                }))
            }
        };
        state.attempts.fetch_add(1, Ordering::Relaxed);
        state
    }

    pub(crate) fn attempts(&self, model: &str) -> u64 {
        let map = self.runtime.read().unwrap_or_else(PoisonError::into_inner);
        map.get(model)
            .map_or(0, |s| s.attempts.load(Ordering::Relaxed))
    }

    pub(crate) fn total_attempts(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        let mut map = self.runtime.write().unwrap_or_else(PoisonError::into_inner);
        map.clear();
        self.total.store(0, Ordering::Relaxed);
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.cached_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The behaviour for a requested model name; `None` when unknown and `strict_models` is set.
    pub(crate) fn model(&self, name: &str) -> Option<Arc<Model>> {
        match self.models.get(name) {
            Some(m) => Some(Arc::clone(m)),
            None if self.strict => None,
            None => Some(Arc::clone(&self.default)),
        }
    }

    /// Whether the request carries the configured key (always true without one).
    pub(crate) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(key) = &self.api_key else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| v.trim() == key);
        bearer
            || headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == key)
    }

    fn stats(&self) -> serde_json::Value {
        let map = self.runtime.read().unwrap_or_else(PoisonError::into_inner);
        let attempts: BTreeMap<&str, u64> = map
            .iter()
            .map(|(k, v)| (k.as_str(), v.attempts.load(Ordering::Relaxed)))
            .collect();
        json!({ "attempts": attempts, "total": self.total_attempts() })
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh id: `prefix` followed by 24 hex digits, unique within the process.
pub(crate) fn new_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        crate::answer::mix(nanos as u64 ^ u64::from(std::process::id()))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = crate::answer::mix(salt ^ n);
    format!("{prefix}{a:016x}{:08x}", crate::answer::mix(a) as u32)
}

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/responses", post(crate::responses::responses))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/messages", post(crate::anthropic::messages))
        .route(
            "/v1/messages/count_tokens",
            post(crate::anthropic::count_tokens),
        )
        .route("/sim/stats", get(stats))
        .route("/sim/last/{model}", get(last_request))
        .route("/sim/reset", post(reset))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found_route)
        .layer(DefaultBodyLimit::max(64 << 20))
        .with_state(sim)
}

async fn stats(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    Json(sim.stats())
}

/// The last request received for a model: `{"path", "headers", "body"}`, 404 when none (the
/// simulator's key, when it has one, is required: bodies may hold what a caller sent).
async fn last_request(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Response {
    if !sim.authorized(&headers) {
        return ApiError::unauthorized().render(api_of(&headers));
    }
    match sim.last_request(&model) {
        Some(r) => Json(r.to_json()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no request received for {model}")})),
        )
            .into_response(),
    }
}

async fn reset(State(sim): State<Arc<Sim>>) -> Json<serde_json::Value> {
    sim.reset();
    Json(json!({ "ok": true }))
}

async fn not_found_route(uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found_error",
        format!("Unknown path {}", uri.path()),
    )
    .render(Api::OpenAi)
}

/// Anthropic's SDK sends `anthropic-version`; the model list then takes Anthropic's shape.
fn api_of(headers: &HeaderMap) -> Api {
    if headers.contains_key("anthropic-version") {
        Api::Anthropic
    } else {
        Api::OpenAi
    }
}

fn model_json(sim: &Sim, api: Api, id: &str) -> serde_json::Value {
    match api {
        Api::OpenAi => {
            json!({ "id": id, "object": "model", "created": sim.created, "owned_by": "retort-sim" })
        }
        Api::Anthropic => json!({
            "type": "model",
            "id": id,
            "display_name": id,
            "created_at": "2025-01-01T00:00:00Z",
        }),
    }
}

async fn list_models(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let api = api_of(&headers);
    if !sim.authorized(&headers) {
        return ApiError::unauthorized().render(api);
    }
    let data: Vec<_> = sim.names.iter().map(|n| model_json(&sim, api, n)).collect();
    let body = match api {
        Api::OpenAi => json!({ "object": "list", "data": data }),
        Api::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": sim.names.first(),
            "last_id": sim.names.last(),
        }),
    };
    Json(body).into_response()
}

async fn get_model(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let api = api_of(&headers);
    if !sim.authorized(&headers) {
        return ApiError::unauthorized().render(api);
    }
    match sim.model(&id) {
        Some(_) => Json(model_json(&sim, api, &id)).into_response(),
        None => ApiError::model_not_found(&id).render(api),
    }
}

/// Accepts connections until the future is dropped; dropping it also ends every connection.
pub(crate) async fn serve_listener(listener: TcpListener, sim: Arc<Sim>) {
    let app = router(sim);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "retort-sim listening");
    }
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        conns.spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        let resp = match app.oneshot(req).await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        };
                        if resp.extensions().get::<ResetConnection>().is_some() {
                            return Err(ResetError);
                        }
                        Ok::<_, ResetError>(resp)
                    }
                });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
