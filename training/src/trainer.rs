//! The training loop: minibatch AdamW with early stopping on validation accuracy (exact match for
//! generation, see [`crate::generation`]), deterministic
//! under a seed, checkpointed every epoch so that a job resumes where it stopped.
//!
//! Determinism: shuffles come from [`SplitMix64`] seeded with `(seed, epoch)`, never from a running
//! stream, and the backend RNG is reseeded (under a process-wide lock) before initialisation and
//! before every epoch of a student with dropout. A run resumed from epoch *k* therefore replays
//! exactly the batches the uninterrupted run would have seen.
//!
//! Checkpoint directory layout (all replaced atomically, `state.json` last):
//! - `state.json`: epoch reached, best epoch and accuracy, history, and a fingerprint of the job;
//! - `model.mpk`, `optim.mpk`: the model and AdamW state after that epoch;
//! - `best.mpk`: the best model so far (what early stopping returns).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{IndexingUpdateOp, TensorData};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

use crate::artefact::Predictor;
use crate::data::{Example, LabelVocab, SplitMix64};
use crate::error::{Result, TrainingError};
use crate::features::{Featuriser, Inputs};
use crate::model::{Student, StudentConfig, TaskKind};
pub use crate::report::{EpochProgress, TrainReport};
use crate::rng;

/// How to train (the architecture is in [`StudentConfig`]).
#[derive(Config, Debug)]
pub struct TrainOptions {
    /// Seeds initialisation, shuffles and dropout.
    #[config(default = 42)]
    pub seed: u64,
    /// Examples per optimiser step.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Upper bound on epochs.
    #[config(default = 20)]
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation accuracy.
    #[config(default = 3)]
    pub patience: usize,
    /// AdamW learning rate; `None` takes the class's default
    /// ([`crate::model::StudentClass::default_learning_rate`]).
    pub learning_rate: Option<f64>,
    /// AdamW decoupled weight decay.
    #[config(default = 1e-4)]
    pub weight_decay: f64,
    /// The prompt template the examples' texts were rendered with (`{input}` where the input
    /// goes): stripped before the student reads a text, in training and in every prediction of the
    /// artefact, which records it (see [`crate::template`]). `None`: inferred from the texts
    /// (their common prefix and suffix, [`crate::template::infer`]), or none.
    pub template: Option<String>,
    /// Stop once this many seconds of training are spent, mid-epoch if need be (that epoch is
    /// validated and the best model so far kept, as with early stopping); `None`: no limit. Not
    /// part of a checkpoint's identity.
    pub max_train_secs: Option<f64>,
}

/// One training job.
#[derive(Clone, Debug)]
pub struct TrainJob<'a> {
    /// Architecture and size.
    pub config: StudentConfig,
    /// Labels in logit order; must hold every label in `train` and `validation`.
    pub labels: LabelVocab,
    /// Examples to fit.
    pub train: &'a [Example],
    /// Examples for early stopping.
    pub validation: &'a [Example],
    /// Optimiser and stopping settings.
    pub options: TrainOptions,
    /// Where to checkpoint every epoch and resume from; `None` keeps everything in memory.
    pub checkpoint_dir: Option<PathBuf>,
}

/// A trained student and how it got there.
#[derive(Debug)]
pub struct Trained<B: Backend> {
    /// The best weights, ready to predict or to save as an artefact.
    pub predictor: Predictor<B>,
    /// The run's numbers.
    pub report: TrainReport,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    fingerprint: String,
    epoch: usize,
    best_epoch: usize,
    best_val_accuracy: f64,
    /// Written by checkpoints since generation; older ones (classification) read as 0.
    #[serde(default)]
    best_tie_break: f64,
    epochs_since_best: usize,
    train_secs: f64,
    history: Vec<EpochProgress>,
}

type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;

struct Encoded {
    ids: Vec<Vec<u32>>,
    labels: Vec<usize>,
}

fn encode(
    featuriser: &Featuriser,
    labels: &LabelVocab,
    examples: &[Example],
    template: Option<&str>,
) -> Result<Encoded> {
    let mut out = Encoded {
        ids: Vec::with_capacity(examples.len()),
        labels: Vec::with_capacity(examples.len()),
    };
    for example in examples {
        out.labels.push(labels.index_of(&example.label)?);
        out.ids
            .push(featuriser.encode(crate::template::strip_opt(template, &example.text)));
    }
    Ok(out)
}

fn accuracy_of<B: Backend>(model: &Student<B>, data: &Encoded, device: &B::Device) -> f64 {
    let predicted = model.predict_ids(&data.ids, device);
    let correct = predicted
        .iter()
        .zip(&data.labels)
        .filter(|((p, _), l)| p == *l)
        .count();
    correct as f64 / data.labels.len().max(1) as f64
}

/// FNV-1a over everything that must match for a checkpoint to be resumed.
pub(crate) fn fingerprint(
    config: &StudentConfig,
    labels: &[String],
    train: &[Example],
    validation: &[Example],
    options: &TrainOptions,
    learning_rate: f64,
) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h ^= 0xFF;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    };
    for e in train.iter().chain(validation) {
        feed(e.text.as_bytes());
        feed(e.label.as_bytes());
    }
    let config = serde_json::to_string(config).unwrap_or_default();
    format!(
        "config={config} labels={labels:?} seed={} batch={} lr={learning_rate} wd={} template={:?} train={} val={} data={h:016x}",
        options.seed,
        options.batch_size,
        options.weight_decay,
        options.template,
        train.len(),
        validation.len(),
    )
}

fn record_err(path: &Path, e: impl std::fmt::Display) -> TrainingError {
    TrainingError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Saves a record as `dir/NAME.mpk` via a temporary file and a rename.
fn save_record<B: Backend, R: burn::record::Record<B>>(
    dir: &Path,
    name: &str,
    record: R,
) -> Result<()> {
    // burn replaces whatever follows the last dot with its extension, so the temporary name has none.
    let tmp = dir.join(format!("{name}-partial"));
    Rec::new()
        .record(record, tmp.clone())
        .map_err(|e| record_err(&tmp, e))?;
    let from = dir.join(format!(
        "{name}-partial.{}",
        <Rec as FileRecorder<B>>::file_extension()
    ));
    let to = dir.join(format!(
        "{name}.{}",
        <Rec as FileRecorder<B>>::file_extension()
    ));
    std::fs::rename(&from, &to).map_err(|e| TrainingError::io(&to, e))
}

fn load_record<B: Backend, R: burn::record::Record<B>>(
    dir: &Path,
    name: &str,
    device: &B::Device,
) -> Result<R> {
    let path = dir.join(name);
    Rec::new()
        .load(path.clone(), device)
        .map_err(|e| record_err(&path, e))
}

/// The template a job strips: the one it names, else the one its texts were evidently rendered from
/// ([`crate::template::infer`]), else none.
pub(crate) fn effective_template(
    options: &TrainOptions,
    train: &[Example],
    validation: &[Example],
) -> Option<String> {
    options
        .template
        .clone()
        .or_else(|| crate::template::infer(train.iter().chain(validation).map(|e| e.text.as_str())))
}

/// Checks what every training job needs (data, batch size, epochs, learning rate) and returns the
/// learning rate to use.
pub(crate) fn check_job(
    config: &StudentConfig,
    train: &[Example],
    validation: &[Example],
    options: &TrainOptions,
) -> Result<f64> {
    config.validate()?;
    if train.is_empty() {
        return Err(TrainingError::EmptyData("no training examples".into()));
    }
    if validation.is_empty() {
        return Err(TrainingError::EmptyData("no validation examples".into()));
    }
    if options.batch_size == 0 || options.max_epochs == 0 {
        return Err(TrainingError::Config(
            "batch_size and max_epochs must be > 0".into(),
        ));
    }
    let learning_rate = options
        .learning_rate
        .unwrap_or_else(|| config.class().default_learning_rate());
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        return Err(TrainingError::Config(format!(
            "learning_rate must be > 0, got {learning_rate}"
        )));
    }
    Ok(learning_rate)
}

/// Trains a student. `on_epoch` is called after every epoch; returning `ControlFlow::Break(())`
/// stops the run with [`TrainingError::Cancelled`] (the last checkpoint stays, so it can resume).
///
/// `B` is the autodiff training backend, e.g. [`crate::backend::Training`].
pub fn train<B: AutodiffBackend>(
    job: &TrainJob<'_>,
    device: &B::Device,
    mut on_epoch: impl FnMut(&EpochProgress) -> ControlFlow<()>,
) -> Result<Trained<B::InnerBackend>> {
    if job.config.task() != TaskKind::Classification {
        return Err(job.config.wrong_task(TaskKind::Classification));
    }
    let learning_rate = check_job(&job.config, job.train, job.validation, &job.options)?;
    if job.labels.len() != job.config.num_labels() {
        return Err(TrainingError::Config(format!(
            "the config has {} labels but the label vocabulary has {}",
            job.config.num_labels(),
            job.labels.len()
        )));
    }

    let featuriser = job.config.featuriser();
    let template = effective_template(&job.options, job.train, job.validation);
    let template = template.as_deref();
    let bag = matches!(featuriser, Featuriser::NgramBag { .. });
    let objective = Classify {
        train: encode(&featuriser, &job.labels, job.train, template)?,
        valid: encode(&featuriser, &job.labels, job.validation, template)?,
        loss: CrossEntropyLossConfig::new().init::<B>(device),
        device: device.clone(),
        row_sq_grads: RefCell::new(if bag {
            vec![0.0; featuriser.vocab_size()]
        } else {
            Vec::new()
        }),
    };
    let model: Student<B> = rng::init_seeded(device, job.options.seed, || job.config.init(device))?;
    let setup = FitSetup {
        options: &job.options,
        learning_rate,
        fingerprint: fingerprint(
            &job.config,
            job.labels.labels(),
            job.train,
            job.validation,
            &job.options,
            learning_rate,
        ),
        checkpoint_dir: job.checkpoint_dir.as_deref(),
        uses_dropout: job.config.uses_dropout(),
    };
    let (best, report) = fit(&objective, model, &setup, device, &mut on_epoch)?;
    let predictor = Predictor::new(
        best,
        job.config.clone(),
        job.labels.clone(),
        Some(report.clone()),
        template.map(str::to_string),
        device.clone(),
    );
    Ok(Trained { predictor, report })
}

/// Classification: cross-entropy over labels, scored by validation accuracy.
///
/// A bag student's hashed-feature table (`linear`, `mlp`) is trained sparsely: each step reads only
/// the rows its batch uses (a fresh leaf tensor the loss differentiates), updates them with row-wise
/// Adagrad (one accumulator per row, `row_sq_grads`, checkpointed with the job), and writes them
/// back; AdamW updates the dense rest. A dense gradient and AdamW step over the whole table cost
/// time in proportion to the table, not the batch (mlp/small trained at ~70 mails/s that way).
struct Classify<B: AutodiffBackend> {
    train: Encoded,
    valid: Encoded,
    loss: burn::nn::loss::CrossEntropyLoss<B>,
    device: B::Device,
    /// Row-wise Adagrad's running sum of mean squared gradients, per table row (empty: no table).
    row_sq_grads: RefCell<Vec<f32>>,
}

/// The row-wise Adagrad state's file in a checkpoint directory.
const SPARSE_STATE: &str = "sparse.bin";
/// The table's Adagrad learning rate, as a multiple of the job's (AdamW) learning rate.
const SPARSE_LR_SCALE: f64 = 10.0;

impl<B: AutodiffBackend> Classify<B> {
    fn targets(&self, batch: &[usize]) -> Tensor<B, 1, Int> {
        let targets: Vec<i32> = batch.iter().map(|&i| self.train.labels[i] as i32).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [batch.len()]), &self.device)
    }
}

impl<B: AutodiffBackend> Objective<B> for Classify<B> {
    type Model = Student<B>;

    fn train_len(&self) -> usize {
        self.train.ids.len()
    }

    fn valid_len(&self) -> usize {
        self.valid.ids.len()
    }

    fn batch_loss(&self, model: &Student<B>, batch: &[usize]) -> Tensor<B, 1> {
        let ids: Vec<Vec<u32>> = batch.iter().map(|&i| self.train.ids[i].clone()).collect();
        let inputs = Inputs::<B>::from_ids(&ids, 1, &self.device);
        self.loss
            .forward(model.forward(&inputs), self.targets(batch))
    }

    fn sparse_loss(
        &self,
        model: &Student<B>,
        batch: &[usize],
    ) -> Option<(Tensor<B, 1>, SparseRows<B>)> {
        let table = model.sparse_table()?;
        // The rows this batch reads, padding (0) included so that padded positions stay 0.
        let mut ids: Vec<u32> = batch
            .iter()
            .flat_map(|&i| self.train.ids[i].iter().copied())
            .chain([0])
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let local: Vec<Vec<u32>> = batch
            .iter()
            .map(|&i| {
                self.train.ids[i]
                    .iter()
                    .map(|id| ids.binary_search(id).unwrap_or(0) as u32)
                    .collect()
            })
            .collect();
        let rows = Tensor::from_inner(table.inner().select(0, self.index(&ids))).require_grad();
        let inputs = Inputs::<B>::from_ids(&local, 1, &self.device);
        let loss = self.loss.forward(
            model.forward_rows(rows.clone(), &inputs),
            self.targets(batch),
        );
        Some((loss, SparseRows { ids, rows }))
    }

    fn apply_sparse(
        &self,
        model: Student<B>,
        sparse: SparseRows<B>,
        grads: &B::Gradients,
        learning_rate: f64,
    ) -> Student<B> {
        let Some(grad) = sparse.rows.grad(grads) else {
            return model;
        };
        let [n, width] = grad.dims();
        let g = crate::model::floats(grad);
        let mut acc = self.row_sq_grads.borrow_mut();
        if g.len() != n * width || sparse.ids.iter().any(|&id| id as usize >= acc.len()) {
            return model;
        }
        let lr = (learning_rate * SPARSE_LR_SCALE) as f32;
        let mut delta = vec![0f32; n * width];
        for ((&id, row), out) in sparse
            .ids
            .iter()
            .zip(g.chunks_exact(width))
            .zip(delta.chunks_exact_mut(width))
        {
            let mean_sq = row.iter().map(|x| x * x).sum::<f32>() / width as f32;
            let a = &mut acc[id as usize];
            *a += mean_sq;
            if *a > 0.0 {
                let scale = -lr / (a.sqrt() + 1e-10);
                for (o, x) in out.iter_mut().zip(row) {
                    *o = x * scale;
                }
            }
        }
        let index = self.index(&sparse.ids);
        let delta = Tensor::<B::InnerBackend, 2>::from_data(
            TensorData::new(delta, [n, width]),
            &self.device,
        );
        model.map_table(|table| {
            Tensor::from_inner(
                table
                    .inner()
                    .select_assign(0, index, delta, IndexingUpdateOp::Add),
            )
            .require_grad()
        })
    }

    fn save_state(&self, dir: &Path) -> Result<()> {
        let acc = self.row_sq_grads.borrow();
        if acc.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = acc.iter().flat_map(|x| x.to_le_bytes()).collect();
        let tmp = dir.join(format!("{SPARSE_STATE}.tmp"));
        let path = dir.join(SPARSE_STATE);
        std::fs::write(&tmp, bytes).map_err(|e| TrainingError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TrainingError::io(&path, e))
    }

    fn load_state(&self, dir: &Path) -> Result<()> {
        let mut acc = self.row_sq_grads.borrow_mut();
        if acc.is_empty() {
            return Ok(());
        }
        let path = dir.join(SPARSE_STATE);
        let bytes = std::fs::read(&path).map_err(|e| TrainingError::io(&path, e))?;
        if bytes.len() != acc.len() * 4 {
            return Err(TrainingError::Artefact {
                path,
                message: format!(
                    "{} bytes, expected {} (one f32 per table row)",
                    bytes.len(),
                    acc.len() * 4
                ),
            });
        }
        for (a, b) in acc.iter_mut().zip(bytes.chunks_exact(4)) {
            *a = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    fn score(&self, model: &Student<B::InnerBackend>) -> Score {
        Score {
            primary: accuracy_of(model, &self.valid, &self.device),
            tie_break: 0.0,
        }
    }
}

impl<B: AutodiffBackend> Classify<B> {
    fn index(&self, ids: &[u32]) -> Tensor<B::InnerBackend, 1, Int> {
        let values: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        Tensor::from_data(TensorData::new(values, [ids.len()]), &self.device)
    }
}

/// The rows of a bag student's table one batch reads (global ids, sorted), as the leaf tensor the
/// batch's loss was computed from (see [`Objective::sparse_loss`]).
pub(crate) struct SparseRows<B: AutodiffBackend> {
    ids: Vec<u32>,
    rows: Tensor<B, 2>,
}

/// A validation score: higher `primary` is better; on equal `primary`, higher `tie_break` is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Score {
    /// Accuracy (classification) or exact match (generation).
    pub primary: f64,
    /// 0 for classification; minus the validation loss for generation.
    pub tie_break: f64,
}

/// What differs between task kinds in the training loop: the model, the loss of a batch of
/// training examples, and the validation score that early stopping follows.
pub(crate) trait Objective<B: AutodiffBackend> {
    /// The module trained.
    type Model: AutodiffModule<B> + Clone;
    /// Training examples.
    fn train_len(&self) -> usize;
    /// Validation examples.
    fn valid_len(&self) -> usize;
    /// Mean loss over the training examples at `batch` (indices).
    fn batch_loss(&self, model: &Self::Model, batch: &[usize]) -> Tensor<B, 1>;
    /// For a model with a table trained sparsely: the batch's loss computed from the rows it reads
    /// (`None`: train densely with [`Objective::batch_loss`]).
    fn sparse_loss(
        &self,
        _model: &Self::Model,
        _batch: &[usize],
    ) -> Option<(Tensor<B, 1>, SparseRows<B>)> {
        None
    }
    /// Updates the rows of [`Objective::sparse_loss`] from their gradients and writes them back.
    fn apply_sparse(
        &self,
        model: Self::Model,
        _sparse: SparseRows<B>,
        _grads: &B::Gradients,
        _learning_rate: f64,
    ) -> Self::Model {
        model
    }
    /// Writes the objective's own optimiser state (if any) into a checkpoint directory.
    fn save_state(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// Reads what [`Objective::save_state`] wrote.
    fn load_state(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    /// The validation score of a model.
    fn score(&self, model: &<Self::Model as AutodiffModule<B>>::InnerModule) -> Score;
}

/// Settings of [`fit`] shared by every task kind.
pub(crate) struct FitSetup<'a> {
    pub options: &'a TrainOptions,
    pub learning_rate: f64,
    pub fingerprint: String,
    pub checkpoint_dir: Option<&'a Path>,
    pub uses_dropout: bool,
}

/// The training loop every task kind shares: AdamW over seeded shuffles, validation after each
/// epoch, early stopping, checkpoints and resume, progress and cancellation. `model` is freshly
/// initialised (under the seeded RNG) by the caller. Returns the best model and the report.
pub(crate) fn fit<B: AutodiffBackend, O: Objective<B>>(
    objective: &O,
    mut model: O::Model,
    setup: &FitSetup<'_>,
    device: &B::Device,
    on_epoch: &mut dyn FnMut(&EpochProgress) -> ControlFlow<()>,
) -> Result<(<O::Model as AutodiffModule<B>>::InnerModule, TrainReport)> {
    let options = setup.options;
    let learning_rate = setup.learning_rate;
    let mut optim = AdamWConfig::new()
        .with_weight_decay(options.weight_decay as f32)
        .init::<B, O::Model>();
    let mut best = model.valid();
    let mut state = CheckpointState {
        fingerprint: setup.fingerprint.clone(),
        epoch: 0,
        best_epoch: 0,
        best_val_accuracy: f64::NEG_INFINITY,
        best_tie_break: f64::NEG_INFINITY,
        epochs_since_best: 0,
        train_secs: 0.0,
        history: Vec::new(),
    };
    let mut resumed_after_epoch = None;

    if let Some(dir) = setup.checkpoint_dir {
        std::fs::create_dir_all(dir).map_err(|e| TrainingError::io(dir, e))?;
        let state_path = dir.join("state.json");
        if state_path.exists() {
            let text = std::fs::read_to_string(&state_path)
                .map_err(|e| TrainingError::io(&state_path, e))?;
            let saved: CheckpointState =
                serde_json::from_str(&text).map_err(|e| TrainingError::Artefact {
                    path: dir.to_path_buf(),
                    message: format!("state.json: {e}"),
                })?;
            if saved.fingerprint != setup.fingerprint {
                return Err(TrainingError::CheckpointMismatch {
                    path: dir.to_path_buf(),
                    message: format!("saved {:?}, now {:?}", saved.fingerprint, setup.fingerprint),
                });
            }
            model = model.load_record(load_record::<B, _>(dir, "model", device)?);
            optim = optim.load_record(load_record::<B, _>(dir, "optim", device)?);
            best = best.load_record(load_record::<B::InnerBackend, _>(dir, "best", device)?);
            objective.load_state(dir)?;
            resumed_after_epoch = Some(saved.epoch);
            state = saved;
        }
    }

    let n = objective.train_len();
    let mut stopped_early = state.epochs_since_best >= options.patience && state.epoch > 0;
    let mut epoch_times: Vec<f64> = Vec::new();
    // Examples stepped over (epochs before a resume counted whole).
    let mut seen_total = n * state.epoch;
    while !stopped_early && state.epoch < options.max_epochs {
        let epoch = state.epoch + 1;
        let epoch_start = Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64::new(options.seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F))
            .shuffle(&mut order);
        let _rng = setup
            .uses_dropout
            .then(|| rng::seeded::<B>(device, options.seed.wrapping_add(epoch as u64)));

        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        for chunk in order.chunks(options.batch_size) {
            // Out of time: end the epoch here (at least one step is taken per epoch).
            let spent = state.train_secs + epoch_start.elapsed().as_secs_f64();
            if seen > 0 && options.max_train_secs.is_some_and(|limit| spent >= limit) {
                break;
            }
            seen += chunk.len();
            let (loss, sparse) = match objective.sparse_loss(&model, chunk) {
                Some((loss, rows)) => (loss, Some(rows)),
                None => (objective.batch_loss(&model, chunk), None),
            };
            loss_sum += loss.clone().into_scalar().elem::<f64>() * chunk.len() as f64;
            let grads = loss.backward();
            if let Some(rows) = sparse {
                model = objective.apply_sparse(model, rows, &grads, learning_rate);
            }
            let grads = GradientsParams::from_grads(grads, &model);
            model = optim.step(learning_rate, model, grads);
        }
        drop(_rng);
        seen_total += seen;
        let step_secs = epoch_start.elapsed().as_secs_f64();

        let current = model.valid();
        let score = objective.score(&current);
        let better = score.primary > state.best_val_accuracy
            || (score.primary == state.best_val_accuracy && score.tie_break > state.best_tie_break);
        if better {
            state.best_val_accuracy = score.primary;
            state.best_tie_break = score.tie_break;
            state.best_epoch = epoch;
            state.epochs_since_best = 0;
            best = current;
        } else {
            state.epochs_since_best += 1;
        }
        state.epoch = epoch;
        state.train_secs += step_secs;
        let out_of_time = options
            .max_train_secs
            .is_some_and(|limit| state.train_secs >= limit);
        stopped_early = (state.epochs_since_best >= options.patience || out_of_time)
            && epoch < options.max_epochs;

        if let Some(dir) = setup.checkpoint_dir {
            save_record::<B, _>(dir, "model", model.clone().into_record())?;
            save_record::<B, _>(dir, "optim", optim.to_record())?;
            objective.save_state(dir)?;
            if state.best_epoch == epoch {
                save_record::<B::InnerBackend, _>(dir, "best", best.clone().into_record())?;
            }
        }

        let epoch_secs = epoch_start.elapsed().as_secs_f64();
        epoch_times.push(epoch_secs);
        let mean = epoch_times.iter().sum::<f64>() / epoch_times.len() as f64;
        let progress = EpochProgress {
            epoch,
            max_epochs: options.max_epochs,
            train_loss: loss_sum / seen.max(1) as f64,
            val_accuracy: score.primary,
            best_val_accuracy: state.best_val_accuracy,
            best_epoch: state.best_epoch,
            epoch_secs,
            examples_per_sec: seen as f64 / step_secs.max(1e-9),
            eta_secs: if stopped_early {
                0.0
            } else {
                mean * (options.max_epochs - epoch) as f64
            },
        };
        state.history.push(progress.clone());
        if let Some(dir) = setup.checkpoint_dir {
            let path = dir.join("state.json");
            let tmp = dir.join("state.json.tmp");
            let text = serde_json::to_string_pretty(&state).unwrap_or_default();
            std::fs::write(&tmp, text).map_err(|e| TrainingError::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| TrainingError::io(&path, e))?;
        }
        if on_epoch(&progress).is_break() {
            return Err(TrainingError::Cancelled);
        }
    }

    let report = TrainReport {
        backend: B::InnerBackend::name(device),
        seed: options.seed,
        learning_rate,
        epochs_run: state.epoch,
        best_epoch: state.best_epoch,
        best_val_accuracy: state.best_val_accuracy,
        stopped_early,
        resumed_after_epoch,
        train_examples: n,
        validation_examples: objective.valid_len(),
        train_secs: state.train_secs,
        examples_per_sec: seen_total as f64 / state.train_secs.max(1e-9),
        num_params: best.num_params(),
        history: state.history,
    };
    Ok((best, report))
}
