//! Examples: the JSONL format, the label vocabulary and the train/validation split.
//!
//! # JSONL format
//!
//! One example per line, UTF-8, each a JSON object with two string fields:
//!
//! ```text
//! {"text": "WIN a FREE cruise, reply now!!!", "label": "spam"}
//! {"text": "Minutes of Tuesday's meeting attached.", "label": "ham"}
//! ```
//!
//! - `text`: the input, any length (featurisers truncate; see [`crate::features`]).
//! - `label`: the class, compared exactly (normalise teacher answers before writing them). For a
//!   generation task ([`crate::TaskKind::Generation`]) it is the reference answer, a short text
//!   (never empty), compared exactly for exact match and by characters for CER.
//! - Other fields (e.g. `id`) are ignored. Blank lines are skipped. Line numbers in errors are 1-based.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// One labelled classification example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The input text.
    pub text: String,
    /// The class label.
    pub label: String,
}

impl Example {
    /// An example from borrowed parts.
    pub fn new(text: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            label: label.into(),
        }
    }
}

/// Parses JSONL examples from a reader. Errors name the 1-based line.
pub fn parse_jsonl(reader: impl BufRead) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let line = line.map_err(|e| TrainingError::Jsonl {
            line: line_no,
            message: e.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let example: Example = serde_json::from_str(&line).map_err(|e| TrainingError::Jsonl {
            line: line_no,
            message: e.to_string(),
        })?;
        out.push(example);
    }
    Ok(out)
}

/// Reads a JSONL file of examples (see the module docs for the format).
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| TrainingError::io(path, e))?;
    parse_jsonl(std::io::BufReader::new(file))
}

/// Writes examples as JSONL.
pub fn write_jsonl(path: impl AsRef<Path>, examples: &[Example]) -> Result<()> {
    let path = path.as_ref();
    let mut buf = String::new();
    for example in examples {
        // Serialising two strings cannot fail.
        buf.push_str(&serde_json::to_string(example).unwrap_or_default());
        buf.push('\n');
    }
    std::fs::write(path, buf).map_err(|e| TrainingError::io(path, e))
}

/// The ordered set of class labels a student predicts; index `i` is logit `i`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelVocab {
    labels: Vec<String>,
}

impl LabelVocab {
    /// The sorted distinct labels of `examples`. Errors on no examples.
    pub fn from_examples(examples: &[Example]) -> Result<Self> {
        if examples.is_empty() {
            return Err(TrainingError::EmptyData(
                "no examples to take labels from".into(),
            ));
        }
        let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
        labels.sort();
        labels.dedup();
        Ok(Self { labels })
    }

    /// A vocabulary from explicit labels (deduplicated, order kept).
    pub fn from_labels<S: Into<String>>(labels: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut out: Vec<String> = Vec::new();
        for label in labels {
            let label = label.into();
            if !out.contains(&label) {
                out.push(label);
            }
        }
        if out.is_empty() {
            return Err(TrainingError::EmptyData("no labels".into()));
        }
        Ok(Self { labels: out })
    }

    /// No labels: what a generation student's artefact carries.
    pub(crate) fn none() -> Self {
        Self { labels: Vec::new() }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no labels (true only for a generation student's artefact).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels in logit order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The label of logit `index`.
    pub fn label(&self, index: usize) -> Option<&str> {
        self.labels.get(index).map(String::as_str)
    }

    /// The logit index of `label`, or an error naming the known labels.
    pub fn index_of(&self, label: &str) -> Result<usize> {
        self.labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| TrainingError::UnknownLabel {
                label: label.to_string(),
                known: self.labels.join(", "),
            })
    }
}

/// A train/validation split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Examples to fit on.
    pub train: Vec<Example>,
    /// Examples for early stopping.
    pub validation: Vec<Example>,
}

/// Splits `examples` into train and validation, stratified by label and deterministic under `seed`.
///
/// Each label with at least two examples puts `round(n * validation_fraction)` of them (at least one)
/// into validation; a label seen once stays in train. Both halves come out shuffled.
pub fn split(examples: &[Example], validation_fraction: f64, seed: u64) -> Result<Split> {
    if examples.is_empty() {
        return Err(TrainingError::EmptyData("no examples to split".into()));
    }
    if !(validation_fraction > 0.0 && validation_fraction < 1.0) {
        return Err(TrainingError::Config(format!(
            "validation_fraction must be in (0, 1), got {validation_fraction}"
        )));
    }
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in examples.iter().enumerate() {
        by_label.entry(e.label.as_str()).or_default().push(i);
    }
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for indices in by_label.values_mut() {
        rng.shuffle(indices);
        let n = indices.len();
        let n_val = if n < 2 {
            0
        } else {
            ((n as f64 * validation_fraction).round() as usize).clamp(1, n - 1)
        };
        validation.extend(indices[..n_val].iter().copied());
        train.extend(indices[n_val..].iter().copied());
    }
    rng.shuffle(&mut train);
    rng.shuffle(&mut validation);
    if validation.is_empty() {
        return Err(TrainingError::EmptyData(
            "validation split is empty: every label has a single example".into(),
        ));
    }
    Ok(Split {
        train: train.into_iter().map(|i| examples[i].clone()).collect(),
        validation: validation
            .into_iter()
            .map(|i| examples[i].clone())
            .collect(),
    })
}

/// A synthetic short-generation task for tests and benchmarks: `n` dates between 1970 and 2029 in
/// one of three surface forms ("3 March 2021", "March 3rd, 2021", "03/03/2021", day first), each
/// with its ISO form ("2021-03-03") as the label. Deterministic under `seed`.
pub fn synthetic_dates(n: usize, seed: u64) -> Vec<Example> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let ordinal = |d: u64| match d {
        1 | 21 | 31 => "st",
        2 | 22 => "nd",
        3 | 23 => "rd",
        _ => "th",
    };
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let y = 1970 + rng.next_u64() % 60;
            let m = 1 + rng.next_u64() % 12;
            let d = 1 + rng.next_u64() % 28;
            let month = MONTHS[(m - 1) as usize];
            let text = match rng.next_u64() % 3 {
                0 => format!("{d} {month} {y}"),
                1 => format!("{month} {d}{}, {y}", ordinal(d)),
                _ => format!("{d:02}/{m:02}/{y}"),
            };
            Example::new(text, format!("{y}-{m:02}-{d:02}"))
        })
        .collect()
}

/// A small, fast, portable PRNG (SplitMix64) so that shuffles are identical on every platform and
/// independent of any backend's RNG.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_line_is_named() {
        let input = "{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\": 3}\n";
        let err = parse_jsonl(input.as_bytes()).unwrap_err();
        assert!(matches!(err, TrainingError::Jsonl { line: 3, .. }), "{err}");
        assert!(err.to_string().starts_with("line 3:"), "{err}");
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let examples: Vec<Example> = (0..100)
            .map(|i| Example::new(format!("t{i}"), if i % 4 == 0 { "a" } else { "b" }))
            .collect();
        let s1 = split(&examples, 0.2, 7).unwrap();
        let s2 = split(&examples, 0.2, 7).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.validation.len(), 20);
        assert_eq!(s1.validation.iter().filter(|e| e.label == "a").count(), 5);
        let s3 = split(&examples, 0.2, 8).unwrap();
        assert_ne!(s1.validation, s3.validation);
    }
}
