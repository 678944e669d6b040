//! Short generation (extraction, normalisation, short answers): training a [`Seq2seq`] student and
//! serving it as a [`Generator`].
//!
//! Examples are the classification [`Example`]s read the other way: `text` is the input, `label` the
//! reference answer. Training shares the classification loop ([`crate::trainer`]: AdamW, seeded
//! shuffles, checkpoints and resume, progress, cancellation); what differs is the loss
//! (teacher-forced cross-entropy over target tokens, padding masked) and the score early stopping
//! follows: exact match of greedy generations on the validation split, ties broken by the lower
//! validation loss. In [`EpochProgress`] and [`TrainReport`], `val_accuracy` and
//! `best_val_accuracy` are that exact match.
//!
//! The artefact is the classification one ([`crate::artefact`]) with `task: generation`, a
//! `seq2seq` config, no labels and the byte featuriser: tokenisation is byte-level, so the
//! "tokeniser" is fully described by the config.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::artefact::{self, Artefact, ArtefactMetadata};
use crate::backend::{self, Inference};
use crate::data::{Example, LabelVocab};
use crate::error::{Result, TrainingError};
use crate::model::seq2seq::{BOS, EOS, PAD, decode_tokens, pad_ids};
use crate::model::{Seq2seq, Seq2seqConfig, StudentConfig, TaskKind};
use crate::rng;
use crate::trainer::{self, EpochProgress, FitSetup, Objective, Score, TrainOptions, TrainReport};

/// Rows decoded together when scoring validation or evaluating.
const DECODE_BATCH: usize = 128;

/// One generation training job.
#[derive(Clone, Debug)]
pub struct GenTrainJob<'a> {
    /// A [`StudentConfig::Seq2seq`] config.
    pub config: StudentConfig,
    /// Examples to fit: `text` is the input, `label` the target text (never empty).
    pub train: &'a [Example],
    /// Examples for early stopping (exact match).
    pub validation: &'a [Example],
    /// Optimiser and stopping settings.
    pub options: TrainOptions,
    /// Where to checkpoint every epoch and resume from; `None` keeps everything in memory.
    pub checkpoint_dir: Option<PathBuf>,
}

/// A trained generator and how it got there.
#[derive(Debug)]
pub struct TrainedGenerator {
    /// The best weights, ready to generate or to save as an artefact.
    pub generator: Generator,
    /// The run's numbers (`best_val_accuracy` is validation exact match).
    pub report: TrainReport,
}

/// What [`Generator::generate`] returns for one input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// Tokens (bytes) the student read from the input, after truncation to `max_input_len`.
    pub input_tokens: usize,
    /// Tokens (bytes) it generated, the end token not counted.
    pub output_tokens: usize,
}

/// Token ids of a generation data set.
struct Encoded {
    inputs: Vec<Vec<u32>>,
    targets: Vec<Vec<u32>>,
}

fn encode(
    config: &Seq2seqConfig,
    examples: &[Example],
    what: &str,
    template: Option<&str>,
) -> Result<Encoded> {
    let mut out = Encoded {
        inputs: Vec::with_capacity(examples.len()),
        targets: Vec::with_capacity(examples.len()),
    };
    for (i, example) in examples.iter().enumerate() {
        if example.label.trim().is_empty() {
            return Err(TrainingError::EmptyData(format!(
                "{what} example {} has an empty target (label); a generation student needs a \
                 non-empty answer for every input",
                i + 1
            )));
        }
        out.inputs
            .push(config.encode_input(crate::template::strip_opt(template, &example.text)));
        out.targets.push(config.encode_target(&example.label));
    }
    Ok(out)
}

/// Mean cross-entropy over the non-padding positions of `targets` (`[batch, len]`) under `logits`
/// (`[batch, len, vocab]`).
fn token_loss<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [batch, len, vocab] = logits.dims();
    let log_probs = log_softmax(logits.reshape([batch * len, vocab]), 1);
    let targets = targets.reshape([batch * len, 1]);
    let mask = targets
        .clone()
        .equal_elem(PAD as i64)
        .bool_not()
        .float()
        .reshape([batch * len]);
    let picked = log_probs.gather(1, targets).reshape([batch * len]);
    (picked * mask.clone()).sum().neg() / mask.sum().clamp_min(1.0)
}

/// Teacher-forced loss of `model` on the examples at `rows` of `data`.
fn batch_loss<B: Backend>(
    model: &Seq2seq<B>,
    data: &Encoded,
    rows: &[usize],
    device: &B::Device,
) -> Tensor<B, 1> {
    let inputs: Vec<Vec<u32>> = rows.iter().map(|&i| data.inputs[i].clone()).collect();
    let decoder_inputs: Vec<Vec<u32>> = rows
        .iter()
        .map(|&i| {
            std::iter::once(BOS)
                .chain(data.targets[i].iter().copied())
                .collect()
        })
        .collect();
    let decoder_targets: Vec<Vec<u32>> = rows
        .iter()
        .map(|&i| data.targets[i].iter().copied().chain([EOS]).collect())
        .collect();
    let memory = model.encode(&inputs, device);
    let logits = model.decode_logits(&memory, pad_ids::<B>(&decoder_inputs, device));
    token_loss(logits, pad_ids::<B>(&decoder_targets, device))
}

/// Greedy generations for many inputs, in batches.
fn generate_ids<B: Backend>(
    model: &Seq2seq<B>,
    inputs: &[Vec<u32>],
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(DECODE_BATCH) {
        out.extend(model.greedy(&model.encode(chunk, device)));
    }
    out
}

/// Generation: token cross-entropy, scored by validation exact match then validation loss.
struct Generate<B: AutodiffBackend> {
    train: Encoded,
    valid: Encoded,
    device: B::Device,
}

impl<B: AutodiffBackend> Objective<B> for Generate<B> {
    type Model = Seq2seq<B>;

    fn train_len(&self) -> usize {
        self.train.inputs.len()
    }

    fn valid_len(&self) -> usize {
        self.valid.inputs.len()
    }

    fn batch_loss(&self, model: &Seq2seq<B>, batch: &[usize]) -> Tensor<B, 1> {
        batch_loss(model, &self.train, batch, &self.device)
    }

    fn score(&self, model: &Seq2seq<B::InnerBackend>) -> Score {
        let generated = generate_ids(model, &self.valid.inputs, &self.device);
        let exact = generated
            .iter()
            .zip(&self.valid.targets)
            .filter(|(g, t)| g == t)
            .count();
        let n = self.valid.inputs.len();
        let rows: Vec<usize> = (0..n).collect();
        let mut loss = 0.0;
        for chunk in rows.chunks(DECODE_BATCH) {
            let l = batch_loss(model, &self.valid, chunk, &self.device);
            loss += l.into_scalar().elem::<f64>() * chunk.len() as f64;
        }
        Score {
            primary: exact as f64 / n.max(1) as f64,
            tie_break: -(loss / n.max(1) as f64),
        }
    }
}

/// Trains a generation student on backend `B` (autodiff). See [`crate::engine::train_generator`]
/// for the entry point on the default backend.
pub(crate) fn train<B: AutodiffBackend>(
    job: &GenTrainJob<'_>,
    device: &B::Device,
    on_epoch: &mut dyn FnMut(&EpochProgress) -> ControlFlow<()>,
) -> Result<(Seq2seq<B::InnerBackend>, TrainReport)> {
    let Some(config) = job.config.seq2seq() else {
        return Err(job.config.wrong_task(TaskKind::Generation));
    };
    let learning_rate = trainer::check_job(&job.config, job.train, job.validation, &job.options)?;
    let template = trainer::effective_template(&job.options, job.train, job.validation);
    let template = template.as_deref();
    let objective = Generate::<B> {
        train: encode(config, job.train, "training", template)?,
        valid: encode(config, job.validation, "validation", template)?,
        device: device.clone(),
    };
    let model: Seq2seq<B> = rng::init_seeded(device, job.options.seed, || Ok(config.init(device)))?;
    let setup = FitSetup {
        options: &job.options,
        learning_rate,
        fingerprint: trainer::fingerprint(
            &job.config,
            &[],
            job.train,
            job.validation,
            &job.options,
            learning_rate,
        ),
        checkpoint_dir: job.checkpoint_dir.as_deref(),
        uses_dropout: job.config.uses_dropout(),
    };
    trainer::fit(&objective, model, &setup, device, on_epoch)
}

/// A generation student ready to serve, on the serving backend ([`crate::backend::Inference`]),
/// so its kernels are compiled (optimised) in this crate rather than in the caller's.
#[derive(Debug)]
pub struct Generator {
    model: Seq2seq<Inference>,
    config: Seq2seqConfig,
    metadata: ArtefactMetadata,
    device: Device<Inference>,
}

impl Generator {
    pub(crate) fn new(
        model: Seq2seq<Inference>,
        config: Seq2seqConfig,
        train: Option<TrainReport>,
        template: Option<String>,
    ) -> Self {
        let metadata = ArtefactMetadata::new(
            StudentConfig::Seq2seq(config.clone()),
            LabelVocab::none(),
            model.num_params(),
            train,
            template,
        );
        Self {
            model,
            config,
            metadata,
            device: backend::device(),
        }
    }

    /// Loads the generation artefact in `dir` onto the serving backend's default device. A
    /// classification artefact is refused with an error that says so.
    pub fn load_for_serving(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let metadata = Artefact::metadata(dir)?;
        let config = match (&metadata.task, &metadata.config) {
            (TaskKind::Generation, StudentConfig::Seq2seq(c)) => c.clone(),
            _ => {
                return Err(TrainingError::Artefact {
                    path: dir.to_path_buf(),
                    message: format!(
                        "a {} student ({}), not a generator: load it with \
                         Predictor::load_for_serving",
                        metadata.task, metadata.class
                    ),
                });
            }
        };
        let device = backend::device();
        let model: Seq2seq<Inference> = {
            // Initialisation draws from the backend RNG; the values are overwritten just below.
            let _rng = rng::seeded::<Inference>(&device, 0);
            config.init(&device)
        };
        let model = artefact::load_weights(dir, model, &device)?;
        Ok(Self {
            model,
            config,
            metadata,
            device,
        })
    }

    /// Writes the artefact to `dir` (replacing one already there), atomically by rename.
    /// Returns the artefact's total size in bytes.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<u64> {
        artefact::save_artefact(dir.as_ref(), &self.metadata, &self.model)
    }

    /// The artefact's metadata (`task` is [`TaskKind::Generation`]).
    pub fn metadata(&self) -> &ArtefactMetadata {
        &self.metadata
    }

    /// The student's size.
    pub fn config(&self) -> &Seq2seqConfig {
        &self.config
    }

    /// The underlying burn module.
    pub fn model(&self) -> &Seq2seq<Inference> {
        &self.model
    }

    /// Greedy generation for one input: encoded once, then decoded with the autoregressive cache
    /// until the end token or `max_output_len` tokens.
    pub fn generate(&self, text: &str) -> Generation {
        let input = self.encode(text);
        let memory = self
            .model
            .encode(std::slice::from_ref(&input), &self.device);
        let output = self.model.greedy(&memory).pop().unwrap_or_default();
        Generation {
            text: decode_tokens(&output),
            input_tokens: input.len(),
            output_tokens: output.len(),
        }
    }

    /// Greedy generations for many inputs, decoded in batches (faster per input than
    /// [`Generator::generate`] for evaluation).
    pub fn generate_batch(&self, texts: &[&str]) -> Vec<Generation> {
        let inputs: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t)).collect();
        generate_ids(&self.model, &inputs, &self.device)
            .into_iter()
            .zip(&inputs)
            .map(|(output, input)| Generation {
                text: decode_tokens(&output),
                input_tokens: input.len(),
                output_tokens: output.len(),
            })
            .collect()
    }

    /// How many tokens (bytes, after truncation) the student reads of `text` (at least 1).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// The bytes the student reads of `text`: its template stripped, then encoded.
    fn encode(&self, text: &str) -> Vec<u32> {
        let input = crate::template::strip_opt(self.metadata.template.as_deref(), text);
        self.config.encode_input(input)
    }
}
