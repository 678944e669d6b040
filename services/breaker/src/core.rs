//! The breaker's domain: session accounting and the state machine of [`crate::session`] kept in
//! the store, budget leases and settlement. What the breaker tells people (alerts on `Watch`,
//! Slack-compatible webhooks) is in [`notify`].
mod notify;

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
    policy::{Mode, Policies},
    session::{SessionState, Tier, crossed, new_session, raise, transition},
    store::{BlockedRec, Holder, SessionRec, SlotArgs, Store, session_key},
};

/// A settled batch id is remembered this long: a gateway retries a batch within seconds, until the
/// breaker takes it (one small Redis key per batch, so not much longer).
const BATCH_MEMORY_MS: i64 = 10 * retort_time::MINUTE_MS;

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
                .map_err(Error::HttpClient)?,
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
                state: b.state.as_str().into(),
                message: b.message,
            })
            .collect())
    }

    /// What the gateways tell callers of `s`, if it is paused or stopped.
    fn blocked_rec(&self, s: &SessionRec) -> Option<BlockedRec> {
        let last = s.history.last();
        let at = retort_time::human(last.map_or(s.last_ms, |t| t.at_ms));
        let message = match s.state {
            SessionState::Ok | SessionState::Asked | SessionState::Confirmed => return None,
            SessionState::Paused => format!(
                "session {} of user {} crossed its spend threshold ({}) and is paused since {at} — confirm with `retort breaker confirm {}` or open {}",
                s.session_id,
                s.user,
                last.map_or("", |t| t.reason.as_str()),
                s.session_id,
                self.page_url(&s.user, &s.session_id)
            ),
            SessionState::Stopped => format!(
                "session {} of user {} was stopped by {} at {at} and accepts no more requests; start a new session",
                s.session_id,
                s.user,
                last.map_or("the breaker", |t| t.by.as_str())
            ),
        };
        Some(BlockedRec {
            user: s.user.clone(),
            session_id: s.session_id.clone(),
            state: s.state,
            message,
        })
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
                s.tier = s.tier.max(Tier::of_label(&r.tier));
            }
            let mut ask = false;
            if s.state.watches_thresholds()
                && let Some(reason) = crossed(&s, now_ms())
            {
                let to = match policy.mode {
                    Mode::Notify => SessionState::Asked,
                    Mode::Pause => SessionState::Paused,
                    Mode::Stop => SessionState::Stopped,
                };
                s.mode = policy.mode;
                transition(&mut s, to, "breaker", &reason);
                ask = true;
            }
            if self.put(version, &s).await? {
                if ask {
                    self.ask(&s, &policies);
                }
                return Ok(());
            }
        }
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
            match s.state {
                SessionState::Stopped => {
                    let when = s.history.last().map_or(String::new(), |t| {
                        format!(" by {} at {}", t.by, retort_time::human(t.at_ms))
                    });
                    return Err(Error::FailedPrecondition(format!(
                        "session {session} was stopped for good{when}; it cannot be confirmed"
                    )));
                }
                SessionState::Ok | SessionState::Confirmed => return Ok(s),
                SessionState::Asked | SessionState::Paused => {}
            }
            let policies = self.policies();
            let base = policies.for_session(&s.user, &s.team).clone();
            raise(&mut s, &base, now_ms());
            transition(&mut s, SessionState::Confirmed, by, "confirmed");
            if self.put(v, &s).await? {
                return Ok(s);
            }
        }
    }

    /// Ends the session for good.
    pub async fn stop(&self, session: &str, user: &str, by: &str) -> Result<SessionRec, Error> {
        loop {
            let (mut s, v) = self.find(session, user).await?;
            if s.state == SessionState::Stopped {
                return Ok(s);
            }
            transition(&mut s, SessionState::Stopped, by, "stopped");
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
            state: s.state.as_str().into(),
            mode: s.mode.as_str().into(),
            tokens: s.tokens,
            cost_micros: s.cost_micros,
            requests: s.requests,
            started_unix_ms: s.started_ms,
            last_unix_ms: s.last_ms,
            tier: s.tier.map_or("", Tier::as_str).into(),
            thresholds: Some(pb::Thresholds {
                tokens: s.limits.tokens.unwrap_or(0),
                cost_micros: s.limits.cost_micros.unwrap_or(0),
                requests: s.limits.requests.unwrap_or(0),
                duration_s: s.limits.duration_s.unwrap_or(0),
                tier: s.limits.tier.map_or("", Tier::as_str).into(),
            }),
            history: s
                .history
                .iter()
                .map(|t| pb::Transition {
                    from: t.from.map_or("", SessionState::as_str).into(),
                    to: t.to.as_str().into(),
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
        assert_eq!(s.state, SessionState::Confirmed);
        assert_eq!(s.limits.tokens, Some(200));
        assert!(b.blocked().await.unwrap().is_empty());
        b.record(vec![rec("ann", "s1", 100)], false, "", "")
            .await
            .unwrap();
        assert_eq!(
            b.find("s1", "ann").await.unwrap().0.state,
            SessionState::Paused
        );
        let s = b.stop("s1", "ann", "ann@web").await.unwrap();
        assert_eq!(s.state, SessionState::Stopped);
        let states: Vec<_> = s.history.iter().map(|t| t.to).collect();
        assert_eq!(
            states,
            [
                SessionState::Ok,
                SessionState::Paused,
                SessionState::Confirmed,
                SessionState::Paused,
                SessionState::Stopped
            ]
        );
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
        assert_eq!((a.kind.as_str(), a.state.as_str()), ("session", "asked"));
        assert!(
            b.set_policies("[policies.default]\nmax_requests = -1")
                .is_err()
        );
        assert_eq!(b.policies().default.limits.requests, Some(2));
    }

    #[tokio::test]
    async fn what_people_read_says_when_in_dates_not_epoch_milliseconds() {
        let b = breaker("[policies.default]\nmode = \"pause\"\nmax_tokens = 100").await;
        let mut rx = b.subscribe();
        let blocked = b
            .record(vec![rec("ann", "s1", 150)], false, "", "")
            .await
            .unwrap();
        let (s, _) = b.find("s1", "ann").await.unwrap();
        let paused_at = retort_time::human(s.history.last().unwrap().at_ms);
        let started = retort_time::human(s.started_ms);
        // The gateway's 402.
        assert!(
            blocked[0]
                .message
                .contains(&format!("is paused since {paused_at}")),
            "{}",
            blocked[0].message
        );
        // The alert on Watch (and the webhook: the same text).
        let a = rx.try_recv().unwrap();
        assert!(
            a.text.contains(&format!("at {paused_at} and is paused"))
                && a.text.contains(&format!("(since {started})")),
            "{}",
            a.text
        );
        // A person's stop, and the status that refuses to confirm it.
        b.stop("s1", "ann", "ann@web").await.unwrap();
        let (s, _) = b.find("s1", "ann").await.unwrap();
        let stopped_at = retort_time::human(s.history.last().unwrap().at_ms);
        let blocked = b.blocked().await.unwrap();
        assert!(
            blocked[0]
                .message
                .contains(&format!("was stopped by ann@web at {stopped_at}")),
            "{}",
            blocked[0].message
        );
        let e = tonic::Status::from(b.confirm("s1", "ann", "x").await.unwrap_err());
        assert!(
            e.message()
                .contains(&format!("stopped for good by ann@web at {stopped_at}")),
            "{}",
            e.message()
        );
        for text in [&blocked[0].message, &a.text, &e.message().to_owned()] {
            assert!(
                !text.contains(&s.started_ms.to_string()[..8]),
                "epoch milliseconds in {text}"
            );
        }
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
