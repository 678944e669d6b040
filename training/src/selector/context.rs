//! What the selector knows of a task, and what it learns from: measured runs at a budget.
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{StudentClass, StudentSpec, TaskKind};

/// A task as the selector sees it before training anything. Built from the teacher-labelled
/// training data with [`TaskContext::from_data`]; every field has a meaning without the data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskContext {
    pub kind: TaskKind,
    /// Labelled training examples and evals.
    pub n_train: usize,
    pub n_evals: usize,
    /// Distinct labels (classification; 0 for generation).
    pub n_labels: usize,
    /// Label balance: the entropy of the label distribution over its maximum (1 = balanced).
    pub label_balance: f64,
    /// Share of the most frequent label (or answer).
    pub majority_fraction: f64,
    /// Characters of the raw inputs (without the prompt template): mean and 95th percentile.
    pub mean_input_chars: f64,
    pub p95_input_chars: f64,
    /// Characters of the teacher's answers (labels or generated texts), mean.
    pub mean_output_chars: f64,
    /// Words per input, mean; distinct words over all inputs; distinct over total words.
    pub mean_input_words: f64,
    pub vocabulary: usize,
    pub type_token_ratio: f64,
    /// Character classes of the inputs, as fractions of all characters.
    pub alpha_fraction: f64,
    pub digit_fraction: f64,
    pub punct_fraction: f64,
    pub non_ascii_fraction: f64,
    /// The teacher's accuracy on the evals (None: the evals have no expected answers, and a
    /// student's "accuracy" is its agreement with the teacher).
    pub teacher_accuracy: Option<f64>,
    /// The teacher's cost (USD per 1,000 requests) and latency (µs per request), when known.
    pub teacher_usd_per_1k: Option<f64>,
    pub teacher_latency_us: Option<f64>,
}

impl TaskContext {
    /// The statistics of `inputs` (raw texts, without the template) and the teacher's `outputs`
    /// (labels or answers, one per input). The teacher's numbers and `n_evals` are left for the
    /// caller to set.
    pub fn from_data(kind: TaskKind, inputs: &[&str], outputs: &[&str]) -> TaskContext {
        let n = inputs.len();
        let mut lens: Vec<usize> = inputs.iter().map(|t| t.chars().count()).collect();
        lens.sort_unstable();
        let total_chars: usize = lens.iter().sum();
        let mean_input_chars = total_chars as f64 / n.max(1) as f64;
        let p95_input_chars = if n == 0 {
            0.0
        } else {
            lens[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1] as f64
        };
        let (mut alpha, mut digit, mut punct, mut non_ascii) = (0usize, 0usize, 0usize, 0usize);
        let mut words_total = 0usize;
        let mut vocab: HashSet<String> = HashSet::new();
        for t in inputs {
            for c in t.chars() {
                if c.is_alphabetic() {
                    alpha += 1;
                } else if c.is_numeric() {
                    digit += 1;
                } else if c.is_ascii_punctuation() {
                    punct += 1;
                }
                if !c.is_ascii() {
                    non_ascii += 1;
                }
            }
            for w in t.split_whitespace() {
                words_total += 1;
                if vocab.len() < 1_000_000 {
                    vocab.insert(w.to_lowercase());
                }
            }
        }
        let frac = |k: usize| k as f64 / total_chars.max(1) as f64;
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for o in outputs {
            *counts.entry(o).or_default() += 1;
        }
        let n_out = outputs.len().max(1) as f64;
        let entropy: f64 = counts
            .values()
            .map(|&c| {
                let p = c as f64 / n_out;
                -p * p.ln()
            })
            .sum();
        let label_balance = if counts.len() > 1 {
            entropy / (counts.len() as f64).ln()
        } else {
            0.0
        };
        let majority_fraction = counts.values().copied().max().unwrap_or(0) as f64 / n_out;
        TaskContext {
            kind,
            n_train: n,
            n_evals: 0,
            n_labels: match kind {
                TaskKind::Classification => counts.len(),
                TaskKind::Generation => 0,
            },
            label_balance,
            majority_fraction,
            mean_input_chars,
            p95_input_chars,
            mean_output_chars: outputs.iter().map(|o| o.chars().count()).sum::<usize>() as f64
                / n_out,
            mean_input_words: words_total as f64 / n.max(1) as f64,
            vocabulary: vocab.len(),
            type_token_ratio: vocab.len() as f64 / words_total.max(1) as f64,
            alpha_fraction: frac(alpha),
            digit_fraction: frac(digit),
            punct_fraction: frac(punct),
            non_ascii_fraction: frac(non_ascii),
            teacher_accuracy: None,
            teacher_usd_per_1k: None,
            teacher_latency_us: None,
        }
    }

    /// The teacher's accuracy as the objective compares with it: its accuracy on the evals, or 1.0
    /// where a student is measured by its agreement with the teacher.
    pub fn teacher_reference(&self) -> f64 {
        self.teacher_accuracy.unwrap_or(1.0)
    }

    /// The task's features for the model, each scaled to about [0, 1].
    pub(crate) fn features(&self) -> Vec<f32> {
        let l = |v: f64, scale: f64| ((1.0 + v.max(0.0)).ln() / scale) as f32;
        vec![
            f32::from(u8::from(self.kind == TaskKind::Classification)),
            f32::from(u8::from(self.kind == TaskKind::Generation)),
            l(self.n_train as f64, 12.0),
            l(self.n_labels as f64, 4.0),
            self.label_balance as f32,
            self.majority_fraction as f32,
            l(self.mean_input_chars, 8.0),
            l(self.p95_input_chars, 8.0),
            l(self.mean_output_chars, 6.0),
            l(self.mean_input_words, 6.0),
            l(self.vocabulary as f64, 12.0),
            self.type_token_ratio as f32,
            self.alpha_fraction as f32,
            self.digit_fraction as f32,
            self.punct_fraction as f32,
            self.non_ascii_fraction as f32,
            self.teacher_accuracy.unwrap_or(1.0) as f32,
            f32::from(u8::from(self.teacher_accuracy.is_some())),
        ]
    }

    pub(crate) const FEATURES: usize = 18;
}

/// How much of a full training run a run got: a fraction of the training data and a fraction of
/// the epochs. A full run is `(1, 1)`; a probe is less.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub data_fraction: f64,
    pub epoch_fraction: f64,
}

impl Budget {
    pub const FULL: Budget = Budget {
        data_fraction: 1.0,
        epoch_fraction: 1.0,
    };

    pub fn is_full(&self) -> bool {
        self.data_fraction >= 0.999 && self.epoch_fraction >= 0.999
    }

    /// The share of a full run's compute (data × epochs).
    pub fn compute(&self) -> f64 {
        self.data_fraction * self.epoch_fraction
    }

    pub(crate) fn features(&self) -> [f32; 2] {
        [
            self.data_fraction.clamp(0.0, 1.0) as f32,
            self.epoch_fraction.clamp(0.0, 1.0) as f32,
        ]
    }
}

/// What a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// On the evals (against the expected answers, or agreement with the teacher), 0–1.
    pub accuracy: f64,
    /// p99 of one single-input prediction, µs.
    pub latency_us: f64,
    /// USD per 1,000 requests.
    pub usd_per_1k: f64,
    /// Wall time of the training run, s.
    pub train_secs: f64,
}

/// One measured run: an arm on a task at a budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experience {
    /// Which task (runs of one task share it: a job id, or a suite task's name).
    pub task: String,
    pub context: TaskContext,
    pub arm: StudentSpec,
    pub budget: Budget,
    pub outcome: Outcome,
    /// How many evals (or validation examples) the accuracy was measured on (its noise).
    pub evaluated: usize,
}

/// The model's input for a task, arm and budget: the task's features, the arm's (class one-hot,
/// size ordinal and one-hot, the class × size one-hot) and the budget's.
pub(crate) fn input(ctx: &TaskContext, arm: &StudentSpec, budget: Budget) -> Vec<f32> {
    let mut v = ctx.features();
    let classes = StudentClass::ALL.len();
    let sizes = StudentClass::SIZES.len();
    let ci = StudentClass::ALL
        .iter()
        .position(|c| *c == arm.class)
        .unwrap_or(0);
    let si = StudentClass::SIZES
        .iter()
        .position(|s| *s == arm.size)
        .unwrap_or(0);
    v.extend((0..classes).map(|i| f32::from(u8::from(i == ci))));
    v.push(si as f32 / (sizes.max(2) - 1) as f32);
    v.extend((0..sizes).map(|i| f32::from(u8::from(i == si))));
    v.extend((0..classes * sizes).map(|i| f32::from(u8::from(i == ci * sizes + si))));
    v.extend(budget.features());
    v
}

/// The width of [`input`].
pub(crate) fn input_width() -> usize {
    let classes = StudentClass::ALL.len();
    let sizes = StudentClass::SIZES.len();
    TaskContext::FEATURES + classes + 1 + sizes + classes * sizes + 2
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_a_small_task() {
        let inputs = ["cat", "dog", "Zebra 12!", "cat"];
        let outputs = ["noun", "noun", "noun", "verb"];
        let c = TaskContext::from_data(TaskKind::Classification, &inputs, &outputs);
        assert_eq!(c.n_train, 4);
        assert_eq!(c.n_labels, 2);
        assert!((c.majority_fraction - 0.75).abs() < 1e-9);
        assert!(c.label_balance > 0.5 && c.label_balance < 1.0);
        assert_eq!(c.vocabulary, 4, "cat dog zebra 12!");
        assert!(c.digit_fraction > 0.0 && c.punct_fraction > 0.0);
        assert_eq!(c.features().len(), TaskContext::FEATURES);
        let spec: StudentSpec = "mlp/small".parse().unwrap();
        assert_eq!(input(&c, &spec, Budget::FULL).len(), input_width());
        let empty = TaskContext::from_data(TaskKind::Generation, &[], &[]);
        assert!(empty.features().iter().all(|v| v.is_finite()));
    }
}
