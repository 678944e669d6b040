//! Student families (the *class*) and their sizes.
//!
//! | class         | input                     | model                                                  |
//! |---------------|---------------------------|--------------------------------------------------------|
//! | `linear`      | hashed word uni+bigrams + char 2–4-grams | logistic regression (embedding bag of width #labels) |
//! | `mlp`         | hashed word uni+bigrams + char 2–4-grams | embedding bag → hidden layer → output   |
//! | `cnn`         | UTF-8 bytes               | byte embeddings → Conv1d ×k → max over time → output   |
//! | `transformer` | hashed words, in order    | token + position embeddings → encoder → mean → output  |
//! | `seq2seq`     | UTF-8 bytes               | encoder-decoder transformer, greedy decoding (generation) |
//!
//! The first four classify ([`TaskKind::Classification`]); `seq2seq` generates short texts
//! ([`TaskKind::Generation`]) and is trained and served through [`crate::generation`].
//!
//! Each class comes in named sizes (`tiny`, `small`, `base`; see [`StudentSpec::config`]) or any size
//! built from its config struct. Model code is generic over the burn backend; the backend is chosen
//! by the caller (see [`crate::backend`]).

mod cnn;
mod linear;
mod mlp;
pub mod seq2seq;
mod transformer;

use std::fmt;
use std::str::FromStr;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use cnn::{ByteCnn, ByteCnnConfig};
pub use linear::{LinearBag, LinearBagConfig};
pub use mlp::{BagMlp, BagMlpConfig, DenseMlpParams};
pub use seq2seq::{Seq2seq, Seq2seqConfig};
pub use transformer::{Encoder, EncoderConfig};

use crate::error::{Result, TrainingError};
use crate::features::{CharNgrams, Featuriser, Inputs};

/// Sums embeddings over unpadded positions and divides by √count: for a binary bag of n-grams this is
/// the L2-normalised bag (as in TF-IDF without the IDF) times the table.
pub(crate) fn pool_l2<B: Backend>(embedded: Tensor<B, 3>, mask: Tensor<B, 2>) -> Tensor<B, 2> {
    let [batch, _, d] = embedded.dims();
    let summed = (embedded * mask.clone().unsqueeze_dim::<3>(2))
        .sum_dim(1)
        .reshape([batch, d]);
    summed / mask.sum_dim(1).clamp_min(1.0).sqrt()
}

/// What a student does with a text: pick one of a fixed set of labels, or write a short answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// One label per text, measured by accuracy.
    #[default]
    Classification,
    /// A short text per text (extraction, normalisation, answers of up to ~64 tokens), measured by
    /// exact match and character error rate.
    Generation,
}

impl TaskKind {
    /// `classification` or `generation`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Generation => "generation",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter tensor's values as plain row-major floats (empty if the backend cannot convert them),
/// for serving without tensors (see [`crate::artefact::Predictor::classify`]).
pub(crate) fn floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// A student family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudentClass {
    /// Hashed n-gram logistic regression.
    Linear,
    /// Hashed n-gram embedding bag + MLP.
    Mlp,
    /// Byte-level CNN.
    Cnn,
    /// Small transformer encoder.
    Transformer,
    /// Small transformer encoder-decoder (generation).
    Seq2seq,
}

impl StudentClass {
    /// Every class, in order of increasing cost.
    pub const ALL: [StudentClass; 5] = [
        Self::Linear,
        Self::Mlp,
        Self::Cnn,
        Self::Transformer,
        Self::Seq2seq,
    ];
    /// Every named size.
    pub const SIZES: [&'static str; 3] = ["tiny", "small", "base"];

    /// The class's name as used in specs (`linear`, `mlp`, `cnn`, `transformer`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
            Self::Transformer => "transformer",
            Self::Seq2seq => "seq2seq",
        }
    }

    /// The task kind the class serves.
    pub fn task(self) -> TaskKind {
        match self {
            Self::Seq2seq => TaskKind::Generation,
            _ => TaskKind::Classification,
        }
    }

    /// The AdamW learning rate the trainer uses for this class unless told otherwise.
    pub fn default_learning_rate(self) -> f64 {
        match self {
            Self::Linear => 0.05,
            Self::Mlp => 0.005,
            Self::Cnn => 0.003,
            Self::Transformer | Self::Seq2seq => 0.001,
        }
    }
}

impl fmt::Display for StudentClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StudentClass {
    type Err = TrainingError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| TrainingError::UnknownClass {
                class: s.to_string(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }
}

/// A target as the distill service names it: `class/size`, e.g. `mlp/small`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StudentSpec {
    /// The family.
    pub class: StudentClass,
    /// One of [`StudentClass::SIZES`].
    pub size: String,
}

impl FromStr for StudentSpec {
    type Err = TrainingError;

    fn from_str(s: &str) -> Result<Self> {
        let (class, size) = s
            .split_once('/')
            .ok_or_else(|| TrainingError::BadSpec(s.to_string()))?;
        let class: StudentClass = class.trim().parse()?;
        let size = size.trim();
        if !StudentClass::SIZES.contains(&size) {
            return Err(TrainingError::UnknownSize {
                class: class.to_string(),
                size: size.to_string(),
                known: StudentClass::SIZES.join(", "),
            });
        }
        Ok(Self {
            class,
            size: size.to_string(),
        })
    }
}

impl fmt::Display for StudentSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.class, self.size)
    }
}

impl StudentSpec {
    /// The size's full configuration for `num_labels` classes (ignored by `seq2seq`).
    pub fn config(&self, num_labels: usize) -> Result<StudentConfig> {
        let n = num_labels;
        let chars = Some(CharNgrams::DEFAULT);
        let unknown = || TrainingError::UnknownSize {
            class: self.class.to_string(),
            size: self.size.clone(),
            known: StudentClass::SIZES.join(", "),
        };
        Ok(match (self.class, self.size.as_str()) {
            (StudentClass::Linear, "tiny") => StudentConfig::Linear(
                LinearBagConfig::new(n)
                    .with_buckets(1 << 16)
                    .with_chars(chars),
            ),
            (StudentClass::Linear, "small") => StudentConfig::Linear(
                LinearBagConfig::new(n)
                    .with_buckets(1 << 18)
                    .with_chars(chars),
            ),
            (StudentClass::Linear, "base") => StudentConfig::Linear(
                LinearBagConfig::new(n)
                    .with_buckets(1 << 20)
                    .with_chars(chars),
            ),
            (StudentClass::Mlp, "tiny") => StudentConfig::Mlp(
                BagMlpConfig::new(n)
                    .with_buckets(1 << 16)
                    .with_chars(chars)
                    .with_d_embed(32)
                    .with_d_hidden(32),
            ),
            // The embedding table is trained with sparse row updates (only the rows a batch uses),
            // so its size costs memory, not time; 2^16 rows keep the artefact small.
            (StudentClass::Mlp, "small") => {
                StudentConfig::Mlp(BagMlpConfig::new(n).with_buckets(1 << 16).with_chars(chars))
            }
            (StudentClass::Mlp, "base") => StudentConfig::Mlp(
                BagMlpConfig::new(n)
                    .with_buckets(1 << 16)
                    .with_chars(chars)
                    .with_d_embed(128)
                    .with_d_hidden(128),
            ),
            (StudentClass::Cnn, "tiny") => StudentConfig::Cnn(
                ByteCnnConfig::new(n)
                    .with_max_len(512)
                    .with_d_embed(16)
                    .with_channels(32)
                    .with_kernel_sizes(vec![3, 5]),
            ),
            (StudentClass::Cnn, "small") => StudentConfig::Cnn(ByteCnnConfig::new(n)),
            (StudentClass::Cnn, "base") => StudentConfig::Cnn(
                ByteCnnConfig::new(n)
                    .with_max_len(2048)
                    .with_d_embed(64)
                    .with_channels(128),
            ),
            (StudentClass::Transformer, "tiny") => StudentConfig::Transformer(
                EncoderConfig::new(n)
                    .with_buckets(1 << 14)
                    .with_max_len(128)
                    .with_d_model(32)
                    .with_n_heads(2)
                    .with_n_layers(1)
                    .with_d_ff(64),
            ),
            (StudentClass::Transformer, "small") => {
                StudentConfig::Transformer(EncoderConfig::new(n))
            }
            (StudentClass::Transformer, "base") => StudentConfig::Transformer(
                EncoderConfig::new(n)
                    .with_buckets(1 << 16)
                    .with_max_len(512)
                    .with_d_model(128)
                    .with_n_layers(4)
                    .with_d_ff(256),
            ),
            (StudentClass::Seq2seq, "tiny") => StudentConfig::Seq2seq(
                Seq2seqConfig::new()
                    .with_max_input_len(128)
                    .with_d_model(64)
                    .with_n_heads(4)
                    .with_encoder_layers(1)
                    .with_decoder_layers(1)
                    .with_d_ff(128),
            ),
            (StudentClass::Seq2seq, "small") => StudentConfig::Seq2seq(
                Seq2seqConfig::new()
                    .with_d_model(128)
                    .with_encoder_layers(2)
                    .with_decoder_layers(2)
                    .with_d_ff(256),
            ),
            (StudentClass::Seq2seq, "base") => StudentConfig::Seq2seq(
                Seq2seqConfig::new()
                    .with_max_input_len(512)
                    .with_d_model(256)
                    .with_n_heads(8)
                    .with_encoder_layers(3)
                    .with_decoder_layers(3)
                    .with_d_ff(512),
            ),
            _ => return Err(unknown()),
        })
    }
}

/// A student's full architecture: class and every dimension. Saved in the artefact's metadata.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum StudentConfig {
    /// See [`LinearBagConfig`].
    Linear(LinearBagConfig),
    /// See [`BagMlpConfig`].
    Mlp(BagMlpConfig),
    /// See [`ByteCnnConfig`].
    Cnn(ByteCnnConfig),
    /// See [`EncoderConfig`].
    Transformer(EncoderConfig),
    /// See [`Seq2seqConfig`].
    Seq2seq(Seq2seqConfig),
}

impl StudentConfig {
    /// The family.
    pub fn class(&self) -> StudentClass {
        match self {
            Self::Linear(_) => StudentClass::Linear,
            Self::Mlp(_) => StudentClass::Mlp,
            Self::Cnn(_) => StudentClass::Cnn,
            Self::Transformer(_) => StudentClass::Transformer,
            Self::Seq2seq(_) => StudentClass::Seq2seq,
        }
    }

    /// The task kind the student serves.
    pub fn task(&self) -> TaskKind {
        self.class().task()
    }

    /// The generation student's config, if this is one.
    pub fn seq2seq(&self) -> Option<&Seq2seqConfig> {
        match self {
            Self::Seq2seq(c) => Some(c),
            _ => None,
        }
    }

    /// Number of output classes (0 for a generation student).
    pub fn num_labels(&self) -> usize {
        match self {
            Self::Seq2seq(_) => 0,
            Self::Linear(c) => c.num_labels,
            Self::Mlp(c) => c.num_labels,
            Self::Cnn(c) => c.num_labels,
            Self::Transformer(c) => c.num_labels,
        }
    }

    /// Whether training draws from the backend's RNG (dropout).
    pub fn uses_dropout(&self) -> bool {
        match self {
            Self::Linear(_) => false,
            Self::Mlp(c) => c.dropout > 0.0,
            Self::Cnn(c) => c.dropout > 0.0,
            Self::Transformer(c) => c.dropout > 0.0,
            Self::Seq2seq(c) => c.dropout > 0.0,
        }
    }

    /// The featuriser the student reads.
    pub fn featuriser(&self) -> Featuriser {
        match self {
            Self::Linear(c) => c.featuriser(),
            Self::Mlp(c) => c.featuriser(),
            Self::Cnn(c) => c.featuriser(),
            Self::Transformer(c) => c.featuriser(),
            Self::Seq2seq(c) => c.featuriser(),
        }
    }

    /// Checks dimensions before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainingError::Config(m));
        if let Self::Seq2seq(c) = self {
            return c.validate().map_err(TrainingError::Config);
        }
        if self.num_labels() < 2 {
            return bad(format!(
                "a classifier needs at least 2 labels, got {}",
                self.num_labels()
            ));
        }
        self.featuriser().validate()?;
        match self {
            Self::Linear(_) => Ok(()),
            Self::Mlp(c) if c.d_embed == 0 || c.d_hidden == 0 => {
                bad(format!("mlp dimensions must be > 0: {c:?}"))
            }
            Self::Cnn(c) if c.d_embed == 0 || c.channels == 0 || c.kernel_sizes.is_empty() => bad(
                format!("cnn dimensions must be > 0 with at least one kernel: {c:?}"),
            ),
            Self::Cnn(c) if c.kernel_sizes.iter().any(|k| k % 2 == 0) => bad(format!(
                "cnn kernel sizes must be odd: {:?}",
                c.kernel_sizes
            )),
            Self::Transformer(c)
                if c.d_model == 0 || c.n_heads == 0 || c.d_model % c.n_heads != 0 =>
            {
                bad(format!(
                    "transformer d_model must be a positive multiple of n_heads: {c:?}"
                ))
            }
            Self::Transformer(c) if c.n_layers == 0 || c.d_ff == 0 => bad(format!(
                "transformer needs at least one layer and d_ff > 0: {c:?}"
            )),
            _ => Ok(()),
        }
    }

    /// A freshly initialised classification student (draws from the backend's RNG for all but
    /// `linear`). A generation student is a [`Seq2seq`] instead: this returns a config error for it.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Student<B>> {
        Ok(match self {
            Self::Linear(c) => Student::Linear(c.init(device)),
            Self::Mlp(c) => Student::Mlp(c.init(device)),
            Self::Cnn(c) => Student::Cnn(c.init(device)),
            Self::Transformer(c) => Student::Transformer(c.init(device)),
            Self::Seq2seq(_) => return Err(self.wrong_task(TaskKind::Classification)),
        })
    }

    /// The error for using this student on a task kind it does not serve.
    pub fn wrong_task(&self, wanted: TaskKind) -> TrainingError {
        TrainingError::Config(format!(
            "student class {} serves {} tasks, not {wanted} (classification: {}; generation: {})",
            self.class(),
            self.task(),
            StudentClass::ALL
                .iter()
                .filter(|c| c.task() == TaskKind::Classification)
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", "),
            StudentClass::ALL
                .iter()
                .filter(|c| c.task() == TaskKind::Generation)
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}

/// Any student: one module type that the trainer, checkpoints and artefacts handle alike.
#[derive(Module, Debug)]
pub enum Student<B: Backend> {
    /// See [`LinearBag`].
    Linear(LinearBag<B>),
    /// See [`BagMlp`].
    Mlp(BagMlp<B>),
    /// See [`ByteCnn`].
    Cnn(ByteCnn<B>),
    /// See [`Encoder`].
    Transformer(Encoder<B>),
}

impl<B: Backend> Student<B> {
    /// Argmax predictions for pre-encoded inputs, in batches.
    pub(crate) fn predict_ids(&self, ids: &[Vec<u32>], device: &B::Device) -> Vec<(usize, f32)> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(256) {
            let logits = self.forward(&Inputs::from_ids(chunk, 1, device));
            let probs = burn::tensor::activation::softmax(logits, 1);
            let [rows, cols] = probs.dims();
            let values = probs
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            for r in 0..rows.min(values.len() / cols.max(1)) {
                let row = &values[r * cols..(r + 1) * cols];
                let (best, p) =
                    row.iter()
                        .copied()
                        .enumerate()
                        .fold(
                            (0, f32::MIN),
                            |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
                        );
                out.push((best, p));
            }
        }
        out
    }

    /// The hashed-feature table of a bag student (`linear`, `mlp`: `[buckets, width]`), which the
    /// trainer updates sparsely (only the rows a batch uses); `None` for the others.
    pub(crate) fn sparse_table(&self) -> Option<Tensor<B, 2>> {
        match self {
            Self::Linear(m) => Some(m.table()),
            Self::Mlp(m) => Some(m.table()),
            Self::Cnn(_) | Self::Transformer(_) => None,
        }
    }

    /// [`Student::forward`] of a bag student reading the table `rows` instead of its own (`inputs`
    /// index into `rows`); the others ignore `rows`.
    pub(crate) fn forward_rows(&self, rows: Tensor<B, 2>, inputs: &Inputs<B>) -> Tensor<B, 2> {
        match self {
            Self::Linear(m) => m.forward_rows(rows, inputs),
            Self::Mlp(m) => m.forward_rows(rows, inputs),
            Self::Cnn(_) | Self::Transformer(_) => self.forward(inputs),
        }
    }

    /// A bag student with its table replaced by `f(table)`; the others unchanged.
    pub(crate) fn map_table(self, f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>) -> Self {
        match self {
            Self::Linear(m) => Self::Linear(m.map_table(f)),
            Self::Mlp(m) => Self::Mlp(m.map_table(f)),
            other => other,
        }
    }

    /// `[batch, num_labels]` logits for a padded batch.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        match self {
            Self::Linear(m) => m.forward(inputs),
            Self::Mlp(m) => m.forward(inputs),
            Self::Cnn(m) => m.forward(inputs),
            Self::Transformer(m) => m.forward(inputs),
        }
    }
}
