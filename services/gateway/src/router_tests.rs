//! The failover planner on tokio's paused clock, with in-process providers that answer from a
//! script: every retry, wait and deadline is exact and takes no wall time. The tests over sockets
//! (`tests/failover.rs`) check the same rules end to end against the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use futures::StreamExt;

use super::*;
use crate::{config::RawConfig, provider::EventStream, types::StopReason};

/// What a scripted target does on one call.
enum Step {
    /// Answers with this text (a stream: `Start`, the text, `Finish`).
    Answer(&'static str),
    /// Fails before any content.
    Fail(ProviderError),
    /// A stream that sends this text, then breaks off.
    CutAfter(&'static str),
    /// Never answers.
    Hang,
}

/// One call a scripted provider received.
struct Call {
    model: String,
    at: Instant,
    req: ChatRequest,
}

/// One provider serving every model of the test configuration, each from its own script; a model
/// whose script has run out answers with its own name.
#[derive(Default)]
struct Scripted {
    steps: Mutex<HashMap<String, VecDeque<Step>>>,
    calls: Mutex<Vec<Call>>,
}

impl Scripted {
    fn script(&self, model: &str, steps: impl IntoIterator<Item = Step>) {
        self.steps
            .lock()
            .unwrap()
            .entry(model.to_owned())
            .or_default()
            .extend(steps);
    }

    fn take(&self, req: &ChatRequest, model: &str) -> Step {
        self.calls.lock().unwrap().push(Call {
            model: model.to_owned(),
            at: Instant::now(),
            req: req.clone(),
        });
        self.steps
            .lock()
            .unwrap()
            .get_mut(model)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step::Answer("default"))
    }

    /// The models called, in order.
    fn called(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.model.clone())
            .collect()
    }

    /// When each call arrived, relative to `t0`.
    fn times(&self, t0: Instant) -> Vec<Duration> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.at - t0)
            .collect()
    }
}

#[async_trait::async_trait]
impl Provider for Scripted {
    fn name(&self) -> &str {
        "p"
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError> {
        match self.take(req, model) {
            Step::Answer(text) | Step::CutAfter(text) => Ok(ChatResponse {
                id: "r".into(),
                provider: "p".into(),
                model: model.into(),
                content: vec![Part::Text { text: text.into() }],
                ..Default::default()
            }),
            Step::Fail(e) => Err(e),
            Step::Hang => futures::future::pending().await,
        }
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let start = StreamEvent::Start {
            id: "s".into(),
            provider: "p".into(),
            model: model.into(),
        };
        let text = |t: &str| StreamEvent::TextDelta { text: t.into() };
        let items: Vec<Result<StreamEvent, ProviderError>> = match self.take(req, model) {
            Step::Answer(t) => vec![
                Ok(start),
                Ok(text(t)),
                Ok(StreamEvent::Finish {
                    stop_reason: StopReason::EndTurn,
                    usage: Usage::default(),
                    failed_attempts: Vec::new(),
                }),
            ],
            Step::CutAfter(t) => vec![
                Ok(start),
                Ok(text(t)),
                Err(ProviderError::StreamCut("connection reset".into())),
            ],
            Step::Fail(e) => return Err(e),
            Step::Hang => futures::future::pending().await,
        };
        Ok(Box::pin(futures::stream::iter(items)))
    }
}

fn status(status: u16, kind: StatusKind, retry_after: Option<Duration>) -> Step {
    Step::Fail(ProviderError::Status {
        status,
        kind,
        message: format!("upstream said {status}"),
        retry_after,
    })
}

/// Alias `r` over `targets`; each model is `NAME` with `window` tokens and prefill as given.
/// Retries: two per target, backoff from 100 ms (capped at 400 ms), `Retry-After` up to 5 s, and
/// a total deadline of `total_ms`.
fn gateway(models: &[(&str, u32, bool)], total_ms: u64) -> (Arc<Gateway>, Arc<Scripted>) {
    let mut text =
        String::from("[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n");
    for (name, window, prefill) in models {
        text.push_str(&format!(
            "[models.{name}]\nprovider = \"p\"\ncontext_window = {window}\nprefill = {prefill}\n"
        ));
    }
    let targets: Vec<String> = models.iter().map(|(n, ..)| format!("\"{n}\"")).collect();
    // Per-attempt timeouts must fit inside the total deadline.
    let attempt_ms = total_ms.min(10_000);
    text.push_str(&format!(
        "[aliases.r]\ntargets = [{}]\n[routing]\nmax_retries_per_target = 2\nbackoff_base_ms = 100\n\
         backoff_max_ms = 400\nmax_retry_after_ms = 5000\nfirst_token_timeout_ms = {attempt_ms}\n\
         stall_timeout_ms = {attempt_ms}\ntotal_timeout_ms = {total_ms}\n",
        targets.join(", ")
    ));
    let raw: RawConfig = toml::from_str(&text).unwrap();
    // No environment: a `RETORT_PROVIDER_P_*` variable must not reach the test.
    let mut cfg = Config::load(raw, &|_| None).unwrap();
    // A circuit opens only where a test opens it.
    cfg.circuit.failure_threshold = 1000;
    let scripted = Arc::new(Scripted::default());
    let providers = HashMap::from([("p".to_owned(), Arc::clone(&scripted) as Arc<dyn Provider>)]);
    let gateway = Gateway::with_providers(
        Arc::new(cfg),
        providers,
        Arc::new(Metrics::new()),
        Hooks::default(),
    );
    (Arc::new(gateway), scripted)
}

fn ask(stream: bool) -> ChatRequest {
    ChatRequest {
        model: "r".into(),
        messages: vec![Message::text(Role::User, "hi")],
        stream,
        ..Default::default()
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_429_and_a_503_are_retried_on_the_same_target_with_backoff_then_it_answers() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script(
        "a",
        [
            status(429, StatusKind::RateLimited, None),
            status(503, StatusKind::Unavailable, None),
            Step::Answer("from a"),
        ],
    );
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.text(), "from a");
    assert_eq!(p.called(), ["a", "a", "a"]);
    assert_eq!(resp.failed_attempts.len(), 2);
    let at = p.times(t0);
    // First backoff: 100 ms drawn from [50, 100]; the second doubles: [100, 200].
    let (first, second) = (at[1] - at[0], at[2] - at[1]);
    assert!((50 * MS..=100 * MS).contains(&first), "{first:?}");
    assert!((100 * MS..=200 * MS).contains(&second), "{second:?}");
    assert_eq!(t0.elapsed(), at[2], "no wait after the answer");
}

#[tokio::test(start_paused = true)]
async fn retries_run_out_then_the_next_target_answers_at_once() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script(
        "a",
        (0..3).map(|_| status(500, StatusKind::Unavailable, None)),
    );
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "b");
    assert_eq!(p.called(), ["a", "a", "a", "b"]);
    let at = p.times(t0);
    assert_eq!(at[3], at[2], "no backoff before moving to the next target");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_over_a_shorter_backoff() {
    let (gw, p) = gateway(&[("a", 1000, false)], 30_000);
    p.script(
        "a",
        [status(
            429,
            StatusKind::RateLimited,
            Some(Duration::from_secs(2)),
        )],
    );
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "a");
    assert_eq!(p.called(), ["a", "a"]);
    assert_eq!(p.times(t0)[1], Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_allowed_moves_on_at_once() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script(
        "a",
        [status(
            429,
            StatusKind::RateLimited,
            Some(Duration::from_secs(60)),
        )],
    );
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "b");
    assert_eq!(p.called(), ["a", "b"]);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_400_is_the_callers_answer_without_retry_or_failover() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script("a", [status(400, StatusKind::InvalidRequest, None)]);
    let err = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::BadRequest(_)), "{err:?}");
    assert_eq!(p.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_401_and_a_404_go_to_the_next_target_without_retry() {
    let (gw, p) = gateway(
        &[("a", 1000, false), ("b", 1000, false), ("c", 1000, false)],
        30_000,
    );
    p.script("a", [status(401, StatusKind::Auth, None)]);
    p.script("b", [status(404, StatusKind::NotFound, None)]);
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "c");
    assert_eq!(p.called(), ["a", "b", "c"]);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_context_length_error_goes_only_to_targets_with_a_larger_window() {
    let (gw, p) = gateway(
        &[
            ("a", 1000, false),
            ("smaller", 500, false),
            ("same", 1000, false),
            ("larger", 4000, false),
        ],
        30_000,
    );
    p.script("a", [status(400, StatusKind::ContextLength, None)]);
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "larger");
    assert_eq!(p.called(), ["a", "larger"]);
}

#[tokio::test(start_paused = true)]
async fn a_context_length_error_with_no_larger_window_left_is_the_callers_answer() {
    let (gw, p) = gateway(&[("a", 1000, false), ("same", 1000, false)], 30_000);
    p.script("a", [status(400, StatusKind::ContextLength, None)]);
    let err = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::ContextLength(_)), "{err:?}");
    assert_eq!(p.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_skipped_until_its_probe_time() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    let circuit = gw.circuits.get("a").unwrap();
    // The configured 30 s open time, reached with threshold-many failures.
    for _ in 0..gw.cfg.circuit.failure_threshold {
        circuit.try_acquire().unwrap().record(false);
    }
    assert_eq!(circuit.state(), CircuitState::Open);
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "b");
    assert_eq!(p.called(), ["b"], "no attempt on an open circuit");

    tokio::time::advance(gw.cfg.circuit.open_for).await;
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.model, "a", "the half-open probe goes through");
    assert_eq!(circuit.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_content_continues_on_the_next_prefill_target() {
    let (gw, p) = gateway(
        &[
            ("a", 1000, false),
            ("no_prefill", 1000, false),
            ("b", 1000, true),
        ],
        30_000,
    );
    p.script("a", [Step::CutAfter("Hello, wor")]);
    p.script("b", [Step::Answer("ld!")]);
    let t0 = Instant::now();
    let events: Vec<StreamEvent> = Arc::clone(&gw)
        .stream(ask(true), RequestMeta::default())
        .map(Result::unwrap)
        .collect()
        .await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello, world!");
    let starts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Start { model, .. } => Some(model.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        ["a", "b"],
        "the answer opens once; the continuation's start names the target that finishes it"
    );
    let Some(StreamEvent::Finish {
        failed_attempts, ..
    }) = events.last()
    else {
        panic!("the stream ends with its finish: {events:?}");
    };
    assert_eq!(failed_attempts.len(), 1);
    assert_eq!(
        p.called(),
        ["a", "b"],
        "neither a again nor a target without prefill"
    );
    let calls = p.calls.lock().unwrap();
    let last = calls[1].req.messages.last().unwrap();
    assert_eq!(last.role, Role::Assistant);
    assert_eq!(
        last.joined_text(),
        "Hello, wor",
        "the text so far as a prefill"
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_with_no_prefill_target_left_ends_with_an_error() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script("a", [Step::CutAfter("Hello")]);
    let items: Vec<Result<StreamEvent, ApiError>> = Arc::clone(&gw)
        .stream(ask(true), RequestMeta::default())
        .collect()
        .await;
    assert!(
        matches!(items.last(), Some(Err(ApiError::Upstream(_)))),
        "{items:?}"
    );
    assert!(
        !items
            .iter()
            .any(|i| matches!(i, Ok(StreamEvent::Finish { .. }))),
        "never a truncated answer presented as complete"
    );
    assert_eq!(p.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_a_target_that_never_answers() {
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 1_000);
    p.script("a", [Step::Hang]);
    let t0 = Instant::now();
    let err = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Timeout(_)), "{err:?}");
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(p.called(), ["a"], "no attempt after the deadline");
}

#[tokio::test(start_paused = true)]
async fn a_backoff_that_would_pass_the_deadline_ends_the_request_at_once() {
    let (gw, p) = gateway(&[("a", 1000, false)], 1_000);
    p.script(
        "a",
        [status(
            429,
            StatusKind::RateLimited,
            Some(Duration::from_secs(2)),
        )],
    );
    let t0 = Instant::now();
    let err = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Timeout(_)), "{err:?}");
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "it does not sleep into the deadline"
    );
    assert_eq!(p.called(), ["a"]);
}

#[tokio::test(start_paused = true)]
async fn a_target_silent_past_its_first_token_timeout_is_not_retried() {
    // Total 30 s: the first-token timeout is 10 s.
    let (gw, p) = gateway(&[("a", 1000, false), ("b", 1000, false)], 30_000);
    p.script("a", [Step::Hang, Step::Hang, Step::Hang]);
    p.script("b", [Step::Answer("hi")]);
    let t0 = Instant::now();
    let resp = gw
        .complete(&ask(false), &RequestMeta::default())
        .await
        .unwrap();
    assert_eq!(resp.text(), "hi");
    assert_eq!(p.called(), ["a", "b"], "the silent target is tried once");
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(10),
        "one timeout, then the next target at once"
    );
    assert_eq!(resp.failed_attempts.len(), 1);
    assert!(
        resp.failed_attempts[0]
            .error
            .contains("first-token timeout")
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_is_continued_on_the_next_target_even_when_it_could_retry() {
    // `a` accepts a prefill, so it could continue itself: the rule says the next target.
    let (gw, p) = gateway(&[("a", 1000, true), ("b", 1000, true)], 30_000);
    p.script("a", [Step::CutAfter("Hello, wor"), Step::Answer("ld!")]);
    p.script("b", [Step::Answer("ld!")]);
    let events: Vec<StreamEvent> = Arc::clone(&gw)
        .stream(ask(true), RequestMeta::default())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(p.called(), ["a", "b"]);
    let Some(StreamEvent::Finish {
        failed_attempts, ..
    }) = events.last()
    else {
        panic!("the stream ends with its finish: {events:?}");
    };
    // The cut attempt is listed with what it contributed: "Hello, wor" is 10 bytes, ~3 tokens.
    assert_eq!(failed_attempts.len(), 1);
    assert_eq!(failed_attempts[0].model, "a");
    assert_eq!(failed_attempts[0].output_tokens, 3);
}

/// The tokens a cut attempt streamed are metered with that attempt (its provider bills them).
#[tokio::test(start_paused = true)]
async fn the_tokens_of_a_cut_attempt_are_metered_with_it() {
    use crate::hooks::{UsageEvent, UsageSink};
    #[derive(Default)]
    struct Sink(std::sync::Mutex<Vec<UsageEvent>>);
    impl UsageSink for Sink {
        fn record(&self, e: UsageEvent) {
            self.0.lock().unwrap().push(e);
        }
    }
    let sink = Arc::new(Sink::default());
    let (gw, p) = gateway(&[("a", 1000, true), ("b", 1000, true)], 30_000);
    let hooks = Hooks {
        usage: sink.clone(),
        ..Hooks::default()
    };
    let gw = Arc::new(Gateway::with_providers(
        Arc::clone(&gw.cfg),
        HashMap::from([("p".to_owned(), Arc::clone(&p) as Arc<dyn Provider>)]),
        Arc::new(Metrics::new()),
        hooks,
    ));
    p.script("a", [Step::CutAfter("Hello, wor")]);
    p.script("b", [Step::Answer("ld!")]);
    let n = Arc::clone(&gw)
        .stream(ask(true), RequestMeta::default())
        .count()
        .await;
    assert!(n > 0);
    let events = sink.0.lock().unwrap();
    let outcomes: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| (e.model.as_str(), e.outcome, e.usage.output))
        .collect();
    assert_eq!(outcomes, [("a", "stream_cut", 3), ("b", "ok", 0)]);
    assert!(
        events[0].usage.input > 0,
        "the prompt it read is metered too"
    );
}
