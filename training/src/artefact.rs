//! The model artefact: a directory that [`Artefact::load`] turns back into a [`Predictor`]
//! (classification) or [`crate::Generator::load_for_serving`] into a generator (generation);
//! [`Artefact::metadata`]`.task` says which.
//!
//! Layout:
//! - `metadata.json`: [`ArtefactMetadata`] — class and full size config, featuriser, labels, the
//!   training report (including the backend that trained it). Together with the weights this is the
//!   artefact's contract: nothing else is needed to predict.
//! - `model.mpk`: the weights (burn `NamedMpkFileRecorder`, full precision).
//!
//! [`Predictor::save`] writes into a sibling temporary directory and renames it into place, so an
//! interrupted save never leaves a half-written artefact under the final name.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use serde::{Deserialize, Serialize};

use crate::data::LabelVocab;
use crate::error::{Result, TrainingError};
use crate::features::Featuriser;
use crate::model::{Student, StudentClass, StudentConfig, TaskKind};
use crate::report::TrainReport;
use crate::rng;

/// Version of the artefact layout; bumped on incompatible changes.
pub const ARTEFACT_FORMAT: u32 = 1;
const METADATA: &str = "metadata.json";
const WEIGHTS: &str = "model";

/// Everything about an artefact except its weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtefactMetadata {
    /// [`ARTEFACT_FORMAT`] at the time of writing.
    pub format: u32,
    /// What the student does; artefacts written before generation existed are classifiers.
    #[serde(default)]
    pub task: TaskKind,
    /// The family (also inside `config`; here for readers that only want the class).
    pub class: StudentClass,
    /// Architecture and every dimension.
    pub config: StudentConfig,
    /// How text becomes token ids.
    pub featuriser: Featuriser,
    /// Labels in logit order (empty for a generation student).
    pub labels: LabelVocab,
    /// Trainable parameters.
    pub num_params: usize,
    /// How training went (absent for an untrained model).
    pub train: Option<TrainReport>,
    /// The prompt template the student was trained with (`{input}` where the input goes): stripped
    /// from every text before predicting ([`crate::template::strip`]; a text it did not render is
    /// read whole). `None` (and artefacts written before templates were recorded): texts are read
    /// whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Crate version that wrote it.
    pub written_by: String,
}

/// What [`Predictor::classify`] returns for one text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Classification<'a> {
    /// The most likely label.
    pub label: &'a str,
    /// Its probability.
    pub probability: f32,
    /// Tokens the featuriser made of the input text.
    pub input_tokens: usize,
}

/// A student ready to predict, on backend `B`.
#[derive(Debug)]
pub struct Predictor<B: Backend> {
    model: Student<B>,
    metadata: ArtefactMetadata,
    device: B::Device,
    /// The student's weights as plain floats: single predictions without tensors.
    dense: Option<Dense>,
}

/// A linear student, outside burn: `logits = Σ w[id] / √n + b` over the text's n-gram ids, exactly
/// what [`crate::model::LinearBag::forward`] computes, without allocating tensors.
struct DenseLinear {
    labels: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl std::fmt::Debug for DenseLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DenseLinear {{ rows: {}, labels: {} }}",
            self.weights.len() / self.labels.max(1),
            self.labels
        )
    }
}

/// A student whose single-text forward pass runs on plain floats (see [`Predictor::classify`]).
#[derive(Debug)]
enum Dense {
    Linear(DenseLinear),
    Mlp(DenseMlp),
    Cnn(crate::dense::DenseCnn),
    Transformer(crate::dense::DenseEncoder),
}

impl Dense {
    fn of<B: Backend>(model: &Student<B>) -> Option<Dense> {
        match model {
            Student::Linear(m) => DenseLinear::of(m).map(Dense::Linear),
            Student::Mlp(m) => DenseMlp::of(m).map(Dense::Mlp),
            Student::Cnn(m) => crate::dense::DenseCnn::new(m.to_dense()).map(Dense::Cnn),
            Student::Transformer(m) => {
                crate::dense::DenseEncoder::new(m.to_dense()).map(Dense::Transformer)
            }
        }
    }

    /// The best label's index and probability, or `None` if an id is out of range.
    fn best(&self, ids: &[u32]) -> Option<(usize, f32)> {
        match self {
            Dense::Linear(d) => d.best(ids),
            Dense::Mlp(d) => d.best(ids),
            Dense::Cnn(d) => d.logits(ids).map(|l| softmax_best(&l)),
            Dense::Transformer(d) => d.logits(ids).map(|l| softmax_best(&l)),
        }
    }
}

impl DenseLinear {
    fn of<B: Backend>(m: &crate::model::LinearBag<B>) -> Option<DenseLinear> {
        let (weights, bias) = m.to_dense();
        let labels = bias.len();
        (labels > 0 && !weights.is_empty() && weights.len() % labels == 0).then_some(DenseLinear {
            labels,
            weights,
            bias,
        })
    }

    fn best(&self, ids: &[u32]) -> Option<(usize, f32)> {
        let l = self.labels;
        let mut logits = vec![0f32; l];
        bag_l2(&self.weights, l, ids, &mut logits)?;
        for (acc, b) in logits.iter_mut().zip(&self.bias) {
            *acc += b;
        }
        Some(softmax_best(&logits))
    }
}

/// An MLP student outside burn: `logits = W₂ · relu(W₁ · Σ e[id] / √n + b₁) + b₂`, exactly what
/// [`crate::model::BagMlp::forward`] computes at inference, without allocating tensors.
struct DenseMlp {
    d_embed: usize,
    d_hidden: usize,
    labels: usize,
    p: crate::model::DenseMlpParams,
}

impl std::fmt::Debug for DenseMlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DenseMlp {{ d_embed: {}, d_hidden: {}, labels: {} }}",
            self.d_embed, self.d_hidden, self.labels
        )
    }
}

impl DenseMlp {
    fn of<B: Backend>(m: &crate::model::BagMlp<B>) -> Option<DenseMlp> {
        let p = m.to_dense();
        let (d_hidden, labels) = (p.hidden_bias.len(), p.output_bias.len());
        let d_embed = p.hidden_weight.len().checked_div(d_hidden)?;
        let ok = labels > 0
            && d_embed > 0
            && p.hidden_weight.len() == d_embed * d_hidden
            && p.output_weight.len() == d_hidden * labels
            && !p.embedding.is_empty()
            && p.embedding.len().is_multiple_of(d_embed);
        ok.then_some(DenseMlp {
            d_embed,
            d_hidden,
            labels,
            p,
        })
    }

    fn best(&self, ids: &[u32]) -> Option<(usize, f32)> {
        let mut pooled = vec![0f32; self.d_embed];
        bag_l2(&self.p.embedding, self.d_embed, ids, &mut pooled)?;
        let mut hidden = self.p.hidden_bias.clone();
        affine(&pooled, &self.p.hidden_weight, &mut hidden);
        for h in &mut hidden {
            *h = h.max(0.0);
        }
        let mut logits = self.p.output_bias.clone();
        affine(&hidden, &self.p.output_weight, &mut logits);
        debug_assert_eq!(logits.len(), self.labels);
        Some(softmax_best(&logits))
    }
}

/// `out = Σ table[id] / √n` over the ids' rows of a row-major table `width` wide (`pool_l2` of one
/// text); `None` if an id is out of range.
fn bag_l2(table: &[f32], width: usize, ids: &[u32], out: &mut [f32]) -> Option<()> {
    for &id in ids {
        let row = table.get(id as usize * width..(id as usize + 1) * width)?;
        for (acc, w) in out.iter_mut().zip(row) {
            *acc += w;
        }
    }
    let scale = (ids.len().max(1) as f32).sqrt();
    for acc in out.iter_mut() {
        *acc /= scale;
    }
    Some(())
}

use crate::dense::affine;

/// The index of the largest logit and its softmax probability.
fn softmax_best(logits: &[f32]) -> (usize, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|x| (x - max).exp()).sum();
    let (best, top) =
        logits
            .iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (i, x)| if x > acc.1 { (i, x) } else { acc },
            );
    (best, (top - max).exp() / total)
}

impl<B: Backend> Predictor<B> {
    pub(crate) fn new(
        model: Student<B>,
        config: StudentConfig,
        labels: LabelVocab,
        train: Option<TrainReport>,
        template: Option<String>,
        device: B::Device,
    ) -> Self {
        let metadata = ArtefactMetadata::new(config, labels, model.num_params(), train, template);
        let dense = Dense::of(&model);
        Self {
            model,
            metadata,
            device,
            dense,
        }
    }

    /// The most likely label and its probability for each text, in order.
    pub fn predict(&self, texts: &[&str]) -> Vec<(String, f32)> {
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t)).collect();
        self.model
            .predict_ids(&ids, &self.device)
            .into_iter()
            .map(|(i, p)| {
                (
                    self.metadata
                        .labels
                        .label(i)
                        .unwrap_or_default()
                        .to_string(),
                    p,
                )
            })
            .collect()
    }

    /// The probability of every label (in [`Predictor::labels`] order) for each text.
    pub fn probabilities(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        if texts.is_empty() {
            return Vec::new();
        }
        let ids: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t)).collect();
        let inputs = crate::features::Inputs::from_ids(&ids, 1, &self.device);
        let probs = burn::tensor::activation::softmax(self.model.forward(&inputs), 1);
        let [_, cols] = probs.dims();
        let values = probs
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        values.chunks(cols.max(1)).map(<[f32]>::to_vec).collect()
    }

    /// The token ids the student reads of `text`: the template stripped, then featurised.
    fn encode(&self, text: &str) -> Vec<u32> {
        let input = crate::template::strip_opt(self.metadata.template.as_deref(), text);
        self.metadata.featuriser.encode(input)
    }

    /// Labels in logit order.
    pub fn labels(&self) -> &[String] {
        self.metadata.labels.labels()
    }

    /// The artefact's metadata.
    pub fn metadata(&self) -> &ArtefactMetadata {
        &self.metadata
    }

    /// The underlying burn module.
    pub fn model(&self) -> &Student<B> {
        &self.model
    }

    /// Writes the artefact to `dir` (replacing one already there), atomically by rename.
    /// Returns the artefact's total size in bytes.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<u64> {
        save_artefact(dir.as_ref(), &self.metadata, &self.model)
    }
}

impl ArtefactMetadata {
    /// Metadata for a student of `config` (the task, class and featuriser follow from it).
    pub(crate) fn new(
        config: StudentConfig,
        labels: LabelVocab,
        num_params: usize,
        train: Option<TrainReport>,
        template: Option<String>,
    ) -> Self {
        Self {
            template,
            format: ARTEFACT_FORMAT,
            task: config.task(),
            class: config.class(),
            featuriser: config.featuriser(),
            num_params,
            config,
            labels,
            train,
            written_by: format!("retort-training {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Writes `metadata` and `model`'s weights into `dir` (replacing one already there) through a
/// sibling temporary directory and a rename, so an interrupted save leaves nothing under `dir`'s
/// name. Returns the artefact's total size in bytes.
pub(crate) fn save_artefact<B: Backend, M: Module<B>>(
    dir: &Path,
    metadata: &ArtefactMetadata,
    model: &M,
) -> Result<u64> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artefact".into());
    let parent = dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| TrainingError::io(&parent, e))?;
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainingError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainingError::io(&tmp, e))?;
    let result = write_into(&tmp, metadata, model).and_then(|()| {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| TrainingError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| TrainingError::io(dir, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    dir_size(dir)
}

fn write_into<B: Backend, M: Module<B>>(
    dir: &Path,
    metadata: &ArtefactMetadata,
    model: &M,
) -> Result<()> {
    let meta_path = dir.join(METADATA);
    let text = serde_json::to_string_pretty(metadata).map_err(|e| TrainingError::Artefact {
        path: dir.to_path_buf(),
        message: format!("cannot serialise metadata: {e}"),
    })?;
    std::fs::write(&meta_path, text).map_err(|e| TrainingError::io(&meta_path, e))?;
    let weights = dir.join(WEIGHTS);
    model
        .clone()
        .save_file(
            weights.clone(),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
        )
        .map_err(|e| TrainingError::Record {
            path: weights,
            message: e.to_string(),
        })
}

/// Loads the weights of the artefact in `dir` into `model` (freshly initialised from its config).
pub(crate) fn load_weights<B: Backend, M: Module<B>>(
    dir: &Path,
    model: M,
    device: &B::Device,
) -> Result<M> {
    let weights = dir.join(WEIGHTS);
    model
        .load_file(
            weights.clone(),
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            device,
        )
        .map_err(|e| TrainingError::Record {
            path: weights,
            message: e.to_string(),
        })
}

/// Serving: non-generic, so callers in other crates run code compiled with this crate's optimisation.
impl Predictor<crate::backend::Inference> {
    /// [`Artefact::load`] onto the serving backend's default device.
    pub fn load_for_serving(dir: impl AsRef<Path>) -> Result<Self> {
        Artefact::load::<crate::backend::Inference>(dir, &crate::backend::device())
    }

    /// One text's most likely label, its probability, and the number of tokens the featuriser made of
    /// the text (what a serving gateway reports as input tokens). Cheaper than [`Predictor::predict`]
    /// for a single text: the text is featurised once and no batch is padded.
    ///
    /// Defined on the serving backend only, so that its burn kernels are compiled here (optimised)
    /// rather than in the calling service's crate. Every classification student answers from plain
    /// floats (no tensors are allocated: see [`crate::dense`]); burn's forward pass on a batch of
    /// one is the fallback should the weights not fit the plain-float layout.
    pub fn classify(&self, text: &str) -> Classification<'_> {
        let ids = self.encode(text);
        let input_tokens = ids.len();
        let fast = self.dense.as_ref().and_then(|d| d.best(&ids));
        let (index, probability) = fast.unwrap_or_else(|| {
            self.model
                .predict_ids(std::slice::from_ref(&ids), &self.device)
                .first()
                .copied()
                .unwrap_or((0, 0.0))
        });
        Classification {
            label: self.metadata.labels.label(index).unwrap_or_default(),
            probability,
            input_tokens,
        }
    }

    /// How many tokens the student's featuriser makes of `text` (at least 1).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.encode(text).len()
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| TrainingError::io(dir, e))? {
        let entry = entry.map_err(|e| TrainingError::io(dir, e))?;
        total += entry
            .metadata()
            .map_err(|e| TrainingError::io(entry.path(), e))?
            .len();
    }
    Ok(total)
}

/// Reading artefacts back.
pub struct Artefact;

impl Artefact {
    /// Reads only the metadata of the artefact in `dir`.
    pub fn metadata(dir: impl AsRef<Path>) -> Result<ArtefactMetadata> {
        let dir = dir.as_ref();
        let path = dir.join(METADATA);
        let text = std::fs::read_to_string(&path).map_err(|e| TrainingError::io(&path, e))?;
        let metadata: ArtefactMetadata =
            serde_json::from_str(&text).map_err(|e| TrainingError::Artefact {
                path: dir.to_path_buf(),
                message: format!("{METADATA}: {e}"),
            })?;
        if metadata.format != ARTEFACT_FORMAT {
            return Err(TrainingError::Artefact {
                path: dir.to_path_buf(),
                message: format!(
                    "format {} is not the supported {ARTEFACT_FORMAT}",
                    metadata.format
                ),
            });
        }
        if metadata.featuriser != metadata.config.featuriser()
            || metadata.labels.len() != metadata.config.num_labels()
            || metadata.task != metadata.config.task()
        {
            return Err(TrainingError::Artefact {
                path: dir.to_path_buf(),
                message:
                    "metadata is inconsistent: featuriser, labels or task do not match the config"
                        .into(),
            });
        }
        metadata.config.validate()?;
        Ok(metadata)
    }

    /// Loads the artefact in `dir` onto `device` of backend `B` (any backend: the weights are
    /// stored in full precision independently of the one that trained them).
    /// A generation artefact is refused with an error that says so (load it with
    /// [`crate::Generator::load_for_serving`]).
    pub fn load<B: Backend>(dir: impl AsRef<Path>, device: &B::Device) -> Result<Predictor<B>> {
        let dir = dir.as_ref();
        let metadata = Self::metadata(dir)?;
        if metadata.task != TaskKind::Classification {
            return Err(TrainingError::Artefact {
                path: dir.to_path_buf(),
                message: format!(
                    "a {} student ({}), not a classifier: load it with Generator::load_for_serving",
                    metadata.task, metadata.class
                ),
            });
        }
        let model: Student<B> = {
            // Initialisation draws from the backend RNG; the values are overwritten just below.
            let _rng = rng::seeded::<B>(device, 0);
            metadata.config.init(device)?
        };
        let model = load_weights(dir, model, device)?;
        let dense = Dense::of(&model);
        Ok(Predictor {
            model,
            metadata,
            device: device.clone(),
            dense,
        })
    }
}
