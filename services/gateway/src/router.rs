//! Routing and failover, the heart of the gateway. A request names a model or alias; the [`Plan`]
//! walks its targets in order, retrying transient failures with exponential backoff and jitter
//! (honouring `Retry-After`), skipping targets whose circuit is open, sending context-length failures
//! only to targets with a larger window, and stopping at errors that are the caller's answer. This is
//! the single place that retries; adapters never do.
use std::{borrow::Cow, collections::HashMap, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use rand::Rng;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use arc_swap::ArcSwap;

use crate::{
    circuit::{CircuitState, Circuits, Permit},
    config::{Config, ModelConfig, RoutingConfig},
    error::ApiError,
    hooks::{Hooks, SpendRequest, UsageEvent},
    ingress::estimate_tokens,
    metrics::{AttemptLabels, Metrics, RouteLabels, TargetLabels},
    provider::{self, Disposition, Provider, ProviderError, StatusKind, TimeoutKind},
    routes::{Route, RouteTable, Target},
    types::{
        ChatRequest, ChatResponse, FailedAttempt, Message, Part, RequestMeta, Role, StreamEvent,
        Usage,
    },
};

/// The output budget assumed for a worst-case reservation when the request sets no `max_tokens`.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;

/// The gateway's shared state: configuration, provider adapters, circuits and metrics. Its
/// `complete` and `stream` are the one place a request is retried or failed over.
pub struct Gateway {
    pub cfg: Arc<Config>,
    providers: HashMap<String, Arc<dyn Provider>>,
    pub circuits: Circuits,
    pub metrics: Arc<Metrics>,
    pub hooks: Hooks,
    /// Name → targets; swapped whole when students are deployed (see [`crate::routes`]).
    routes: ArcSwap<RouteTable>,
    /// Deployed students, when a `local` provider is configured.
    #[cfg(feature = "students")]
    pub students: Option<crate::students::Students>,
}

impl Gateway {
    pub fn new(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        hooks: Hooks,
    ) -> Result<Gateway, crate::provider::client::ClientError> {
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        // The `local` provider's adapter, kept to restore the students it serves.
        #[cfg(feature = "students")]
        let mut local = None;
        for (name, p) in &cfg.providers {
            #[cfg(feature = "students")]
            if p.kind == crate::config::ProviderKind::Local {
                let l = Arc::new(provider::local::Local::new(p));
                providers.insert(name.clone(), Arc::clone(&l) as Arc<dyn Provider>);
                local = Some((p.clone(), l));
                continue;
            }
            providers.insert(name.clone(), provider::build(p)?);
        }
        #[cfg_attr(not(feature = "students"), allow(unused_mut))]
        let mut gateway = Self::with_providers(cfg, providers, metrics, hooks);
        #[cfg(feature = "students")]
        if let Some((p, l)) = local {
            gateway.students = Some(crate::students::Students::restore(&p, l, &gateway.cfg));
            gateway.rebuild_routes();
        }
        Ok(gateway)
    }

    /// A gateway over the given adapters (one per configured provider name).
    pub fn with_providers(
        cfg: Arc<Config>,
        providers: HashMap<String, Arc<dyn Provider>>,
        metrics: Arc<Metrics>,
        hooks: Hooks,
    ) -> Gateway {
        let circuits = Circuits::new(cfg.models.keys().map(String::as_str), cfg.circuit);
        for m in cfg.models.values() {
            metrics
                .circuit_state
                .get_or_create(&TargetLabels {
                    provider: m.provider.clone(),
                    model: m.name.clone(),
                })
                .set(0);
        }
        let routes = ArcSwap::from_pointee(RouteTable::build(&cfg, &circuits, &[]));
        Gateway {
            cfg,
            providers,
            circuits,
            metrics,
            hooks,
            routes,
            #[cfg(feature = "students")]
            students: None,
        }
    }

    /// The route a client's model name resolves to: one lock-free load and one hash probe.
    pub fn resolve(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.load().get(name).cloned()
    }

    /// The whole current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Rebuilds the route table from the configuration and the deployed students, and swaps it in.
    /// Only deploying and undeploying students changes the table after start-up.
    #[cfg(feature = "students")]
    pub(crate) fn rebuild_routes(&self) {
        let students: Vec<crate::routes::StudentRoute> = self
            .students
            .as_ref()
            .map(crate::students::Students::routes)
            .unwrap_or_default();
        for s in &students {
            self.metrics
                .circuit_state
                .get_or_create(&TargetLabels {
                    provider: s.target.model.provider.clone(),
                    model: s.target.model.name.clone(),
                })
                .set(s.target.circuit.state().as_gauge());
        }
        self.routes.store(Arc::new(RouteTable::build(
            &self.cfg,
            &self.circuits,
            &students,
        )));
    }

    /// Ready when every alias (and model) has at least one target whose circuit is not open.
    pub fn readiness(&self) -> Result<(), String> {
        let usable = |m: &str| {
            self.circuits
                .get(m)
                .is_some_and(|c| c.state() != CircuitState::Open)
        };
        for a in self.cfg.aliases.values() {
            if !a.targets.iter().any(|t| usable(t)) {
                return Err(format!(
                    "route {}: every target's provider circuit is open",
                    a.name
                ));
            }
        }
        if !self.cfg.models.is_empty() && !self.cfg.models.keys().any(|m| usable(m)) {
            return Err("every model's provider circuit is open".into());
        }
        Ok(())
    }

    fn plan<'a>(&'a self, req: &ChatRequest, meta: &'a RequestMeta) -> Result<Plan<'a>, ApiError> {
        let route = self.resolve(&req.model).ok_or_else(|| {
            ApiError::ModelNotFound(format!(
                "model `{}` is not served by this gateway; GET /v1/models lists the models and aliases",
                req.model
            ))
        })?;
        Ok(Plan {
            gateway: self,
            meta,
            stream: req.stream,
            route: req.model.clone(),
            estimated: estimate_tokens(req),
            targets: Arc::clone(&route.targets),
            routing: route.routing,
            deadline: Instant::now() + route.routing.total_timeout,
            table_route: Arc::clone(&route),
            idx: 0,
            attempt: 0,
            wait: None,
            min_context: None,
            need_prefill: false,
            failed: Vec::new(),
            last: None,
            skipped: Vec::new(),
        })
    }

    /// Asks the spend guard to admit the request at its worst case, before anything goes upstream.
    fn admit(
        &self,
        plan: &Plan<'_>,
        req: &ChatRequest,
    ) -> Result<Box<dyn crate::hooks::Admission>, ApiError> {
        self.hooks
            .breaker
            .admit(&SpendRequest {
                identity: &plan.meta.identity,
                session_id: plan.meta.session_id.as_deref(),
                route: &plan.route,
                models: plan
                    .targets
                    .iter()
                    .map(|t| t.model.upstream_model.as_str())
                    .collect(),
                input_tokens: plan.estimated,
                max_output_tokens: u64::from(req.max_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)),
            })
            .map_err(ApiError::from)
    }

    /// One whole answer, failing over between the route's targets as needed.
    pub async fn complete(
        &self,
        req: &ChatRequest,
        meta: &RequestMeta,
    ) -> Result<ChatResponse, ApiError> {
        let mut plan = self.plan(req, meta)?;
        let admission = self.admit(&plan, req)?;
        let started = Instant::now();
        loop {
            let a = plan.next().await?;
            let t0 = Instant::now();
            let limit = a.remaining.min(plan.routing.first_token_timeout);
            let call = a
                .provider
                .complete(req, &a.model().upstream_model, meta)
                .instrument(a.span(plan.attempt));
            let result = match timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Timeout(
                    plan.timeout_kind(TimeoutKind::FirstToken),
                )),
            };
            match result {
                Ok(mut resp) => {
                    plan.succeeded(a, t0, started, &resp.usage, None, None);
                    admission.settle(&resp.provider, &resp.model, &resp.usage);
                    resp.failed_attempts = std::mem::take(&mut plan.failed);
                    return Ok(resp);
                }
                Err(e) => plan.failed(a, e, t0, 0)?,
            }
        }
    }

    /// A streamed answer. Nothing is yielded until the first content arrives, so a target that fails
    /// before its first token is replaced cleanly; a stream cut after content reached the caller is
    /// continued on a target that accepts a prefill, or ends with an error item — never a truncated
    /// answer presented as complete. The stream ends after `Finish` or an `Err`.
    pub fn stream(
        self: Arc<Self>,
        req: ChatRequest,
        meta: RequestMeta,
    ) -> impl Stream<Item = Result<StreamEvent, ApiError>> + Send + 'static {
        async_stream::stream! {
            let gateway = self;
            let mut plan = match gateway.plan(&req, &meta) {
                Ok(p) => p,
                Err(e) => { yield Err(e); return; }
            };
            let admission = match gateway.admit(&plan, &req) {
                Ok(a) => a,
                Err(e) => { yield Err(e); return; }
            };
            let started = Instant::now();
            let mut emitted_start = false;
            let mut partial = String::new();
            let mut tool_emitted = false;
            let mut first_token_seen = false;
            loop {
                let a = match plan.next().await {
                    Ok(a) => a,
                    Err(e) => { yield Err(e); return; }
                };
                let attempt_req = continuation(&req, &partial);
                let mut pending_start: Option<StreamEvent> = None;
                let t0 = Instant::now();
                let limit = a.remaining.min(plan.routing.first_token_timeout);
                let call = a.provider.stream(&attempt_req, &a.model().upstream_model, &meta).instrument(a.span(plan.attempt));
                let opened = match timeout(limit, call).await {
                    Ok(r) => r,
                    Err(_) => Err(ProviderError::Timeout(plan.timeout_kind(TimeoutKind::FirstToken))),
                };
                let mut upstream = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        if let Err(fatal) = plan.failed(a, e, t0, 0) { yield Err(fatal); return; }
                        continue;
                    }
                };
                let mut got_content = false;
                // Bytes of content this attempt streamed to the caller (text, reasoning, tool calls).
                let mut streamed_bytes = 0usize;
                let mut ttft = None;
                let (mut reasoning_started, mut reasoning_ended) = (None::<Instant>, None::<Instant>);
                let failure = loop {
                    let (kind, wait) = if got_content {
                        (TimeoutKind::Stall, plan.routing.stall_timeout)
                    } else {
                        (TimeoutKind::FirstToken, plan.routing.first_token_timeout)
                    };
                    let wait = wait.min(plan.deadline.saturating_duration_since(Instant::now()));
                    let item = match timeout(wait, upstream.next()).await {
                        Err(_) => break ProviderError::Timeout(plan.timeout_kind(kind)),
                        Ok(None) => break ProviderError::StreamCut("the stream ended without a finish".into()),
                        Ok(Some(Err(e))) => break e,
                        Ok(Some(Ok(ev))) => ev,
                    };
                    match item {
                        StreamEvent::Start { .. } => {
                            // Each attempt's own start: the first opens the answer, a continuation's
                            // names the target that finishes it.
                            pending_start = Some(item);
                        }
                        StreamEvent::Finish { stop_reason, usage, .. } => {
                            if !emitted_start {
                                yield Ok(pending_start.take().unwrap_or_else(|| synthetic_start(&a.model().provider, &a.model().upstream_model)));
                            }
                            let failed_attempts = std::mem::take(&mut plan.failed);
                            let (provider, model) = (a.model().provider.clone(), a.model().upstream_model.clone());
                            let reasoning = reasoning_started.map(|r| reasoning_ended.unwrap_or_else(Instant::now) - r);
                            plan.succeeded(a, t0, started, &usage, ttft, reasoning);
                            admission.settle(&provider, &model, &usage);
                            yield Ok(StreamEvent::Finish { stop_reason, usage, failed_attempts });
                            // What follows the finish in the provider's body (`[DONE]`, the last
                            // chunk of a chunked body) is read, so its connection is reused.
                            provider::finish_stream(upstream).await;
                            return;
                        }
                        delta => {
                            let got_content_before = got_content;
                            if !got_content {
                                got_content = true;
                                ttft = Some(t0.elapsed());
                                if !first_token_seen {
                                    first_token_seen = true;
                                    if let Some(series) = plan.series(&a) {
                                        series.ttft.observe(started.elapsed().as_secs_f64());
                                    }
                                }
                            }
                            if !emitted_start || !got_content_before {
                                emitted_start = true;
                                yield Ok(pending_start.take().unwrap_or_else(|| synthetic_start(&a.model().provider, &a.model().upstream_model)));
                            }
                            match &delta {
                                StreamEvent::ReasoningDelta { .. } => { reasoning_started.get_or_insert_with(Instant::now); }
                                _ if reasoning_started.is_some() && reasoning_ended.is_none() => reasoning_ended = Some(Instant::now()),
                                _ => {}
                            }
                            match &delta {
                                StreamEvent::TextDelta { text } => { partial.push_str(text); streamed_bytes += text.len(); }
                                StreamEvent::ReasoningDelta { text } => streamed_bytes += text.len(),
                                StreamEvent::ToolCallStart { name, .. } => { tool_emitted = true; streamed_bytes += name.len(); }
                                StreamEvent::ToolCallDelta { arguments, .. } => { tool_emitted = true; streamed_bytes += arguments.len(); }
                                _ => {}
                            }
                            yield Ok(delta);
                        }
                    }
                };
                drop(upstream);
                // The tokens a cut attempt streamed are billed by its provider: metered with it
                // (about four bytes a token, as prompts are estimated).
                let streamed_tokens = (streamed_bytes as u64).div_ceil(4);
                let at = plan.idx;
                if let Err(fatal) = plan.failed(a, failure, t0, streamed_tokens) { yield Err(fatal); return; }
                if got_content && plan.idx == at {
                    // Content reached the caller: the answer goes on at the next target, never
                    // again on the one that just broke off.
                    plan.advance();
                }
                if emitted_start {
                    if tool_emitted {
                        yield Err(ApiError::Upstream(
                            "the upstream stream broke off during a tool call; it cannot be continued, retry the request".into(),
                        ));
                        return;
                    }
                    // Content reached the caller: only a target that continues from a prefill may go on.
                    plan.need_prefill = true;
                }
            }
        }
    }
}

/// The request to send for an attempt: the original, or — after a cut — the original with the text
/// already streamed appended as an assistant prefill to continue from.
fn continuation<'a>(req: &'a ChatRequest, partial: &str) -> Cow<'a, ChatRequest> {
    if partial.is_empty() {
        return Cow::Borrowed(req);
    }
    let mut r = req.clone();
    match r.messages.last_mut() {
        Some(last) if last.role == Role::Assistant => last.parts.push(Part::Text {
            text: partial.to_owned(),
        }),
        _ => r.messages.push(Message::text(Role::Assistant, partial)),
    }
    r.raw = r.raw.map(|p| Arc::new(p.with_prefill(partial)));
    Cow::Owned(r)
}

fn synthetic_start(provider: &str, model: &str) -> StreamEvent {
    StreamEvent::Start {
        id: format!("retort-{}", uuid::Uuid::new_v4().simple()),
        provider: provider.into(),
        model: model.into(),
    }
}

/// One attempt the plan allows now.
struct Attempt {
    target: Arc<Target>,
    /// The target's position in the route.
    idx: usize,
    provider: Arc<dyn Provider>,
    permit: Permit,
    remaining: Duration,
}

impl Attempt {
    fn model(&self) -> &ModelConfig {
        &self.target.model
    }

    fn span(&self, n: u32) -> tracing::Span {
        tracing::debug_span!("attempt", provider = %self.model().provider, target = %self.model().name, n)
    }
}

/// The walk over one request's targets.
struct Plan<'a> {
    gateway: &'a Gateway,
    meta: &'a RequestMeta,
    stream: bool,
    route: String,
    estimated: u64,
    targets: Arc<[Arc<Target>]>,
    routing: RoutingConfig,
    deadline: Instant,
    /// The route (from the table the request started with): it keeps the targets' metric series.
    table_route: Arc<Route>,
    idx: usize,
    attempt: u32,
    wait: Option<Duration>,
    /// After a context-length error: only targets with a window larger than this.
    min_context: Option<u32>,
    /// After content reached the caller: only targets that accept a prefill.
    need_prefill: bool,
    failed: Vec<FailedAttempt>,
    last: Option<ProviderError>,
    skipped: Vec<String>,
}

impl<'a> Plan<'a> {
    async fn next(&mut self) -> Result<Attempt, ApiError> {
        loop {
            let Some(target) = self.targets.get(self.idx).cloned() else {
                return Err(self.exhausted());
            };
            let model = &target.model;
            if self.attempt > self.routing.max_retries_per_target {
                self.advance();
                continue;
            }
            if let Some(reason) = self.skip_reason(model) {
                self.skipped.push(format!("{}: {reason}", model.name));
                self.advance();
                continue;
            }
            if let Some(w) = self.wait.take() {
                if Instant::now() + w >= self.deadline {
                    return Err(self.deadline_error());
                }
                tokio::time::sleep(w).await;
            }
            let Some(permit) = target.circuit.try_acquire() else {
                self.skipped
                    .push(format!("{}: provider circuit open", model.name));
                self.record_attempt(model, "breaker_open");
                self.advance();
                continue;
            };
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.deadline_error());
            }
            let Some(provider) = self.gateway.providers.get(&model.provider).cloned() else {
                self.advance();
                continue;
            };
            self.attempt += 1;
            return Ok(Attempt {
                target,
                idx: self.idx,
                provider,
                permit,
                remaining,
            });
        }
    }

    fn skip_reason(&self, model: &ModelConfig) -> Option<String> {
        if let Some(min) = self.min_context
            && model.context_window <= min
        {
            return Some(format!(
                "context window {} is not larger than {min}",
                model.context_window
            ));
        }
        if self.need_prefill && !model.prefill {
            return Some("cannot continue a cut stream (no prefill support)".into());
        }
        // Skip targets the prompt clearly does not fit, unless no target would be left to try.
        if u64::from(model.context_window) < self.estimated
            && self.targets[self.idx..]
                .iter()
                .any(|t| u64::from(t.model.context_window) >= self.estimated)
        {
            return Some(format!(
                "prompt (~{} tokens) exceeds its context window {}",
                self.estimated, model.context_window
            ));
        }
        None
    }

    fn advance(&mut self) {
        self.idx += 1;
        self.attempt = 0;
        self.wait = None;
        if self.idx < self.targets.len() {
            self.gateway
                .metrics
                .failovers
                .get_or_create(&RouteLabels {
                    route: self.route.clone(),
                })
                .inc();
        }
    }

    fn timeout_kind(&self, kind: TimeoutKind) -> TimeoutKind {
        if Instant::now() >= self.deadline {
            TimeoutKind::Deadline
        } else {
            kind
        }
    }

    /// The metric series of the attempt's target on this route.
    fn series(&self, a: &Attempt) -> Option<&crate::metrics::ServedSeries> {
        self.table_route.served(a.idx, &self.gateway.metrics)
    }

    fn record_attempt(&self, model: &ModelConfig, outcome: &'static str) {
        self.gateway
            .metrics
            .attempts
            .get_or_create(&AttemptLabels {
                route: self.route.clone(),
                provider: model.provider.clone(),
                model: model.name.clone(),
                outcome,
            })
            .inc();
    }

    fn set_circuit_gauge(&self, model: &ModelConfig, state: Option<CircuitState>) {
        if let Some(s) = state {
            tracing::info!(provider = %model.provider, model = %model.name, state = ?s, "provider circuit changed");
            self.gateway
                .metrics
                .circuit_state
                .get_or_create(&TargetLabels {
                    provider: model.provider.clone(),
                    model: model.name.clone(),
                })
                .set(s.as_gauge());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn usage_event(
        &self,
        model: &ModelConfig,
        outcome: &'static str,
        status: Option<u16>,
        usage: Usage,
        t0: Instant,
        ttft: Option<Duration>,
        reasoning: Option<Duration>,
    ) {
        // Nothing to build (ids, clones) when nobody meters.
        if !self.gateway.hooks.usage.enabled() {
            return;
        }
        self.gateway.hooks.usage.record(UsageEvent {
            // Time-ordered (UUIDv7): metering's event-id index then appends instead of rewriting random pages.
            event_id: uuid::Uuid::now_v7().to_string(),
            time: std::time::SystemTime::now(),
            request_id: self.meta.request_id.clone(),
            identity: self.meta.identity.clone(),
            session_id: self.meta.session_id.clone(),
            harness: self.meta.harness,
            route: self.route.clone(),
            provider: model.provider.clone(),
            model: model.upstream_model.clone(),
            outcome,
            status,
            usage,
            latency_ms: t0.elapsed().as_millis() as u64,
            ttft_ms: ttft.map(|d| d.as_millis() as u64),
            reasoning_ms: reasoning.map(|d| d.as_millis() as u64),
            stream: self.stream,
        });
    }

    fn succeeded(
        &mut self,
        a: Attempt,
        t0: Instant,
        started: Instant,
        usage: &Usage,
        ttft: Option<Duration>,
        reasoning: Option<Duration>,
    ) {
        let model = &a.target.model;
        self.usage_event(model, "ok", None, *usage, t0, ttft, reasoning);
        let state = a.permit.record(true);
        self.set_circuit_gauge(model, state);
        if let Some(series) = self.table_route.served(a.idx, &self.gateway.metrics) {
            series.attempt_ok.inc();
            series.duration.observe(started.elapsed().as_secs_f64());
        }
        tracing::debug!(route = %self.route, target = %model.name, ms = t0.elapsed().as_millis() as u64, "attempt succeeded");
    }

    /// Records a failed attempt (`output_tokens`: what it streamed to the caller before it broke
    /// off) and decides what comes next; `Err` is the caller's answer.
    fn failed(
        &mut self,
        a: Attempt,
        err: ProviderError,
        t0: Instant,
        output_tokens: u64,
    ) -> Result<(), ApiError> {
        let disposition = err.disposition();
        // The caller's request, not the target, is what failed: the circuit stays as it is.
        let healthy = matches!(disposition, Disposition::Fatal | Disposition::LargerContext)
            || matches!(err, ProviderError::Unsupported(_));
        let model = &a.target.model;
        let usage = if output_tokens > 0 {
            Usage {
                input: self.estimated,
                output: output_tokens,
                ..Usage::default()
            }
        } else {
            Usage::default()
        };
        self.usage_event(model, err.label(), err.status(), usage, t0, None, None);
        let state = a.permit.record(healthy);
        self.set_circuit_gauge(model, state);
        self.record_attempt(model, err.label());
        tracing::warn!(route = %self.route, target = %model.name, attempt = self.attempt, error = %err, "attempt failed");
        self.failed.push(FailedAttempt {
            provider: model.provider.clone(),
            model: model.upstream_model.clone(),
            error: err.to_string(),
            status: err.status(),
            duration_ms: t0.elapsed().as_millis() as u64,
            output_tokens,
        });
        match disposition {
            Disposition::Fatal => return Err(fatal_error(&model.provider, err)),
            Disposition::Retry => match err.retry_after() {
                Some(ra) if ra > self.routing.max_retry_after => self.advance(),
                ra => self.wait = Some(self.backoff().max(ra.unwrap_or_default())),
            },
            Disposition::NextTarget => self.advance(),
            Disposition::LargerContext => {
                self.min_context = Some(self.min_context.unwrap_or(0).max(model.context_window));
                self.advance();
            }
        }
        self.last = Some(err);
        Ok(())
    }

    /// Exponential backoff with jitter: base·2^(n−1), capped, drawn from [d/2, d].
    fn backoff(&self) -> Duration {
        let exp = self.attempt.saturating_sub(1).min(16);
        let d = self
            .routing
            .backoff_base
            .saturating_mul(1 << exp)
            .min(self.routing.backoff_max);
        let half = d / 2;
        half + d.mul_f64(rand::rng().random::<f64>() * 0.5)
    }

    fn deadline_error(&self) -> ApiError {
        ApiError::Timeout(format!(
            "route {} did not answer within its total deadline of {} ms{}",
            self.route,
            self.routing.total_timeout.as_millis(),
            self.summary()
        ))
    }

    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .failed
            .iter()
            .map(|f| format!("{}/{}: {}", f.provider, f.model, truncate(&f.error, 200)))
            .collect();
        parts.extend(self.skipped.iter().cloned());
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
        }
    }

    fn exhausted(&self) -> ApiError {
        let all_rate_limited =
            !self.failed.is_empty() && self.failed.iter().all(|f| f.status == Some(429));
        match &self.last {
            _ if all_rate_limited => ApiError::RateLimited {
                message: format!(
                    "every target of {} is rate-limited{}",
                    self.route,
                    self.summary()
                ),
                retry_after: self.last.as_ref().and_then(ProviderError::retry_after),
            },
            Some(ProviderError::Status {
                kind: StatusKind::ContextLength,
                message,
                ..
            }) => ApiError::ContextLength(format!(
                "the prompt does not fit the context window of any target of {}: {message}",
                self.route
            )),
            None if self.min_context.is_none()
                && self.skipped.iter().all(|s| s.contains("context window"))
                && !self.skipped.is_empty() =>
            {
                ApiError::ContextLength(format!(
                    "the prompt (~{} tokens) fits no target of {}",
                    self.estimated, self.route
                ))
            }
            Some(ProviderError::Timeout(TimeoutKind::Deadline)) => self.deadline_error(),
            // Every target stayed silent past its timeout.
            Some(ProviderError::Timeout(_))
                if self.failed.iter().all(|f| f.error.ends_with("timeout")) =>
            {
                ApiError::Timeout(format!(
                    "no target of {} answered in time{}",
                    self.route,
                    self.summary()
                ))
            }
            // The last target left could not honour a field: the caller's request must change.
            Some(ProviderError::Unsupported(why)) => ApiError::BadRequest(format!(
                "no target of {} can serve this request as sent: {why}",
                self.route
            )),
            _ => ApiError::Upstream(format!(
                "every target of {} failed{}",
                self.route,
                self.summary()
            )),
        }
    }
}

fn fatal_error(provider: &str, err: ProviderError) -> ApiError {
    match err {
        ProviderError::Status {
            kind: StatusKind::ContentPolicy,
            message,
            ..
        } => ApiError::ContentPolicy(format!("{provider} refused the content: {message}")),
        ProviderError::Status { message, .. } => {
            ApiError::BadRequest(format!("{provider} rejected the request: {message}"))
        }
        other => ApiError::Upstream(other.to_string()),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
