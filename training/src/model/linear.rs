//! Logistic regression over hashed n-grams: an embedding bag whose width is the number of labels.

use burn::module::Initializer;
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;

use super::{floats, pool_l2};
use crate::features::{CharNgrams, Featuriser, Inputs};

/// Size of a [`LinearBag`].
#[derive(Config, Debug)]
pub struct LinearBagConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Hash buckets for word uni- and bigrams and character n-grams (rows of the weight table).
    #[config(default = 262144)]
    pub buckets: usize,
    /// Distinct n-grams kept per text.
    #[config(default = 4096)]
    pub max_features: usize,
    /// Character n-grams of each word, hashed into the same buckets (`None`: words only).
    pub chars: Option<CharNgrams>,
}

impl LinearBagConfig {
    /// The featuriser this student reads.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::NgramBag {
            buckets: self.buckets,
            max_features: self.max_features,
            chars: self.chars,
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
        self.forward_rows(self.weights.weight.val(), inputs)
    }

    /// The hashed-feature table (`[buckets, num_labels]`), for sparse training.
    pub(crate) fn table(&self) -> Tensor<B, 2> {
        self.weights.weight.val()
    }

    /// This model with its table replaced by `f(table)`.
    pub(crate) fn map_table(mut self, f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>) -> Self {
        self.weights.weight = self.weights.weight.map(f);
        self
    }

    /// [`LinearBag::forward`] reading the table `rows` (`inputs` index into it).
    pub(crate) fn forward_rows(&self, rows: Tensor<B, 2>, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let embedded = burn::tensor::module::embedding(rows, inputs.tokens.clone());
        pool_l2(embedded, inputs.mask.clone()) + self.bias.val().unsqueeze::<2>()
    }
}
