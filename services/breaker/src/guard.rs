//! The gateway side: a [`BreakerGuard`] that admits each request from local leases (this file: the
//! admission path and the local bookkeeping it reads) and a background thread ([`background`])
//! that reports settled usage, refreshes and renews leases, returns idle allowance and learns which
//! sessions are paused or stopped.
//!
//! Hot path (`admit` + `settle`): one mutex, a few hash lookups by borrowed `&str`, integer
//! arithmetic; no I/O and, once a user and session have been seen, no allocation but the `Box` the
//! gateway's [`Admission`] trait asks for. Usage is summed per session and model between flushes.
//!
//! Bound: the breaker grants a principal at most `hard − spent − outstanding`, and a request is
//! admitted only when its worst-case cost is covered by the local lease, so spend exceeds a hard
//! budget only by what admitted requests used beyond their worst case (input-token estimates),
//! plus whatever was admitted while failing open. Leases lapse on the breaker `lease_ttl_ms` after
//! their last renewal; this guard renews them well before and stops spending a lease it could not
//! renew in time, so a lapsed lease is never spent twice.
use std::{
    collections::HashMap,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use retort_hooks::{Admission, BreakerGuard, GuardHealth, Refusal, SpendRequest, Usage};
use retort_pricing::{PriceTable, Tokens, cost_of};
use retort_proto::v1 as pb;

use crate::{Error, config::Unreachable, now_ms};

mod background;

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
    /// How long a lease lasts without renewal until the breaker says otherwise (`lease_ttl_ms`).
    pub lease_ttl: Duration,
}

impl GuardConfig {
    pub fn from_breaker(c: &crate::BreakerConfig) -> GuardConfig {
        GuardConfig {
            endpoint: c.endpoint.clone(),
            on_unreachable: c.on_unreachable,
            lease_micros: c.lease_micros,
            lease_tokens: c.lease_tokens,
            lease_wait: Duration::from_millis(c.lease_wait_ms),
            flush: Duration::from_millis(c.flush_ms),
            idle_return: Duration::from_secs(2),
            lease_ttl: Duration::from_millis(c.lease_ttl_ms),
        }
    }
}

/// The local allowance of one principal (`user:NAME`, `team:NAME`).
#[derive(Default)]
struct Account {
    principal: String,
    known: bool,
    micros_unlimited: bool,
    tokens_unlimited: bool,
    micros: i64,
    tokens: i64,
    exhausted: Option<String>,
    want: bool,
    /// The largest reservation waiting on this account since the last ask: a request larger than
    /// a lease grows the ask to its size (the breaker still grants no more than the budget's room).
    need_micros: i64,
    need_tokens: i64,
    last_used: Option<Instant>,
    /// When the breaker last granted or renewed this lease (taken before the call was sent).
    renewed: Option<Instant>,
    /// Bumped when a lapsed lease is voided: reservations made before do not credit it back.
    epoch: u32,
}

impl Account {
    fn covers(&self, m: i64, t: i64) -> bool {
        self.known
            && (self.micros_unlimited || self.micros >= m)
            && (self.tokens_unlimited || self.tokens >= t)
    }

    fn unlimited(&self) -> bool {
        self.micros_unlimited && self.tokens_unlimited
    }
}

/// Usage of one session and model since the last flush.
struct ModelUse {
    model: String,
    tier: String,
    tokens: u64,
    cost: i64,
    requests: u64,
    last_ms: i64,
}

/// A (user, session) this gateway serves; the empty session carries session-less usage.
struct Sess {
    user: String,
    team: String,
    session: String,
    uses: Vec<ModelUse>,
    /// Admitted and not yet settled or dropped: the slot must not be reused meanwhile.
    inflight: u32,
    last_used: Instant,
    /// False once forgotten (its slot is on the free list).
    live: bool,
}

struct UserEntry {
    team: String,
    /// Indices into `State::accounts`: the user's and the team's.
    accounts: [usize; 2],
    sessions: HashMap<String, usize>,
}

/// A batch sent to `Settle` and not yet acknowledged: retried as is, under the same id.
struct Batch {
    id: String,
    usage: Vec<pb::UsageRecord>,
}

struct State {
    accounts: Vec<Account>,
    account_ix: HashMap<String, usize>,
    users: HashMap<String, UserEntry>,
    sessions: Vec<Sess>,
    free: Vec<usize>,
    /// Paused and stopped sessions: user → session → what the caller is told.
    blocked: HashMap<String, HashMap<String, String>>,
    batch: Option<Batch>,
    batches: u64,
    /// Admissions waiting for allowance (only then does a settlement wake anyone: a syscall).
    waiters: usize,
    ttl: Duration,
    last_error: Option<String>,
}

impl State {
    fn account(&mut self, principal: String) -> usize {
        if let Some(&i) = self.account_ix.get(&principal) {
            return i;
        }
        let i = self.accounts.len();
        self.accounts.push(Account {
            principal: principal.clone(),
            ..Account::default()
        });
        self.account_ix.insert(principal, i);
        i
    }

    /// The user's and team's accounts (allocates only the first time a user is seen).
    fn accounts_of(&mut self, user: &str, team: &str) -> [usize; 2] {
        if let Some(u) = self.users.get(user)
            && u.team == team
        {
            return u.accounts;
        }
        let accounts = [
            self.account(format!("user:{user}")),
            self.account(format!("team:{team}")),
        ];
        match self.users.get_mut(user) {
            Some(u) => {
                u.team = team.to_owned();
                u.accounts = accounts;
            }
            None => {
                self.users.insert(
                    user.to_owned(),
                    UserEntry {
                        team: team.to_owned(),
                        accounts,
                        sessions: HashMap::new(),
                    },
                );
            }
        }
        accounts
    }

    /// The session's slot, marked in flight (allocates only the first time a session is seen).
    fn enter_session(&mut self, user: &str, session: &str, now: Instant) -> usize {
        let found = self
            .users
            .get(user)
            .and_then(|u| u.sessions.get(session).copied());
        let i = match found {
            Some(i) => i,
            None => {
                let team = self
                    .users
                    .get(user)
                    .map(|u| u.team.clone())
                    .unwrap_or_default();
                let s = Sess {
                    user: user.to_owned(),
                    team,
                    session: session.to_owned(),
                    uses: Vec::new(),
                    inflight: 0,
                    last_used: now,
                    live: true,
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.sessions[i] = s;
                        i
                    }
                    None => {
                        self.sessions.push(s);
                        self.sessions.len() - 1
                    }
                };
                if let Some(u) = self.users.get_mut(user) {
                    u.sessions.insert(session.to_owned(), i);
                }
                i
            }
        };
        let s = &mut self.sessions[i];
        s.inflight += 1;
        s.last_used = now;
        i
    }

    /// Takes the usage summed since the last flush; forgets sessions idle for `idle`.
    fn drain_usage(&mut self, now: Instant, idle: Duration) -> Vec<pb::UsageRecord> {
        let mut out = Vec::new();
        for (i, s) in self.sessions.iter_mut().enumerate() {
            for u in &mut s.uses {
                if u.requests == 0 {
                    continue;
                }
                out.push(pb::UsageRecord {
                    user: s.user.clone(),
                    team: s.team.clone(),
                    session_id: s.session.clone(),
                    model: u.model.clone(),
                    tier: u.tier.clone(),
                    tokens: u.tokens,
                    cost_micros: u.cost,
                    time_unix_ms: u.last_ms,
                    requests: u.requests,
                });
                (u.tokens, u.cost, u.requests) = (0, 0, 0);
            }
            if s.live && s.inflight == 0 && now.duration_since(s.last_used) > idle {
                if let Some(u) = self.users.get_mut(&s.user) {
                    u.sessions.remove(&s.session);
                }
                s.live = false;
                s.uses.clear();
                self.free.push(i);
            }
        }
        out
    }
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
    /// Leases voided because they could not be renewed before they lapsed.
    pub lapsed: AtomicU64,
}

struct Inner {
    cfg: GuardConfig,
    /// The service key calls to the breaker carry.
    key: Option<String>,
    gateway_id: String,
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
pub struct GuardStatus {
    pub gateway_id: String,
    pub breaker_reachable: bool,
    pub on_unreachable: &'static str,
    pub last_error: Option<String>,
    pub admitted: u64,
    pub refused: u64,
    pub failed_open: u64,
    pub overrun_micros: i64,
    pub lapsed_leases: u64,
}

/// Sessions idle this long (nothing in flight, nothing to report) are forgotten by the guard.
const SESSION_IDLE: Duration = Duration::from_secs(600);

impl Guard {
    /// Starts the background thread (its own small runtime, so waiting admissions never starve it).
    pub fn start(cfg: GuardConfig, prices: PriceTable) -> Result<Guard, Error> {
        Self::start_with_key(cfg, prices, None)
    }

    /// Like [`Guard::start`], calling the breaker with `key` (a service identity's: a breaker that
    /// checks keys admits leases and settlements from services and admins only).
    pub fn start_with_key(
        cfg: GuardConfig,
        prices: PriceTable,
        key: Option<String>,
    ) -> Result<Guard, Error> {
        let ttl = cfg.lease_ttl.max(Duration::from_secs(1));
        let inner = Arc::new(Inner {
            cfg,
            key,
            gateway_id: uuid::Uuid::new_v4().to_string(),
            prices,
            state: Mutex::new(State {
                accounts: Vec::new(),
                account_ix: HashMap::new(),
                users: HashMap::new(),
                sessions: Vec::new(),
                free: Vec::new(),
                blocked: HashMap::new(),
                batch: None,
                batches: 0,
                waiters: 0,
                ttl,
                last_error: None,
            }),
            cv: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            healthy: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            stats: Stats::default(),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::GuardStart)?;
        let bg = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("retort-spend-guard".into())
            .spawn(move || rt.block_on(background::run(bg)))
            .map_err(Error::GuardStart)?;
        Ok(Guard { inner })
    }

    /// This gateway's id towards the breaker (its leases are held under it).
    pub fn gateway_id(&self) -> &str {
        &self.inner.gateway_id
    }

    pub fn status(&self) -> GuardStatus {
        let s = &self.inner.stats;
        GuardStatus {
            gateway_id: self.inner.gateway_id.clone(),
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
            lapsed_leases: s.lapsed.load(Ordering::Relaxed),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Sends pending usage now and waits until it was accepted (tests and shutdown).
    pub async fn flush(&self) {
        let pending = |st: &State| {
            st.batch.is_some()
                || st
                    .sessions
                    .iter()
                    .any(|s| s.uses.iter().any(|u| u.requests > 0))
        };
        for _ in 0..200 {
            if !pending(&self.inner.lock()) {
                tokio::time::sleep(self.inner.cfg.flush * 2).await;
                if !pending(&self.inner.lock()) {
                    return;
                }
            }
            self.inner.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The worst-case reservation of a request: (micro-dollars, tokens).
    pub fn reservation(&self, req: &SpendRequest<'_>) -> (i64, i64) {
        let day = retort_time::day_of(now_ms());
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
    accounts: [usize; 2],
    epochs: [u32; 2],
    session: usize,
    /// None: admitted while failing open (nothing debited).
    reserved: Option<(i64, i64)>,
    done: bool,
}

impl Admitted {
    /// Gives `m` and `t` back to the accounts the reservation came from (unless voided since).
    fn credit(&self, st: &mut State, m: i64, t: i64) {
        if self.reserved.is_none() {
            return;
        }
        for (&i, &epoch) in self.accounts.iter().zip(&self.epochs) {
            if let Some(a) = st.accounts.get_mut(i)
                && a.epoch == epoch
            {
                if !a.micros_unlimited {
                    a.micros += m;
                }
                if !a.tokens_unlimited {
                    a.tokens += t;
                }
            }
        }
        // Requests waiting for allowance may fit now.
        if st.waiters > 0 {
            self.inner.cv.notify_all();
        }
    }

    fn leave(&self, st: &mut State) {
        if let Some(s) = st.sessions.get_mut(self.session) {
            s.inflight = s.inflight.saturating_sub(1);
        }
    }
}

impl Admission for Admitted {
    fn settle(mut self: Box<Self>, _provider: &str, model: &str, usage: &Usage) {
        self.done = true;
        let now = now_ms();
        let t = Tokens {
            input: usage.input,
            output: usage.output,
            reasoning: usage.reasoning,
            cache_read: usage.cache_read,
            cache_write: usage.cache_write,
        };
        let price = self.inner.prices.lookup(model, retort_time::day_of(now));
        let cost = price.map_or(0, |p| cost_of(p, &t));
        let tokens = (usage.input + usage.output + usage.cache_read + usage.cache_write) as i64;
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
        self.leave(&mut st);
        let Some(s) = st.sessions.get_mut(self.session) else {
            return;
        };
        match s.uses.iter_mut().find(|u| u.model == model) {
            Some(u) => {
                u.tokens += tokens as u64;
                u.cost += cost;
                u.requests += 1;
                u.last_ms = now;
            }
            None => s.uses.push(ModelUse {
                model: model.to_owned(),
                tier: price.map(|p| p.tier()).unwrap_or_default(),
                tokens: tokens as u64,
                cost,
                requests: 1,
                last_ms: now,
            }),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let mut st = inner.lock();
        if let Some((m, t)) = self.reserved {
            self.credit(&mut st, m, t);
        }
        self.leave(&mut st);
    }
}

/// Blocks this thread up to `d` for a lease refresh, without starving a multi-threaded runtime.
fn wait<'a>(inner: &'a Inner, mut st: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
    st.waiters += 1;
    let go = || {
        inner
            .cv
            .wait_timeout(st, d)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0)
    };
    let mut st = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(go),
        _ => go(),
    };
    st.waiters -= 1;
    st
}

impl BreakerGuard for Guard {
    fn admit(&self, req: &SpendRequest<'_>) -> Result<Box<dyn Admission>, Refusal> {
        let inner = &self.inner;
        let (rm, rt) = self.reservation(req);
        let user = req.identity.user.as_str();
        let session = req.session_id.unwrap_or("");
        let start = Instant::now();
        let deadline = start + inner.cfg.lease_wait;
        let mut st = inner.lock();
        if !session.is_empty()
            && let Some(msg) = st.blocked.get(user).and_then(|s| s.get(session))
        {
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::PaymentRequired(msg.clone()));
        }
        let accounts = st.accounts_of(user, &req.identity.team);
        let admitted = |st: &mut State, reserved| -> Box<dyn Admission> {
            let epochs = accounts.map(|i| st.accounts.get(i).map_or(0, |a| a.epoch));
            Box::new(Admitted {
                inner: Arc::clone(inner),
                accounts,
                epochs,
                session: st.enter_session(user, session, start),
                reserved,
                done: false,
            })
        };
        loop {
            if !inner.healthy.load(Ordering::Relaxed) {
                return match inner.cfg.on_unreachable {
                    Unreachable::FailOpen => {
                        inner.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                        Ok(admitted(&mut st, None))
                    }
                    Unreachable::FailClosed => {
                        inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                        Err(Refusal::Unavailable("the spend guard cannot reach the breaker service and is configured to fail closed".into()))
                    }
                };
            }
            let now = Instant::now();
            if accounts.iter().all(|&i| st.accounts[i].covers(rm, rt)) {
                for &i in &accounts {
                    let a = &mut st.accounts[i];
                    if !a.micros_unlimited {
                        a.micros -= rm;
                    }
                    if !a.tokens_unlimited {
                        a.tokens -= rt;
                    }
                    a.last_used = Some(now);
                }
                inner.stats.admitted.fetch_add(1, Ordering::Relaxed);
                return Ok(admitted(&mut st, Some((rm, rt))));
            }
            // A lease is short: refuse at once if its budget is spent, else wait briefly for a refresh.
            let mut spent = None;
            for &i in &accounts {
                let a = &mut st.accounts[i];
                if a.covers(rm, rt) {
                    continue;
                }
                if let Some(why) = &a.exhausted {
                    spent = Some(why.clone());
                }
                a.want = true;
                a.need_micros = a.need_micros.max(rm);
                a.need_tokens = a.need_tokens.max(rt);
                a.last_used = Some(now);
            }
            if spent.is_none() && now < deadline {
                inner.wake.notify_one();
                st = wait(inner, st, deadline - now);
                continue;
            }
            inner.stats.refused.fetch_add(1, Ordering::Relaxed);
            let why = spent.unwrap_or_else(|| "the spend allowance of this gateway is used up for now (the budget is nearly spent or leased to other gateways); retry shortly".into());
            return Err(Refusal::PaymentRequired(format!(
                "request of user {user} refused: {why} (this request may cost up to ${:.4}, {rt} tokens)",
                rm as f64 / 1e6
            )));
        }
    }

    fn health(&self) -> GuardHealth {
        if self.inner.healthy.load(Ordering::Relaxed) {
            return GuardHealth::Ok;
        }
        let why = format!(
            "the breaker at {} is unreachable: {}",
            self.inner.cfg.endpoint,
            self.inner
                .lock()
                .last_error
                .as_deref()
                .unwrap_or("no answer")
        );
        match self.inner.cfg.on_unreachable {
            Unreachable::FailOpen => GuardHealth::FailingOpen(why),
            Unreachable::FailClosed => GuardHealth::FailingClosed(why),
        }
    }
}
