//! An embedding bag of hashed n-grams followed by a one-hidden-layer MLP.

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

use super::{floats, pool_l2};
use crate::features::{CharNgrams, Featuriser, Inputs};

/// Size of a [`BagMlp`].
#[derive(Config, Debug)]
pub struct BagMlpConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Hash buckets for word uni- and bigrams and character n-grams (rows of the embedding table).
    #[config(default = 262144)]
    pub buckets: usize,
    /// Distinct n-grams kept per text.
    #[config(default = 4096)]
    pub max_features: usize,
    /// Character n-grams of each word, hashed into the same buckets (`None`: words only).
    pub chars: Option<CharNgrams>,
    /// Embedding width.
    #[config(default = 64)]
    pub d_embed: usize,
    /// Hidden layer width.
    #[config(default = 64)]
    pub d_hidden: usize,
    /// Dropout before the output layer (0 keeps training free of backend randomness).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl BagMlpConfig {
    /// The featuriser this student reads.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::NgramBag {
            buckets: self.buckets,
            max_features: self.max_features,
            chars: self.chars,
        }
    }

    /// A randomly initialised model (uses the backend's RNG).
    pub fn init<B: Backend>(&self, device: &B::Device) -> BagMlp<B> {
        BagMlp {
            embedding: EmbeddingConfig::new(self.buckets, self.d_embed)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.1,
                })
                .init(device),
            hidden: LinearConfig::new(self.d_embed, self.d_hidden).init(device),
            activation: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.d_hidden, self.num_labels).init(device),
        }
    }
}

/// `logits = W₂ · relu(W₁ · Σ e[ngram] / √(#ngrams))`.
#[derive(Module, Debug)]
pub struct BagMlp<B: Backend> {
    embedding: Embedding<B>,
    hidden: Linear<B>,
    activation: Relu,
    dropout: Dropout,
    output: Linear<B>,
}

/// A [`BagMlp`]'s parameters as plain row-major floats (see [`BagMlp::to_dense`]).
#[derive(Clone, Debug, Default)]
pub struct DenseMlpParams {
    /// `[buckets × d_embed]`.
    pub embedding: Vec<f32>,
    /// `[d_embed × d_hidden]` (burn's `Linear` multiplies `x · W`).
    pub hidden_weight: Vec<f32>,
    /// `[d_hidden]` (zeros when the layer has no bias).
    pub hidden_bias: Vec<f32>,
    /// `[d_hidden × num_labels]`.
    pub output_weight: Vec<f32>,
    /// `[num_labels]`.
    pub output_bias: Vec<f32>,
}

impl<B: Backend> BagMlp<B> {
    /// Every parameter as plain floats, for serving one text without tensors
    /// (see [`crate::artefact::Predictor::classify`]). Dropout is the identity at inference.
    pub fn to_dense(&self) -> DenseMlpParams {
        let bias = |linear: &Linear<B>, width: usize| {
            linear
                .bias
                .as_ref()
                .map(|b| floats(b.val()))
                .unwrap_or_else(|| vec![0.0; width])
        };
        let [_, d_hidden] = self.hidden.weight.val().dims();
        let [_, labels] = self.output.weight.val().dims();
        DenseMlpParams {
            embedding: floats(self.embedding.weight.val()),
            hidden_weight: floats(self.hidden.weight.val()),
            hidden_bias: bias(&self.hidden, d_hidden),
            output_weight: floats(self.output.weight.val()),
            output_bias: bias(&self.output, labels),
        }
    }

    /// `[batch, num_labels]` logits.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        self.forward_rows(self.embedding.weight.val(), inputs)
    }

    /// The embedding table (`[buckets, d_embed]`), for sparse training.
    pub(crate) fn table(&self) -> Tensor<B, 2> {
        self.embedding.weight.val()
    }

    /// This model with its embedding table replaced by `f(table)`.
    pub(crate) fn map_table(mut self, f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>) -> Self {
        self.embedding.weight = self.embedding.weight.map(f);
        self
    }

    /// [`BagMlp::forward`] reading the embedding table `rows` (`inputs` index into it).
    pub(crate) fn forward_rows(&self, rows: Tensor<B, 2>, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let embedded = burn::tensor::module::embedding(rows, inputs.tokens.clone());
        let pooled = pool_l2(embedded, inputs.mask.clone());
        let hidden = self.activation.forward(self.hidden.forward(pooled));
        self.output.forward(self.dropout.forward(hidden))
    }
}
