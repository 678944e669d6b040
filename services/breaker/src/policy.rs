//! Policies, budgets and webhooks: raw serde structs (`deny_unknown_fields`), then [`load`] into
//! runtime types with every check. A payload that fails any check is refused as a whole.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, session::Tier};

/// The most a threshold or limit may be: beyond these a value is a typo, not a policy.
const MAX_TOKENS: f64 = 1e12;
const MAX_USD: f64 = 1e7;
const MAX_REQUESTS: f64 = 1e9;
const MAX_DURATION_S: f64 = 366.0 * 86_400.0;
const MAX_STEP: f64 = 100.0;

/// What happens when a session crosses a threshold (stored in each session as its label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Keep serving; ask the user.
    Notify,
    /// Stop serving until the user confirms.
    Pause,
    /// End the session.
    Stop,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Notify => "notify",
            Mode::Pause => "pause",
            Mode::Stop => "stop",
        }
    }
}

/// One session policy as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `notify` (default), `pause` or `stop`.
    pub mode: Option<String>,
    pub max_tokens: Option<f64>,
    pub max_cost_usd: Option<f64>,
    pub max_requests: Option<f64>,
    pub max_duration_s: Option<f64>,
    /// The highest model tier (`small`, `mid`, `frontier`) a session uses without asking.
    pub max_tier: Option<String>,
    /// Confirming raises each threshold by `step` times its configured value (default 1: doubles).
    pub step: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicies {
    pub default: Option<RawPolicy>,
    #[serde(default)]
    pub teams: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub users: BTreeMap<String, RawPolicy>,
}

/// One budget as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// `user` or `team`.
    pub scope: String,
    /// The user's or team's name.
    pub name: String,
    /// `day`, `week` or `month`.
    pub window: String,
    /// Rolling (the last 24 h / 7 d / 30 d) rather than calendar (UTC day, ISO week, month).
    #[serde(default)]
    pub rolling: bool,
    pub soft_usd: Option<f64>,
    pub hard_usd: Option<f64>,
    pub soft_tokens: Option<f64>,
    pub hard_tokens: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhooks {
    /// Slack-compatible incoming webhook for teams without their own.
    pub default: Option<String>,
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
}

/// The policy payload (`SetPolicies`, and the policy part of `[breaker]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicyFile {
    #[serde(default)]
    pub policies: RawPolicies,
    #[serde(default)]
    pub budgets: Vec<RawBudget>,
    #[serde(default)]
    pub webhooks: RawWebhooks,
}

/// Thresholds of a session; `None`: no limit on that measure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub tokens: Option<u64>,
    pub cost_micros: Option<i64>,
    pub requests: Option<u64>,
    pub duration_s: Option<u64>,
    /// The highest model tier used without asking.
    pub tier: Option<Tier>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub limits: Limits,
    pub step: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Notify,
            limits: Limits::default(),
            step: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Day,
    Week,
    Month,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Day => "day",
            Window::Week => "week",
            Window::Month => "month",
        }
    }

    fn seconds(self) -> i64 {
        match self {
            Window::Day => 86_400,
            Window::Week => 7 * 86_400,
            Window::Month => 30 * 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `user:NAME` or `team:NAME`.
    pub principal: String,
    pub window: Window,
    pub rolling: bool,
    pub soft_micros: Option<i64>,
    pub hard_micros: Option<i64>,
    pub soft_tokens: Option<u64>,
    pub hard_tokens: Option<u64>,
}

/// Rolling windows keep their spend in 48 buckets.
pub const ROLLING_BUCKETS: i64 = 48;

impl Budget {
    /// Stable id of the budget (the store's key).
    pub fn id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.principal,
            self.window.as_str(),
            if self.rolling { "rolling" } else { "calendar" }
        )
    }

    /// For a calendar window, its id at `now_s` (UTC); for a rolling one, the current bucket.
    pub fn slot(&self, now_s: i64) -> Slot {
        if self.rolling {
            let bucket_s = self.window.seconds() / ROLLING_BUCKETS;
            return Slot {
                window: (now_s.div_euclid(bucket_s)).to_string(),
                rolling_from: Some(now_s.div_euclid(bucket_s) - ROLLING_BUCKETS + 1),
            };
        }
        let day = retort_time::day_of(now_s.saturating_mul(1000));
        // These ids are the store's keys: spend already recorded under them must still count.
        let window = match self.window {
            Window::Day => format!("d{day}"),
            // ISO weeks counted from the one 1970-01-01 falls in (it began on Monday 1969-12-29).
            Window::Week => format!(
                "w{}",
                (retort_time::iso_week_start(day) - retort_time::iso_week_start(0)).div_euclid(7)
            ),
            Window::Month => {
                let (y, m, _) = retort_time::civil(day);
                format!("m{y}-{m:02}")
            }
        };
        Slot {
            window,
            rolling_from: None,
        }
    }
}

/// Where spend goes now: a calendar window id, or a rolling bucket and the oldest bucket still in.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub window: String,
    pub rolling_from: Option<i64>,
}

/// Every policy, budget and webhook in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    pub default: Policy,
    pub teams: BTreeMap<String, Policy>,
    pub users: BTreeMap<String, Policy>,
    pub budgets: Vec<Budget>,
    pub webhook_default: Option<String>,
    pub webhook_teams: BTreeMap<String, String>,
}

impl Policies {
    /// The policy of a user: theirs, else their team's, else the default.
    pub fn for_session(&self, user: &str, team: &str) -> &Policy {
        self.users
            .get(user)
            .or_else(|| self.teams.get(team))
            .unwrap_or(&self.default)
    }

    pub fn budgets_of(&self, principal: &str) -> impl Iterator<Item = &Budget> {
        self.budgets
            .iter()
            .filter(move |b| b.principal == principal)
    }

    pub fn webhook(&self, team: &str) -> Option<&str> {
        self.webhook_teams
            .get(team)
            .or(self.webhook_default.as_ref())
            .map(String::as_str)
    }

    /// Parses and validates a TOML policy payload as a whole.
    pub fn from_toml(text: &str) -> Result<Policies, Error> {
        let raw: RawPolicyFile = toml::from_str(text).map_err(Error::MalformedPolicy)?;
        load(raw)
    }
}

fn amount(what: &str, v: Option<f64>, max: f64) -> Result<Option<f64>, Error> {
    match v {
        None => Ok(None),
        Some(v) if !v.is_finite() || v < 0.0 => Err(Error::InvalidPolicy(format!(
            "{what} must be a non-negative number, not {v}"
        ))),
        Some(v) if v > max => Err(Error::InvalidPolicy(format!(
            "{what} = {v} is absurd (the most allowed is {max})"
        ))),
        Some(v) => Ok(Some(v)),
    }
}

fn usd(v: f64) -> i64 {
    (v * 1e6).round() as i64
}

fn policy(at: &str, raw: &RawPolicy) -> Result<Policy, Error> {
    let mode = match raw.mode.as_deref() {
        None | Some("notify") => Mode::Notify,
        Some("pause") => Mode::Pause,
        Some("stop") => Mode::Stop,
        Some(other) => {
            return Err(Error::InvalidPolicy(format!(
                "{at}: unknown mode {other:?} (expected notify, pause or stop)"
            )));
        }
    };
    let tier = match raw.max_tier.as_deref().map(str::parse::<Tier>) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            return Err(Error::InvalidPolicy(format!(
                "{at}.max_tier must be one of {} (lowest first), not {:?}",
                Tier::ALL.map(Tier::as_str).join(", "),
                e.value
            )));
        }
    };
    let step = amount(&format!("{at}.step"), raw.step, MAX_STEP)?.unwrap_or(1.0);
    if step <= 0.0 {
        return Err(Error::InvalidPolicy(format!(
            "{at}.step must be greater than zero"
        )));
    }
    Ok(Policy {
        mode,
        step,
        limits: Limits {
            tokens: amount(&format!("{at}.max_tokens"), raw.max_tokens, MAX_TOKENS)?
                .map(|v| v as u64),
            cost_micros: amount(&format!("{at}.max_cost_usd"), raw.max_cost_usd, MAX_USD)?.map(usd),
            requests: amount(
                &format!("{at}.max_requests"),
                raw.max_requests,
                MAX_REQUESTS,
            )?
            .map(|v| v as u64),
            duration_s: amount(
                &format!("{at}.max_duration_s"),
                raw.max_duration_s,
                MAX_DURATION_S,
            )?
            .map(|v| v as u64),
            tier,
        },
    })
}

fn url(at: &str, u: &str) -> Result<String, Error> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(u.to_owned())
    } else {
        Err(Error::InvalidPolicy(format!(
            "{at}: webhook {u:?} is not an http(s) URL"
        )))
    }
}

/// Checks everything; the first problem refuses the whole payload.
pub fn load(raw: RawPolicyFile) -> Result<Policies, Error> {
    let mut p = Policies {
        default: raw
            .policies
            .default
            .as_ref()
            .map(|d| policy("policies.default", d))
            .transpose()?
            .unwrap_or_default(),
        ..Policies::default()
    };
    for (name, r) in &raw.policies.teams {
        p.teams
            .insert(name.clone(), policy(&format!("policies.teams.{name}"), r)?);
    }
    for (name, r) in &raw.policies.users {
        p.users
            .insert(name.clone(), policy(&format!("policies.users.{name}"), r)?);
    }
    for (i, b) in raw.budgets.iter().enumerate() {
        let at = format!("budgets[{i}]");
        if b.scope != "user" && b.scope != "team" {
            return Err(Error::InvalidPolicy(format!(
                "{at}.scope must be user or team, not {:?}",
                b.scope
            )));
        }
        if b.name.trim().is_empty() {
            return Err(Error::InvalidPolicy(format!("{at}.name is empty")));
        }
        let window = match b.window.as_str() {
            "day" => Window::Day,
            "week" => Window::Week,
            "month" => Window::Month,
            w => {
                return Err(Error::InvalidPolicy(format!(
                    "{at}.window must be day, week or month, not {w:?}"
                )));
            }
        };
        let budget = Budget {
            principal: format!("{}:{}", b.scope, b.name),
            window,
            rolling: b.rolling,
            soft_micros: amount(&format!("{at}.soft_usd"), b.soft_usd, MAX_USD)?.map(usd),
            hard_micros: amount(&format!("{at}.hard_usd"), b.hard_usd, MAX_USD)?.map(usd),
            soft_tokens: amount(&format!("{at}.soft_tokens"), b.soft_tokens, MAX_TOKENS)?
                .map(|v| v as u64),
            hard_tokens: amount(&format!("{at}.hard_tokens"), b.hard_tokens, MAX_TOKENS)?
                .map(|v| v as u64),
        };
        if budget.soft_micros.is_none()
            && budget.hard_micros.is_none()
            && budget.soft_tokens.is_none()
            && budget.hard_tokens.is_none()
        {
            return Err(Error::InvalidPolicy(format!(
                "{at} sets no limit (soft_usd, hard_usd, soft_tokens or hard_tokens)"
            )));
        }
        if let (Some(s), Some(h)) = (budget.soft_micros, budget.hard_micros)
            && s > h
        {
            return Err(Error::InvalidPolicy(format!(
                "{at}: soft_usd is above hard_usd"
            )));
        }
        if let (Some(s), Some(h)) = (budget.soft_tokens, budget.hard_tokens)
            && s > h
        {
            return Err(Error::InvalidPolicy(format!(
                "{at}: soft_tokens is above hard_tokens"
            )));
        }
        if p.budgets.iter().any(|o| o.id() == budget.id()) {
            return Err(Error::InvalidPolicy(format!(
                "{at}: a second {} budget",
                budget.id()
            )));
        }
        p.budgets.push(budget);
    }
    p.webhook_default = raw
        .webhooks
        .default
        .as_deref()
        .map(|u| url("webhooks.default", u))
        .transpose()?;
    for (team, u) in &raw.webhooks.teams {
        p.webhook_teams
            .insert(team.clone(), url(&format!("webhooks.teams.{team}"), u)?);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loads_a_valid_file() {
        let p = Policies::from_toml(
            r#"
            [policies.default]
            mode = "pause"
            max_tokens = 1000
            [policies.users.ann]
            mode = "stop"
            max_cost_usd = 2.5
            max_tier = "mid"
            [[budgets]]
            scope = "team"
            name = "qa"
            window = "month"
            hard_usd = 100
            soft_usd = 80
            [webhooks]
            teams.qa = "http://127.0.0.1:9/hook"
            "#,
        )
        .unwrap();
        assert_eq!(p.default.mode, Mode::Pause);
        assert_eq!(
            p.for_session("ann", "x").limits.cost_micros,
            Some(2_500_000)
        );
        assert_eq!(p.for_session("bob", "qa").limits.tokens, Some(1000));
        assert_eq!(p.for_session("ann", "x").limits.tier, Some(Tier::Mid));
        assert_eq!(p.for_session("bob", "qa").limits.tier, None);
        assert_eq!(p.budgets[0].hard_micros, Some(100_000_000));
        assert_eq!(p.webhook("qa"), Some("http://127.0.0.1:9/hook"));
    }

    #[test]
    fn refuses_bad_input_with_clear_messages() {
        for (text, want) in [
            ("[policies.default]\nmax_tokens = -5", "non-negative"),
            ("[policies.default]\nmax_cost_usd = 1e12", "absurd"),
            ("[policies.default]\nmode = \"explode\"", "unknown mode"),
            (
                "[policies.default]\nmax_tier = \"huge\"",
                "max_tier must be one of small, mid, frontier",
            ),
            ("[policies.default]\nmax_tokenz = 5", "malformed"),
            (
                "[[budgets]]\nscope = \"user\"\nname = \"a\"\nwindow = \"year\"\nhard_usd = 1",
                "window",
            ),
            (
                "[[budgets]]\nscope = \"user\"\nname = \"a\"\nwindow = \"day\"",
                "no limit",
            ),
            (
                "[[budgets]]\nscope = \"user\"\nname = \"a\"\nwindow = \"day\"\nsoft_usd = 2\nhard_usd = 1",
                "soft_usd",
            ),
            ("[webhooks]\ndefault = \"ftp://x\"", "http"),
            ("not toml at all [", "malformed"),
        ] {
            let e = Policies::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn windows() {
        let b = |window, rolling| Budget {
            principal: "user:a".into(),
            window,
            rolling,
            soft_micros: None,
            hard_micros: Some(1),
            soft_tokens: None,
            hard_tokens: None,
        };
        // 2026-11-24 (a Tuesday) 02:00 UTC.
        let now = 20_781 * 86_400 + 7_200;
        assert_eq!(b(Window::Day, false).slot(now).window, "d20781");
        assert_eq!(b(Window::Month, false).slot(now).window, "m2026-11");
        assert_eq!(
            b(Window::Week, false).slot(now).window,
            b(Window::Week, false).slot(now - 86_400).window
        );
        assert_ne!(
            b(Window::Week, false).slot(now).window,
            b(Window::Week, false).slot(now - 2 * 86_400).window
        );
        let r = b(Window::Day, true).slot(now);
        assert_eq!(r.rolling_from, Some(r.window.parse::<i64>().unwrap() - 47));
    }

    /// Calendar window ids are the store's keys: spend an older breaker recorded must still count,
    /// so the ids stay what its hand-written arithmetic made them.
    #[test]
    fn calendar_window_ids_are_the_ones_already_stored() {
        let b = |window| Budget {
            principal: "user:a".into(),
            window,
            rolling: false,
            soft_micros: None,
            hard_micros: Some(1),
            soft_tokens: None,
            hard_tokens: None,
        };
        // The older breaker's week id: weeks since Monday 1969-12-29 (1970-01-01 was a Thursday).
        for day in (-800..800).chain(20_000..21_000) {
            let at = day * 86_400 + 43_200;
            assert_eq!(
                b(Window::Week).slot(at).window,
                format!("w{}", (day + 3_i64).div_euclid(7)),
                "day {day}"
            );
        }
        for (date, id) in [
            ("2024-02-29", "m2024-02"),
            ("2024-03-01", "m2024-03"),
            ("2025-12-31", "m2025-12"),
            ("2026-01-01", "m2026-01"),
            ("1969-12-31", "m1969-12"),
        ] {
            let day = retort_time::parse_day(date).unwrap();
            assert_eq!(b(Window::Month).slot(day * 86_400).window, id, "{date}");
            assert_eq!(
                b(Window::Month).slot(day * 86_400 + 86_399).window,
                id,
                "{date}"
            );
        }
    }
}
