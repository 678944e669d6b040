//! Evaluation: accuracy, per-class errors with examples, agreement between two label sets, and
//! in-process latency of single-item predictions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

use crate::artefact::Predictor;
use crate::data::Example;
use crate::error::{Result, TrainingError};

/// A misclassified example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorExample {
    /// The input.
    pub text: String,
    /// The expected label.
    pub expected: String,
    /// What was predicted.
    pub predicted: String,
    /// The predicted label's probability (1.0 where predictions came without one).
    pub probability: f32,
}

/// How one expected label fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// The expected label.
    pub label: String,
    /// Examples with this expected label.
    pub support: usize,
    /// Of those, predicted correctly.
    pub correct: usize,
    /// `correct / support`.
    pub accuracy: f64,
    /// Up to the requested number of misclassified examples.
    pub errors: Vec<ErrorExample>,
}

/// Accuracy overall and by class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Examples evaluated.
    pub n: usize,
    /// Fraction predicted correctly.
    pub accuracy: f64,
    /// One entry per expected label, sorted by label.
    pub per_class: Vec<ClassReport>,
    /// `(expected, predicted, count)` for every confusion that occurred, most frequent first.
    pub confusions: Vec<(String, String, usize)>,
}

/// Fraction of positions where `expected` and `predicted` are equal. Errors on unequal lengths or
/// empty input.
pub fn accuracy<S: AsRef<str>, T: AsRef<str>>(expected: &[S], predicted: &[T]) -> Result<f64> {
    if expected.len() != predicted.len() {
        return Err(TrainingError::Config(format!(
            "cannot compare {} expected labels with {} predictions",
            expected.len(),
            predicted.len()
        )));
    }
    if expected.is_empty() {
        return Err(TrainingError::EmptyData("nothing to compare".into()));
    }
    let same = expected
        .iter()
        .zip(predicted)
        .filter(|(a, b)| a.as_ref() == b.as_ref())
        .count();
    Ok(same as f64 / expected.len() as f64)
}

/// Agreement between two label sets for the same items (e.g. student vs teacher): the fraction of
/// items on which they give the same label.
pub fn agreement<S: AsRef<str>, T: AsRef<str>>(a: &[S], b: &[T]) -> Result<f64> {
    accuracy(a, b)
}

/// Builds an [`EvalReport`] from examples and the `(label, probability)` predicted for each.
pub fn report(
    examples: &[Example],
    predicted: &[(String, f32)],
    max_errors_per_class: usize,
) -> Result<EvalReport> {
    let expected: Vec<&str> = examples.iter().map(|e| e.label.as_str()).collect();
    let labels: Vec<&str> = predicted.iter().map(|(l, _)| l.as_str()).collect();
    let accuracy = accuracy(&expected, &labels)?;
    let mut classes: BTreeMap<&str, ClassReport> = BTreeMap::new();
    let mut confusions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (example, (label, probability)) in examples.iter().zip(predicted) {
        let class = classes
            .entry(example.label.as_str())
            .or_insert_with(|| ClassReport {
                label: example.label.clone(),
                support: 0,
                correct: 0,
                accuracy: 0.0,
                errors: Vec::new(),
            });
        class.support += 1;
        if *label == example.label {
            class.correct += 1;
        } else {
            *confusions
                .entry((example.label.as_str(), label.as_str()))
                .or_default() += 1;
            if class.errors.len() < max_errors_per_class {
                class.errors.push(ErrorExample {
                    text: example.text.clone(),
                    expected: example.label.clone(),
                    predicted: label.clone(),
                    probability: *probability,
                });
            }
        }
    }
    let per_class = classes
        .into_values()
        .map(|mut c| {
            c.accuracy = c.correct as f64 / c.support as f64;
            c
        })
        .collect();
    let mut confusions: Vec<(String, String, usize)> = confusions
        .into_iter()
        .map(|((e, p), n)| (e.to_string(), p.to_string(), n))
        .collect();
    confusions.sort_by(|a, b| {
        b.2.cmp(&a.2)
            .then_with(|| a.0.cmp(&b.0))
            .then_with(|| a.1.cmp(&b.1))
    });
    Ok(EvalReport {
        n: examples.len(),
        accuracy,
        per_class,
        confusions,
    })
}

/// Predicts every example with `predictor` and reports accuracy and errors by class.
pub fn evaluate<B: Backend>(
    predictor: &Predictor<B>,
    examples: &[Example],
    max_errors_per_class: usize,
) -> Result<EvalReport> {
    let mut predicted = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(256) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        predicted.extend(predictor.predict(&texts));
    }
    report(examples, &predicted, max_errors_per_class)
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Samples measured.
    pub n: usize,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
}

/// Percentiles (nearest rank) of `samples`. Errors on no samples.
pub fn latency_stats(samples: &[Duration]) -> Result<LatencyStats> {
    if samples.is_empty() {
        return Err(TrainingError::EmptyData("no latency samples".into()));
    }
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let rank = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
    Ok(LatencyStats {
        n: us.len(),
        mean_us: us.iter().sum::<f64>() / us.len() as f64,
        p50_us: rank(0.50),
        p95_us: rank(0.95),
        p99_us: rank(0.99),
        max_us: us[us.len() - 1],
    })
}

/// Times single-item [`Predictor::predict`] calls in-process, one per text, after `warmup` untimed
/// calls. This is the model's own latency: no network, no serialisation.
pub fn measure_latency<B: Backend>(
    predictor: &Predictor<B>,
    texts: &[&str],
    warmup: usize,
) -> Result<LatencyStats> {
    if texts.is_empty() {
        return Err(TrainingError::EmptyData("no texts to time".into()));
    }
    for text in texts.iter().cycle().take(warmup) {
        std::hint::black_box(predictor.predict(&[text]));
    }
    let mut samples = Vec::with_capacity(texts.len());
    for text in texts {
        let start = Instant::now();
        std::hint::black_box(predictor.predict(&[text]));
        samples.push(start.elapsed());
    }
    latency_stats(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_errors_by_class() {
        let examples = vec![
            Example::new("a", "x"),
            Example::new("b", "x"),
            Example::new("c", "y"),
        ];
        let predicted = vec![
            ("x".to_string(), 0.9),
            ("y".to_string(), 0.6),
            ("y".to_string(), 0.8),
        ];
        let r = report(&examples, &predicted, 5).unwrap();
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.per_class[0].label, "x");
        assert_eq!(r.per_class[0].errors.len(), 1);
        assert_eq!(r.per_class[0].errors[0].text, "b");
        assert_eq!(r.confusions, vec![("x".into(), "y".into(), 1)]);
        assert!(agreement(&["a", "b"], &["a"]).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = latency_stats(&samples).unwrap();
        assert_eq!(
            (s.p50_us, s.p95_us, s.p99_us, s.max_us),
            (50.0, 95.0, 99.0, 100.0)
        );
    }
}
