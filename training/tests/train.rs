//! End-to-end tests of the training crate on a small synthetic spam/ham fixture
//! (`fixtures/spam_ham.jsonl`, 400 lines, generated once by a seeded script).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::path::Path;

use retort_training::backend::{self, Inference, Training};
use retort_training::data::{self, Example, LabelVocab};
use retort_training::model::{BagMlpConfig, ByteCnnConfig, EncoderConfig, LinearBagConfig};
use retort_training::{
    Artefact, StudentConfig, StudentSpec, TrainJob, TrainOptions, Trained, TrainingError, eval,
    train,
};

fn fixture() -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spam_ham.jsonl");
    data::read_jsonl(path).unwrap()
}

/// 100 held-out examples for testing; the rest split 80/20 into train and validation.
struct Data {
    labels: LabelVocab,
    train: Vec<Example>,
    validation: Vec<Example>,
    test: Vec<Example>,
}

fn data() -> Data {
    let all = fixture();
    let outer = data::split(&all, 0.25, 1).unwrap();
    let inner = data::split(&outer.train, 0.2, 2).unwrap();
    Data {
        labels: LabelVocab::from_examples(&all).unwrap(),
        train: inner.train,
        validation: inner.validation,
        test: outer.validation,
    }
}

fn small_configs() -> Vec<StudentConfig> {
    vec![
        StudentConfig::Linear(LinearBagConfig::new(2).with_buckets(1 << 12)),
        StudentConfig::Mlp(
            BagMlpConfig::new(2)
                .with_buckets(1 << 12)
                .with_d_embed(16)
                .with_d_hidden(16),
        ),
        StudentConfig::Cnn(
            ByteCnnConfig::new(2)
                .with_max_len(96)
                .with_d_embed(8)
                .with_channels(16)
                .with_kernel_sizes(vec![3, 5]),
        ),
        StudentConfig::Transformer(
            EncoderConfig::new(2)
                .with_buckets(1 << 10)
                .with_max_len(24)
                .with_d_model(16)
                .with_n_heads(2)
                .with_n_layers(1)
                .with_d_ff(32),
        ),
    ]
}

fn mlp() -> StudentConfig {
    small_configs().swap_remove(1)
}

fn job<'a>(config: StudentConfig, d: &'a Data, options: TrainOptions) -> TrainJob<'a> {
    TrainJob {
        config,
        labels: d.labels.clone(),
        train: &d.train,
        validation: &d.validation,
        options,
        checkpoint_dir: None,
    }
}

fn run(job: &TrainJob<'_>) -> Trained<Inference> {
    train::<Training>(job, &backend::device(), |_| ControlFlow::Continue(())).unwrap()
}

fn texts(examples: &[Example]) -> Vec<&str> {
    examples.iter().map(|e| e.text.as_str()).collect()
}

#[test]
fn every_family_learns_the_fixture() {
    let d = data();
    for config in small_configs() {
        let class = config.class();
        let mut epochs = Vec::new();
        let trained = train::<Training>(
            &job(
                config,
                &d,
                TrainOptions::new().with_max_epochs(12).with_batch_size(16),
            ),
            &backend::device(),
            |p| {
                epochs.push(p.clone());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        let report = eval::evaluate(&trained.predictor, &d.test, 3).unwrap();
        eprintln!(
            "{class}: held-out accuracy {:.3}, val {:.3} at epoch {}/{}, {:.0} examples/s, {} params",
            report.accuracy,
            trained.report.best_val_accuracy,
            trained.report.best_epoch,
            trained.report.epochs_run,
            trained.report.examples_per_sec,
            trained.report.num_params,
        );
        assert!(
            report.accuracy >= 0.85,
            "{class}: held-out accuracy {}",
            report.accuracy
        );
        assert_eq!(epochs.len(), trained.report.epochs_run);
        assert!(
            epochs
                .iter()
                .all(|p| p.train_loss.is_finite() && p.eta_secs >= 0.0)
        );
        assert_eq!(report.per_class.len(), 2);
    }
}

#[test]
fn same_seed_gives_identical_predictions() {
    let d = data();
    let options = TrainOptions::new().with_max_epochs(3).with_seed(9);
    let a = run(&job(mlp(), &d, options.clone()));
    let b = run(&job(mlp(), &d, options));
    let c = run(&job(
        mlp(),
        &d,
        TrainOptions::new().with_max_epochs(3).with_seed(10),
    ));
    let t = texts(&d.test);
    assert_eq!(a.predictor.probabilities(&t), b.predictor.probabilities(&t));
    assert_eq!(a.report.history.len(), b.report.history.len());
    assert_ne!(a.predictor.probabilities(&t), c.predictor.probabilities(&t));
}

#[test]
fn resumed_training_matches_uninterrupted() {
    let d = data();
    let dir = tempfile::tempdir().unwrap();
    // Patience larger than the run so that both runs go the full four epochs.
    let options = |epochs| {
        TrainOptions::new()
            .with_max_epochs(epochs)
            .with_patience(10)
    };
    let straight = run(&job(mlp(), &d, options(4)));

    let mut first = job(mlp(), &d, options(2));
    first.checkpoint_dir = Some(dir.path().to_path_buf());
    let part = run(&first);
    assert_eq!(part.report.epochs_run, 2);
    assert!(dir.path().join("state.json").exists());

    let mut second = job(mlp(), &d, options(4));
    second.checkpoint_dir = Some(dir.path().to_path_buf());
    let resumed = run(&second);
    assert_eq!(resumed.report.resumed_after_epoch, Some(2));
    assert_eq!(resumed.report.epochs_run, 4);
    assert_eq!(resumed.report.history.len(), 4);

    let t = texts(&d.test);
    let (p1, p2) = (
        straight.predictor.probabilities(&t),
        resumed.predictor.probabilities(&t),
    );
    for (a, b) in p1.iter().flatten().zip(p2.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    // A checkpoint from a different job is refused rather than silently mixed in.
    let mut other = job(mlp(), &d, options(4).with_seed(1));
    other.checkpoint_dir = Some(dir.path().to_path_buf());
    let err =
        train::<Training>(&other, &backend::device(), |_| ControlFlow::Continue(())).unwrap_err();
    assert!(
        matches!(err, TrainingError::CheckpointMismatch { .. }),
        "{err}"
    );
}

#[test]
fn artefact_round_trip_gives_identical_predictions() {
    let d = data();
    let dir = tempfile::tempdir().unwrap();
    for config in small_configs() {
        let class = config.class();
        let trained = run(&job(config, &d, TrainOptions::new().with_max_epochs(2)));
        let path = dir.path().join(class.name());
        let bytes = trained.predictor.save(&path).unwrap();
        assert!(bytes > 0);
        let loaded = Artefact::load::<Inference>(&path, &backend::device()).unwrap();
        let t = texts(&d.test);
        assert_eq!(trained.predictor.predict(&t), loaded.predict(&t), "{class}");
        let meta = loaded.metadata();
        assert_eq!(meta.class, class);
        assert_eq!(meta.labels.labels(), ["ham", "spam"]);
        let report = meta.train.as_ref().unwrap();
        assert_eq!(report.backend, backend::name());
        assert_eq!(meta.num_params, trained.report.num_params);
        // Saving again replaces the artefact and leaves no temporary directory behind.
        trained.predictor.save(&path).unwrap();
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
    let missing =
        Artefact::load::<Inference>(dir.path().join("nope"), &backend::device()).unwrap_err();
    assert!(matches!(missing, TrainingError::Io { .. }), "{missing}");
}

#[test]
fn latency_is_measured_in_process() {
    let d = data();
    let trained = run(&job(
        small_configs().swap_remove(0),
        &d,
        TrainOptions::new().with_max_epochs(1),
    ));
    let stats = eval::measure_latency(&trained.predictor, &texts(&d.test), 10).unwrap();
    assert_eq!(stats.n, d.test.len());
    assert!(stats.p50_us > 0.0 && stats.p50_us <= stats.p95_us && stats.p95_us <= stats.p99_us);
}

#[test]
fn cancelling_stops_with_an_error() {
    let d = data();
    let err = train::<Training>(
        &job(mlp(), &d, TrainOptions::new().with_max_epochs(5)),
        &backend::device(),
        |_| ControlFlow::Break(()),
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::Cancelled), "{err}");
}

#[test]
fn bad_input_gives_clear_errors() {
    // Malformed JSONL names its line.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": \"no label\"}\n",
    )
    .unwrap();
    let err = data::read_jsonl(&path).unwrap_err();
    assert!(err.to_string().starts_with("line 2:"), "{err}");
    assert!(err.to_string().contains("label"), "{err}");
    let err = data::parse_jsonl("not json\n".as_bytes()).unwrap_err();
    assert!(matches!(err, TrainingError::Jsonl { line: 1, .. }), "{err}");

    // Empty data.
    assert!(matches!(
        data::read_jsonl(dir.path().join("missing.jsonl")),
        Err(TrainingError::Io { .. })
    ));
    std::fs::write(dir.path().join("empty.jsonl"), "\n\n").unwrap();
    let empty = data::read_jsonl(dir.path().join("empty.jsonl")).unwrap();
    assert!(matches!(
        LabelVocab::from_examples(&empty),
        Err(TrainingError::EmptyData(_))
    ));
    assert!(matches!(
        data::split(&empty, 0.2, 0),
        Err(TrainingError::EmptyData(_))
    ));
    let d = data();
    let labels = d.labels.clone();
    let err = train::<Training>(
        &TrainJob {
            train: &[],
            ..job(mlp(), &d, TrainOptions::new())
        },
        &backend::device(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::EmptyData(_)), "{err}");

    // Unknown class, size, malformed spec.
    let err = "svm/small".parse::<StudentSpec>().unwrap_err();
    assert!(matches!(err, TrainingError::UnknownClass { .. }), "{err}");
    assert!(
        err.to_string().contains("linear, mlp, cnn, transformer"),
        "{err}"
    );
    let err = "mlp/huge".parse::<StudentSpec>().unwrap_err();
    assert!(matches!(err, TrainingError::UnknownSize { .. }), "{err}");
    assert!(matches!(
        "mlp".parse::<StudentSpec>(),
        Err(TrainingError::BadSpec(_))
    ));
    for class in ["linear", "mlp", "cnn", "transformer"] {
        for size in ["tiny", "small", "base"] {
            let spec: StudentSpec = format!("{class}/{size}").parse().unwrap();
            let config = spec.config(2).unwrap();
            config.validate().unwrap();
            assert_eq!(config.class().name(), class);
        }
    }

    // A validation label the training labels never produce.
    let odd = vec![Example::new("hello", "maybe")];
    let err = train::<Training>(
        &TrainJob {
            validation: &odd,
            ..job(mlp(), &d, TrainOptions::new())
        },
        &backend::device(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::UnknownLabel { .. }), "{err}");

    // Label count mismatch and bad sizes are caught before anything is allocated.
    let three = StudentConfig::Linear(LinearBagConfig::new(3));
    let err = train::<Training>(
        &TrainJob {
            labels,
            ..job(three, &d, TrainOptions::new())
        },
        &backend::device(),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::Config(_)), "{err}");
    let bad = StudentConfig::Cnn(ByteCnnConfig::new(2).with_kernel_sizes(vec![4]));
    assert!(matches!(bad.validate(), Err(TrainingError::Config(_))));
}
