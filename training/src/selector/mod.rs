//! The student selector: which student (class × size) to distill a task to — or none, "keep the
//! teacher" — learned from every earlier run and sharpened by cheap probes on the task at hand.
//!
//! - [`Arm`]: every class × size serving the task's kind, plus the explicit [`Arm::Teacher`].
//! - [`TaskContext`]: what is known of a task before any student is trained (kind, sizes, label count
//!   and balance, input and output lengths, vocabulary and character statistics, the teacher's
//!   accuracy, cost and latency).
//! - [`Experience`]: one measured run of an arm on a task at a [`Budget`] (a full run, or a probe on a
//!   fraction of the data for a fraction of the epochs: a learning-curve point).
//! - [`Selector`]: a Neural-Linear bandit ([`crate::bandit`]) over (context, arm, budget) with one
//!   Bayesian posterior per outcome (accuracy, log latency, log cost). [`Selector::recommend`] ranks
//!   the arms for an [`Objective`] with uncertainty (mean ± sd, the chance of meeting the objective's
//!   constraint, the Thompson-sampling chance of being the best arm), correcting its predictions by
//!   the probes already run on this task.
//! - [`HalvingPlan`]: successive halving over the top arms (the screening a job runs).
//!
//! Accuracy is a fraction (0–1) throughout; latency is the p99 of one single-input prediction in
//! µs; cost is USD per 1,000 requests.
mod arm;
mod context;
mod halving;
mod model;
mod objective;

pub use arm::{Arm, arms_for};
pub use context::{Budget, Experience, Outcome, TaskContext};
pub use halving::{HalvingPlan, Round};
pub use model::{Estimate, Ranked, Recommendation, Selector, SelectorState, check};
pub use objective::Objective;

/// The standard normal CDF (Abramowitz–Stegun 7.1.26 for erf; |error| < 1.5e-7).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    let erf = if z >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_normal_cdf_has_its_known_values() {
        assert!((super::normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((super::normal_cdf(1.96) - 0.975).abs() < 1e-3);
        assert!((super::normal_cdf(-1.0) - 0.158_655).abs() < 1e-4);
    }
}

#[cfg(test)]
mod learning_tests;
