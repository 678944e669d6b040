//! What a job optimises, and under which constraint.
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// The objective of a selection. Accuracies are fractions (0–1), latency is the p99 of one
/// single-input prediction in µs, cost is USD per 1,000 requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Objective {
    /// The cheapest student whose accuracy is at least the teacher's minus `max_accuracy_drop`.
    MaxCostSavings { max_accuracy_drop: f64 },
    /// The most accurate student under the caps (each optional).
    MaxAccuracy {
        max_latency_us: Option<f64>,
        max_usd_per_1k: Option<f64>,
    },
    /// The fastest student whose accuracy is at least `min_accuracy`.
    MinLatency { min_accuracy: f64 },
}

impl Default for Objective {
    fn default() -> Objective {
        Objective::MaxCostSavings {
            max_accuracy_drop: 0.01,
        }
    }
}

impl Objective {
    /// The kinds, as named on the wire.
    pub const KINDS: [&'static str; 3] = ["max_cost_savings", "max_accuracy", "min_latency"];

    /// Builds an objective from its wire form: `kind` (empty: `max_cost_savings`), the accuracy drop
    /// in points (0: 1 point), the caps (0: none) and the accuracy floor in percent. A value out of
    /// range, or a kind that is none of [`Objective::KINDS`], is refused with the reason.
    pub fn from_parts(
        kind: &str,
        max_accuracy_drop_points: f64,
        max_latency_us: f64,
        max_usd_per_1k: f64,
        min_accuracy_percent: f64,
    ) -> Result<Objective> {
        let bad = |m: String| Err(TrainingError::Config(m));
        let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if ![
            max_accuracy_drop_points,
            max_latency_us,
            max_usd_per_1k,
            min_accuracy_percent,
        ]
        .into_iter()
        .all(finite_non_negative)
        {
            return bad("objective: every bound must be a non-negative number".into());
        }
        let cap = |v: f64| (v > 0.0).then_some(v);
        match kind.trim() {
            "" | "max_cost_savings" => {
                let drop = if max_accuracy_drop_points == 0.0 {
                    1.0
                } else {
                    max_accuracy_drop_points
                };
                if drop > 100.0 {
                    return bad(
                        "objective: max_accuracy_drop_points must be between 0 and 100".into(),
                    );
                }
                Ok(Objective::MaxCostSavings {
                    max_accuracy_drop: drop / 100.0,
                })
            }
            "max_accuracy" => Ok(Objective::MaxAccuracy {
                max_latency_us: cap(max_latency_us),
                max_usd_per_1k: cap(max_usd_per_1k),
            }),
            "min_latency" => {
                if min_accuracy_percent == 0.0 || min_accuracy_percent > 100.0 {
                    return bad(
                        "objective min_latency needs min_accuracy_percent, between 0 (excluded) and 100"
                            .into(),
                    );
                }
                Ok(Objective::MinLatency {
                    min_accuracy: min_accuracy_percent / 100.0,
                })
            }
            other => bad(format!(
                "objective kind {other:?}: expected one of {}",
                Objective::KINDS.join(", ")
            )),
        }
    }

    /// The kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            Objective::MaxCostSavings { .. } => "max_cost_savings",
            Objective::MaxAccuracy { .. } => "max_accuracy",
            Objective::MinLatency { .. } => "min_latency",
        }
    }

    /// The lowest accuracy a student may have (`teacher_accuracy` is the teacher's on the evals, or
    /// 1.0 where accuracy is agreement with the teacher).
    pub fn accuracy_floor(&self, teacher_accuracy: f64) -> Option<f64> {
        match self {
            Objective::MaxCostSavings { max_accuracy_drop } => {
                Some(teacher_accuracy - max_accuracy_drop)
            }
            Objective::MinLatency { min_accuracy } => Some(*min_accuracy),
            Objective::MaxAccuracy { .. } => None,
        }
    }

    /// Whether measured numbers meet the objective's constraint.
    pub fn feasible(
        &self,
        teacher_accuracy: f64,
        accuracy: f64,
        latency_us: f64,
        usd_per_1k: f64,
    ) -> bool {
        match self {
            Objective::MaxAccuracy {
                max_latency_us,
                max_usd_per_1k,
            } => {
                max_latency_us.is_none_or(|c| latency_us <= c)
                    && max_usd_per_1k.is_none_or(|c| usd_per_1k <= c)
            }
            o => o
                .accuracy_floor(teacher_accuracy)
                .is_none_or(|f| accuracy >= f - 1e-9),
        }
    }

    /// One line: the objective and its constraint.
    pub fn describe(&self) -> String {
        match self {
            Objective::MaxCostSavings { max_accuracy_drop } => format!(
                "max_cost_savings: the cheapest student with accuracy ≥ the teacher's − {:.1} points",
                max_accuracy_drop * 100.0
            ),
            Objective::MaxAccuracy {
                max_latency_us,
                max_usd_per_1k,
            } => {
                let mut caps = Vec::new();
                if let Some(l) = max_latency_us {
                    caps.push(format!("p99 latency ≤ {l:.0} µs"));
                }
                if let Some(c) = max_usd_per_1k {
                    caps.push(format!("cost ≤ ${c:.2e} per 1,000 requests"));
                }
                if caps.is_empty() {
                    "max_accuracy: the most accurate student (no caps)".into()
                } else {
                    format!(
                        "max_accuracy: the most accurate student with {}",
                        caps.join(" and ")
                    )
                }
            }
            Objective::MinLatency { min_accuracy } => format!(
                "min_latency: the fastest student with accuracy ≥ {:.1}%",
                min_accuracy * 100.0
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn objectives_parse_from_their_wire_form_and_refuse_nonsense() {
        assert_eq!(
            Objective::from_parts("", 0.0, 0.0, 0.0, 0.0).unwrap(),
            Objective::default()
        );
        assert_eq!(
            Objective::from_parts("max_accuracy", 0.0, 100.0, 0.0, 0.0).unwrap(),
            Objective::MaxAccuracy {
                max_latency_us: Some(100.0),
                max_usd_per_1k: None
            }
        );
        assert_eq!(
            Objective::from_parts("min_latency", 0.0, 0.0, 0.0, 80.0).unwrap(),
            Objective::MinLatency { min_accuracy: 0.8 }
        );
        let e = Objective::from_parts("max_speed", 0.0, 0.0, 0.0, 0.0).unwrap_err();
        assert!(
            e.to_string().contains("expected one of max_cost_savings"),
            "{e}"
        );
        assert!(Objective::from_parts("min_latency", 0.0, 0.0, 0.0, 0.0).is_err());
        assert!(Objective::from_parts("", -1.0, 0.0, 0.0, 0.0).is_err());
        assert!(Objective::from_parts("", f64::NAN, 0.0, 0.0, 0.0).is_err());
        assert!(Objective::from_parts("", 101.0, 0.0, 0.0, 0.0).is_err());
    }

    #[test]
    fn feasibility_follows_the_constraint() {
        let o = Objective::default();
        assert!(o.feasible(0.9, 0.89, 1e6, 1.0));
        assert!(!o.feasible(0.9, 0.88, 1.0, 0.0));
        let o = Objective::MaxAccuracy {
            max_latency_us: Some(100.0),
            max_usd_per_1k: None,
        };
        assert!(o.feasible(0.9, 0.1, 99.0, 5.0) && !o.feasible(0.9, 1.0, 101.0, 0.0));
    }
}
