//! Logistic regression over hashed n-grams: an embedding bag whose width is the number of labels.

use burn::module::Initializer;
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;

use super::{floats, pool_l2};
use crate::features::{Featuriser, Inputs};

/// Size of a [`LinearBag`].
#[derive(Config, Debug)]
pub struct LinearBagConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Hash buckets for word uni- and bigrams (rows of the weight table).
    #[config(default = 262144)]
    pub buckets: usize,
    /// Distinct n-grams kept per text.
    #[config(default = 4096)]
    pub max_features: usize,
}

impl LinearBagConfig {
    /// The featuriser this student reads.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::NgramBag {
            buckets: self.buckets,
            max_features: self.max_features,
        }
    }

    /// A zero-initialised model.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LinearBag<B> {
        LinearBag {
            weights: EmbeddingConfig::new(self.buckets, self.num_labels)
                .with_initializer(Initializer::Zeros)
                .init(device),
            bias: Param::from_tensor(Tensor::zeros([self.num_labels], device)),
        }
    }
}

/// `logits = Σ w[ngram] / √(#ngrams) + b`: a linear model on an L2-normalised binary bag of n-grams.
#[derive(Module, Debug)]
pub struct LinearBag<B: Backend> {
    weights: Embedding<B>,
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> LinearBag<B> {
    /// The weight table (`[buckets × num_labels]`, row-major) and the bias as plain floats, for
    /// serving without tensors (see [`crate::artefact::Predictor::classify`]).
    pub fn to_dense(&self) -> (Vec<f32>, Vec<f32>) {
        (floats(self.weights.weight.val()), floats(self.bias.val()))
    }

    /// `[batch, num_labels]` logits.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let pooled = pool_l2(
            self.weights.forward(inputs.tokens.clone()),
            inputs.mask.clone(),
        );
        pooled + self.bias.val().unsqueeze::<2>()
    }
}
