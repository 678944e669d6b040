//! What the breaker tells people: alerts on `Watch` (the current state of every session first, then
//! as things happen) and Slack-compatible webhooks, for sessions that cross a threshold and budgets
//! that reach a limit. Every time in these texts is written for a person (`retort_time::human`).
use retort_proto::v1 as pb;
use retort_time::human;

use super::{Breaker, slot_args};
use crate::{Error, now_ms, policy::Policies, session::SessionState, store::SessionRec};

/// Alerts already sent are remembered this long (longer than the longest budget window).
const ALERT_MEMORY_MS: i64 = 32 * retort_time::DAY_MS;

impl Breaker {
    /// Asks (soft limit) or tells (hard limit) once per budget window, like a session question:
    /// an alert on `Watch` and the team's webhook.
    pub(super) async fn check_budgets(
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
                    "The {} {} budget of {principal} reached its {level} limit at {}: ${:.4} and {} tokens spent{}",
                    if b.rolling { "rolling" } else { "calendar" },
                    b.window.as_str(),
                    human(now),
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

    /// Tells the user that `s` just crossed a threshold: an alert on `Watch` and the team's
    /// webhook.
    pub(super) fn ask(&self, s: &SessionRec, policies: &Policies) {
        let a = self.session_alert(s, now_ms());
        if let Some(url) = policies.webhook(&s.team) {
            self.webhook(url, &a.text);
        }
        self.alert(a);
    }

    /// The alert that says where `s` stands, with what a person can do about it.
    fn session_alert(&self, s: &SessionRec, at_unix_ms: i64) -> pb::Alert {
        let page = self.page_url(&s.user, &s.session_id);
        let text = format!(
            "Retort: session {} of user {} {} ${:.4}, {} tokens, {} requests so far (since {}). Confirm: {page} · Stop: {page}&action=stop · or `retort breaker confirm {}` / `retort breaker stop {}`",
            s.session_id,
            s.user,
            happened(s),
            s.cost_micros as f64 / 1e6,
            s.tokens,
            s.requests,
            human(s.started_ms),
            s.session_id,
            s.session_id
        );
        pb::Alert {
            kind: "session".into(),
            user: s.user.clone(),
            team: s.team.clone(),
            session_id: s.session_id.clone(),
            state: s.state.as_str().into(),
            text,
            confirm_url: page.clone(),
            stop_url: format!("{page}&action=stop"),
            at_unix_ms,
        }
    }

    /// Where things stand for a new watcher of `user` (empty: everyone): an alert for every
    /// session that is not `ok`, oldest change first, each dated by its last transition.
    pub async fn current_alerts(&self, user: &str) -> Result<Vec<pb::Alert>, Error> {
        let mut sessions: Vec<SessionRec> = self
            .store
            .list_sessions()
            .await?
            .into_iter()
            .filter(|s| s.state != SessionState::Ok && (user.is_empty() || s.user == user))
            .collect();
        let changed = |s: &SessionRec| s.history.last().map_or(s.last_ms, |t| t.at_ms);
        sessions.sort_by_key(|s| (changed(s), s.key()));
        Ok(sessions
            .iter()
            .map(|s| self.session_alert(s, changed(s)))
            .collect())
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
}

/// What happened to the session last, from its last transition: "crossed its threshold (…) at
/// 2025-03-01 05:01:01 UTC and is paused until you confirm — …".
fn happened(s: &SessionRec) -> String {
    let last = s.history.last();
    let (by, reason) = last.map_or(("the breaker", ""), |t| (t.by.as_str(), t.reason.as_str()));
    let at = human(last.map_or(s.last_ms, |t| t.at_ms));
    match s.state {
        SessionState::Ok => format!("is running (since {at}):"),
        SessionState::Asked => format!(
            "crossed its threshold ({reason}) at {at} and is still running — did you mean to spend this?"
        ),
        SessionState::Paused => format!(
            "crossed its threshold ({reason}) at {at} and is paused until you confirm — did you mean to spend this?"
        ),
        SessionState::Confirmed => format!("was confirmed by {by} at {at} and goes on:"),
        // The breaker stops a session only under a `stop` policy, when it crosses a threshold.
        SessionState::Stopped if by == "breaker" => {
            format!("crossed its threshold ({reason}) at {at} and was stopped by its policy:")
        }
        SessionState::Stopped => format!("was stopped by {by} at {at}:"),
    }
}
