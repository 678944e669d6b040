//! Configuration: one TOML file, loaded in two steps — raw serde structs that reject unknown fields,
//! then [`Config::load`] into runtime types with the cross-field checks. Secrets (API keys) come from
//! the environment or files, never from logs: [`Secret`] prints as `***`.
//!
//! Environment overrides (all optional):
//! - `RETORT_HTTP_ADDR`, `RETORT_GRPC_ADDR`: listen addresses.
//! - `RETORT_PROVIDER_<NAME>_BASE_URL`, `RETORT_PROVIDER_<NAME>_API_KEY`: per provider, NAME upper-cased
//!   with `-` as `_`.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::types::Identity;
use retort_hooks::Role;

pub const ENV_HTTP_ADDR: &str = "RETORT_HTTP_ADDR";
pub const ENV_GRPC_ADDR: &str = "RETORT_GRPC_ADDR";
const ENV_PROVIDER_PREFIX: &str = "RETORT_PROVIDER_";
/// Deployed students are served as `distilled/NAME`.
pub const STUDENT_PREFIX: &str = "distilled/";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// A secret value; `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

// ---------------------------------------------------------------------------------------------
// Raw file format.

/// The gateway's part of a configuration file. `retort` reads the whole file into its own typed
/// struct (with the other services' sections) and hands these sections over.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: listen addresses and request limits.
    #[serde(default)]
    pub server: RawServer,
    /// `[[users]]`: API keys and who they stand for.
    #[serde(default)]
    pub users: Vec<RawUser>,
    /// `[[services]]`: the keys services call each other with (service identities).
    #[serde(default)]
    pub services: Vec<RawService>,
    /// `[providers.NAME]`: upstream APIs.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// `[models.NAME]`: one upstream model of one provider each.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// `[aliases.NAME]`: names clients call, with targets tried in order.
    #[serde(default)]
    pub aliases: BTreeMap<String, RawAlias>,
    /// `[routing]`: timeouts and retries (aliases may override them).
    #[serde(default)]
    pub routing: RawRouting,
    /// `[circuit]`: the per-target circuit breakers (`[breaker]` before; that name is now the
    /// session and budget service's).
    #[serde(default)]
    pub circuit: RawCircuit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// HTTP ingress (OpenAI, Anthropic, /metrics, health). Default 127.0.0.1:8080.
    pub http_addr: Option<SocketAddr>,
    /// gRPC ingress. Default 127.0.0.1:50051.
    pub grpc_addr: Option<SocketAddr>,
    /// Largest request body accepted, in bytes. Default 10 MiB.
    pub max_body_bytes: Option<usize>,
    /// When false, requests without a key are served as the `anonymous` user. Default true.
    pub require_auth: Option<bool>,
}

/// An API key and the user it stands for. Exactly one of `key`, `key_env`, `key_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub discipline: String,
    #[serde(default)]
    pub level: String,
    pub key: Option<String>,
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
    /// What the key may do beyond the user's own work: `user` (default), `team_admin` (their
    /// team's usage, sessions and jobs), `admin` (everything).
    pub role: Option<UserRole>,
    /// The same as `role = "admin"`. Default false.
    #[serde(default)]
    pub admin: bool,
}

/// The roles a user key may carry (service identities are `[[services]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    User,
    TeamAdmin,
    Admin,
}

/// A service identity: the key one service calls another with (gateway → metering ingest, gateway
/// ↔ breaker leases and settlements, distill → gateway). Exactly one of `key`, `key_env`, `key_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub key: Option<String>,
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// Every key of a configuration and whom it stands for.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// API key → user (service identities included, by their name).
    pub users: HashMap<String, Identity>,
    /// API key → role.
    pub roles: HashMap<String, Role>,
    /// The first configured service key, which this process's own clients call with.
    pub service_key: Option<String>,
}

impl Identities {
    /// Resolves the keys of `[[users]]` and `[[services]]` (from the file, the environment or a
    /// file); keys are unique and non-empty.
    pub fn load(
        users: &[RawUser],
        services: &[RawService],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Identities, ConfigError> {
        let mut ids = Identities::default();
        let mut add = |key: Secret, id: Identity, role: Role| -> Result<(), ConfigError> {
            let key = key.expose().to_owned();
            if key.is_empty() {
                return Err(invalid(format!("{}: the key is empty", id.user)));
            }
            if ids.users.insert(key.clone(), id.clone()).is_some() {
                return Err(invalid(format!(
                    "{}: the same API key is given to two users or services",
                    id.user
                )));
            }
            ids.roles.insert(key, role);
            Ok(())
        };
        for u in users {
            let key = secret_from(
                &format!("user {}", u.name),
                u.key.as_deref(),
                u.key_env.as_deref(),
                u.key_file.as_deref(),
                env,
            )?
            .ok_or_else(|| {
                invalid(format!(
                    "user {}: one of key, key_env, key_file is required",
                    u.name
                ))
            })?;
            let role = match (u.admin, u.role) {
                (true, None | Some(UserRole::Admin)) | (false, Some(UserRole::Admin)) => {
                    Role::Admin
                }
                (true, Some(r)) => {
                    return Err(invalid(format!(
                        "user {}: admin = true contradicts role = {r:?}",
                        u.name
                    )));
                }
                (false, Some(UserRole::TeamAdmin)) => Role::TeamAdmin,
                (false, None | Some(UserRole::User)) => Role::User,
            };
            let id = Identity {
                user: u.name.clone(),
                team: u.team.clone(),
                discipline: u.discipline.clone(),
                level: u.level.clone(),
            };
            add(key, id, role)?;
        }
        let mut first = None;
        for s in services {
            let key = secret_from(
                &format!("service {}", s.name),
                s.key.as_deref(),
                s.key_env.as_deref(),
                s.key_file.as_deref(),
                env,
            )?
            .ok_or_else(|| {
                invalid(format!(
                    "service {}: one of key, key_env, key_file is required",
                    s.name
                ))
            })?;
            if first.is_none() {
                first = Some(key.expose().to_owned());
            }
            let id = Identity {
                user: s.name.clone(),
                ..Identity::default()
            };
            add(key, id, Role::Service)?;
        }
        ids.service_key = first;
        Ok(ids)
    }

    /// Adds a service identity (a key made for this process when none is configured).
    pub fn add_service(&mut self, name: &str, key: &str) {
        self.users.insert(
            key.to_owned(),
            Identity {
                user: name.to_owned(),
                ..Identity::default()
            },
        );
        self.roles.insert(key.to_owned(), Role::Service);
        if self.service_key.is_none() {
            self.service_key = Some(key.to_owned());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions, and every server that speaks it (vLLM, Ollama, llama.cpp, the simulator).
    Openai,
    /// Anthropic Messages (and the simulator).
    Anthropic,
    /// Distilled students served in-process (`distilled/NAME`), deployed at runtime through
    /// `retort.v1.Students`. At most one per gateway; needs no `base_url`.
    Local,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: ProviderKind,
    /// Base URL including the version path, e.g. `https://api.openai.com/v1`. Required for every kind
    /// but `local`.
    pub base_url: Option<String>,
    /// `local` only: the folder where deployed students are recorded (a registry and a copy of each
    /// artefact), so a restarted gateway serves them again. Without it deployments last until exit.
    pub dir: Option<PathBuf>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// Speak HTTP/2 to this upstream (prior knowledge for http://, ALPN for https://).
    #[serde(default)]
    pub http2: bool,
    pub connect_timeout_ms: Option<u64>,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A model: one upstream model of one provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub provider: String,
    /// The upstream model id; defaults to the model's key.
    pub model: Option<String>,
    /// Context window in tokens. Default 128000.
    pub context_window: Option<u32>,
    /// Whether the model accepts a trailing assistant message to continue (prefill). Default: true for
    /// Anthropic providers, false otherwise.
    pub prefill: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlias {
    /// Model names, in the order they are tried.
    pub targets: Vec<String>,
    #[serde(flatten)]
    pub routing: RawRouting,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub first_token_timeout_ms: Option<u64>,
    pub stall_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    pub max_retries_per_target: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    /// A `Retry-After` longer than this moves to the next target instead of waiting.
    pub max_retry_after_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    /// Consecutive failures that open a target's circuit breaker. Default 5.
    pub failure_threshold: Option<u32>,
    /// How long an open breaker stays open before one probe is let through. Default 30 s.
    pub open_ms: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Runtime configuration.

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    /// API key → user, and each key's role (`[[users]]` and `[[services]]`).
    pub identities: Identities,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    pub aliases: BTreeMap<String, AliasConfig>,
    pub routing: RoutingConfig,
    pub circuit: CircuitConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub max_body_bytes: usize,
    pub require_auth: bool,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Secret,
    pub http2: bool,
    pub connect_timeout: Duration,
    pub headers: Vec<(String, String)>,
    /// `local` only: where deployed students are recorded.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub name: String,
    pub provider: String,
    pub upstream_model: String,
    pub context_window: u32,
    pub prefill: bool,
}

#[derive(Debug, Clone)]
pub struct AliasConfig {
    pub name: String,
    pub targets: Vec<String>,
    pub routing: RoutingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingConfig {
    pub first_token_timeout: Duration,
    pub stall_timeout: Duration,
    pub total_timeout: Duration,
    pub max_retries_per_target: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub max_retry_after: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            first_token_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            max_retries_per_target: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl RoutingConfig {
    fn overlay(self, raw: &RawRouting) -> Self {
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        RoutingConfig {
            first_token_timeout: ms(raw.first_token_timeout_ms, self.first_token_timeout),
            stall_timeout: ms(raw.stall_timeout_ms, self.stall_timeout),
            total_timeout: ms(raw.total_timeout_ms, self.total_timeout),
            max_retries_per_target: raw
                .max_retries_per_target
                .unwrap_or(self.max_retries_per_target),
            backoff_base: ms(raw.backoff_base_ms, self.backoff_base),
            backoff_max: ms(raw.backoff_max_ms, self.backoff_max),
            max_retry_after: ms(raw.max_retry_after_ms, self.max_retry_after),
        }
    }

    fn check(&self, what: &str) -> Result<(), ConfigError> {
        if self.total_timeout.is_zero() {
            return Err(invalid(format!("{what}: total_timeout_ms must be > 0")));
        }
        for (name, t) in [
            ("first_token_timeout_ms", self.first_token_timeout),
            ("stall_timeout_ms", self.stall_timeout),
        ] {
            if t.is_zero() || t > self.total_timeout {
                return Err(invalid(format!(
                    "{what}: {name} must be > 0 and fit inside total_timeout_ms"
                )));
            }
        }
        if self.backoff_base > self.backoff_max {
            return Err(invalid(format!(
                "{what}: backoff_base_ms must not exceed backoff_max_ms"
            )));
        }
        if self.max_retries_per_target > 10 {
            return Err(invalid(format!(
                "{what}: max_retries_per_target is at most 10"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CircuitConfig {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Config {
    /// Reads and validates a configuration file, applying environment overrides.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        Config::load(raw, &|k| std::env::var(k).ok())
    }

    /// Turns the raw file into runtime configuration; `env` looks up environment variables.
    pub fn load(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let parse_addr =
            |var: &str, v: Option<SocketAddr>, d: &str| -> Result<SocketAddr, ConfigError> {
                match env(var) {
                    Some(s) => s.parse().map_err(|_| {
                        invalid(format!("{var}={s:?} is not an address like 127.0.0.1:8080"))
                    }),
                    None => Ok(v.unwrap_or_else(|| d.parse().unwrap_or_else(|_| unreachable!()))),
                }
            };
        let server = ServerConfig {
            http_addr: parse_addr(ENV_HTTP_ADDR, raw.server.http_addr, "127.0.0.1:8080")?,
            grpc_addr: parse_addr(ENV_GRPC_ADDR, raw.server.grpc_addr, "127.0.0.1:50051")?,
            max_body_bytes: raw.server.max_body_bytes.unwrap_or(10 << 20),
            require_auth: raw.server.require_auth.unwrap_or(true),
        };

        let identities = Identities::load(&raw.users, &raw.services, env)?;

        let mut providers = BTreeMap::new();
        for (name, p) in &raw.providers {
            let env_name = format!(
                "{ENV_PROVIDER_PREFIX}{}",
                name.to_ascii_uppercase().replace('-', "_")
            );
            let base_url = if p.kind == ProviderKind::Local {
                if !cfg!(feature = "students") {
                    return Err(invalid(format!(
                        "provider {name}: kind `local` serves students, and this gateway was built without the `students` feature"
                    )));
                }
                if p.base_url.is_some() {
                    return Err(invalid(format!(
                        "provider {name}: a local provider takes `dir`, not `base_url`"
                    )));
                }
                if providers
                    .values()
                    .any(|q: &ProviderConfig| q.kind == ProviderKind::Local)
                {
                    return Err(invalid(format!(
                        "provider {name}: only one provider may be of kind `local`"
                    )));
                }
                String::new()
            } else {
                if p.dir.is_some() {
                    return Err(invalid(format!(
                        "provider {name}: `dir` is only for providers of kind `local`"
                    )));
                }
                let base_url = env(&format!("{env_name}_BASE_URL"))
                    .or_else(|| p.base_url.clone())
                    .ok_or_else(|| invalid(format!("provider {name}: base_url is required")))?;
                if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                    return Err(invalid(format!(
                        "provider {name}: base_url must start with http:// or https://"
                    )));
                }
                base_url
            };
            let api_key = match env(&format!("{env_name}_API_KEY")) {
                Some(k) => Secret::new(k),
                None => secret_from(
                    &format!("provider {name}"),
                    p.api_key.as_deref(),
                    p.api_key_env.as_deref(),
                    p.api_key_file.as_deref(),
                    env,
                )?
                .unwrap_or_default(),
            };
            providers.insert(
                name.clone(),
                ProviderConfig {
                    name: name.clone(),
                    kind: p.kind,
                    base_url: base_url.trim_end_matches('/').to_owned(),
                    api_key,
                    http2: p.http2,
                    connect_timeout: Duration::from_millis(p.connect_timeout_ms.unwrap_or(5_000)),
                    headers: p
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    dir: p.dir.clone(),
                },
            );
        }

        let mut models = BTreeMap::new();
        for (name, m) in &raw.models {
            let provider = providers.get(&m.provider).ok_or_else(|| {
                invalid(format!("model {name}: unknown provider {:?}", m.provider))
            })?;
            if provider.kind == ProviderKind::Local {
                return Err(invalid(format!(
                    "model {name}: provider {} is local; its students are deployed with retort.v1.Students, not configured",
                    m.provider
                )));
            }
            if name.starts_with(STUDENT_PREFIX) {
                return Err(invalid(format!(
                    "model {name}: names starting with {STUDENT_PREFIX} are kept for deployed students"
                )));
            }
            models.insert(
                name.clone(),
                ModelConfig {
                    name: name.clone(),
                    provider: m.provider.clone(),
                    upstream_model: m.model.clone().unwrap_or_else(|| name.clone()),
                    context_window: m.context_window.unwrap_or(128_000),
                    prefill: m
                        .prefill
                        .unwrap_or(provider.kind == ProviderKind::Anthropic),
                },
            );
        }

        let routing = RoutingConfig::default().overlay(&raw.routing);
        routing.check("[routing]")?;

        let mut aliases = BTreeMap::new();
        for (name, a) in &raw.aliases {
            if models.contains_key(name) {
                return Err(invalid(format!("alias {name}: a model has the same name")));
            }
            if name.starts_with(STUDENT_PREFIX) {
                return Err(invalid(format!(
                    "alias {name}: names starting with {STUDENT_PREFIX} are kept for deployed students"
                )));
            }
            if a.targets.is_empty() {
                return Err(invalid(format!("alias {name}: targets must not be empty")));
            }
            for t in &a.targets {
                if !models.contains_key(t) {
                    return Err(invalid(format!(
                        "alias {name}: target {t:?} is not a configured model"
                    )));
                }
            }
            let r = routing.overlay(&a.routing);
            r.check(&format!("alias {name}"))?;
            aliases.insert(
                name.clone(),
                AliasConfig {
                    name: name.clone(),
                    targets: a.targets.clone(),
                    routing: r,
                },
            );
        }

        let circuit = CircuitConfig {
            failure_threshold: raw.circuit.failure_threshold.unwrap_or(5).max(1),
            open_for: Duration::from_millis(raw.circuit.open_ms.unwrap_or(30_000)),
        };
        Ok(Config {
            server,
            identities,
            providers,
            models,
            aliases,
            routing,
            circuit,
        })
    }

    /// The ordered targets (model names) and routing settings for a requested model or alias.
    pub fn resolve(&self, requested: &str) -> Option<(Vec<&ModelConfig>, RoutingConfig)> {
        if let Some(a) = self.aliases.get(requested) {
            let targets = a
                .targets
                .iter()
                .filter_map(|t| self.models.get(t))
                .collect();
            return Some((targets, a.routing));
        }
        self.models.get(requested).map(|m| (vec![m], self.routing))
    }
}

fn secret_from(
    what: &str,
    value: Option<&str>,
    var: Option<&str>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, var, file) {
        (None, None, None) => Ok(None),
        (Some(v), None, None) => Ok(Some(Secret::new(v))),
        (None, Some(var), None) => env(var)
            .map(|v| Some(Secret::new(v.trim())))
            .ok_or_else(|| invalid(format!("{what}: environment variable {var} is not set"))),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| Some(Secret::new(v.trim())))
            .map_err(|e| {
                invalid(format!(
                    "{what}: cannot read key file {}: {e}",
                    path.display()
                ))
            }),
        _ => Err(invalid(format!(
            "{what}: give only one of the key, key_env and key_file fields"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [server]
        http_addr = "127.0.0.1:0"
        [[users]]
        name = "alice"
        team = "payments"
        key_env = "ALICE_KEY"
        [providers.sim]
        kind = "openai"
        base_url = "http://127.0.0.1:9/v1/"
        api_key_env = "SIM_KEY"
        [models.fast]
        provider = "sim"
        model = "sim-fast"
        [models.big]
        provider = "sim"
        context_window = 200000
        [aliases.frontier]
        targets = ["fast", "big"]
        max_retries_per_target = 1
    "#;

    fn env(k: &str) -> Option<String> {
        match k {
            "ALICE_KEY" => Some("sk-alice".into()),
            "SIM_KEY" => Some("sk-sim".into()),
            "RETORT_PROVIDER_SIM_BASE_URL" => Some("http://override:1/v1".into()),
            _ => None,
        }
    }

    #[test]
    fn loads_and_overrides() {
        let cfg = Config::load(toml::from_str(EXAMPLE).unwrap(), &env).unwrap();
        assert_eq!(cfg.identities.users["sk-alice"].team, "payments");
        let p = &cfg.providers["sim"];
        assert_eq!(p.base_url, "http://override:1/v1");
        assert_eq!(p.api_key.expose(), "sk-sim");
        assert_eq!(format!("{:?}", p.api_key), "***");
        let (targets, routing) = cfg.resolve("frontier").unwrap();
        assert_eq!(
            targets
                .iter()
                .map(|m| m.upstream_model.as_str())
                .collect::<Vec<_>>(),
            ["sim-fast", "big"]
        );
        assert_eq!(routing.max_retries_per_target, 1);
        assert!(!targets[0].prefill);
        assert!(cfg.resolve("nope").is_none());
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = [
            ("[models.x]\nprovider = \"missing\"", "unknown provider"),
            ("[aliases.a]\ntargets = []", "must not be empty"),
            (
                "[routing]\nfirst_token_timeout_ms = 9000\ntotal_timeout_ms = 10",
                "fit inside",
            ),
            ("[server]\nbogus = 1", "unknown field"),
            (
                "[[users]]\nname = \"u\"\nkey = \"a\"\nkey_env = \"B\"",
                "only one",
            ),
            (
                "[providers.l]\nkind = \"local\"\nbase_url = \"http://x\"",
                "takes `dir`",
            ),
            (
                "[providers.a]\nkind = \"local\"\n[providers.b]\nkind = \"local\"",
                "only one",
            ),
            ("[providers.o]\nkind = \"openai\"", "base_url is required"),
        ];
        for (text, want) in bad {
            let err = toml::from_str::<RawConfig>(text)
                .map_err(ConfigError::from)
                .and_then(|raw| Config::load(raw, &env))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
