//! The stored event ([`Record`]) and the shape of what it is stored as: the columns of
//! `usage_events`, and the rollups' key dimensions and sums. Both writers (SQLite, Postgres) and the
//! Postgres deltas read the same shape from here; this module knows no database.

/// One normalised, priced event, as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub event_id: String,
    pub ts_ms: i64,
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
    pub status: i64,
    pub input: i64,
    pub output: i64,
    pub reasoning: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub latency_ms: i64,
    pub ttft_ms: i64,
    pub reasoning_ms: i64,
    pub stream: bool,
    pub cost: i64,
    pub price_version: String,
    pub tier: String,
    pub unpriced: bool,
    pub unknown_user: bool,
}

pub(crate) const EVENT_TEXT_COLS: [&str; 14] = [
    "event_id",
    "request_id",
    "user_name",
    "team",
    "discipline",
    "level",
    "session_id",
    "harness",
    "route",
    "provider",
    "model",
    "outcome",
    "price_version",
    "tier",
];
pub(crate) const EVENT_INT_COLS: [&str; 15] = [
    "ts_ms",
    "status",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "latency_ms",
    "ttft_ms",
    "reasoning_ms",
    "stream",
    "cost_micros",
    "unpriced",
    "unknown_user",
    "recorded_ms",
];

impl Record {
    /// The event's text columns, in [`EVENT_TEXT_COLS`] order.
    pub(crate) fn texts(&self) -> [&str; 14] {
        [
            &self.event_id,
            &self.request_id,
            &self.user,
            &self.team,
            &self.discipline,
            &self.level,
            &self.session_id,
            &self.harness,
            &self.route,
            &self.provider,
            &self.model,
            &self.outcome,
            &self.price_version,
            &self.tier,
        ]
    }
    /// The event's integer columns, in [`EVENT_INT_COLS`] order (`recorded`: when it was stored).
    pub(crate) fn ints(&self, recorded: i64) -> [i64; 15] {
        [
            self.ts_ms,
            self.status,
            self.input,
            self.output,
            self.reasoning,
            self.cache_read,
            self.cache_write,
            self.latency_ms,
            self.ttft_ms,
            self.reasoning_ms,
            i64::from(self.stream),
            self.cost,
            i64::from(self.unpriced),
            i64::from(self.unknown_user),
            recorded,
        ]
    }
    /// The event's rollup key dimensions, in [`ROLL_DIMS`] order.
    pub(crate) fn dims(&self) -> [&str; 9] {
        [
            &self.user,
            &self.team,
            &self.discipline,
            &self.level,
            &self.model,
            &self.provider,
            &self.harness,
            &self.route,
            &self.tier,
        ]
    }
    /// What the event adds to its rollup key's sums, in [`ROLL_SUMS`] order.
    pub(crate) fn sums(&self) -> [i64; 11] {
        [
            1,
            i64::from(self.outcome != "ok"),
            self.input,
            self.output,
            self.reasoning,
            self.cache_read,
            self.cache_write,
            self.cost,
            self.reasoning_ms,
            self.latency_ms,
            i64::from(self.unpriced),
        ]
    }
}

/// The rollups' dimensions, in key order.
pub(crate) const ROLL_DIMS: [&str; 9] = [
    "user_name",
    "team",
    "discipline",
    "level",
    "model",
    "provider",
    "harness",
    "route",
    "tier",
];
/// The hourly and daily rollups' sums, in column order.
pub(crate) const ROLL_SUMS: [&str; 11] = [
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_micros",
    "reasoning_ms",
    "latency_ms",
    "unpriced",
];
/// The filterable dimensions as the query API names them, with the column each is.
pub const DIM_NAMES: [(&str, &str); 9] = [
    ("user", "user_name"),
    ("team", "team"),
    ("discipline", "discipline"),
    ("level", "level"),
    ("model", "model"),
    ("provider", "provider"),
    ("harness", "harness"),
    ("route", "route"),
    ("tier", "tier"),
];

/// A session's totals (or those of its events with one rollup key).
#[derive(Debug, Clone)]
pub(crate) struct SessionSums<'a> {
    /// The least user and harness seen (a session has one of each).
    pub(crate) user: &'a str,
    pub(crate) harness: &'a str,
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) requests: i64,
    pub(crate) cost: i64,
    pub(crate) tokens: i64,
}

impl<'a> SessionSums<'a> {
    pub(crate) fn of(e: &'a Record) -> SessionSums<'a> {
        SessionSums {
            user: &e.user,
            harness: &e.harness,
            first: e.ts_ms,
            last: e.ts_ms,
            requests: 1,
            cost: e.cost,
            tokens: e.input + e.output + e.cache_read + e.cache_write,
        }
    }
    pub(crate) fn add(&mut self, o: &SessionSums<'a>) {
        self.user = self.user.min(o.user);
        self.harness = self.harness.min(o.harness);
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.requests += o.requests;
        self.cost += o.cost;
        self.tokens += o.tokens;
    }
}
