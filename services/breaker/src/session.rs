//! A session's state machine, `ok → asked → (confirmed | paused → confirmed | stopped)`, and the
//! model tiers it watches, as closed enums: every `match` names each case, so adding a state or a
//! tier makes the compiler list what must change. The pure steps of the machine (a new session,
//! which threshold it crossed, raising thresholds on confirmation, recording a transition) live
//! here too; everything that stores or tells lives in [`crate::core`].
//!
//! The stored form does not change: states and tiers are the same lowercase strings as before
//! (`"paused"`, `"frontier"`), and "none" is still the empty string where it was one, so sessions
//! written by an older breaker (in Redis) load as they are.
use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    now_ms,
    policy::Policy,
    store::{LimitsRec, SessionRec, TransitionRec},
};

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Below every threshold.
    Ok,
    /// Crossed a threshold under a `notify` policy: still served, the user was asked.
    Asked,
    /// Crossed a threshold under a `pause` policy: refused until the user confirms.
    Paused,
    /// The user confirmed; thresholds were raised and it is served again.
    Confirmed,
    /// Ended for good (by its policy or a person): refused from now on.
    Stopped,
}

impl SessionState {
    pub const ALL: [SessionState; 5] = [
        SessionState::Ok,
        SessionState::Asked,
        SessionState::Paused,
        SessionState::Confirmed,
        SessionState::Stopped,
    ];

    /// The stored and wire form (`retort.v1.Session.state`).
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Ok => "ok",
            SessionState::Asked => "asked",
            SessionState::Paused => "paused",
            SessionState::Confirmed => "confirmed",
            SessionState::Stopped => "stopped",
        }
    }

    /// Gateways refuse the session's requests.
    pub fn is_blocked(self) -> bool {
        match self {
            SessionState::Paused | SessionState::Stopped => true,
            SessionState::Ok | SessionState::Asked | SessionState::Confirmed => false,
        }
    }

    /// Crossing a threshold in this state moves the session (an asked or paused session was
    /// already asked; a stopped one is over).
    pub fn watches_thresholds(self) -> bool {
        match self {
            SessionState::Ok | SessionState::Confirmed => true,
            SessionState::Asked | SessionState::Paused | SessionState::Stopped => false,
        }
    }
}

/// A model tier, lowest first: the order is what a `max_tier` threshold compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Small,
    Mid,
    Frontier,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Small, Tier::Mid, Tier::Frontier];

    /// The stored and wire form, the price table's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Small => "small",
            Tier::Mid => "mid",
            Tier::Frontier => "frontier",
        }
    }

    /// The tier a usage record names; `None` for the empty label and for a label the breaker does
    /// not rank (a price table may name its own tiers): such usage never crosses a tier threshold.
    pub fn of_label(label: &str) -> Option<Tier> {
        label.parse().ok()
    }
}

/// A label that is not one of the known states or tiers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected {expected})")]
pub struct UnknownLabel {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

fn parse_label<T: Copy>(
    what: &'static str,
    s: &str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Result<T, UnknownLabel> {
    all.iter()
        .copied()
        .find(|t| as_str(*t) == s)
        .ok_or_else(|| UnknownLabel {
            what,
            value: s.to_owned(),
            expected: all
                .iter()
                .map(|t| as_str(*t))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

impl FromStr for SessionState {
    type Err = UnknownLabel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_label("session state", s, &SessionState::ALL, SessionState::as_str)
    }
}

impl FromStr for Tier {
    type Err = UnknownLabel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_label("model tier", s, &Tier::ALL, Tier::as_str)
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `Option<SessionState>` stored as its label, `""` for none (a session's first transition has no
/// `from`).
pub(crate) mod state_or_blank {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::SessionState;

    pub fn serialize<S: Serializer>(v: &Option<SessionState>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("", SessionState::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SessionState>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(serde::de::Error::custom)
    }
}

/// `Option<Tier>` stored as its label, `""` for none (a session that has used no ranked model).
/// A label the breaker does not rank loads as none, as it always counted.
pub(crate) mod tier_or_blank {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Tier;

    pub fn serialize<S: Serializer>(v: &Option<Tier>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.map_or("", Tier::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Tier>, D::Error> {
        Ok(Tier::of_label(&String::deserialize(d)?))
    }
}

/// A session seen for the first time, under policy `p`.
pub fn new_session(user: &str, team: &str, session: &str, p: &Policy, at: i64) -> SessionRec {
    SessionRec {
        session_id: session.into(),
        user: user.into(),
        team: team.into(),
        state: SessionState::Ok,
        mode: p.mode,
        tokens: 0,
        cost_micros: 0,
        requests: 0,
        started_ms: at,
        last_ms: at,
        tier: None,
        limits: LimitsRec {
            tokens: p.limits.tokens,
            cost_micros: p.limits.cost_micros,
            requests: p.limits.requests,
            duration_s: p.limits.duration_s,
            tier: p.limits.tier,
        },
        history: vec![TransitionRec {
            from: None,
            to: SessionState::Ok,
            by: "gateway".into(),
            at_ms: at,
            reason: "first request".into(),
        }],
    }
}

/// The first threshold the session has reached, described.
pub fn crossed(s: &SessionRec, now: i64) -> Option<String> {
    let l = &s.limits;
    let dur_ms = (s.last_ms.max(now) - s.started_ms).max(0);
    let dur = (dur_ms / 1000) as u64;
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
        return Some(format!(
            "running {} ≥ {}",
            retort_time::human_duration(dur_ms),
            retort_time::human_duration(d.saturating_mul(1000).min(i64::MAX as u64) as i64)
        ));
    }
    if let (Some(limit), Some(used)) = (l.tier, s.tier)
        && used > limit
    {
        return Some(format!("model tier {used} above {limit}"));
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
    if let (Some(limit), Some(used)) = (s.limits.tier, s.tier)
        && used > limit
    {
        s.limits.tier = Some(used);
    }
}

/// Moves the session to `to`, recording who did it and why.
pub fn transition(s: &mut SessionRec, to: SessionState, by: &str, reason: &str) {
    s.history.push(TransitionRec {
        from: Some(s.state),
        to,
        by: by.into(),
        at_ms: now_ms(),
        reason: reason.into(),
    });
    s.state = to;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_round_trip_and_unknown_ones_are_named() {
        for s in SessionState::ALL {
            assert_eq!(s.as_str().parse::<SessionState>().unwrap(), s);
        }
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>().unwrap(), t);
        }
        let e = "resting".parse::<SessionState>().unwrap_err().to_string();
        assert!(
            e.contains("resting") && e.contains("ok, asked, paused"),
            "{e}"
        );
        assert_eq!(Tier::of_label(""), None);
        assert_eq!(Tier::of_label("Frontier"), None);
        assert!(Tier::Small < Tier::Mid && Tier::Mid < Tier::Frontier);
        // No tier ranks below any tier, as the empty label always did.
        assert!(None < Some(Tier::Small));
    }

    /// A session as an older breaker wrote it to Redis: it must load, and write back the same.
    const STORED: &str = r#"{"session_id":"s1","user":"ann","team":"qa","state":"paused","mode":"pause","tokens":120,"cost_micros":20,"requests":2,"started_ms":1000,"last_ms":2000,"tier":"mid","limits":{"tokens":100,"cost_micros":null,"requests":null,"duration_s":null,"tier":"frontier"},"history":[{"from":"","to":"ok","by":"gateway","at_ms":1000,"reason":"first request"},{"from":"ok","to":"paused","by":"breaker","at_ms":2000,"reason":"120 tokens ≥ 100"}]}"#;

    #[test]
    fn sessions_stored_by_an_older_breaker_load_unchanged() {
        let s: SessionRec = serde_json::from_str(STORED).unwrap();
        assert_eq!(s.state, SessionState::Paused);
        assert_eq!(s.tier, Some(Tier::Mid));
        assert_eq!(s.limits.tier, Some(Tier::Frontier));
        assert_eq!(s.history[0].from, None);
        assert_eq!(s.history[1].from, Some(SessionState::Ok));
        assert_eq!(serde_json::to_string(&s).unwrap(), STORED);
        // A session that used no ranked tier stored "" and loads as none.
        let blank = STORED.replace(r#""tier":"mid""#, r#""tier":"""#);
        let s: SessionRec = serde_json::from_str(&blank).unwrap();
        assert_eq!(s.tier, None);
        assert_eq!(serde_json::to_string(&s).unwrap(), blank);
        // A state nobody knows is corrupt data, not a session in some state.
        let bad = STORED.replace(r#""state":"paused""#, r#""state":"resting""#);
        assert!(serde_json::from_str::<SessionRec>(&bad).is_err());
    }

    #[test]
    fn a_session_crosses_its_tier_only_above_it_and_confirming_accepts_the_tier() {
        let p = Policy {
            limits: crate::policy::Limits {
                tier: Some(Tier::Mid),
                ..Default::default()
            },
            ..Policy::default()
        };
        let mut s = new_session("ann", "qa", "s", &p, 0);
        assert_eq!(crossed(&s, 0), None);
        s.tier = Some(Tier::Mid);
        assert_eq!(crossed(&s, 0), None);
        s.tier = Some(Tier::Frontier);
        assert_eq!(
            crossed(&s, 0).as_deref(),
            Some("model tier frontier above mid")
        );
        raise(&mut s, &p, 0);
        assert_eq!(s.limits.tier, Some(Tier::Frontier));
        assert_eq!(crossed(&s, 0), None);
    }

    #[test]
    fn a_duration_threshold_reads_as_a_duration() {
        let p = Policy {
            limits: crate::policy::Limits {
                duration_s: Some(3600),
                ..Default::default()
            },
            ..Policy::default()
        };
        let s = new_session("ann", "qa", "s", &p, 0);
        assert_eq!(
            crossed(&s, 3_725_000).as_deref(),
            Some("running 1 h 02 min ≥ 1 h 00 min")
        );
    }
}
