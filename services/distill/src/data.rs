//! The job's data: JSONL parsing with line numbers, prompt rendering, the cache key, normalisation
//! of teacher answers to labels, and the task's features.
//!
//! # JSONL formats
//!
//! Training inputs, one object a line (blank lines skipped, other fields ignored):
//! `{"text": "WIN a FREE cruise!!!"}` — `"input"` is accepted for `"text"`.
//!
//! Evals: `{"text": "...", "label": "spam"}`. `label` (or `"expected"`) is the expected answer; leave
//! it out on every line to measure agreement with the teacher instead. The training crate's format
//! (`{"text", "label"}`) is therefore accepted as evals and as inputs (its labels are ignored there).
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Error;

/// One input: its text and, for evals, the expected answer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Parses JSONL items. `what` names the payload in errors (`train`, `evals`).
pub fn parse_items(bytes: &[u8], what: &str) -> Result<Vec<Item>, Error> {
    let bad =
        |line: usize, msg: String| Error::InvalidArgument(format!("{what}, line {line}: {msg}"));
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw).map_err(|e| bad(line, format!("not UTF-8: {e}")))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad(line, format!("malformed JSON: {e}")))?;
        let Value::Object(obj) = v else {
            return Err(bad(
                line,
                "expected a JSON object like {\"text\": \"...\"}".into(),
            ));
        };
        let input = match obj.get("text").or_else(|| obj.get("input")) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad(line, "\"text\" must be a string".into())),
            None => return Err(bad(line, "missing the \"text\" field".into())),
        };
        if input.trim().is_empty() {
            return Err(bad(line, "\"text\" is empty".into()));
        }
        let label = match obj.get("label").or_else(|| obj.get("expected")) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Null) | None => None,
            Some(Value::String(_)) => return Err(bad(line, "\"label\" is empty".into())),
            Some(_) => return Err(bad(line, "\"label\" must be a string".into())),
        };
        out.push(Item { text: input, label });
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what}: no examples (empty data)"
        )));
    }
    Ok(out)
}

/// Checks that evals carry expected answers on every line or on none; returns whether they do.
pub fn evals_have_labels(evals: &[Item]) -> Result<bool, Error> {
    let first = evals.first().is_some_and(|e| e.label.is_some());
    if let Some((i, _)) = evals
        .iter()
        .enumerate()
        .find(|(_, e)| e.label.is_some() != first)
    {
        return Err(Error::InvalidArgument(format!(
            "evals: item {} {} an expected \"label\" but item 1 {}: give one on every line or on none",
            i + 1,
            if first { "lacks" } else { "has" },
            if first { "has one" } else { "does not" },
        )));
    }
    Ok(first)
}

/// The user message for `text`.
pub fn render(template: &str, text: &str) -> String {
    template.replace("{input}", text)
}

/// The cache key of a rendered prompt: SHA-256, hex.
pub fn prompt_hash(rendered: &str) -> String {
    let d = Sha256::digest(rendered.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A teacher answer reduced to a label: the first line, without surrounding punctuation or quotes,
/// lower-cased. With a label set, the label it equals (ignoring case) or, failing that, the one label
/// the answer names as a word; `None` when it names none or several.
pub fn normalise(answer: &str, labels: &[String]) -> Option<String> {
    let first = answer.trim().lines().next().unwrap_or("").trim();
    let clean = first
        .trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase();
    if labels.is_empty() {
        return (!clean.is_empty()).then_some(clean);
    }
    if let Some(l) = labels.iter().find(|l| l.to_lowercase() == clean) {
        return Some(l.clone());
    }
    let words: Vec<String> = answer
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let named: Vec<&String> = labels
        .iter()
        .filter(|l| words.iter().any(|w| *w == l.to_lowercase()))
        .collect();
    match named.as_slice() {
        [one] => Some((*one).clone()),
        _ => None,
    }
}

/// A teacher's (or an eval's expected) generation answer as compared: trimmed, every run of
/// whitespace (newlines included) collapsed to one space. `None` when nothing is left.
pub fn normalise_text(answer: &str) -> Option<String> {
    let out = answer.split_whitespace().collect::<Vec<_>>().join(" ");
    (!out.is_empty()).then_some(out)
}

/// What the selector learns from: sizes and input lengths.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// `classification` or `generation`.
    pub kind: String,
    pub n_train: usize,
    pub n_evals: usize,
    /// Whether the evals carry expected answers.
    pub gold_evals: bool,
    /// Characters of the raw inputs (train and evals).
    pub mean_input_chars: f64,
    pub p95_input_chars: f64,
    /// Characters of the rendered prompts (what teacher and student read).
    pub mean_prompt_chars: f64,
}

pub fn features(
    train: &[Item],
    evals: &[Item],
    template: &str,
    kind: retort_training::TaskKind,
) -> Features {
    let mut lens: Vec<usize> = train
        .iter()
        .chain(evals)
        .map(|i| i.text.chars().count())
        .collect();
    lens.sort_unstable();
    let n = lens.len().max(1);
    let mean = lens.iter().sum::<usize>() as f64 / n as f64;
    let p95 = lens
        .get(((0.95 * lens.len() as f64).ceil() as usize).clamp(1, n) - 1)
        .copied()
        .unwrap_or(0) as f64;
    let overhead = template.replace("{input}", "").chars().count() as f64;
    Features {
        kind: kind.name().into(),
        n_train: train.len(),
        n_evals: evals.len(),
        gold_evals: evals.first().is_some_and(|e| e.label.is_some()),
        mean_input_chars: mean,
        p95_input_chars: p95,
        mean_prompt_chars: mean + overhead,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_named() {
        let e = parse_items(b"{\"text\":\"a\"}\n\n{\"text\": 3}\n", "train").unwrap_err();
        assert_eq!(e.to_string(), "train, line 3: \"text\" must be a string");
        let e = parse_items(b"{\"text\":\"a\"}\nnot json\n", "evals").unwrap_err();
        assert!(
            e.to_string().starts_with("evals, line 2: malformed JSON"),
            "{e}"
        );
        let e = parse_items(b"\n  \n", "train").unwrap_err();
        assert_eq!(e.to_string(), "train: no examples (empty data)");
        let items = parse_items(b"{\"input\":\"a\",\"label\":\"x\",\"id\":1}\n", "evals").unwrap();
        assert_eq!(
            items,
            vec![Item {
                text: "a".into(),
                label: Some("x".into())
            }]
        );
    }

    #[test]
    fn mixed_eval_labels_are_refused() {
        let items = parse_items(
            b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\"}\n",
            "evals",
        )
        .unwrap();
        let e = evals_have_labels(&items).unwrap_err();
        assert!(e.to_string().contains("item 2 lacks"), "{e}");
    }

    #[test]
    fn answers_normalise_to_labels() {
        let labels = vec!["spam".to_string(), "ham".to_string()];
        assert_eq!(normalise("Spam.", &labels).as_deref(), Some("spam"));
        assert_eq!(
            normalise(" \"HAM\"\nbecause...", &labels).as_deref(),
            Some("ham")
        );
        assert_eq!(
            normalise("It is spam, clearly", &labels).as_deref(),
            Some("spam")
        );
        assert_eq!(normalise("spam or ham", &labels), None);
        assert_eq!(normalise("unknown", &labels), None);
        assert_eq!(normalise("  Positive! ", &[]).as_deref(), Some("positive"));
        assert_eq!(normalise("  ", &[]), None);
    }

    #[test]
    fn generation_answers_are_trimmed_and_collapsed() {
        assert_eq!(
            normalise_text("  2024-03-01 \n").as_deref(),
            Some("2024-03-01")
        );
        assert_eq!(
            normalise_text("New\t York\n\nCity").as_deref(),
            Some("New York City")
        );
        assert_eq!(normalise_text(" \n\t "), None);
    }
}
