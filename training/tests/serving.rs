//! Serving: `Predictor::classify` (what the gateway's local provider calls) agrees with the batch
//! `predict` path — `classify` answers from plain floats (`retort_training::dense`), `predict`
//! through burn — for every classification class, and counts the student's tokens of the input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::path::Path;

use retort_training::backend::{self, Inference, Training};
use retort_training::data::{self, LabelVocab};
use retort_training::{Predictor, StudentSpec, TrainJob, TrainOptions, train};

fn check(spec: &str) {
    let all = data::read_jsonl(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spam_ham.jsonl"),
    )
    .unwrap();
    let split = data::split(&all, 0.25, 1).unwrap();
    let labels = LabelVocab::from_examples(&all).unwrap();
    let spec: StudentSpec = spec.parse().unwrap();
    let job = TrainJob {
        config: spec.config(labels.len()).unwrap(),
        labels,
        train: &split.train,
        validation: &split.validation,
        options: TrainOptions::new().with_max_epochs(2),
        checkpoint_dir: None,
    };
    let trained =
        train::<Training>(&job, &backend::device(), |_| ControlFlow::Continue(())).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "retort-serving-{}-{}",
        spec.class,
        std::process::id()
    ));
    trained.predictor.save(&dir).unwrap();
    let served = Predictor::<Inference>::load_for_serving(&dir).unwrap();
    let texts: Vec<&str> = split
        .validation
        .iter()
        .map(|e| e.text.as_str())
        .chain(["", "!!!"])
        .collect();
    let batch = served.predict(&texts);
    for (text, (label, p)) in texts.iter().zip(&batch) {
        let one = served.classify(text);
        assert_eq!(one.label, label, "{spec}: {text:?}");
        assert!(
            (one.probability - p).abs() < 1e-4,
            "{spec}: {} vs {p} for {text:?}",
            one.probability
        );
        assert_eq!(
            one.input_tokens,
            served.metadata().featuriser.encode(text).len()
        );
        assert_eq!(served.count_tokens(text), one.input_tokens);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linear_classify_matches_predict() {
    check("linear/tiny");
}

#[test]
fn mlp_classify_matches_predict() {
    check("mlp/tiny");
}

#[test]
fn cnn_classify_matches_predict() {
    check("cnn/tiny");
}

#[test]
fn transformer_classify_matches_predict() {
    check("transformer/tiny");
}
