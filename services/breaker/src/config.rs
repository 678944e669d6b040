//! The `[breaker]` section (the session and budget service; `[spend]` before): where the breaker
//! listens, its state store, how gateways reach it and lease, and the policies
//! (`[breaker.policies.*]`, `[[breaker.budgets]]`, `[breaker.webhooks]`). Loaded in two steps:
//! [`RawBreaker`] as written (unknown keys refused), then [`BreakerConfig::load`] with the checks.
use std::net::SocketAddr;

use serde::Deserialize;

use crate::{
    Error,
    policy::{self, Policies, RawBudget, RawPolicies, RawPolicyFile, RawWebhooks},
};

/// Overrides `[breaker] redis_url`.
pub const ENV_REDIS_URL: &str = "REDIS_URL";

/// The section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Breakers and budgets on (default true when the section is present).
    pub enabled: Option<bool>,
    /// gRPC address of the breaker service (default 127.0.0.1:50053).
    pub grpc_addr: Option<String>,
    /// Where gateways reach the breaker (default `http://` + grpc_addr).
    pub endpoint: Option<String>,
    /// Shared state; `REDIS_URL` overrides. Absent: in memory.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key (default `retort:breaker:`).
    pub key_prefix: Option<String>,
    /// Base URL of the confirm page links (default the gateway's HTTP address).
    pub public_url: Option<String>,
    /// `fail_open` (default: admit, with a warning) or `fail_closed` when the breaker is unreachable.
    pub on_unreachable: Option<String>,
    /// Allowance in USD a gateway asks for per principal and refresh (default $0.50).
    pub lease_usd: Option<f64>,
    /// Allowance in tokens a gateway asks for per principal and refresh (default 200,000).
    pub lease_tokens: Option<u64>,
    /// How long a request may wait for an in-flight lease refresh (default 25 ms).
    pub lease_wait_ms: Option<u64>,
    /// How often a gateway settles usage, refreshes leases and learns paused sessions (default
    /// 200 ms; a request short of allowance wakes a refresh at once). Each flush costs the breaker
    /// one read and one write per active session, whatever the request rate.
    pub flush_ms: Option<u64>,
    /// A gateway's leases lapse this long after it last renewed them (default 30 s; gateways renew
    /// every third of it), so a gateway that dies holding one does not hold the allowance for ever.
    pub lease_ttl_ms: Option<u64>,
    /// Session policies: `default`, per team, per user.
    #[serde(default)]
    pub policies: RawPolicies,
    /// Budgets per user or team and window.
    #[serde(default)]
    pub budgets: Vec<RawBudget>,
    /// Where users are asked (Slack-compatible webhooks), per team.
    #[serde(default)]
    pub webhooks: RawWebhooks,
}

/// What a gateway does when it cannot reach the breaker (or the breaker its Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    FailOpen,
    FailClosed,
}

/// The loaded section (the fields of [`RawBreaker`] with their defaults applied and checked).
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub grpc_addr: SocketAddr,
    pub endpoint: String,
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub public_url: Option<String>,
    pub on_unreachable: Unreachable,
    pub lease_micros: i64,
    pub lease_tokens: u64,
    pub lease_wait_ms: u64,
    pub flush_ms: u64,
    pub lease_ttl_ms: u64,
    pub policies: Policies,
    /// The keys every call must carry (`retort` sets it from `[[users]]` and `[[services]]`);
    /// without it (a breaker embedded in a test or tool) every caller is trusted.
    pub keys: Option<std::sync::Arc<retort_server::auth::KeyRing>>,
    /// The service key the gateway's guard and the confirm page call the breaker with.
    pub service_key: Option<String>,
}

impl BreakerConfig {
    /// Loads the section as written; `REDIS_URL` in the environment overrides `redis_url`.
    pub fn from_raw(raw: RawBreaker) -> Result<BreakerConfig, Error> {
        Self::load(
            raw,
            std::env::var(ENV_REDIS_URL).ok().filter(|s| !s.is_empty()),
        )
    }

    /// Loads the section with `redis_env` (the environment's `REDIS_URL`, if any) in force.
    pub fn load(raw: RawBreaker, redis_env: Option<String>) -> Result<BreakerConfig, Error> {
        let grpc_addr: SocketAddr = raw
            .grpc_addr
            .as_deref()
            .unwrap_or("127.0.0.1:50053")
            .parse()
            .map_err(|e| Error::Config(format!("[breaker] grpc_addr: {e}")))?;
        let on_unreachable = match raw.on_unreachable.as_deref() {
            None | Some("fail_open") => Unreachable::FailOpen,
            Some("fail_closed") => Unreachable::FailClosed,
            Some(o) => {
                return Err(Error::Config(format!(
                    "[breaker] on_unreachable must be fail_open or fail_closed, not {o:?}"
                )));
            }
        };
        let lease_usd = raw.lease_usd.unwrap_or(0.5);
        if !(lease_usd.is_finite() && lease_usd > 0.0 && lease_usd <= 1e4) {
            return Err(Error::Config(format!(
                "[breaker] lease_usd = {lease_usd} must be in (0, 10000]"
            )));
        }
        let lease_ttl_ms = raw.lease_ttl_ms.unwrap_or(30_000);
        if !(1_000..=3_600_000).contains(&lease_ttl_ms) {
            return Err(Error::Config(format!(
                "[breaker] lease_ttl_ms = {lease_ttl_ms} must be between 1000 (1 s) and 3600000 (1 h)"
            )));
        }
        let flush_ms = raw.flush_ms.unwrap_or(200).max(1);
        if flush_ms * 3 > lease_ttl_ms {
            return Err(Error::Config(format!(
                "[breaker] flush_ms = {flush_ms} must be under a third of lease_ttl_ms = {lease_ttl_ms} (leases are renewed on flushes)"
            )));
        }
        let policies = policy::load(RawPolicyFile {
            policies: raw.policies,
            budgets: raw.budgets,
            webhooks: raw.webhooks,
        })?;
        Ok(BreakerConfig {
            enabled: raw.enabled.unwrap_or(true),
            endpoint: raw
                .endpoint
                .unwrap_or_else(|| format!("http://{grpc_addr}")),
            grpc_addr,
            redis_url: redis_env.or(raw.redis_url),
            key_prefix: raw.key_prefix.unwrap_or_else(|| "retort:breaker:".into()),
            public_url: raw.public_url,
            on_unreachable,
            lease_micros: (lease_usd * 1e6) as i64,
            lease_tokens: raw.lease_tokens.unwrap_or(200_000).max(1),
            lease_wait_ms: raw.lease_wait_ms.unwrap_or(25),
            flush_ms,
            lease_ttl_ms,
            policies,
            keys: None,
            service_key: None,
        })
    }
}
