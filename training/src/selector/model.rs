//! The selector's model: a Neural-Linear bandit over (task, arm, budget) → (accuracy, log₁₀ latency,
//! log₁₀ cost), and the ranking of arms for an objective.
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use super::arm::{Arm, arms_for};
use super::context::{Budget, Experience, TaskContext, input, input_width};
use super::normal_cdf;
use super::objective::Objective;
use crate::backend::{Training, device};
use crate::bandit::{BanditConfig, NeuralLinear, Observation};
use crate::error::{Result, TrainingError};
use crate::model::StudentSpec;

/// Version of [`SelectorState`]; a state of another version is rebuilt from the results.
const STATE_VERSION: u32 = 1;
/// Outcomes: accuracy, log₁₀ p99 latency (µs), log₁₀ cost (USD per 1,000 requests).
const OUTCOMES: usize = 3;
/// Keep-the-teacher's score under `max_cost_savings` and `min_latency`: a student ranks above it
/// only with a better chance than this of meeting the objective's accuracy floor.
pub const TEACHER_BAR: f64 = 0.3;
/// A teacher whose latency is unknown is taken to answer in a second (an LLM call).
const TEACHER_LATENCY_US: f64 = 1e6;

fn log_latency(us: f64) -> f64 {
    us.max(0.1).log10()
}

fn log_cost(usd: f64) -> f64 {
    usd.max(1e-12).log10()
}

/// Everything needed to restore a selector exactly (the bandit is deterministic given its
/// configuration and observations): what is persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectorState {
    pub version: u32,
    pub config: BanditConfig,
    pub experiences: Vec<Experience>,
}

/// A normal estimate: mean and standard deviation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    pub sd: f64,
}

/// One arm as ranked for an objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub arm: Arm,
    /// Accuracy (0–1) at a full training run.
    pub accuracy: Estimate,
    /// log₁₀ of the p99 latency in µs, and of the cost in USD per 1,000 requests.
    pub log10_latency_us: Estimate,
    pub log10_usd_per_1k: Estimate,
    /// The chance that the arm meets the objective's constraint.
    pub p_feasible: f64,
    /// The share of Thompson draws in which the arm was the best choice.
    pub p_best: f64,
    /// What the ranking sorts by (higher is better).
    pub score: f64,
    /// Whether probes on this task corrected the estimate.
    pub probed: bool,
}

impl Ranked {
    pub fn latency_us(&self) -> f64 {
        10f64.powf(self.log10_latency_us.mean)
    }

    pub fn usd_per_1k(&self) -> f64 {
        10f64.powf(self.log10_usd_per_1k.mean)
    }
}

/// The arms ranked for a task and objective, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub ranked: Vec<Ranked>,
    /// The results the model learned from, and over how many tasks.
    pub experiences: usize,
    pub tasks: usize,
}

impl Recommendation {
    /// Whether keep-the-teacher ranks first.
    pub fn keep_teacher(&self) -> bool {
        self.ranked.first().is_some_and(|r| r.arm.is_teacher())
    }

    /// The students, best first.
    pub fn students(&self) -> impl Iterator<Item = &Ranked> {
        self.ranked.iter().filter(|r| !r.arm.is_teacher())
    }
}

/// The learned selector.
pub struct Selector {
    bandit: NeuralLinear<Training>,
    experiences: Vec<Experience>,
}

fn bandit_config() -> BanditConfig {
    let mut cfg = BanditConfig::new(input_width(), OUTCOMES);
    cfg.hidden = 48;
    cfg.features = 16;
    cfg.epochs = 80;
    cfg.seed = 20;
    cfg
}

fn observation(e: &Experience) -> Observation {
    Observation {
        input: input(&e.context, &e.arm, e.budget),
        outcomes: vec![
            e.outcome.accuracy,
            log_latency(e.outcome.latency_us),
            log_cost(e.outcome.usd_per_1k),
        ],
    }
}

/// The residual of a probe: how far the task's measured accuracy at the probe's budget is from
/// the model's prediction there, and how much to trust it (0–1).
struct Correction {
    residual: f64,
    weight: f64,
    noise_sd: f64,
    latency_us: f64,
    usd_per_1k: f64,
}

impl Selector {
    /// A selector that knows nothing yet (its predictions are the prior).
    pub fn new() -> Result<Selector> {
        Ok(Selector {
            bandit: NeuralLinear::new(bandit_config(), &device())?,
            experiences: Vec::new(),
        })
    }

    /// A selector trained on `experiences` (how it is rebuilt from stored results).
    pub fn rebuild(experiences: Vec<Experience>) -> Result<Selector> {
        for e in &experiences {
            check(e)?;
        }
        let obs = experiences.iter().map(observation).collect();
        Ok(Selector {
            bandit: NeuralLinear::rebuild(bandit_config(), &device(), obs)?,
            experiences,
        })
    }

    /// Restores a persisted state; refuses one of another version or shape (rebuild it from the
    /// stored results then).
    pub fn from_state(state: SelectorState) -> Result<Selector> {
        if state.version != STATE_VERSION || state.config != bandit_config() {
            return Err(TrainingError::Config(format!(
                "selector state version {} does not match this build's ({STATE_VERSION}) or its model's shape",
                state.version
            )));
        }
        Selector::rebuild(state.experiences)
    }

    /// The persisted form.
    pub fn state(&self) -> SelectorState {
        SelectorState {
            version: STATE_VERSION,
            config: bandit_config(),
            experiences: self.experiences.clone(),
        }
    }

    pub fn experiences(&self) -> &[Experience] {
        &self.experiences
    }

    /// Distinct tasks among the experiences.
    pub fn tasks(&self) -> usize {
        let mut t: Vec<&str> = self.experiences.iter().map(|e| e.task.as_str()).collect();
        t.sort_unstable();
        t.dedup();
        t.len()
    }

    /// Learns from one more run at once (the linear posteriors; [`Selector::retrain`] refits the
    /// representation).
    pub fn record(&mut self, e: Experience) -> Result<()> {
        check(&e)?;
        self.bandit.observe(observation(&e))?;
        self.experiences.push(e);
        Ok(())
    }

    /// Refits the representation (from its seeded initialisation, so that a selector restored from
    /// its [`SelectorState`] is this one) and the posteriors on every experience.
    pub fn retrain(&mut self) -> Result<()> {
        let obs = self.experiences.iter().map(observation).collect();
        self.bandit = NeuralLinear::rebuild(bandit_config(), &device(), obs)?;
        Ok(())
    }

    /// Predicted accuracy, log₁₀ latency and log₁₀ cost of `arm` on `ctx` at `budget`.
    pub fn estimate(&self, ctx: &TaskContext, arm: &StudentSpec, budget: Budget) -> [Estimate; 3] {
        let p = self.bandit.predict(&[input(ctx, arm, budget)]);
        let mut out = [Estimate::default(); 3];
        if let Some(p) = p.first() {
            for (o, (mean, sd)) in out.iter_mut().zip(p) {
                *o = Estimate {
                    mean: *mean,
                    sd: *sd,
                };
            }
        }
        out
    }

    fn correction(
        &self,
        ctx: &TaskContext,
        arm: &StudentSpec,
        probes: &[Experience],
    ) -> Option<Correction> {
        let probe = probes
            .iter()
            .filter(|p| &p.arm == arm)
            .max_by(|a, b| a.budget.compute().total_cmp(&b.budget.compute()))?;
        let [at, _, _] = self.estimate(ctx, arm, probe.budget);
        let acc = probe.outcome.accuracy.clamp(0.0, 1.0);
        let noise_var = (acc * (1.0 - acc)).max(0.01) / probe.evaluated.max(1) as f64;
        let model_var = at.sd * at.sd;
        Some(Correction {
            residual: acc - at.mean,
            weight: model_var / (model_var + noise_var),
            noise_sd: noise_var.sqrt(),
            latency_us: probe.outcome.latency_us,
            usd_per_1k: probe.outcome.usd_per_1k,
        })
    }

    /// The arms of `ctx`'s kind ranked for `objective`: each student's full-run estimates,
    /// corrected by the `probes` already run on this task (an arm's own probe shifts its
    /// accuracy by its residual, weighted by how much the probe is to be trusted; arms not probed
    /// move by half the mean residual of those that were; a probe's latency and cost replace the
    /// predicted ones), the chance of meeting the constraint, and the share of `draws` Thompson
    /// draws in which it was the best arm (seeded by `seed`). Keep-the-teacher is ranked among them.
    pub fn recommend(
        &self,
        ctx: &TaskContext,
        objective: &Objective,
        probes: &[Experience],
        draws: usize,
        seed: u64,
    ) -> Recommendation {
        let arms = arms_for(ctx.kind);
        let students: Vec<&StudentSpec> = arms.iter().filter_map(Arm::student).collect();
        let corrections: Vec<Option<Correction>> = students
            .iter()
            .map(|a| self.correction(ctx, a, probes))
            .collect();
        let probed: Vec<f64> = corrections
            .iter()
            .flatten()
            .map(|c| c.residual * c.weight)
            .collect();
        let task_shift = if probed.is_empty() {
            0.0
        } else {
            0.5 * probed.iter().sum::<f64>() / probed.len() as f64
        };
        let mut rows: Vec<Ranked> = students
            .iter()
            .zip(&corrections)
            .map(|(arm, c)| {
                let [acc, lat, cost] = self.estimate(ctx, arm, Budget::FULL);
                let (accuracy, lat, cost) = match c {
                    Some(c) => (
                        Estimate {
                            mean: acc.mean + c.weight * c.residual,
                            sd: ((1.0 - c.weight) * acc.sd * acc.sd + c.noise_sd * c.noise_sd)
                                .sqrt(),
                        },
                        Estimate {
                            mean: log_latency(c.latency_us),
                            sd: 0.05,
                        },
                        Estimate {
                            mean: log_cost(c.usd_per_1k),
                            sd: 0.05,
                        },
                    ),
                    None => (
                        Estimate {
                            mean: acc.mean + task_shift,
                            sd: acc.sd,
                        },
                        lat,
                        cost,
                    ),
                };
                Ranked {
                    arm: Arm::Student((*arm).clone()),
                    // An accuracy is a fraction, whatever the linear posterior extrapolates.
                    accuracy: Estimate {
                        mean: accuracy.mean.clamp(0.0, 1.0),
                        sd: accuracy.sd,
                    },
                    log10_latency_us: lat,
                    log10_usd_per_1k: cost,
                    p_feasible: 0.0,
                    p_best: 0.0,
                    score: 0.0,
                    probed: c.is_some(),
                }
            })
            .collect();
        let teacher_lat = log_latency(ctx.teacher_latency_us.unwrap_or(TEACHER_LATENCY_US));
        let teacher_cost = ctx.teacher_usd_per_1k.map_or(f64::INFINITY, log_cost);
        let reference = ctx.teacher_reference();
        let span = |f: fn(&Ranked) -> f64, rows: &[Ranked]| {
            let lo = rows.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = rows.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
            (lo, (hi - lo).max(1e-9))
        };
        let (cost_lo, cost_span) = span(|r| r.log10_usd_per_1k.mean, &rows);
        let (lat_lo, lat_span) = span(|r| r.log10_latency_us.mean, &rows);
        let below = |e: Estimate, cap: f64| normal_cdf((cap - e.mean) / e.sd.max(1e-6));
        for r in &mut rows {
            let above =
                |floor: f64| normal_cdf((r.accuracy.mean - floor) / r.accuracy.sd.max(1e-6));
            match objective {
                Objective::MaxCostSavings { .. } | Objective::MinLatency { .. } => {
                    let floor = objective.accuracy_floor(reference).unwrap_or(0.0);
                    r.p_feasible = above(floor);
                    let rel = if matches!(objective, Objective::MinLatency { .. }) {
                        (r.log10_latency_us.mean - lat_lo) / lat_span
                    } else {
                        (r.log10_usd_per_1k.mean - cost_lo) / cost_span
                    };
                    r.score = r.p_feasible * (1.0 - 0.3 * rel);
                }
                Objective::MaxAccuracy {
                    max_latency_us,
                    max_usd_per_1k,
                } => {
                    r.p_feasible = max_latency_us
                        .map_or(1.0, |c| below(r.log10_latency_us, log_latency(c)))
                        * max_usd_per_1k.map_or(1.0, |c| below(r.log10_usd_per_1k, log_cost(c)));
                    r.score = r.accuracy.mean.clamp(0.0, 1.0) * r.p_feasible;
                }
            }
        }
        // Keep the teacher: its numbers are known.
        let teacher_feasible = match objective {
            Objective::MaxAccuracy {
                max_latency_us,
                max_usd_per_1k,
            } => {
                max_latency_us.is_none_or(|c| teacher_lat <= log_latency(c))
                    && max_usd_per_1k.is_none_or(|c| teacher_cost <= log_cost(c))
            }
            o => o.feasible(reference, reference, 0.0, 0.0),
        };
        let teacher_score = match objective {
            Objective::MaxAccuracy { .. } => {
                if teacher_feasible {
                    reference
                } else {
                    0.0
                }
            }
            _ => TEACHER_BAR,
        };
        rows.push(Ranked {
            arm: Arm::Teacher,
            accuracy: Estimate {
                mean: reference,
                sd: 0.0,
            },
            log10_latency_us: Estimate {
                mean: teacher_lat,
                sd: 0.0,
            },
            log10_usd_per_1k: Estimate {
                mean: if teacher_cost.is_finite() {
                    teacher_cost
                } else {
                    0.0
                },
                sd: 0.0,
            },
            p_feasible: if teacher_feasible { 1.0 } else { 0.0 },
            p_best: 0.0,
            score: teacher_score,
            probed: false,
        });
        self.thompson(
            ctx,
            objective,
            &students,
            &corrections,
            task_shift,
            &mut rows,
            draws,
            seed,
        );
        // Ties (no history): one size per class first, so that screening spans the classes.
        let size_rank = |r: &Ranked| match r.arm.student() {
            Some(s) if s.size == "small" => 0,
            Some(_) => 1,
            None => 2,
        };
        let order: Vec<Arm> = rows.iter().map(|r| r.arm.clone()).collect();
        let pos = |a: &Arm| order.iter().position(|b| b == a).unwrap_or(0);
        rows.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.p_best.total_cmp(&a.p_best))
                .then(size_rank(a).cmp(&size_rank(b)))
                .then(pos(&a.arm).cmp(&pos(&b.arm)))
        });
        Recommendation {
            ranked: rows,
            experiences: self.experiences.len(),
            tasks: self.tasks(),
        }
    }

    /// Thompson sampling over the objective: in each draw, the arm the objective picks under one
    /// plausible set of weights; `p_best` is each arm's share of the draws.
    #[allow(clippy::too_many_arguments)]
    fn thompson(
        &self,
        ctx: &TaskContext,
        objective: &Objective,
        students: &[&StudentSpec],
        corrections: &[Option<Correction>],
        task_shift: f64,
        rows: &mut [Ranked],
        draws: usize,
        seed: u64,
    ) {
        if draws == 0 || rows.is_empty() {
            return;
        }
        let inputs: Vec<Vec<f32>> = students
            .iter()
            .map(|a| input(ctx, a, Budget::FULL))
            .collect();
        let teacher = rows.len() - 1;
        let teacher_ok = rows[teacher].p_feasible > 0.5;
        let reference = ctx.teacher_reference();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut wins = vec![0usize; rows.len()];
        for _ in 0..draws {
            let draw = self.bandit.sample(&inputs, &mut rng);
            let mut best: Option<(usize, f64)> = None;
            for (i, (d, c)) in draw.iter().zip(corrections).enumerate() {
                let (acc, lat, cost) = match c {
                    Some(c) => (d[0] + c.weight * c.residual, c.latency_us, c.usd_per_1k),
                    None => (d[0] + task_shift, 10f64.powf(d[1]), 10f64.powf(d[2])),
                };
                if !objective.feasible(reference, acc, lat, cost) {
                    continue;
                }
                // Higher is better.
                let value = match objective {
                    Objective::MaxCostSavings { .. } => -cost.log10(),
                    Objective::MinLatency { .. } => -lat.log10(),
                    Objective::MaxAccuracy { .. } => acc,
                };
                if best.is_none_or(|(_, v)| value > v) {
                    best = Some((i, value));
                }
            }
            let winner = match (objective, best) {
                (Objective::MaxAccuracy { .. }, Some((i, acc))) => {
                    if teacher_ok && reference > acc {
                        teacher
                    } else {
                        i
                    }
                }
                (_, Some((i, _))) => i,
                (_, None) => teacher,
            };
            wins[winner] += 1;
        }
        for (r, w) in rows.iter_mut().zip(wins) {
            r.p_best = w as f64 / draws as f64;
        }
    }
}

/// Refuses a run the model cannot learn from (out of range, or a student of another kind than its task).
pub fn check(e: &Experience) -> Result<()> {
    let o = &e.outcome;
    let ok = (0.0..=1.0).contains(&o.accuracy)
        && o.latency_us.is_finite()
        && o.latency_us >= 0.0
        && o.usd_per_1k.is_finite()
        && o.usd_per_1k >= 0.0
        && (0.0..=1.0).contains(&e.budget.data_fraction)
        && (0.0..=1.0).contains(&e.budget.epoch_fraction)
        && e.budget.compute() > 0.0;
    if !ok {
        return Err(TrainingError::Config(format!(
            "a result of {} on task {:?} is out of range (accuracy 0–1, latency and cost ≥ 0, budget fractions in (0, 1])",
            e.arm, e.task
        )));
    }
    if e.arm.class.task() != e.context.kind {
        return Err(TrainingError::Config(format!(
            "a result of {} (a {} student) on a {} task",
            e.arm,
            e.arm.class.task(),
            e.context.kind
        )));
    }
    Ok(())
}
