//! Conversions at the edges: the gateway's [`UsageEvent`] to the wire event, the wire event to a
//! stored [`Record`] (with the validation that names the field at fault), and the spool's JSON form.
use retort_hooks::UsageEvent;
use retort_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::{store::Record, time};

/// Tokens of one kind in one event beyond this are malformed (and would overflow sums).
const MAX_TOKENS: u64 = 1_000_000_000_000;
/// The user recorded for events that name none.
pub const UNKNOWN_USER: &str = "(unknown)";
/// Recorded for empty team, discipline or level.
pub const NONE: &str = "(none)";

/// Why an event was rejected: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

fn tokens(field: &'static str, v: u64) -> Result<i64, Invalid> {
    if v > MAX_TOKENS {
        return Err(invalid(
            field,
            format!("{v} is more tokens than any request can use"),
        ));
    }
    Ok(v as i64)
}

fn or(s: &str, default: &str) -> String {
    if s.trim().is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

/// Validates and normalises a wire event (pricing is filled in later). `now` bounds future times.
pub fn to_record(e: &pb::UsageEvent, now: i64) -> Result<Record, Invalid> {
    if e.event_id.trim().is_empty() {
        return Err(invalid("event_id", "is empty"));
    }
    if e.event_id.len() > 128 {
        return Err(invalid("event_id", "is longer than 128 bytes"));
    }
    // 2000-01-01 .. a day from now: anything else is a unit mistake or a broken clock.
    if e.time_ms < 946_684_800_000 || e.time_ms > now + time::DAY_MS {
        return Err(invalid(
            "time_ms",
            format!(
                "{} is not a plausible time in epoch milliseconds",
                e.time_ms
            ),
        ));
    }
    if e.model.trim().is_empty() {
        return Err(invalid(
            "model",
            "is empty (the model the attempt went to is required)",
        ));
    }
    if e.provider.trim().is_empty() {
        return Err(invalid("provider", "is empty"));
    }
    if e.outcome.trim().is_empty() {
        return Err(invalid("outcome", "is empty (`ok` or a failure label)"));
    }
    if e.reasoning_tokens > e.output_tokens {
        return Err(invalid(
            "reasoning_tokens",
            "exceeds output_tokens (output includes reasoning)",
        ));
    }
    let unknown_user = e.user.trim().is_empty();
    Ok(Record {
        event_id: e.event_id.clone(),
        ts_ms: e.time_ms,
        request_id: e.request_id.clone(),
        user: or(&e.user, UNKNOWN_USER),
        team: or(&e.team, NONE),
        discipline: or(&e.discipline, NONE),
        level: or(&e.level, NONE),
        session_id: e.session_id.clone(),
        harness: or(&e.harness, "other"),
        route: or(&e.route, &e.model),
        provider: e.provider.clone(),
        model: e.model.clone(),
        outcome: e.outcome.clone(),
        status: i64::from(e.status),
        input: tokens("input_tokens", e.input_tokens)?,
        output: tokens("output_tokens", e.output_tokens)?,
        reasoning: tokens("reasoning_tokens", e.reasoning_tokens)?,
        cache_read: tokens("cache_read_tokens", e.cache_read_tokens)?,
        cache_write: tokens("cache_write_tokens", e.cache_write_tokens)?,
        latency_ms: e.latency_ms.min(i64::MAX as u64) as i64,
        ttft_ms: e.ttft_ms.min(i64::MAX as u64) as i64,
        reasoning_ms: e.reasoning_ms.min(i64::MAX as u64) as i64,
        stream: e.stream,
        unknown_user,
        ..Record::default()
    })
}

/// The gateway's event on the wire. Reasoning time is what the gateway observed on a stream; where
/// it could not (non-streamed answers, hidden reasoning), it is estimated as the reasoning share of
/// the output tokens times the attempt's latency.
pub fn from_gateway(e: &UsageEvent) -> pb::UsageEvent {
    let u = &e.usage;
    let reasoning_ms = if let Some(ms) = e.reasoning_ms {
        ms
    } else if u.output > 0 && u.reasoning > 0 {
        (e.latency_ms as f64 * (u.reasoning.min(u.output) as f64 / u.output as f64)).round() as u64
    } else {
        0
    };
    pb::UsageEvent {
        event_id: e.event_id.clone(),
        time_ms: e
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        request_id: e.request_id.clone(),
        user: e.identity.user.clone(),
        team: e.identity.team.clone(),
        discipline: e.identity.discipline.clone(),
        level: e.identity.level.clone(),
        session_id: e.session_id.clone().unwrap_or_default(),
        harness: e.harness.as_str().to_string(),
        route: e.route.clone(),
        provider: e.provider.clone(),
        model: e.model.clone(),
        outcome: e.outcome.to_string(),
        status: e.status.map(u32::from).unwrap_or(0),
        input_tokens: u.input,
        output_tokens: u.output,
        reasoning_tokens: u.reasoning,
        cache_read_tokens: u.cache_read,
        cache_write_tokens: u.cache_write,
        latency_ms: e.latency_ms,
        ttft_ms: e.ttft_ms.unwrap_or(0),
        reasoning_ms,
        stream: e.stream,
    }
}

/// One spooled event: a JSON line with the wire event's fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct SpooledEvent {
    pub event_id: String,
    pub time_ms: i64,
    pub request_id: String,
    pub user: String,
    pub team: String,
    pub discipline: String,
    pub level: String,
    pub session_id: String,
    pub harness: String,
    pub route: String,
    pub provider: String,
    pub model: String,
    pub outcome: String,
    pub status: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub latency_ms: u64,
    pub ttft_ms: u64,
    pub reasoning_ms: u64,
    pub stream: bool,
}

macro_rules! same_fields {
    ($from:ident, $to:ident) => {
        $to {
            event_id: $from.event_id,
            time_ms: $from.time_ms,
            request_id: $from.request_id,
            user: $from.user,
            team: $from.team,
            discipline: $from.discipline,
            level: $from.level,
            session_id: $from.session_id,
            harness: $from.harness,
            route: $from.route,
            provider: $from.provider,
            model: $from.model,
            outcome: $from.outcome,
            status: $from.status,
            input_tokens: $from.input_tokens,
            output_tokens: $from.output_tokens,
            reasoning_tokens: $from.reasoning_tokens,
            cache_read_tokens: $from.cache_read_tokens,
            cache_write_tokens: $from.cache_write_tokens,
            latency_ms: $from.latency_ms,
            ttft_ms: $from.ttft_ms,
            reasoning_ms: $from.reasoning_ms,
            stream: $from.stream,
        }
    };
}

impl From<pb::UsageEvent> for SpooledEvent {
    fn from(e: pb::UsageEvent) -> Self {
        same_fields!(e, SpooledEvent)
    }
}

impl From<SpooledEvent> for pb::UsageEvent {
    fn from(e: SpooledEvent) -> Self {
        use pb::UsageEvent;
        same_fields!(e, UsageEvent)
    }
}
