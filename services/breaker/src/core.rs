//! The breaker's domain: session accounting and the state machine
//! `ok → asked → (confirmed | paused → confirmed | stopped)`, budget leases and settlement, and
//! the questions to users (alerts on `Watch`, Slack-compatible webhooks).
use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use retort_proto::v1 as pb;
use tokio::sync::broadcast;

use crate::{
    Error, now_ms,
    policy::{Mode, Policies, Policy},
    store::{
        BlockedRec, Holder, LimitsRec, SessionRec, SlotArgs, Store, TransitionRec, session_key,
    },
};

pub const OK: &str = "ok";
pub const ASKED: &str = "asked";
pub const PAUSED: &str = "paused";
pub const CONFIRMED: &str = "confirmed";
pub const STOPPED: &str = "stopped";

/// Alerts already sent are remembered this long (longer than the longest budget window).
const ALERT_MEMORY_MS: i64 = 32 * 86_400_000;
/// A settled batch id is remembered this long: a gateway retries a batch within seconds, until the
/// breaker takes it (one small Redis key per batch, so not much longer).
const BATCH_MEMORY_MS: i64 = 600_000;

pub fn tier_rank(t: &str) -> u8 {
    match t {
        "frontier" => 3,
        "mid" => 2,
        "small" => 1,
        _ => 0,
    }
}

pub struct Breaker {
    pub store: Store,
    policies: RwLock<Arc<Policies>>,
    alerts: broadcast::Sender<pb::Alert>,
    http: reqwest::Client,
    /// Base of the confirm page links.
    public_url: RwLock<String>,
    /// How long a gateway's lease lasts without renewal.
    lease_ttl_ms: AtomicI64,
}

impl Breaker {
    pub async fn new(
        store: Store,
        policies: Policies,
        public_url: String,
    ) -> Result<Arc<Breaker>, Error> {
        let (alerts, _) = broadcast::channel(1024);
        let b = Arc::new(Breaker {
            store,
            policies: RwLock::new(Arc::new(policies)),
            alerts,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| Error::Config(e.to_string()))?,
            public_url: RwLock::new(public_url),
            lease_ttl_ms: AtomicI64::new(30_000),
        });
        b.store.ping().await?;
        Ok(b)
    }

    pub fn set_lease_ttl_ms(&self, ms: u64) {
        self.lease_ttl_ms
            .store(ms.clamp(1_000, 3_600_000) as i64, Ordering::Relaxed);
    }

    pub fn lease_ttl_ms(&self) -> i64 {
        self.lease_ttl_ms.load(Ordering::Relaxed)
    }

    fn holder<'a>(&self, gateway: &'a str) -> Holder<'a> {
        Holder {
            gateway,
            now_ms: now_ms(),
            ttl_ms: self.lease_ttl_ms(),
        }
    }

    pub fn policies(&self) -> Arc<Policies> {
        Arc::clone(&self.policies.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Validates `text` as a whole; on success it replaces every policy, else nothing changes.
    pub fn set_policies(&self, text: &str) -> Result<(usize, usize), Error> {
        let p = Policies::from_toml(text)?;
        let counts = (1 + p.teams.len() + p.users.len(), p.budgets.len());
        *self.policies.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(p);
        Ok(counts)
    }

    pub fn set_public_url(&self, url: String) {
        *self.public_url.write().unwrap_or_else(|p| p.into_inner()) = url;
    }

    pub fn subscribe(&self) -> broadcast::Receiver<pb::Alert> {
        self.alerts.subscribe()
    }

    pub fn page_url(&self, user: &str, session: &str) -> String {
        let base = self
            .public_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        format!(
            "{base}/breaker/sessions/{}?user={}",
            enc(session),
            enc(user)
        )
    }

    /// Paused and stopped sessions, from the store: every replica sees a pause at once.
    pub async fn blocked(&self) -> Result<Vec<pb::BlockedSession>, Error> {
        Ok(self
            .store
            .blocked()
            .await?
            .into_iter()
            .map(|b| pb::BlockedSession {
                user: b.user,
                session_id: b.session_id,
                state: b.state,
                message: b.message,
            })
            .collect())
    }

    /// What the gateways tell callers of `s`, if it is paused or stopped.
    fn blocked_rec(&self, s: &SessionRec) -> Option<BlockedRec> {
        if s.state == PAUSED || s.state == STOPPED {
            let message = if s.state == PAUSED {
                format!(
                    "session {} of user {} crossed its spend threshold ({}) and is paused — confirm with `retort breaker confirm {}` or open {}",
                    s.session_id,
                    s.user,
                    s.history.last().map_or("", |t| t.reason.as_str()),
                    s.session_id,
                    self.page_url(&s.user, &s.session_id)
                )
            } else {
                format!(
                    "session {} of user {} was stopped by {} and accepts no more requests; start a new session",
                    s.session_id,
                    s.user,
                    s.history.last().map_or("the breaker", |t| t.by.as_str())
                )
            };
            Some(BlockedRec {
                user: s.user.clone(),
                session_id: s.session_id.clone(),
                state: s.state.clone(),
                message,
            })
        } else {
            None
        }
    }

    /// Writes a session and its place in the blocked set in one step.
    async fn put(&self, version: u64, s: &SessionRec) -> Result<bool, Error> {
        self.store
            .put_session(version, s, self.blocked_rec(s).as_ref())
            .await
    }

    /// Applies usage records; with `budgets`, also settles them against the users' and teams'
    /// budgets, from `gateway`'s leases. A non-empty `batch` id is applied once: a retry of a batch
    /// already applied changes nothing.
    pub async fn record(
        &self,
        usage: Vec<pb::UsageRecord>,
        budgets: bool,
        gateway: &str,
        batch: &str,
    ) -> Result<Vec<pb::BlockedSession>, Error> {
        if batch.is_empty() || usage.is_empty() {
            self.apply_usage(usage, budgets, gateway).await?;
        } else {
            let claim = format!("batch:{gateway}/{batch}");
            if self.store.claim(&claim, now_ms(), BATCH_MEMORY_MS).await? {
                if let Err(e) = self.apply_usage(usage, budgets, gateway).await {
                    // Not applied (or not all of it): let the retry apply it.
                    if let Err(r) = self.store.release(&claim).await {
                        tracing::warn!(error = %r, batch = %claim, "cannot release a failed batch");
                    }
                    return Err(e);
                }
            } else {
                tracing::debug!(batch = %claim, "batch already applied; ignoring the retry");
            }
        }
        self.blocked().await
    }

    async fn apply_usage(
        &self,
        usage: Vec<pb::UsageRecord>,
        budgets: bool,
        gateway: &str,
    ) -> Result<(), Error> {
        let mut by_session: HashMap<(String, String), (String, Vec<pb::UsageRecord>)> =
            HashMap::new();
        // principal → (spent micros, tokens, a team to ask).
        let mut by_principal: BTreeMap<String, (i64, i64, String)> = BTreeMap::new();
        for u in usage {
            if budgets {
                for p in [format!("user:{}", u.user), format!("team:{}", u.team)] {
                    let e = by_principal.entry(p).or_default();
                    e.0 += u.cost_micros;
                    e.1 += u.tokens as i64;
                    e.2.clone_from(&u.team);
                }
            }
            if !u.session_id.is_empty() {
                by_session
                    .entry((u.user.clone(), u.session_id.clone()))
                    .or_insert_with(|| (u.team.clone(), Vec::new()))
                    .1
                    .push(u);
            }
        }
        for ((user, session), (team, recs)) in by_session {
            self.apply(&user, &team, &session, &recs).await?;
        }
        let policies = self.policies();
        for (principal, (m, t, team)) in by_principal {
            let holder = self.holder(gateway);
            let now_s = holder.now_ms / 1000;
            let slots: Vec<SlotArgs> = policies
                .budgets_of(&principal)
                .map(|b| slot_args(b, now_s))
                .collect();
            self.store.settle(&slots, &holder, (m, t)).await?;
            self.check_budgets(&policies, &principal, &team, holder.now_ms)
                .await?;
        }
        Ok(())
    }

    /// Asks (soft limit) or tells (hard limit) once per budget window, like a session question:
    /// an alert on `Watch` and the team's webhook.
    async fn check_budgets(
        &self,
        policies: &Policies,
        principal: &str,
        team_of_user: &str,
        now: i64,
    ) -> Result<(), Error> {
        for b in policies.budgets_of(principal) {
            let slot = slot_args(b, now / 1000);
            let st = self.store.budget_status(&slot, now).await?;
            for (level, crossed) in [
                (
                    "hard",
                    b.hard_micros.is_some_and(|h| st.used_micros >= h)
                        || b.hard_tokens.is_some_and(|h| st.used_tokens >= h as i64),
                ),
                (
                    "soft",
                    b.soft_micros.is_some_and(|h| st.used_micros >= h)
                        || b.soft_tokens.is_some_and(|h| st.used_tokens >= h as i64),
                ),
            ] {
                if !crossed {
                    continue;
                }
                // Once per window and level, whichever replica sees it first.
                if !self
                    .store
                    .claim(
                        &format!("alert:{}|{}|{level}", slot.id, slot.window),
                        now,
                        ALERT_MEMORY_MS,
                    )
                    .await?
                {
                    break;
                }
                let (user, team) = match principal.split_once(':') {
                    Some(("user", u)) => (u.to_owned(), team_of_user.to_owned()),
                    Some((_, t)) => (String::new(), t.to_owned()),
                    None => (String::new(), String::new()),
                };
                let text = format!(
                    "The {} {} budget of {principal} reached its {level} limit: ${:.4} and {} tokens spent{}",
                    if b.rolling { "rolling" } else { "calendar" },
                    b.window.as_str(),
                    st.used_micros as f64 / 1e6,
                    st.used_tokens,
                    if level == "hard" {
                        " — further requests are refused until the window moves on."
                    } else {
                        " — requests go on; did you mean to spend this?"
                    }
                );
                if let Some(url) = policies.webhook(&team) {
                    self.webhook(url, &text);
                }
                self.alert(pb::Alert {
                    kind: "budget".into(),
                    user,
                    team,
                    state: level.into(),
                    text,
                    at_unix_ms: now_ms(),
                    ..Default::default()
                });
                break;
            }
        }
        Ok(())
    }

    async fn apply(
        &self,
        user: &str,
        team: &str,
        session: &str,
        recs: &[pb::UsageRecord],
    ) -> Result<(), Error> {
        let key = session_key(user, session);
        loop {
            let policies = self.policies();
            let policy = policies.for_session(user, team);
            let (mut s, version) = match self.store.get_session(&key).await? {
                Some(x) => x,
                None => (
                    new_session(
                        user,
                        team,
                        session,
                        policy,
                        recs.first().map_or_else(now_ms, |r| r.time_unix_ms),
                    ),
                    0,
                ),
            };
            for r in recs {
                s.tokens += r.tokens;
                s.cost_micros += r.cost_micros;
                s.requests += r.requests.max(1);
                s.last_ms = s.last_ms.max(r.time_unix_ms);
                if tier_rank(&r.tier) > tier_rank(&s.tier) {
                    s.tier = r.tier.clone();
                }
            }
            let mut alert = None;
            if (s.state == OK || s.state == CONFIRMED)
                && let Some(reason) = crossed(&s, now_ms())
            {
                let to = match policy.mode {
                    Mode::Notify => ASKED,
                    Mode::Pause => PAUSED,
                    Mode::Stop => STOPPED,
                };
                s.mode = policy.mode.as_str().into();
                transition(&mut s, to, "breaker", &reason);
                alert = Some(reason);
            }
            if self.put(version, &s).await? {
                if let Some(reason) = alert {
                    self.ask(&s, &reason, &policies);
                }
                return Ok(());
            }
        }
    }

    /// Tells the user: an alert on `Watch` and the team's webhook.
    fn ask(&self, s: &SessionRec, reason: &str, policies: &Policies) {
        let page = self.page_url(&s.user, &s.session_id);
        let what = match s.state.as_str() {
            ASKED => "is still running — did you mean to spend this?",
            PAUSED => "is paused until you confirm — did you mean to spend this?",
            _ => "was stopped by its policy",
        };
        let text = format!(
            "Retort: session {} of user {} crossed its threshold ({reason}) and {what} ${:.4}, {} tokens, {} requests so far. Confirm: {page} · Stop: {page}&action=stop · or `retort breaker confirm {}` / `retort breaker stop {}`",
            s.session_id,
            s.user,
            s.cost_micros as f64 / 1e6,
            s.tokens,
            s.requests,
            s.session_id,
            s.session_id
        );
        self.alert(pb::Alert {
            kind: "session".into(),
            user: s.user.clone(),
            team: s.team.clone(),
            session_id: s.session_id.clone(),
            state: s.state.clone(),
            text: text.clone(),
            confirm_url: page.clone(),
            stop_url: format!("{page}&action=stop"),
            at_unix_ms: now_ms(),
        });
        if let Some(url) = policies.webhook(&s.team) {
            self.webhook(url, &text);
        }
    }

    /// Posts a Slack-compatible notification in the background.
    fn webhook(&self, url: &str, text: &str) {
        let (http, url) = (self.http.clone(), url.to_owned());
        let body = serde_json::json!({ "text": text });
        tokio::spawn(async move {
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(status = %r.status(), "breaker webhook refused the notification")
                }
                Err(e) => tracing::warn!(error = %e, "breaker webhook unreachable"),
            }
        });
    }

    fn alert(&self, a: pb::Alert) {
        tracing::info!(kind = %a.kind, user = %a.user, session = %a.session_id, state = %a.state, "{}", a.text);
        let _ = self.alerts.send(a);
    }

    /// Finds a session by id (and user when two users share the id).
    pub async fn find(&self, session: &str, user: &str) -> Result<(SessionRec, u64), Error> {
        if session.trim().is_empty() {
            return Err(Error::BadRequest("session_id is empty".into()));
        }
        if !user.is_empty() {
            return self
                .store
                .get_session(&session_key(user, session))
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!("no session {session:?} of user {user:?}"))
                });
        }
        let mut found: Vec<SessionRec> = self
            .store
            .list_sessions()
            .await?
            .into_iter()
            .filter(|s| s.session_id == session)
            .collect();
        match found.len() {
            0 => Err(Error::NotFound(format!("no session {session:?}"))),
            1 => {
                let s = found.remove(0);
                self.store
                    .get_session(&s.key())
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("no session {session:?}")))
            }
            _ => Err(Error::BadRequest(format!(
                "session id {session:?} belongs to several users; name the user"
            ))),
        }
    }

    /// The session goes on; each threshold rises by the policy's step until it is above the usage.
    pub async fn confirm(&self, session: &str, user: &str, by: &str) -> Result<SessionRec, Error> {
        loop {
            let (mut s, v) = self.find(session, user).await?;
            match s.state.as_str() {
                STOPPED => {
                    return Err(Error::FailedPrecondition(format!(
                        "session {session} was stopped for good; it cannot be confirmed"
                    )));
                }
                OK | CONFIRMED => return Ok(s),
                _ => {}
            }
            let policies = self.policies();
            let base = policies.for_session(&s.user, &s.team).clone();
            raise(&mut s, &base, now_ms());
            transition(&mut s, CONFIRMED, by, "confirmed");
            if self.put(v, &s).await? {
                return Ok(s);
            }
        }
    }

    /// Ends the session for good.
    pub async fn stop(&self, session: &str, user: &str, by: &str) -> Result<SessionRec, Error> {
        loop {
            let (mut s, v) = self.find(session, user).await?;
            if s.state == STOPPED {
                return Ok(s);
            }
            transition(&mut s, STOPPED, by, "stopped");
            if self.put(v, &s).await? {
                return Ok(s);
            }
        }
    }

    /// Grants an allowance for one principal from all its budgets at once, to `gateway`'s lease
    /// (which this renews).
    pub async fn lease(&self, ask: &pb::LeaseAsk, gateway: &str) -> Result<pb::LeaseGrant, Error> {
        if ask.want_micros < 0 || ask.return_micros < 0 {
            return Err(Error::BadRequest(
                "lease amounts must not be negative".into(),
            ));
        }
        let policies = self.policies();
        let holder = self.holder(gateway);
        let now_s = holder.now_ms / 1000;
        let budgets: Vec<_> = policies.budgets_of(&ask.principal).collect();
        let slots: Vec<SlotArgs> = budgets.iter().map(|b| slot_args(b, now_s)).collect();
        let micros_unlimited = slots.iter().all(|s| s.hard_micros.is_none());
        let tokens_unlimited = slots.iter().all(|s| s.hard_tokens.is_none());
        if slots.is_empty() {
            return Ok(pb::LeaseGrant {
                principal: ask.principal.clone(),
                unlimited: true,
                micros_unlimited,
                tokens_unlimited,
                ..Default::default()
            });
        }
        let g = self
            .store
            .lease(
                &slots,
                &holder,
                (ask.want_micros, ask.want_tokens as i64),
                (ask.return_micros, ask.return_tokens as i64),
            )
            .await?;
        let exhausted =
            g.unspent_micros.is_some_and(|u| u <= 0) || g.unspent_tokens.is_some_and(|u| u <= 0);
        let reason = if exhausted {
            let which: Vec<String> = budgets
                .iter()
                .map(|b| {
                    format!(
                        "{} {}",
                        if b.rolling { "rolling" } else { "calendar" },
                        b.window.as_str()
                    )
                })
                .collect();
            format!(
                "the hard budget of {} ({}) is spent",
                ask.principal,
                which.join(", ")
            )
        } else {
            String::new()
        };
        Ok(pb::LeaseGrant {
            principal: ask.principal.clone(),
            unlimited: false,
            micros: g.micros,
            tokens: g.tokens.max(0) as u64,
            exhausted,
            reason,
            micros_unlimited,
            tokens_unlimited,
        })
    }

    pub async fn budgets(&self, principal: &str) -> Result<Vec<pb::Budget>, Error> {
        let policies = self.policies();
        let now = now_ms();
        let mut out = Vec::new();
        for b in policies.budgets_of(principal) {
            let slot = slot_args(b, now / 1000);
            let st = self.store.budget_status(&slot, now).await?;
            out.push(pb::Budget {
                id: slot.id,
                window: slot.window,
                rolling: b.rolling,
                used_micros: st.used_micros,
                used_tokens: st.used_tokens.max(0) as u64,
                outstanding_micros: st.out_micros,
                outstanding_tokens: st.out_tokens,
                hard_micros: b.hard_micros.unwrap_or(0),
                hard_tokens: b.hard_tokens.unwrap_or(0),
                soft_micros: b.soft_micros.unwrap_or(0),
                soft_tokens: b.soft_tokens.unwrap_or(0),
            });
        }
        Ok(out)
    }

    pub fn to_pb(&self, s: &SessionRec) -> pb::Session {
        pb::Session {
            session_id: s.session_id.clone(),
            user: s.user.clone(),
            team: s.team.clone(),
            state: s.state.clone(),
            mode: s.mode.clone(),
            tokens: s.tokens,
            cost_micros: s.cost_micros,
            requests: s.requests,
            started_unix_ms: s.started_ms,
            last_unix_ms: s.last_ms,
            tier: s.tier.clone(),
            thresholds: Some(pb::Thresholds {
                tokens: s.limits.tokens.unwrap_or(0),
                cost_micros: s.limits.cost_micros.unwrap_or(0),
                requests: s.limits.requests.unwrap_or(0),
                duration_s: s.limits.duration_s.unwrap_or(0),
                tier: s.limits.tier.clone().unwrap_or_default(),
            }),
            history: s
                .history
                .iter()
                .map(|t| pb::Transition {
                    from: t.from.clone(),
                    to: t.to.clone(),
                    by: t.by.clone(),
                    at_unix_ms: t.at_ms,
                    reason: t.reason.clone(),
                })
                .collect(),
            confirm_url: self.page_url(&s.user, &s.session_id),
        }
    }
}

pub fn slot_args(b: &crate::policy::Budget, now_s: i64) -> SlotArgs {
    let slot = b.slot(now_s);
    SlotArgs {
        id: b.id(),
        window: slot.window,
        rolling_from: slot.rolling_from,
        hard_micros: b.hard_micros,
        hard_tokens: b.hard_tokens,
    }
}

fn new_session(user: &str, team: &str, session: &str, p: &Policy, at: i64) -> SessionRec {
    SessionRec {
        session_id: session.into(),
        user: user.into(),
        team: team.into(),
        state: OK.into(),
        mode: p.mode.as_str().into(),
        tokens: 0,
        cost_micros: 0,
        requests: 0,
        started_ms: at,
        last_ms: at,
        tier: String::new(),
        limits: LimitsRec {
            tokens: p.limits.tokens,
            cost_micros: p.limits.cost_micros,
            requests: p.limits.requests,
            duration_s: p.limits.duration_s,
            tier: p.limits.tier.clone(),
        },
        history: vec![TransitionRec {
            from: String::new(),
            to: OK.into(),
            by: "gateway".into(),
            at_ms: at,
            reason: "first request".into(),
        }],
    }
}

/// The first threshold the session has reached, described.
pub fn crossed(s: &SessionRec, now: i64) -> Option<String> {
    let l = &s.limits;
    let dur = ((s.last_ms.max(now) - s.started_ms) / 1000).max(0) as u64;
    if let Some(t) = l.tokens.filter(|t| s.tokens >= *t) {
        return Some(format!("{} tokens ≥ {t}", s.tokens));
    }
    if let Some(c) = l.cost_micros.filter(|c| s.cost_micros >= *c) {
        return Some(format!(
            "${:.4} ≥ ${:.4}",
            s.cost_micros as f64 / 1e6,
            c as f64 / 1e6
        ));
    }
    if let Some(r) = l.requests.filter(|r| s.requests >= *r) {
        return Some(format!("{} requests ≥ {r}", s.requests));
    }
    if let Some(d) = l.duration_s.filter(|d| dur >= *d) {
        return Some(format!("running {dur} s ≥ {d} s"));
    }
    if let Some(t) = l
        .tier
        .as_deref()
        .filter(|t| tier_rank(&s.tier) > tier_rank(t))
    {
        return Some(format!("model tier {} above {t}", s.tier));
    }
    None
}

/// Raises each threshold by `step × base` until the session is below it again.
pub fn raise(s: &mut SessionRec, base: &Policy, now: i64) {
    let step = base.step;
    let dur = ((now - s.started_ms) / 1000).max(0) as u64;
    fn up<T: Copy + PartialOrd + std::ops::Add<Output = T>>(
        cur: Option<T>,
        inc: Option<T>,
        used: T,
    ) -> Option<T> {
        let (mut c, i) = (cur?, inc?);
        // At most a few hundred steps; a zero increment would never pass the usage.
        for _ in 0..1000 {
            if c > used {
                break;
            }
            c = c + i;
        }
        Some(c)
    }
    let inc_u = |v: Option<u64>| v.map(|v| ((v as f64 * step).ceil() as u64).max(1));
    s.limits.tokens = up(
        s.limits.tokens,
        inc_u(base.limits.tokens).or(s.limits.tokens),
        s.tokens,
    );
    s.limits.cost_micros = up(
        s.limits.cost_micros,
        base.limits
            .cost_micros
            .map(|v| ((v as f64 * step).ceil() as i64).max(1))
            .or(s.limits.cost_micros),
        s.cost_micros,
    );
    s.limits.requests = up(
        s.limits.requests,
        inc_u(base.limits.requests).or(s.limits.requests),
        s.requests,
    );
    s.limits.duration_s = up(
        s.limits.duration_s,
        inc_u(base.limits.duration_s).or(s.limits.duration_s),
        dur,
    );
    // A tier has no step: confirming accepts the tier the session reached.
    if let Some(t) = &s.limits.tier
        && tier_rank(&s.tier) > tier_rank(t)
    {
        s.limits.tier = Some(s.tier.clone());
    }
}

pub fn transition(s: &mut SessionRec, to: &str, by: &str, reason: &str) {
    s.history.push(TransitionRec {
        from: s.state.clone(),
        to: to.into(),
        by: by.into(),
        at_ms: now_ms(),
        reason: reason.into(),
    });
    s.state = to.into();
}

/// Percent-encodes a path or query component.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rec(user: &str, session: &str, tokens: u64) -> pb::UsageRecord {
        pb::UsageRecord {
            user: user.into(),
            team: "qa".into(),
            session_id: session.into(),
            model: "m".into(),
            tier: "mid".into(),
            tokens,
            cost_micros: 10,
            time_unix_ms: now_ms(),
            requests: 1,
        }
    }

    async fn breaker(policy: &str) -> Arc<Breaker> {
        Breaker::new(
            Store::memory(),
            Policies::from_toml(policy).unwrap(),
            "http://x".into(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn pause_confirm_raises_threshold_and_stop_is_final() {
        let b = breaker("[policies.default]\nmode = \"pause\"\nmax_tokens = 100\nstep = 1").await;
        let blocked = b
            .record(vec![rec("ann", "s1", 60)], false, "", "")
            .await
            .unwrap();
        assert!(blocked.is_empty());
        let blocked = b
            .record(vec![rec("ann", "s1", 60)], false, "", "")
            .await
            .unwrap();
        assert_eq!(blocked.len(), 1);
        assert!(
            blocked[0].message.contains("retort breaker confirm s1"),
            "{}",
            blocked[0].message
        );
        let s = b.confirm("s1", "", "ann@cli").await.unwrap();
        assert_eq!(s.state, CONFIRMED);
        assert_eq!(s.limits.tokens, Some(200));
        assert!(b.blocked().await.unwrap().is_empty());
        b.record(vec![rec("ann", "s1", 100)], false, "", "")
            .await
            .unwrap();
        assert_eq!(b.find("s1", "ann").await.unwrap().0.state, PAUSED);
        let s = b.stop("s1", "ann", "ann@web").await.unwrap();
        assert_eq!(s.state, STOPPED);
        let states: Vec<_> = s.history.iter().map(|t| t.to.as_str()).collect();
        assert_eq!(states, [OK, PAUSED, CONFIRMED, PAUSED, STOPPED]);
        assert_eq!(s.history.last().unwrap().by, "ann@web");
        assert!(matches!(
            b.confirm("s1", "", "x").await,
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            b.confirm("nope", "", "x").await,
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn notify_keeps_serving_and_bad_policy_keeps_the_old_one() {
        let b = breaker("[policies.default]\nmax_requests = 2").await;
        let mut rx = b.subscribe();
        b.record(vec![rec("bob", "s", 1), rec("bob", "s", 1)], false, "", "")
            .await
            .unwrap();
        assert!(b.blocked().await.unwrap().is_empty());
        let a = rx.try_recv().unwrap();
        assert_eq!((a.kind.as_str(), a.state.as_str()), ("session", ASKED));
        assert!(
            b.set_policies("[policies.default]\nmax_requests = -1")
                .is_err()
        );
        assert_eq!(b.policies().default.limits.requests, Some(2));
    }

    #[tokio::test]
    async fn leases_never_grant_past_the_hard_limit() {
        let b = breaker(
            "[[budgets]]\nscope = \"user\"\nname = \"ann\"\nwindow = \"day\"\nhard_usd = 1.0",
        )
        .await;
        let ask = |want| pb::LeaseAsk {
            principal: "user:ann".into(),
            want_micros: want,
            ..Default::default()
        };
        assert_eq!(b.lease(&ask(600_000), "gw").await.unwrap().micros, 600_000);
        assert_eq!(b.lease(&ask(600_000), "gw").await.unwrap().micros, 400_000);
        assert_eq!(b.lease(&ask(1), "gw").await.unwrap().micros, 0);
        let mut r = rec("ann", "", 5);
        r.cost_micros = 1_000_000;
        b.record(vec![r], true, "gw", "").await.unwrap();
        let g = b.lease(&ask(1), "gw").await.unwrap();
        assert!(g.exhausted, "{g:?}");
        assert!(
            b.lease(
                &pb::LeaseAsk {
                    principal: "team:qa".into(),
                    ..Default::default()
                },
                "gw"
            )
            .await
            .unwrap()
            .unlimited
        );
    }
}
