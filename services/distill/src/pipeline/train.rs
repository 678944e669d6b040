//! The train stage: the teacher's labelled training inputs split into train and validation, the
//! student trained on a blocking thread (one training slot per job, up to the configured number at
//! once), stopped by cancel or the time limit after an epoch, resumed from its checkpoint after a
//! restart, and saved as the job's artefact only when training ended on its own.
use std::{
    ops::ControlFlow,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use retort_time::now_ms;
use retort_training::{
    Example, GenTrainJob, LabelVocab, StudentSpec, TaskKind, TrainJob, TrainOptions, data::split,
    engine,
};

use super::{Engine, JobSpec};
use crate::{Error, data};

/// A train/validation split that does not group by label (a generation task's answers are mostly
/// unique): each example goes to validation by a seeded hash of its text, `fraction` of them (at
/// least one, never all).
pub(super) fn split_unstratified(
    examples: &[Example],
    fraction: f64,
    seed: u64,
) -> retort_training::Result<retort_training::Split> {
    if examples.len() < 2 {
        return Err(retort_training::TrainingError::EmptyData(format!(
            "{} example(s): at least 2 are needed to hold one out",
            examples.len()
        )));
    }
    let mut order: Vec<(String, usize)> = examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                data::prompt_hash(&format!("{seed}\u{0}{i}\u{0}{}", e.text)),
                i,
            )
        })
        .collect();
    order.sort();
    let n_val = ((examples.len() as f64 * fraction).round() as usize).clamp(1, examples.len() - 1);
    let pick = |r: &[(String, usize)]| r.iter().map(|(_, i)| examples[*i].clone()).collect();
    Ok(retort_training::Split {
        validation: pick(&order[..n_val]),
        train: pick(&order[n_val..]),
    })
}

impl Engine {
    pub(super) async fn train(
        self: &Arc<Self>,
        id: &str,
        spec: &JobSpec,
        flag: &Arc<AtomicBool>,
        deadline: Option<i64>,
    ) -> Result<String, Error> {
        let labelled = self.labelled(id)?;
        let target: StudentSpec = spec.target.parse()?;
        let generation = spec.task == TaskKind::Generation;
        // A classifier's labels; none for a generator.
        let vocab = (!generation)
            .then(|| LabelVocab::from_labels(labelled.labels.clone()))
            .transpose()?;
        let config = target.config(vocab.as_ref().map_or(0, LabelVocab::len))?;
        let parts = if generation {
            split_unstratified(&labelled.train, 0.15, spec.seed)
        } else {
            split(&labelled.train, 0.15, spec.seed)
        }
        .map_err(|e| Error::Job(format!("cannot hold out a validation split: {e}")))?;
        self.set_progress(id, |p| p.message = "waiting for a training slot".into());
        let _permit = self
            .training
            .acquire()
            .await
            .map_err(|_| Error::Cancelled)?;
        self.check(flag, deadline, spec.time_limit_secs)?;
        let dir = self.job_dir(id);
        let engine = Arc::clone(self);
        let job_id = id.to_string();
        let flag = Arc::clone(flag);
        let max_epochs = spec.max_epochs;
        let seed = spec.seed;
        let limit = spec.time_limit_secs;
        let n_train = parts.train.len();
        let task =
            tokio::task::spawn_blocking(move || -> Result<retort_training::TrainReport, Error> {
                let options = TrainOptions::new()
                    .with_seed(seed)
                    .with_max_epochs(max_epochs);
                let checkpoint = dir.join("checkpoint");
                std::fs::create_dir_all(&checkpoint)
                    .map_err(|e| Error::io("creating", &checkpoint, e))?;
                let mut on_epoch = |p: &retort_training::EpochProgress| {
                    engine.set_progress(&job_id, |g| {
                        g.epoch = p.epoch as u32;
                        g.max_epochs = p.max_epochs as u32;
                        g.loss = p.train_loss;
                        g.val_accuracy = p.val_accuracy;
                        g.eta_secs = p.eta_secs;
                        g.message = format!(
                            "epoch {}/{}: loss {:.4}, validation {} {:.2}%",
                            p.epoch,
                            p.max_epochs,
                            p.train_loss,
                            if generation {
                                "exact match"
                            } else {
                                "accuracy"
                            },
                            p.val_accuracy * 100.0
                        );
                    });
                    if flag.load(Ordering::SeqCst) || deadline.is_some_and(|d| now_ms() > d) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                // The student, and how to save it once training was not stopped.
                type Save = Box<dyn FnOnce(&Path) -> retort_training::Result<u64>>;
                let trained = match vocab {
                    Some(labels) => engine::train(
                        &TrainJob {
                            config,
                            labels,
                            train: &parts.train,
                            validation: &parts.validation,
                            options,
                            checkpoint_dir: Some(checkpoint.clone()),
                        },
                        &mut on_epoch,
                    )
                    .map(|t| {
                        let p = t.predictor;
                        (
                            Box::new(move |d: &Path| engine::save(&p, d)) as Save,
                            t.report,
                        )
                    }),
                    None => engine::train_generator(
                        &GenTrainJob {
                            config,
                            train: &parts.train,
                            validation: &parts.validation,
                            options,
                            checkpoint_dir: Some(checkpoint.clone()),
                        },
                        &mut on_epoch,
                    )
                    .map(|t| {
                        let g = t.generator;
                        (Box::new(move |d: &Path| g.save(d)) as Save, t.report)
                    }),
                };
                let (save, report) = match trained {
                    Err(retort_training::TrainingError::Cancelled)
                        if !flag.load(Ordering::SeqCst) =>
                    {
                        return Err(Error::TimeLimit(limit));
                    }
                    r => r?,
                };
                if flag.load(Ordering::SeqCst) {
                    return Err(Error::Cancelled);
                }
                save(&dir.join("student"))?;
                let _ = std::fs::remove_dir_all(&checkpoint);
                Ok(report)
            });
        let report = task.await.map_err(|source| Error::Thread {
            what: "training",
            source,
        })??;
        Ok(format!(
            "{} examples, {} epochs{}, best epoch {} at {:.2}% validation {}, {:.1} s{}",
            n_train,
            report.epochs_run,
            if report.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            report.best_epoch,
            report.best_val_accuracy * 100.0,
            if generation {
                "exact match"
            } else {
                "accuracy"
            },
            report.train_secs,
            report
                .resumed_after_epoch
                .map_or_else(String::new, |e| format!(", resumed after epoch {e}"))
        ))
    }
}
