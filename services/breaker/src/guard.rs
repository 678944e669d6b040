//! The gateway side: a [`SpendGuard`] that admits each request from local leases (a mutex and a
//! few integers, no I/O) and a background thread that reports settled usage, refreshes leases
//! ahead of exhaustion, returns idle allowance and learns which sessions are paused or stopped.
//!
//! Bound: the breaker grants a principal at most `hard − spent − outstanding`, and a request is
//! admitted only when its worst-case cost is covered by the local lease, so spend exceeds a hard
//! budget only by what admitted requests used beyond their worst case (input-token estimates),
//! plus whatever was admitted while failing open.
use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use retort_gateway::{
    error::ApiError,
    hooks::{Admission, SpendGuard, SpendRequest},
    types::Usage,
};
use retort_pricing::{PriceTable, Tokens, cost_of};
use retort_proto::v1::{self as pb, breaker_client::BreakerClient};

use crate::{Error, config::Unreachable, now_ms};

/// How the guard reaches the breaker and sizes its leases.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    pub endpoint: String,
    pub on_unreachable: Unreachable,
    pub lease_micros: i64,
    pub lease_tokens: u64,
    pub lease_wait: Duration,
    pub flush: Duration,
    /// Leases unused this long are given back.
    pub idle_return: Duration,
}

impl GuardConfig {
    pub fn from_spend(c: &crate::SpendConfig) -> GuardConfig {
        GuardConfig {
            endpoint: c.endpoint.clone(),
            on_unreachable: c.on_unreachable,
            lease_micros: c.lease_micros,
            lease_tokens: c.lease_tokens,
            lease_wait: Duration::from_millis(c.lease_wait_ms),
            flush: Duration::from_millis(c.flush_ms),
            idle_return: Duration::from_secs(2),
        }
    }
}

#[derive(Default)]
struct Account {
    known: bool,
    micros_unlimited: bool,
    tokens_unlimited: bool,
    micros: i64,
    tokens: i64,
    exhausted: Option<String>,
    want: bool,
    last_used: Option<Instant>,
}

impl Account {
    fn covers(&self, m: i64, t: i64) -> bool {
        self.known
            && (self.micros_unlimited || self.micros >= m)
            && (self.tokens_unlimited || self.tokens >= t)
    }
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    blocked: HashMap<String, String>,
    pending: Vec<pb::UsageRecord>,
    refreshing: bool,
    last_error: Option<String>,
}

/// Counters the health page and the bench read.
#[derive(Default)]
pub struct Stats {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub failed_open: AtomicU64,
    /// Σ max(0, real − reserved) over settled requests: the only way spend passes a hard budget.
    pub overrun_micros: AtomicI64,
    pub overrun_tokens: AtomicI64,
}

struct Inner {
    cfg: GuardConfig,
    prices: PriceTable,
    state: Mutex<State>,
    cv: Condvar,
    wake: tokio::sync::Notify,
    healthy: AtomicBool,
    stop: AtomicBool,
    stats: Stats,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The gateway's spend guard. Cheap to share (`Arc`); dropping it stops its background thread.
pub struct Guard {
    inner: Arc<Inner>,
}

/// What `/breaker/health` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuardHealth {
    pub breaker_reachable: bool,
    pub on_unreachable: &'static str,
    pub last_error: Option<String>,
    pub admitted: u64,
    pub refused: u64,
    pub failed_open: u64,
    pub overrun_micros: i64,
}

impl Guard {
    /// Starts the background thread (its own small runtime, so waiting admissions never starve it).
    pub fn start(cfg: GuardConfig, prices: PriceTable) -> Result<Guard, Error> {
        let inner = Arc::new(Inner {
            cfg,
            prices,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            healthy: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            stats: Stats::default(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let bg = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("retort-spend-guard".into())
            .spawn(move || rt.block_on(background(bg)))
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Guard { inner })
    }

    pub fn health(&self) -> GuardHealth {
        let s = &self.inner.stats;
        GuardHealth {
            breaker_reachable: self.inner.healthy.load(Ordering::Relaxed),
            on_unreachable: match self.inner.cfg.on_unreachable {
                Unreachable::FailOpen => "fail_open",
                Unreachable::FailClosed => "fail_closed",
            },
            last_error: self.inner.lock().last_error.clone(),
            admitted: s.admitted.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            failed_open: s.failed_open.load(Ordering::Relaxed),
            overrun_micros: s.overrun_micros.load(Ordering::Relaxed),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Sends pending usage now and waits until it was accepted (tests and shutdown).
    pub async fn flush(&self) {
        for _ in 0..200 {
            if self.inner.lock().pending.is_empty() {
                tokio::time::sleep(self.inner.cfg.flush * 2).await;
                if self.inner.lock().pending.is_empty() {
                    return;
                }
            }
            self.inner.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The worst-case reservation of a request: (micro-dollars, tokens).
    pub fn reservation(&self, req: &SpendRequest<'_>) -> (i64, i64) {
        let day = now_ms().div_euclid(86_400_000);
        let t = Tokens {
            input: req.input_tokens,
            output: req.max_output_tokens,
            ..Tokens::default()
        };
        let m = self
            .inner
            .prices
            .max_price(&req.models, day)
            .map_or(0, |p| cost_of(p, &t));
        (m, (req.input_tokens + req.max_output_tokens) as i64)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }
}

struct Admitted {
    inner: Arc<Inner>,
    principals: [String; 2],
    /// None: admitted while failing open (nothing debited).
    reserved: Option<(i64, i64)>,
    user: String,
    team: String,
    session: String,
    done: bool,
}

impl Admitted {
    fn credit(&self, st: &mut State, m: i64, t: i64) {
        if self.reserved.is_none() {
            return;
        }
        for p in &self.principals {
            if let Some(a) = st.accounts.get_mut(p) {
                if !a.micros_unlimited {
                    a.micros += m;
                }
                if !a.tokens_unlimited {
                    a.tokens += t;
                }
            }
        }
        // Requests waiting for allowance may fit now.
        self.inner.cv.notify_all();
    }
}

impl Admission for Admitted {
    fn settle(mut self: Box<Self>, _provider: &str, model: &str, usage: &Usage) {
        self.done = true;
        let day = now_ms().div_euclid(86_400_000);
        let t = Tokens {
            input: usage.input,
            output: usage.output,
            reasoning: usage.reasoning,
            cache_read: usage.cache_read,
            cache_write: usage.cache_write,
        };
        let priced = self.inner.prices.cost(model, day, &t);
        let cost = priced.as_ref().map_or(0, |p| p.cost);
        let tokens = (usage.input + usage.output + usage.cache_read + usage.cache_write) as i64;
        let rec = pb::UsageRecord {
            user: self.user.clone(),
            team: self.team.clone(),
            session_id: self.session.clone(),
            model: model.to_owned(),
            tier: priced.map(|p| p.tier).unwrap_or_default(),
            tokens: tokens as u64,
            cost_micros: cost,
            time_unix_ms: now_ms(),
        };
        if let Some((rm, rt)) = self.reserved {
            let s = &self.inner.stats;
            s.overrun_micros
                .fetch_add((cost - rm).max(0), Ordering::Relaxed);
            s.overrun_tokens
                .fetch_add((tokens - rt).max(0), Ordering::Relaxed);
        }
        let mut st = self.inner.lock();
        if let Some((rm, rt)) = self.reserved {
            self.credit(&mut st, rm - cost, rt - tokens);
        }
        if st.pending.len() < 100_000 {
            st.pending.push(rec);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if !self.done
            && let Some((m, t)) = self.reserved
        {
            let inner = Arc::clone(&self.inner);
            let mut st = inner.lock();
            self.credit(&mut st, m, t);
        }
    }
}

/// Blocks this thread up to `d` for a lease refresh, without starving a multi-threaded runtime.
fn wait<'a>(inner: &'a Inner, st: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
    let go = || {
        inner
            .cv
            .wait_timeout(st, d)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(go),
        _ => go(),
    }
}

impl SpendGuard for Guard {
    fn admit(&self, req: &SpendRequest<'_>) -> Result<Box<dyn Admission>, ApiError> {
        let inner = &self.inner;
        let (rm, rt) = self.reservation(req);
        let user = &req.identity.user;
        let session = req.session_id.unwrap_or("");
        let principals = [
            format!("user:{user}"),
            format!("team:{}", req.identity.team),
        ];
        let admitted = |reserved| -> Box<dyn Admission> {
            Box::new(Admitted {
                inner: Arc::clone(inner),
                principals: principals.clone(),
                reserved,
                user: user.clone(),
                team: req.identity.team.clone(),
                session: session.to_owned(),
                done: false,
            })
        };
        let deadline = Instant::now() + inner.cfg.lease_wait;
        let mut st = inner.lock();
        if !session.is_empty()
            && let Some(msg) = st.blocked.get(&format!("{user}/{session}"))
        {
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::PaymentRequired(msg.clone()));
        }
        loop {
            if !inner.healthy.load(Ordering::Relaxed) {
                return match inner.cfg.on_unreachable {
                    Unreachable::FailOpen => {
                        inner.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                        Ok(admitted(None))
                    }
                    Unreachable::FailClosed => {
                        inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                        Err(ApiError::Upstream("the spend guard cannot reach the breaker service and is configured to fail closed".into()))
                    }
                };
            }
            let now = Instant::now();
            if principals
                .iter()
                .all(|p| st.accounts.get(p).is_some_and(|a| a.covers(rm, rt)))
            {
                for p in &principals {
                    if let Some(a) = st.accounts.get_mut(p) {
                        if !a.micros_unlimited {
                            a.micros -= rm;
                        }
                        if !a.tokens_unlimited {
                            a.tokens -= rt;
                        }
                        a.last_used = Some(now);
                    }
                }
                inner.stats.admitted.fetch_add(1, Ordering::Relaxed);
                return Ok(admitted(Some((rm, rt))));
            }
            // A lease is short: refuse at once if its budget is spent, else wait briefly for a refresh.
            let mut spent = None;
            for p in &principals {
                let a = st.accounts.entry(p.clone()).or_default();
                if a.covers(rm, rt) {
                    continue;
                }
                if let Some(why) = &a.exhausted {
                    spent = Some(why.clone());
                }
                a.want = true;
                a.last_used = Some(now);
            }
            if spent.is_none() && now < deadline {
                inner.wake.notify_one();
                st = wait(inner, st, deadline - now);
                continue;
            }
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            let why = spent.unwrap_or_else(|| "the spend allowance of this gateway is used up for now (the budget is nearly spent or leased to other gateways); retry shortly".into());
            return Err(ApiError::PaymentRequired(format!(
                "request of user {user} refused: {why} (this request may cost up to ${:.4}, {rt} tokens)",
                rm as f64 / 1e6
            )));
        }
    }
}

async fn background(inner: Arc<Inner>) {
    let channel = match tonic::transport::Endpoint::from_shared(inner.cfg.endpoint.clone()) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect_lazy(),
        Err(e) => {
            tracing::error!(error = %e, endpoint = %inner.cfg.endpoint, "spend guard: bad breaker endpoint");
            inner.healthy.store(false, Ordering::Relaxed);
            return;
        }
    };
    let mut client = BreakerClient::new(channel);
    while !inner.stop.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(inner.cfg.flush, inner.wake.notified()).await;
        refresh(&inner, &mut client).await;
        flush(&inner, &mut client).await;
    }
}

fn set_health(inner: &Inner, st: &mut State, r: Result<(), String>) {
    match r {
        Ok(()) => {
            if !inner.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!("spend guard: the breaker service is reachable again");
            }
            st.last_error = None;
        }
        Err(e) => {
            if inner.healthy.swap(false, Ordering::Relaxed) {
                match inner.cfg.on_unreachable {
                    Unreachable::FailOpen => {
                        tracing::warn!(error = %e, "spend guard: breaker unreachable — failing OPEN: requests are admitted unmetered")
                    }
                    Unreachable::FailClosed => {
                        tracing::error!(error = %e, "spend guard: breaker unreachable — failing CLOSED: requests are refused")
                    }
                }
            }
            st.last_error = Some(e);
        }
    }
    inner.cv.notify_all();
}

fn blocked_map(b: Vec<pb::BlockedSession>) -> HashMap<String, String> {
    b.into_iter()
        .map(|b| (format!("{}/{}", b.user, b.session_id), b.message))
        .collect()
}

async fn refresh(inner: &Inner, client: &mut BreakerClient<tonic::transport::Channel>) {
    let (cfg, now) = (&inner.cfg, Instant::now());
    let asks: Vec<pb::LeaseAsk> = {
        let mut st = inner.lock();
        let mut asks = Vec::new();
        for (p, a) in st.accounts.iter_mut() {
            let idle = a
                .last_used
                .is_none_or(|t| now.duration_since(t) > cfg.idle_return);
            let low = !a.known
                || (!a.micros_unlimited && a.micros < cfg.lease_micros / 2)
                || (!a.tokens_unlimited && a.tokens < cfg.lease_tokens as i64 / 2);
            let mut ask = pb::LeaseAsk {
                principal: p.clone(),
                ..Default::default()
            };
            if idle && a.known && !a.want {
                // Give unused allowance back so other gateways can spend it.
                ask.return_micros = if a.micros_unlimited {
                    0
                } else {
                    a.micros.max(0)
                };
                ask.return_tokens = if a.tokens_unlimited {
                    0
                } else {
                    a.tokens.max(0) as u64
                };
                if ask.return_micros == 0 && ask.return_tokens == 0 {
                    continue;
                }
                a.micros -= ask.return_micros;
                a.tokens -= ask.return_tokens as i64;
            } else if a.want || (low && a.exhausted.is_none()) {
                ask.want_micros = if a.micros_unlimited && a.known {
                    0
                } else {
                    (cfg.lease_micros - a.micros).max(0)
                };
                ask.want_tokens = if a.tokens_unlimited && a.known {
                    0
                } else {
                    (cfg.lease_tokens as i64 - a.tokens).max(0) as u64
                };
                if a.known && ask.want_micros == 0 && ask.want_tokens == 0 && !a.want {
                    continue;
                }
            } else {
                continue;
            }
            a.want = false;
            asks.push(ask);
        }
        st.refreshing = !asks.is_empty();
        asks
    };
    if asks.is_empty() {
        return;
    }
    let r = client
        .lease(pb::LeaseRequest {
            gateway_id: String::new(),
            asks: asks.clone(),
        })
        .await;
    let mut st = inner.lock();
    st.refreshing = false;
    match r {
        Ok(resp) => {
            let resp = resp.into_inner();
            for g in resp.grants {
                let a = st.accounts.entry(g.principal.clone()).or_default();
                a.known = true;
                a.micros_unlimited = g.unlimited || g.micros_unlimited;
                a.tokens_unlimited = g.unlimited || g.tokens_unlimited;
                a.micros += g.micros;
                a.tokens += g.tokens as i64;
                a.exhausted = g.exhausted.then_some(g.reason);
            }
            st.blocked = blocked_map(resp.blocked);
            set_health(inner, &mut st, Ok(()));
        }
        Err(e) => {
            // The returns did not arrive: keep them.
            for ask in asks {
                if let Some(a) = st.accounts.get_mut(&ask.principal) {
                    a.micros += ask.return_micros;
                    a.tokens += ask.return_tokens as i64;
                }
            }
            set_health(inner, &mut st, Err(format!("lease: {}", e.message())));
        }
    }
}

async fn flush(inner: &Inner, client: &mut BreakerClient<tonic::transport::Channel>) {
    let usage = std::mem::take(&mut inner.lock().pending);
    let n = usage.len();
    let r = client
        .settle(pb::ReportRequest {
            gateway_id: String::new(),
            usage: usage.clone(),
        })
        .await;
    let mut st = inner.lock();
    match r {
        Ok(resp) => {
            st.blocked = blocked_map(resp.into_inner().blocked);
            set_health(inner, &mut st, Ok(()));
        }
        Err(e) => {
            if n > 0 && st.pending.len() + n <= 100_000 {
                let newer = std::mem::replace(&mut st.pending, usage);
                st.pending.extend(newer);
            }
            set_health(inner, &mut st, Err(format!("settle: {}", e.message())));
        }
    }
}
