//! Evaluation: accuracy, per-class errors with examples, agreement between two label sets, and
//! in-process latency of single-item predictions; for generation, exact match and character error
//! rate ([`char_error_rate`], [`gen_report`]).

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
    time_each(texts, warmup, |text| {
        std::hint::black_box(predictor.predict(&[text]));
    })
}

/// Times `call` once per text, after `warmup` untimed calls (cycling through the texts).
pub fn time_each(
    texts: &[&str],
    warmup: usize,
    mut call: impl FnMut(&str),
) -> Result<LatencyStats> {
    if texts.is_empty() {
        return Err(TrainingError::EmptyData("no texts to time".into()));
    }
    for text in texts.iter().cycle().take(warmup) {
        call(text);
    }
    let mut samples = Vec::with_capacity(texts.len());
    for text in texts {
        let start = Instant::now();
        call(text);
        samples.push(start.elapsed());
    }
    latency_stats(&samples)
}

/// Levenshtein distance between `a` and `b`, counted in characters (Unicode scalar values).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Character error rate of one hypothesis: Levenshtein distance over characters divided by the
/// reference's length in characters (at least 1, so an empty reference gives the hypothesis's
/// length). 0 is a perfect answer; it can exceed 1 when the hypothesis is much longer.
pub fn char_error_rate(reference: &str, hypothesis: &str) -> f64 {
    edit_distance(reference, hypothesis) as f64 / reference.chars().count().max(1) as f64
}

/// A generation that did not match its reference exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenError {
    /// The input.
    pub input: String,
    /// The reference answer.
    pub expected: String,
    /// What was generated.
    pub predicted: String,
    /// This example's character error rate.
    pub cer: f64,
}

/// How a generation student fared on a set of examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenEvalReport {
    /// Examples evaluated.
    pub examples: usize,
    /// Fraction generated exactly (byte for byte) as the reference.
    pub exact_match: f64,
    /// Character error rate over the set: Σ edit distance / Σ reference characters (each reference
    /// counted as at least 1 character).
    pub cer: f64,
    /// Up to the requested number of mismatches, in input order.
    pub errors: Vec<GenError>,
}

/// Builds a [`GenEvalReport`] from examples (`label` = reference) and one generated text each.
pub fn gen_report<S: AsRef<str>>(
    examples: &[Example],
    generated: &[S],
    max_errors: usize,
) -> Result<GenEvalReport> {
    if examples.len() != generated.len() {
        return Err(TrainingError::Config(format!(
            "cannot compare {} references with {} generations",
            examples.len(),
            generated.len()
        )));
    }
    if examples.is_empty() {
        return Err(TrainingError::EmptyData("no examples to evaluate".into()));
    }
    let (mut exact, mut distance, mut chars) = (0usize, 0usize, 0usize);
    let mut errors = Vec::new();
    for (example, predicted) in examples.iter().zip(generated) {
        let predicted = predicted.as_ref();
        let d = edit_distance(&example.label, predicted);
        distance += d;
        chars += example.label.chars().count().max(1);
        if predicted == example.label {
            exact += 1;
        } else if errors.len() < max_errors {
            errors.push(GenError {
                input: example.text.clone(),
                expected: example.label.clone(),
                predicted: predicted.to_string(),
                cer: char_error_rate(&example.label, predicted),
            });
        }
    }
    Ok(GenEvalReport {
        examples: examples.len(),
        exact_match: exact as f64 / examples.len() as f64,
        cer: distance as f64 / chars as f64,
        errors,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn character_error_rate_has_known_values() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("flaw", "lawn"), 2);
        // Characters, not bytes: one substituted 'é' is one edit.
        assert_eq!(edit_distance("café", "cafe"), 1);
        assert!((char_error_rate("kitten", "sitting") - 0.5).abs() < 1e-12);
        assert_eq!(char_error_rate("2021-03-03", "2021-03-03"), 0.0);
        assert!((char_error_rate("2021-03-03", "2021-03-04") - 0.1).abs() < 1e-12);
        assert_eq!(char_error_rate("", ""), 0.0);
        assert_eq!(char_error_rate("", "ab"), 2.0);
        assert!((char_error_rate("ab", "abcdef") - 2.0).abs() < 1e-12);
    }

    #[test]
    fn gen_report_sums_edits_over_the_set() {
        let examples = vec![
            Example::new("x", "abcd"),
            Example::new("y", "ab"),
            Example::new("z", "abcdef"),
        ];
        let r = gen_report(&examples, &["abcd", "xb", "abc"], 10).unwrap();
        assert_eq!(r.examples, 3);
        assert!((r.exact_match - 1.0 / 3.0).abs() < 1e-12);
        // (0 + 1 + 3) / (4 + 2 + 6)
        assert!((r.cer - 4.0 / 12.0).abs() < 1e-12);
        assert_eq!(r.errors.len(), 2);
        assert_eq!(r.errors[0].input, "y");
        assert!((r.errors[0].cer - 0.5).abs() < 1e-12);
        assert_eq!(
            gen_report(&examples, &["a"], 1).unwrap_err().to_string(),
            "invalid configuration: cannot compare 3 references with 1 generations"
        );
        assert!(matches!(
            gen_report::<&str>(&[], &[], 1),
            Err(TrainingError::EmptyData(_))
        ));
        assert_eq!(
            gen_report(&examples, &["abcd", "xb", "abc"], 1)
                .unwrap()
                .errors
                .len(),
            1
        );
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
