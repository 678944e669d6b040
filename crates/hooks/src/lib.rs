//! The in-process contract between the gateway and the services beside it (metering, breakers):
//! who is calling ([`Identity`], [`Harness`], and with what rights: [`Principal`], [`Role`]), what an attempt used ([`Usage`], [`UsageEvent`]),
//! and the two hooks the gateway calls on its hot path ([`UsageSink`], [`BreakerGuard`]). Services
//! depend on this crate, never on each other; it must stay small, free of I/O and of any service's
//! dependencies.
//!
//! Both hooks are called on the hot path and must never wait on a network round trip:
//! - [`UsageSink`] receives one [`UsageEvent`] per attempt (metering); `record` only enqueues.
//! - [`BreakerGuard`] admits or refuses a request before it goes upstream and settles its real usage
//!   after (session breakers and budgets); decisions come from local state such as leases.
use std::{sync::Arc, time::SystemTime};

use serde::{Deserialize, Serialize};

/// Who is calling, resolved from the API key and request headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub team: String,
    pub discipline: String,
    pub level: String,
}

/// What a caller may do beyond their own work. One model for the whole mesh: users see and manage
/// their own requests, sessions and jobs; team admins their team's; admins everything; service
/// identities make the calls services make to each other (usage ingest, leases and settlements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    User,
    TeamAdmin,
    Admin,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::TeamAdmin => "team_admin",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// An authenticated caller: who they are and what role their key carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Principal {
    pub identity: Identity,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// A service identity (the calls services make to each other).
    pub fn is_service(&self) -> bool {
        self.role == Role::Service
    }

    /// An admin or a service identity: what runs the mesh (policies, budgets, settlements).
    pub fn is_operator(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Service)
    }

    /// May act on what belongs to `user` of `team`: the user themself, an admin of that team, or an
    /// admin. (Service identities act only through the calls made for them, never on a user's
    /// behalf here.)
    pub fn may_act_for(&self, user: &str, team: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::TeamAdmin => self.identity.team == team || self.identity.user == user,
            Role::User => self.identity.user == user,
            Role::Service => false,
        }
    }
}

/// The harness a request came from, detected from the User-Agent (or given explicitly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Harness {
    ClaudeCode,
    Codex,
    Cursor,
    Copilot,
    Sdk,
    #[default]
    Other,
}

impl Harness {
    pub fn as_str(self) -> &'static str {
        match self {
            Harness::ClaudeCode => "claude_code",
            Harness::Codex => "codex",
            Harness::Cursor => "cursor",
            Harness::Copilot => "copilot",
            Harness::Sdk => "sdk",
            Harness::Other => "other",
        }
    }
}

/// Token usage, normalised across providers. `input` excludes cached tokens; `output` includes
/// reasoning tokens, which are also reported on their own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input += other.input;
        self.output += other.output;
        self.reasoning += other.reasoning;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// One attempt against one target, successful or not.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    /// Unique per attempt (UUID v4): ingest is idempotent by it.
    pub event_id: String,
    pub time: SystemTime,
    pub request_id: String,
    pub identity: Identity,
    pub session_id: Option<String>,
    pub harness: Harness,
    /// The model or alias the caller asked for.
    pub route: String,
    /// Provider name and upstream model of the attempt (for a success: who served it).
    pub provider: String,
    pub model: String,
    /// `ok`, or the failure's label (`rate_limited`, `unavailable`, `stream_cut`, ...).
    pub outcome: &'static str,
    /// The upstream HTTP status of a failed attempt, if any.
    pub status: Option<u16>,
    /// Tokens the provider reported (zero for failed attempts that produced no usage).
    pub usage: Usage,
    pub latency_ms: u64,
    /// Time to first token, for streamed attempts that produced one.
    pub ttft_ms: Option<u64>,
    /// Time spent reasoning: from the first reasoning delta to the first answer delta (or the end),
    /// for streamed attempts that reasoned visibly. `None` when it could not be observed.
    pub reasoning_ms: Option<u64>,
    pub stream: bool,
}

pub trait UsageSink: Send + Sync {
    /// Takes the event; must not block (a bounded queue that spills, not a network call).
    fn record(&self, event: UsageEvent);

    /// False when every event would be dropped: the router then builds none.
    fn enabled(&self) -> bool {
        true
    }
}

/// Drops every event (metering off).
pub struct NoUsageSink;

impl UsageSink for NoUsageSink {
    fn record(&self, _: UsageEvent) {}

    fn enabled(&self) -> bool {
        false
    }
}

/// What the guard learns about a request before it goes upstream.
#[derive(Debug, Clone)]
pub struct SpendRequest<'a> {
    pub identity: &'a Identity,
    pub session_id: Option<&'a str>,
    pub route: &'a str,
    /// The upstream models the route may use, in order (for a worst-case price).
    pub models: Vec<&'a str>,
    /// Estimated input tokens and the most output tokens the request allows.
    pub input_tokens: u64,
    pub max_output_tokens: u64,
}

/// An admitted request. Settle it with what was really used; dropping it unsettled releases the
/// reservation (the request failed or was cancelled before any usage).
pub trait Admission: Send {
    fn settle(self: Box<Self>, provider: &str, model: &str, usage: &Usage);
}

pub trait BreakerGuard: Send + Sync {
    /// Admits the request (reserving its worst case) or refuses it with the reason the caller sees,
    /// typically [`Refusal::PaymentRequired`] while a session is paused or a hard budget is spent.
    fn admit(&self, req: &SpendRequest<'_>) -> Result<Box<dyn Admission>, Refusal>;

    /// What the gateway's health output (`/readyz`, gRPC health) says about spend checks. Cheap:
    /// read from local state, never a network call.
    fn health(&self) -> GuardHealth {
        GuardHealth::Ok
    }
}

/// Why the spend guard refused a request; the gateway answers it in the caller's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A session is paused or stopped, or a hard budget is spent (HTTP 402, gRPC
    /// `RESOURCE_EXHAUSTED`). The message says what crossed which limit and how to go on.
    PaymentRequired(String),
    /// The guard cannot decide (the breaker is unreachable and the policy is to fail closed).
    Unavailable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PaymentRequired(m) | Refusal::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Refusal {}

/// The spend guard's part of the gateway's readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GuardHealth {
    /// No guard, or its breaker answers.
    #[default]
    Ok,
    /// The breaker is unreachable and the policy is to fail open: requests are served unmetered.
    /// The gateway stays ready and shows this warning.
    FailingOpen(String),
    /// The breaker is unreachable and the policy is to fail closed: every request is refused, so
    /// the gateway is not ready.
    FailingClosed(String),
}

/// Admits everything (breakers off).
pub struct NoBreakerGuard;

struct Unlimited;

impl Admission for Unlimited {
    fn settle(self: Box<Self>, _: &str, _: &str, _: &Usage) {}
}

impl BreakerGuard for NoBreakerGuard {
    fn admit(&self, _: &SpendRequest<'_>) -> Result<Box<dyn Admission>, Refusal> {
        Ok(Box::new(Unlimited))
    }
}

/// The hooks a router is built with.
#[derive(Clone)]
pub struct Hooks {
    pub usage: Arc<dyn UsageSink>,
    pub breaker: Arc<dyn BreakerGuard>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            usage: Arc::new(NoUsageSink),
            breaker: Arc::new(NoBreakerGuard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user: &str, team: &str, role: Role) -> Principal {
        Principal {
            identity: Identity {
                user: user.into(),
                team: team.into(),
                ..Identity::default()
            },
            role,
        }
    }

    #[test]
    fn who_may_act_for_whom() {
        let alice = principal("alice", "ml", Role::User);
        assert!(alice.may_act_for("alice", "ml"));
        assert!(!alice.may_act_for("bob", "ml"));
        let lead = principal("carol", "ml", Role::TeamAdmin);
        assert!(lead.may_act_for("bob", "ml"));
        assert!(!lead.may_act_for("dave", "web"));
        assert!(principal("root", "ops", Role::Admin).may_act_for("dave", "web"));
        assert!(!principal("gateway", "", Role::Service).may_act_for("alice", "ml"));
    }
}
