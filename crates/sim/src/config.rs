//! The simulator's configuration: global settings, one [`ModelBehavior`] per model, and [`Fault`]s.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Deserializer};

use crate::SimError;

/// The whole simulator configuration, as read from TOML or built in code.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// When set, API requests must carry `Authorization: Bearer KEY` or `x-api-key: KEY`.
    pub api_key: Option<String>,
    /// `true`: unknown models get 404 `model_not_found`; `false`: they get [`SimConfig::default`].
    pub strict_models: bool,
    /// The behaviour of models not listed in [`SimConfig::models`].
    pub default: ModelBehavior,
    /// Per model name.
    pub models: BTreeMap<String, ModelBehavior>,
}

/// How a model answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// A deterministic sequence of `answer_tokens` words chosen by a hash of the last user message.
    #[default]
    Lorem,
    /// The last user message, word by word.
    Echo,
    /// The `script` entries in order, one per request (cycling).
    Script,
    /// Looked up in the `dataset` file.
    Dataset,
}

/// How a dataset-mode model answers wrongly (at `error_rate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WrongAnswers {
    /// Another answer of the dataset (a wrong label).
    #[default]
    Other,
    /// The right answer with one character changed (a slightly wrong generation).
    Typo,
}

/// The behaviour of one model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelBehavior {
    /// Delay before the response headers.
    pub latency_ms: u64,
    /// 0 = no pacing; else the streamed tokens come this many per second.
    pub tokens_per_sec: f64,
    /// Length of the generated answer in `lorem` mode.
    pub answer_tokens: u32,
    pub mode: AnswerMode,
    /// `mode = "script"`: the answers, cycled per request.
    pub script: Vec<String>,
    /// `mode = "dataset"`: a JSONL file of `{"prompt": "...", "answer": "..."}` lines, loaded once at start.
    pub dataset: Option<PathBuf>,
    /// `mode = "dataset"`: the fraction of prompts answered wrongly (deterministic per prompt and seed).
    pub error_rate: f64,
    /// `mode = "dataset"`: what a wrong answer is (`other`: another answer of the dataset, as a
    /// classifier errs; `typo`: the right answer with one character replaced, dropped or doubled, as
    /// a generator errs).
    pub wrong_answers: WrongAnswers,
    pub seed: u64,
    /// Answer with a call to the first tool when the request has tools and does not end with a tool result.
    pub tool_calls: bool,
    /// Reported in usage (and included in the output token count, as the real APIs do).
    pub reasoning_tokens: u64,
    /// Reported in usage as cached input.
    pub cached_tokens: u64,
    /// 0 = unlimited; else longer inputs get the context-length 400.
    pub context_window: u64,
    /// A fault injected into every request to this model.
    pub fault: Option<Fault>,
}

impl Default for ModelBehavior {
    fn default() -> Self {
        ModelBehavior {
            latency_ms: 0,
            tokens_per_sec: 0.0,
            answer_tokens: 16,
            mode: AnswerMode::Lorem,
            script: Vec::new(),
            dataset: None,
            error_rate: 0.0,
            wrong_answers: WrongAnswers::Other,
            seed: 0,
            tool_calls: false,
            reasoning_tokens: 0,
            cached_tokens: 0,
            context_window: 0,
            fault: None,
        }
    }
}

/// A failure injected by the simulator. Parses from (and displays as) a short form such as
/// `unavailable`, `rate_limit:1.5` or `cut_after:5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// 429, with `Retry-After: S` when `retry_after` is set.
    RateLimit { retry_after: Option<f64> },
    /// The first request to the model gets 500; later ones are healthy.
    ErrorOnce,
    /// Requests 1, N+1, 2N+1, ... to the model get 500; the others are healthy (a target that
    /// fails sometimes, evenly spread, starting with the first request).
    FailEvery { n: u32 },
    /// 503 on every request.
    Unavailable,
    /// 503 for this many seconds counted from the first request to the model, then healthy.
    UnavailableFor { secs: f64 },
    /// Read the request, then close the connection without any response.
    Reset,
    /// Never respond.
    Hang,
    /// Headers promptly, but the body (streaming: the first event) only after this many ms.
    SlowFirstToken { ms: u64 },
    /// Emit this many tokens, then abort the body (an incomplete-body error for the client).
    CutAfter { tokens: u32 },
    /// Emit this many tokens, then send nothing more, keeping the connection open.
    StallAfter { tokens: u32 },
    /// After this many tokens, one extra unparseable SSE event; the answer still completes.
    MalformedChunk { after: u32 },
    /// Streaming ends cleanly without `data: [DONE]` / `message_stop` / `response.completed`.
    MissingDone,
    /// 400 context-length error when the input exceeds `context_window` (always when it is 0).
    ContextLength,
    /// 400 content-policy error.
    ContentPolicy,
    /// 400 when the conversation ends with an assistant message.
    RejectPrefill,
    /// 404 model not found.
    NotFound,
}

impl FromStr for Fault {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (s, None),
        };
        let bad = |reason: &str| SimError::InvalidFault {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let secs = |a: &str| -> Result<f64, SimError> {
            match a.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(bad("expected a non-negative number of seconds")),
            }
        };
        let count = |a: &str| {
            a.parse::<u32>()
                .map_err(|_| bad("expected a non-negative integer"))
        };
        let need = || arg.ok_or_else(|| bad("this fault needs an argument, e.g. `cut_after:5`"));
        let none = |f: Fault| match arg {
            None => Ok(f),
            Some(_) => Err(bad("this fault takes no argument")),
        };
        match name {
            "rate_limit" => Ok(Fault::RateLimit {
                retry_after: arg.map(secs).transpose()?,
            }),
            "error_once" => none(Fault::ErrorOnce),
            "fail_every" => match count(need()?)? {
                0 => Err(bad("expected a positive integer")),
                n => Ok(Fault::FailEvery { n }),
            },
            "unavailable" => none(Fault::Unavailable),
            "unavailable_for" => Ok(Fault::UnavailableFor {
                secs: secs(need()?)?,
            }),
            "reset" => none(Fault::Reset),
            "hang" => none(Fault::Hang),
            "slow_first_token" => Ok(Fault::SlowFirstToken {
                ms: need()?.parse().map_err(|_| bad("expected milliseconds"))?,
            }),
            "cut_after" => Ok(Fault::CutAfter {
                tokens: count(need()?)?,
            }),
            "stall_after" => Ok(Fault::StallAfter {
                tokens: count(need()?)?,
            }),
            "malformed_chunk" => Ok(Fault::MalformedChunk {
                after: count(need()?)?,
            }),
            "missing_done" => none(Fault::MissingDone),
            "context_length" => none(Fault::ContextLength),
            "content_policy" => none(Fault::ContentPolicy),
            "reject_prefill" => none(Fault::RejectPrefill),
            "not_found" => none(Fault::NotFound),
            _ => Err(bad("unknown fault")),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::RateLimit { retry_after: None } => f.write_str("rate_limit"),
            Fault::RateLimit {
                retry_after: Some(s),
            } => write!(f, "rate_limit:{s}"),
            Fault::ErrorOnce => f.write_str("error_once"),
            Fault::FailEvery { n } => write!(f, "fail_every:{n}"),
            Fault::Unavailable => f.write_str("unavailable"),
            Fault::UnavailableFor { secs } => write!(f, "unavailable_for:{secs}"),
            Fault::Reset => f.write_str("reset"),
            Fault::Hang => f.write_str("hang"),
            Fault::SlowFirstToken { ms } => write!(f, "slow_first_token:{ms}"),
            Fault::CutAfter { tokens } => write!(f, "cut_after:{tokens}"),
            Fault::StallAfter { tokens } => write!(f, "stall_after:{tokens}"),
            Fault::MalformedChunk { after } => write!(f, "malformed_chunk:{after}"),
            Fault::MissingDone => f.write_str("missing_done"),
            Fault::ContextLength => f.write_str("context_length"),
            Fault::ContentPolicy => f.write_str("content_policy"),
            Fault::RejectPrefill => f.write_str("reject_prefill"),
            Fault::NotFound => f.write_str("not_found"),
        }
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl SimConfig {
    /// Parses a TOML configuration and checks it. Relative dataset paths stay relative to the
    /// working directory (see [`SimConfig::from_file`] for paths relative to the file).
    pub fn from_toml(s: &str) -> Result<Self, SimError> {
        let cfg: SimConfig = toml::from_str(s).map_err(|e| SimError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML configuration file; relative dataset paths are resolved against its folder.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text)?;
        if let Some(dir) = path.parent() {
            for b in std::iter::once(&mut cfg.default).chain(cfg.models.values_mut()) {
                if let Some(ds) = &mut b.dataset
                    && ds.is_relative()
                {
                    *ds = dir.join(&*ds);
                }
            }
        }
        Ok(cfg)
    }

    /// The demo configuration used by the binary without `--config`.
    pub fn demo() -> Self {
        let models = [
            ("sim-fast", ModelBehavior::default()),
            (
                "sim-paced",
                ModelBehavior {
                    latency_ms: 20,
                    tokens_per_sec: 200.0,
                    ..Default::default()
                },
            ),
            // Fails every third request (the first included), so a route that puts it first
            // shows failovers for as long as it runs, not just once.
            (
                "sim-flaky",
                ModelBehavior {
                    fault: Some(Fault::FailEvery { n: 3 }),
                    ..Default::default()
                },
            ),
            (
                "sim-down",
                ModelBehavior {
                    fault: Some(Fault::Unavailable),
                    ..Default::default()
                },
            ),
            // The Anthropic-shaped frontier model thinks before it answers (a `thinking` block,
            // counted in its output tokens as Anthropic bills it).
            (
                "sim-claude",
                ModelBehavior {
                    reasoning_tokens: 24,
                    ..Default::default()
                },
            ),
            // An OpenAI reasoning model: reasoning tokens reported in usage, the reasoning unseen.
            (
                "sim-reasoner",
                ModelBehavior {
                    reasoning_tokens: 96,
                    ..Default::default()
                },
            ),
            (
                "sim-small",
                ModelBehavior {
                    context_window: 64,
                    fault: Some(Fault::ContextLength),
                    ..Default::default()
                },
            ),
            (
                "sim-tools",
                ModelBehavior {
                    tool_calls: true,
                    ..Default::default()
                },
            ),
            (
                "sim-echo",
                ModelBehavior {
                    mode: AnswerMode::Echo,
                    ..Default::default()
                },
            ),
        ];
        SimConfig {
            api_key: None,
            strict_models: false,
            default: ModelBehavior::default(),
            models: models.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }

    /// Checks the settings that TOML alone cannot (called by `from_toml`, `spawn` and `serve`).
    pub fn validate(&self) -> Result<(), SimError> {
        std::iter::once(("[default]", &self.default))
            .chain(self.models.iter().map(|(k, v)| (k.as_str(), v)))
            .try_for_each(|(name, b)| b.validate(name))
    }
}

impl ModelBehavior {
    fn validate(&self, model: &str) -> Result<(), SimError> {
        let bad = |reason: &str| {
            Err(SimError::InvalidModel {
                model: model.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if !(self.tokens_per_sec.is_finite() && self.tokens_per_sec >= 0.0) {
            return bad("tokens_per_sec must be a non-negative number");
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return bad("error_rate must be between 0 and 1");
        }
        match self.mode {
            AnswerMode::Script if self.script.is_empty() => {
                bad("mode = \"script\" needs a non-empty `script`")
            }
            AnswerMode::Dataset if self.dataset.is_none() => {
                bad("mode = \"dataset\" needs a `dataset` path")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn faults_round_trip() {
        for s in [
            "rate_limit",
            "rate_limit:1.5",
            "error_once",
            "fail_every:3",
            "unavailable",
            "unavailable_for:2",
            "unavailable_for:0.3",
            "reset",
            "hang",
            "slow_first_token:2000",
            "cut_after:5",
            "stall_after:5",
            "malformed_chunk:3",
            "missing_done",
            "context_length",
            "content_policy",
            "reject_prefill",
            "not_found",
        ] {
            let f: Fault = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert!("cut_after".parse::<Fault>().is_err());
        assert!("hang:3".parse::<Fault>().is_err());
        assert!("fail_every:0".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
        assert!("rate_limit:-1".parse::<Fault>().is_err());
    }

    #[test]
    fn parses_toml() {
        let cfg = SimConfig::from_toml(
            r#"
            api_key = "k"
            strict_models = true
            [default]
            answer_tokens = 4
            [models."sim-fast"]
            latency_ms = 5
            tokens_per_sec = 100
            fault = "cut_after:5"
            [models.s]
            mode = "script"
            script = ["a", "b"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.api_key.as_deref(), Some("k"));
        assert_eq!(cfg.default.answer_tokens, 4);
        let fast = &cfg.models["sim-fast"];
        assert_eq!(fast.fault, Some(Fault::CutAfter { tokens: 5 }));
        assert_eq!(fast.tokens_per_sec, 100.0);
        assert_eq!(fast.answer_tokens, 16);
        assert!(SimConfig::from_toml("bogus = 1").is_err());
        assert!(SimConfig::from_toml("[models.x]\nfault = \"nope\"").is_err());
        assert!(SimConfig::from_toml("[models.x]\nmode = \"script\"").is_err());
        SimConfig::demo().validate().unwrap();
    }
}
