//! Prometheus metrics (`GET /metrics`): requests, attempts and failovers by route/provider/model/
//! outcome, provider circuit states, latency and time-to-first-token histograms.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub ingress: &'static str,
    pub route: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub route: String,
    pub provider: String,
    pub model: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub provider: String,
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServedLabels {
    pub route: String,
    pub provider: String,
    pub model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The series one route's target touches when it serves a request, looked up in their families once
/// (on the target's first success) and then kept with the route: the hot path increments shared
/// handles instead of cloning three label strings and hashing them per series per request.
#[derive(Debug, Clone)]
pub struct ServedSeries {
    /// `attempts{route, provider, model, outcome="ok"}`.
    pub attempt_ok: Counter,
    /// `request_duration_seconds{route, provider, model}`.
    pub duration: Histogram,
    /// `time_to_first_token_seconds{route, provider, model}`.
    pub ttft: Histogram,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~105 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 21,
    ))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub failovers: Family<RouteLabels, Counter>,
    pub circuit_state: Family<TargetLabels, Gauge>,
    pub request_duration: HistogramFamily<ServedLabels>,
    pub time_to_first_token: HistogramFamily<ServedLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("retort");
        let requests = Family::default();
        let attempts = Family::default();
        let failovers = Family::default();
        let circuit_state = Family::default();
        let request_duration: HistogramFamily<ServedLabels> =
            Family::new_with_constructor(latency_histogram);
        let time_to_first_token: HistogramFamily<ServedLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "requests",
            "Requests by ingress, route and outcome",
            requests.clone(),
        );
        registry.register(
            "attempts",
            "Upstream attempts by route, provider, model and outcome",
            attempts.clone(),
        );
        registry.register(
            "failovers",
            "Moves from one target to the next",
            failovers.clone(),
        );
        registry.register(
            "circuit_state",
            "Provider circuit: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Duration of served requests, by the target that served them",
            request_duration.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time to the first streamed token, by the target that served it",
            time_to_first_token.clone(),
        );
        Metrics {
            registry,
            requests,
            attempts,
            failovers,
            circuit_state,
            request_duration,
            time_to_first_token,
        }
    }

    /// The handles of the series a successful attempt of `route` on `provider`/`model` updates.
    pub fn served(&self, route: &str, provider: &str, model: &str) -> ServedSeries {
        let served = ServedLabels {
            route: route.to_owned(),
            provider: provider.to_owned(),
            model: model.to_owned(),
        };
        let attempt = AttemptLabels {
            route: served.route.clone(),
            provider: served.provider.clone(),
            model: served.model.clone(),
            outcome: "ok",
        };
        ServedSeries {
            attempt_ok: self.attempts.get_or_create_owned(&attempt),
            duration: self.request_duration.get_or_create_owned(&served),
            ttft: self.time_to_first_token.get_or_create_owned(&served),
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
