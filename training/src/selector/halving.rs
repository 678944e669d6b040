//! Successive halving over the selector's top arms: every arm alive gets a small budget; the
//! better half (by the selector's probe-corrected score) goes on with twice the budget; the last
//! one standing is trained in full.
use serde::{Deserialize, Serialize};

use super::context::Budget;

/// One screening round: how many arms run in it, at which budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub arms: usize,
    pub budget: Budget,
}

/// The screening rounds of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HalvingPlan {
    pub rounds: Vec<Round>,
    /// Each round keeps `ceil(alive / eta)` arms.
    pub eta: usize,
}

impl HalvingPlan {
    /// A plan for `arms` candidates: rounds until one arm is left, the first at
    /// `first_budget`, each next one `eta` times the data and epochs fraction of the one before
    /// (capped below a full run). One candidate: no screening at all.
    pub fn new(arms: usize, eta: usize, first_budget: Budget) -> HalvingPlan {
        let eta = eta.max(2);
        let mut rounds = Vec::new();
        let mut alive = arms;
        let mut b = first_budget;
        while alive > 1 {
            rounds.push(Round {
                arms: alive,
                budget: Budget {
                    data_fraction: b.data_fraction.clamp(0.01, 1.0),
                    epoch_fraction: b.epoch_fraction.clamp(0.01, 1.0),
                },
            });
            alive = alive.div_ceil(eta);
            b = Budget {
                data_fraction: (b.data_fraction * eta as f64).min(0.75),
                epoch_fraction: (b.epoch_fraction * eta as f64).min(0.75),
            };
        }
        HalvingPlan { rounds, eta }
    }

    /// How many arms go on after a round with `alive` arms.
    pub fn keep(&self, alive: usize) -> usize {
        alive.div_ceil(self.eta).max(1)
    }

    /// The compute of screening and then training the winner, in full runs.
    pub fn compute(&self) -> f64 {
        1.0 + self
            .rounds
            .iter()
            .map(|r| r.arms as f64 * r.budget.compute())
            .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_four_arms_takes_two_rounds_and_far_less_than_training_all() {
        let p = HalvingPlan::new(
            4,
            2,
            Budget {
                data_fraction: 0.25,
                epoch_fraction: 0.25,
            },
        );
        assert_eq!(p.rounds.len(), 2);
        assert_eq!((p.rounds[0].arms, p.rounds[1].arms), (4, 2));
        assert_eq!(p.rounds[1].budget.data_fraction, 0.5);
        assert_eq!(p.keep(4), 2);
        assert_eq!(p.keep(3), 2);
        assert_eq!(p.keep(1), 1);
        // 4 × 1/16 + 2 × 1/4 + 1 = 1.75 full runs, against 4 for training every candidate.
        assert!((p.compute() - 1.75).abs() < 1e-9, "{}", p.compute());
        assert!(HalvingPlan::new(1, 2, Budget::FULL).rounds.is_empty());
    }
}
