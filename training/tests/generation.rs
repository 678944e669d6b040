//! Short generation end to end: the seq2seq student learns a synthetic date-normalisation task
//! ("3 March 2021", "March 3rd, 2021", "03/03/2021" → "2021-03-03"; generated from a seed by
//! `data::synthetic_dates`), trains deterministically, resumes from checkpoints, round-trips through its artefact and
//! refuses bad input with clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::ops::ControlFlow;

use retort_training::data::{Example, LabelVocab, synthetic_dates as dates};
use retort_training::model::Seq2seqConfig;
use retort_training::{
    Artefact, GenTrainJob, Generator, Predictor, StudentClass, StudentConfig, StudentSpec,
    TaskKind, TrainJob, TrainOptions, TrainingError, engine, eval,
};

struct Data {
    train: Vec<Example>,
    validation: Vec<Example>,
    test: Vec<Example>,
}

/// Train, validation and a test set with no input seen in training.
fn data(n_train: usize) -> Data {
    let train = dates(n_train, 1);
    let seen: HashSet<&str> = train.iter().map(|e| e.text.as_str()).collect();
    let held_out = |seed| -> Vec<Example> {
        dates(200, seed)
            .into_iter()
            .filter(|e| !seen.contains(e.text.as_str()))
            .take(150)
            .collect()
    };
    let (validation, test) = (held_out(2), held_out(3));
    Data {
        train,
        validation,
        test,
    }
}

fn tiny() -> StudentConfig {
    "seq2seq/tiny"
        .parse::<StudentSpec>()
        .unwrap()
        .config(0)
        .unwrap()
}

fn job<'a>(config: StudentConfig, d: &'a Data, options: TrainOptions) -> GenTrainJob<'a> {
    GenTrainJob {
        config,
        train: &d.train,
        validation: &d.validation,
        options,
        checkpoint_dir: None,
    }
}

fn texts(examples: &[Example]) -> Vec<&str> {
    examples.iter().map(|e| e.text.as_str()).collect()
}

fn continue_always(_: &retort_training::EpochProgress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

#[test]
fn seq2seq_tiny_learns_dates_and_round_trips_through_its_artefact() {
    let d = data(1200);
    let mut epochs = Vec::new();
    let trained = engine::train_generator(
        &job(
            tiny(),
            &d,
            TrainOptions::new()
                .with_max_epochs(6)
                .with_patience(2)
                .with_learning_rate(Some(0.003)),
        ),
        &mut |p| {
            epochs.push(p.clone());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    let g = &trained.generator;
    let report = engine::evaluate_generation(g, &d.test, 5).unwrap();
    eprintln!(
        "seq2seq/tiny: held-out exact match {:.3}, CER {:.4}, val EM {:.3} at epoch {}/{}, {:.0} examples/s, {} params; errors {:?}",
        report.exact_match,
        report.cer,
        trained.report.best_val_accuracy,
        trained.report.best_epoch,
        trained.report.epochs_run,
        trained.report.examples_per_sec,
        trained.report.num_params,
        report.errors,
    );
    // A trivial baseline (copying the input, or always answering the most common target) scores
    // ~0 exact match on this set; broken training or decoding cannot pass these.
    assert!(
        report.exact_match >= 0.8,
        "exact match {}",
        report.exact_match
    );
    assert!(report.cer <= 0.1, "CER {}", report.cer);
    assert_eq!(report.examples, d.test.len());
    assert!(report.errors.len() <= 5);
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.expected != e.predicted && e.cer > 0.0)
    );
    assert_eq!(epochs.len(), trained.report.epochs_run);
    assert!(epochs.iter().all(|p| p.train_loss.is_finite()
        && p.eta_secs >= 0.0
        && p.examples_per_sec > 0.0
        && (0.0..=1.0).contains(&p.val_accuracy)));
    assert!(epochs.last().unwrap().train_loss < epochs[0].train_loss);

    // One input at a time (the serving path, with the decoder's cache) agrees with batches.
    let t = texts(&d.test);
    let batch = g.generate_batch(&t);
    let one = g.generate(t[0]);
    assert_eq!(one, batch[0]);
    assert_eq!(one.input_tokens, t[0].len());
    assert_eq!(one.output_tokens, one.text.len());
    assert_eq!(g.count_tokens(t[0]), t[0].len());
    assert_eq!(g.count_tokens(""), 1);
    // Any input, even empty or far too long, gives an answer of bounded length and no panic.
    let long = "9".repeat(5000);
    for text in ["", "\u{0}", long.as_str(), "ünïcödé 🎉"] {
        let out = g.generate(text);
        assert!(out.output_tokens <= g.config().max_output_len, "{out:?}");
    }

    // The artefact: weights + config (the byte tokeniser) + metadata, loaded for serving.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dates");
    assert!(g.save(&path).unwrap() > 0);
    let meta = Artefact::metadata(&path).unwrap();
    assert_eq!(meta.task, TaskKind::Generation);
    assert_eq!(meta.class, StudentClass::Seq2seq);
    assert!(meta.labels.is_empty());
    assert_eq!(meta.num_params, trained.report.num_params);
    let saved = meta.train.as_ref().unwrap();
    assert_eq!(
        (saved.best_epoch, saved.epochs_run, saved.history.len()),
        (
            trained.report.best_epoch,
            trained.report.epochs_run,
            trained.report.history.len()
        )
    );
    assert!((saved.best_val_accuracy - trained.report.best_val_accuracy).abs() < 1e-12);
    let loaded = Generator::load_for_serving(&path).unwrap();
    assert_eq!(loaded.generate_batch(&t), batch);
    assert_eq!(loaded.generate(t[0]), one);
    assert_eq!(
        engine::evaluate_generation(&loaded, &d.test, 5).unwrap(),
        report
    );
    // Saving again replaces the artefact and leaves no temporary directory behind.
    loaded.save(&path).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["dates"]);
    // A generation artefact is not a classifier.
    let err = Predictor::load_for_serving(&path).unwrap_err();
    assert!(matches!(err, TrainingError::Artefact { .. }), "{err}");
    assert!(
        err.to_string().contains("Generator::load_for_serving"),
        "{err}"
    );

    let stats = engine::measure_generation_latency(g, &t[..50], 5).unwrap();
    eprintln!("seq2seq/tiny single-input latency: {stats:?}");
    assert_eq!(stats.n, 50);
    assert!(stats.p50_us > 0.0 && stats.p50_us <= stats.p99_us);
}

#[test]
fn same_seed_same_generations_and_resume_matches_a_straight_run() {
    let d = data(200);
    let t = texts(&d.test);
    // Patience larger than the run so that every run goes the full number of epochs.
    let options = |epochs| {
        TrainOptions::new()
            .with_max_epochs(epochs)
            .with_patience(10)
            .with_learning_rate(Some(0.003))
            .with_seed(5)
    };
    let run = |job: &GenTrainJob<'_>| engine::train_generator(job, &mut continue_always).unwrap();
    let straight = run(&job(tiny(), &d, options(4)));
    let again = run(&job(tiny(), &d, options(4)));
    let other = run(&job(tiny(), &d, options(4).with_seed(6)));
    // The same seed replays the same run bit for bit, even with other tests training at the same
    // time (parameters are initialised under the seeded RNG lock, not lazily at first use).
    let losses = |r: &retort_training::TrainReport| -> Vec<f64> {
        r.history.iter().map(|p| p.train_loss).collect()
    };
    assert_eq!(losses(&straight.report), losses(&again.report));
    assert_eq!(
        straight.generator.generate_batch(&t),
        again.generator.generate_batch(&t)
    );
    assert_ne!(losses(&straight.report), losses(&other.report));

    let dir = tempfile::tempdir().unwrap();
    let mut first = job(tiny(), &d, options(2));
    first.checkpoint_dir = Some(dir.path().to_path_buf());
    let part = run(&first);
    assert_eq!(part.report.epochs_run, 2);
    assert!(dir.path().join("state.json").exists());
    let mut second = job(tiny(), &d, options(4));
    second.checkpoint_dir = Some(dir.path().to_path_buf());
    let resumed = run(&second);
    assert_eq!(resumed.report.resumed_after_epoch, Some(2));
    assert_eq!(resumed.report.epochs_run, 4);
    assert_eq!(resumed.report.history.len(), 4);
    assert_eq!(resumed.report.best_epoch, straight.report.best_epoch);
    for (a, b) in losses(&straight.report).iter().zip(losses(&resumed.report)) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    assert_eq!(
        straight.generator.generate_batch(&t),
        resumed.generator.generate_batch(&t)
    );

    // A checkpoint from a different job is refused rather than silently mixed in.
    let mut different = job(tiny(), &d, options(4).with_seed(1));
    different.checkpoint_dir = Some(dir.path().to_path_buf());
    let err = engine::train_generator(&different, &mut continue_always).unwrap_err();
    assert!(
        matches!(err, TrainingError::CheckpointMismatch { .. }),
        "{err}"
    );

    // Cancelling through the callback stops with an error after the first epoch.
    let mut calls = 0;
    let err = engine::train_generator(&job(tiny(), &d, options(3)), &mut |_| {
        calls += 1;
        ControlFlow::Break(())
    })
    .unwrap_err();
    assert!(matches!(err, TrainingError::Cancelled), "{err}");
    assert_eq!(calls, 1);
}

#[test]
fn bad_input_gives_clear_errors() {
    let d = data(40);

    // Empty targets name the example.
    let mut train = d.train.clone();
    train[3].label = "  ".into();
    let err = engine::train_generator(
        &GenTrainJob {
            train: &train,
            ..job(tiny(), &d, TrainOptions::new())
        },
        &mut continue_always,
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::EmptyData(_)), "{err}");
    assert!(
        err.to_string()
            .contains("training example 4 has an empty target"),
        "{err}"
    );

    // No data.
    let err = engine::train_generator(
        &GenTrainJob {
            validation: &[],
            ..job(tiny(), &d, TrainOptions::new())
        },
        &mut continue_always,
    )
    .unwrap_err();
    assert!(matches!(err, TrainingError::EmptyData(_)), "{err}");

    // A class for the other task kind, either way round.
    let mlp = "mlp/tiny"
        .parse::<StudentSpec>()
        .unwrap()
        .config(2)
        .unwrap();
    let err = engine::train_generator(&job(mlp, &d, TrainOptions::new()), &mut continue_always)
        .unwrap_err();
    assert!(matches!(err, TrainingError::Config(_)), "{err}");
    assert!(
        err.to_string()
            .contains("serves classification tasks, not generation"),
        "{err}"
    );
    assert!(err.to_string().contains("generation: seq2seq"), "{err}");
    let labels = LabelVocab::from_labels(["a", "b"]).unwrap();
    let err = engine::train(
        &TrainJob {
            config: tiny(),
            labels,
            train: &d.train,
            validation: &d.validation,
            options: TrainOptions::new(),
            checkpoint_dir: None,
        },
        &mut continue_always,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("serves generation tasks, not classification"),
        "{err}"
    );

    // Specs and configs.
    for size in StudentClass::SIZES {
        let config = format!("seq2seq/{size}")
            .parse::<StudentSpec>()
            .unwrap()
            .config(0)
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.task(), TaskKind::Generation);
        assert_eq!(config.num_labels(), 0);
    }
    assert!(matches!(
        "seq2seq/huge".parse::<StudentSpec>(),
        Err(TrainingError::UnknownSize { .. })
    ));
    assert_eq!(StudentClass::Transformer.task(), TaskKind::Classification);
    let bad = StudentConfig::Seq2seq(Seq2seqConfig::new().with_d_model(30).with_n_heads(4));
    assert!(matches!(bad.validate(), Err(TrainingError::Config(_))));
    let err = engine::train_generator(&job(bad, &d, TrainOptions::new()), &mut continue_always)
        .unwrap_err();
    assert!(matches!(err, TrainingError::Config(_)), "{err}");

    // Evaluation of mismatched or empty sets.
    assert!(matches!(
        eval::gen_report::<&str>(&[], &[], 3),
        Err(TrainingError::EmptyData(_))
    ));
}

#[test]
fn classification_artefacts_still_load_and_are_not_generators() {
    use retort_training::data;
    let all = data::read_jsonl(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spam_ham.jsonl"),
    )
    .unwrap();
    let split = data::split(&all, 0.25, 1).unwrap();
    let labels = LabelVocab::from_examples(&all).unwrap();
    let trained = engine::train(
        &TrainJob {
            config: "linear/tiny"
                .parse::<StudentSpec>()
                .unwrap()
                .config(2)
                .unwrap(),
            labels,
            train: &split.train,
            validation: &split.validation,
            options: TrainOptions::new().with_max_epochs(1),
            checkpoint_dir: None,
        },
        &mut continue_always,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spam");
    trained.predictor.save(&path).unwrap();
    assert_eq!(
        Artefact::metadata(&path).unwrap().task,
        TaskKind::Classification
    );

    // An artefact written before generation existed has no `task`: it loads as a classifier.
    let meta_path = path.join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    assert!(meta.as_object_mut().unwrap().remove("task").is_some());
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    assert_eq!(
        Artefact::metadata(&path).unwrap().task,
        TaskKind::Classification
    );
    let loaded = Predictor::load_for_serving(&path).unwrap();
    let t = texts(&split.validation);
    assert_eq!(loaded.predict(&t), trained.predictor.predict(&t));

    let err = Generator::load_for_serving(&path).unwrap_err();
    assert!(matches!(err, TrainingError::Artefact { .. }), "{err}");
    assert!(
        err.to_string().contains("Predictor::load_for_serving"),
        "{err}"
    );
}
