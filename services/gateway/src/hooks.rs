//! The gateway's two extension points for the services beside it. Both are called on the hot path
//! and must never wait on a network round trip:
//! - [`UsageSink`] receives one [`UsageEvent`] per attempt (metering); `record` only enqueues.
//! - [`SpendGuard`] admits or refuses a request before it goes upstream and settles its real usage
//!   after (session breakers and budgets); decisions come from local state such as leases.
use std::{sync::Arc, time::SystemTime};

use crate::{
    error::ApiError,
    types::{Harness, Identity, Usage},
};

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

pub trait SpendGuard: Send + Sync {
    /// Admits the request (reserving its worst case) or refuses it with the error the caller sees,
    /// typically [`ApiError::PaymentRequired`] while a session is paused or a hard budget is spent.
    fn admit(&self, req: &SpendRequest<'_>) -> Result<Box<dyn Admission>, ApiError>;

    /// What the gateway's health output (`/readyz`, gRPC health) says about spend checks. Cheap:
    /// read from local state, never a network call.
    fn health(&self) -> GuardHealth {
        GuardHealth::Ok
    }
}

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
pub struct NoSpendGuard;

struct Unlimited;

impl Admission for Unlimited {
    fn settle(self: Box<Self>, _: &str, _: &str, _: &Usage) {}
}

impl SpendGuard for NoSpendGuard {
    fn admit(&self, _: &SpendRequest<'_>) -> Result<Box<dyn Admission>, ApiError> {
        Ok(Box::new(Unlimited))
    }
}

/// The hooks a router is built with.
#[derive(Clone)]
pub struct Hooks {
    pub usage: Arc<dyn UsageSink>,
    pub spend: Arc<dyn SpendGuard>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            usage: Arc::new(NoUsageSink),
            spend: Arc::new(NoSpendGuard),
        }
    }
}
