//! An embedding bag of hashed n-grams followed by a one-hidden-layer MLP.

use burn::module::Initializer;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;

use super::pool_l2;
use crate::features::{Featuriser, Inputs};

/// Size of a [`BagMlp`].
#[derive(Config, Debug)]
pub struct BagMlpConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Hash buckets for word uni- and bigrams (rows of the embedding table).
    #[config(default = 262144)]
    pub buckets: usize,
    /// Distinct n-grams kept per text.
    #[config(default = 4096)]
    pub max_features: usize,
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

impl<B: Backend> BagMlp<B> {
    /// `[batch, num_labels]` logits.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let pooled = pool_l2(
            self.embedding.forward(inputs.tokens.clone()),
            inputs.mask.clone(),
        );
        let hidden = self.activation.forward(self.hidden.forward(pooled));
        self.output.forward(self.dropout.forward(hidden))
    }
}
