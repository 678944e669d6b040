//! The versioned price table shared by the gateway, metering and breakers: per model, prices per
//! million tokens (input, output, reasoning, cached read, cached write), each effective from a date.
//! Costs are integer micro-dollars so sums never drift. This crate does no I/O.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Micro-dollars (1e-6 USD).
pub type MicroUsd = i64;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceError {
    #[error(
        "price for {model}: {field} must be a finite, non-negative number of dollars per million tokens"
    )]
    Negative { model: String, field: &'static str },
    #[error("price for {model}: effective_from {date:?} is not a date like 2025-01-31")]
    BadDate { model: String, date: String },
    #[error("price for {model}: two entries are effective from {date}")]
    Duplicate { model: String, date: String },
}

/// One price entry as configured (USD per million tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The served (upstream) model id, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// `YYYY-MM-DD`; the entry applies to usage at or after this day (UTC).
    pub effective_from: String,
    pub input: f64,
    pub output: f64,
    /// Defaults to the output price (providers bill reasoning as output).
    #[serde(default)]
    pub reasoning: Option<f64>,
    #[serde(default)]
    pub cache_read: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// A label for grouping (e.g. `frontier`, `mid`, `small`); derived from the output price if absent.
    #[serde(default)]
    pub tier: Option<String>,
}

impl Price {
    /// `model@effective_from`: stored with every cost so a bill can be explained later.
    pub fn version(&self) -> String {
        format!("{}@{}", self.model, self.effective_from)
    }

    pub fn tier(&self) -> String {
        self.tier.clone().unwrap_or_else(|| {
            if self.output >= 10.0 {
                "frontier".into()
            } else if self.output >= 1.0 {
                "mid".into()
            } else {
                "small".into()
            }
        })
    }
}

/// Tokens to price. `input` excludes cached tokens; `output` includes reasoning tokens, of which
/// `reasoning` is the part spent thinking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// A cost and the price version it was computed with.
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    pub cost: MicroUsd,
    pub version: String,
    pub tier: String,
}

/// Days since 1970-01-01 for a `YYYY-MM-DD` date; only real dates (`2025-02-31` is refused).
pub use retort_time::parse_day;

/// All prices, by model, each model's entries sorted by effective day.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    by_model: BTreeMap<String, Vec<(i64, Price)>>,
}

impl PriceTable {
    pub fn new(prices: Vec<Price>) -> Result<Self, PriceError> {
        let mut t = PriceTable::default();
        for p in prices {
            t.insert(p)?;
        }
        Ok(t)
    }

    /// Adds or replaces nothing: a second entry for the same model and day is an error.
    pub fn insert(&mut self, p: Price) -> Result<(), PriceError> {
        for (field, v) in [
            ("input", Some(p.input)),
            ("output", Some(p.output)),
            ("reasoning", p.reasoning),
            ("cache_read", p.cache_read),
            ("cache_write", p.cache_write),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return Err(PriceError::Negative {
                    model: p.model.clone(),
                    field,
                });
            }
        }
        let day = parse_day(&p.effective_from).ok_or_else(|| PriceError::BadDate {
            model: p.model.clone(),
            date: p.effective_from.clone(),
        })?;
        let entries = self.by_model.entry(p.model.clone()).or_default();
        if entries.iter().any(|(d, _)| *d == day) {
            return Err(PriceError::Duplicate {
                model: p.model,
                date: p.effective_from,
            });
        }
        entries.push((day, p));
        entries.sort_by_key(|(d, _)| *d);
        Ok(())
    }

    /// The entry in force for `model` on `day` (days since the epoch).
    pub fn lookup(&self, model: &str, day: i64) -> Option<&Price> {
        self.by_model
            .get(model)?
            .iter()
            .rev()
            .find(|(d, _)| *d <= day)
            .map(|(_, p)| p)
    }

    /// Every entry, oldest first per model.
    pub fn entries(&self) -> impl Iterator<Item = &Price> {
        self.by_model
            .values()
            .flat_map(|v| v.iter().map(|(_, p)| p))
    }

    /// The cost of `tokens` of `model` used on `day`, or `None` for an unpriced model.
    pub fn cost(&self, model: &str, day: i64, t: &Tokens) -> Option<Priced> {
        let p = self.lookup(model, day)?;
        Some(Priced {
            cost: cost_of(p, t),
            version: p.version(),
            tier: p.tier(),
        })
    }

    /// The highest output price (per million) among `models` at `day`: for worst-case reservations.
    pub fn max_price(&self, models: &[&str], day: i64) -> Option<&Price> {
        models
            .iter()
            .filter_map(|m| self.lookup(m, day))
            .max_by(|a, b| (a.output + a.input).total_cmp(&(b.output + b.input)))
    }
}

/// Micro-dollars for `t` at price `p` (rounded to the nearest micro-dollar).
pub fn cost_of(p: &Price, t: &Tokens) -> MicroUsd {
    let reasoning_price = p.reasoning.unwrap_or(p.output);
    let plain_output = t.output.saturating_sub(t.reasoning);
    // USD per million tokens == micro-dollars per token.
    let micro = t.input as f64 * p.input
        + plain_output as f64 * p.output
        + t.reasoning as f64 * reasoning_price
        + t.cache_read as f64 * p.cache_read.unwrap_or(p.input)
        + t.cache_write as f64 * p.cache_write.unwrap_or(p.input);
    micro.round() as MicroUsd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        let prices: Vec<Price> = toml::from_str::<toml::Table>(
            r#"
            [[prices]]
            model = "big"
            effective_from = "2025-01-01"
            input = 3.0
            output = 15.0
            cache_read = 0.3
            cache_write = 3.75
            [[prices]]
            model = "big"
            effective_from = "2025-06-01"
            input = 2.0
            output = 10.0
            [[prices]]
            model = "small"
            effective_from = "2025-01-01"
            input = 0.1
            output = 0.4
            "#,
        )
        .unwrap()["prices"]
            .clone()
            .try_into()
            .unwrap();
        PriceTable::new(prices).unwrap()
    }

    #[test]
    fn picks_the_version_in_force_and_prices_every_token_kind() {
        let t = table();
        let tokens = Tokens {
            input: 1_000_000,
            output: 1_000_000,
            reasoning: 500_000,
            cache_read: 1_000_000,
            cache_write: 0,
        };
        let jan = parse_day("2025-03-01").unwrap();
        let p = t.cost("big", jan, &tokens).unwrap();
        assert_eq!(p.version, "big@2025-01-01");
        // 3 + 15*0.5 + 15*0.5 (reasoning at output price) + 0.3
        assert_eq!(p.cost, 3_000_000 + 15_000_000 + 300_000);
        assert_eq!(p.tier, "frontier");
        let jul = parse_day("2025-07-01").unwrap();
        assert_eq!(
            t.cost("big", jul, &tokens).unwrap().version,
            "big@2025-06-01"
        );
        assert!(
            t.cost("big", parse_day("2024-12-31").unwrap(), &tokens)
                .is_none()
        );
        assert!(t.cost("unknown", jul, &tokens).is_none());
        assert_eq!(t.max_price(&["small", "big"], jul).unwrap().model, "big");
    }

    #[test]
    fn rejects_bad_entries() {
        let p = |d: &str, i: f64| Price {
            model: "m".into(),
            effective_from: d.into(),
            input: i,
            output: 1.0,
            reasoning: None,
            cache_read: None,
            cache_write: None,
            tier: None,
        };
        assert!(matches!(
            PriceTable::new(vec![p("2025-01-01", -1.0)]),
            Err(PriceError::Negative { .. })
        ));
        assert!(matches!(
            PriceTable::new(vec![p("2025-13-01", 1.0)]),
            Err(PriceError::BadDate { .. })
        ));
        assert!(matches!(
            PriceTable::new(vec![p("2025-01-01", 1.0), p("2025-01-01", 2.0)]),
            Err(PriceError::Duplicate { .. })
        ));
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2000-03-01"), Some(11_017));
    }
}
