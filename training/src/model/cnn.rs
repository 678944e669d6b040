//! A byte-level CNN: byte embeddings, parallel 1-D convolutions, max-pool over time, a linear head.

use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig1d, Relu,
};
use burn::prelude::*;

use super::floats;
use crate::dense::{DenseCnnParams, DenseLinearLayer};
use crate::features::{Featuriser, Inputs};

/// Size of a [`ByteCnn`].
#[derive(Config, Debug)]
pub struct ByteCnnConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Bytes read per text (the first ones).
    #[config(default = 1024)]
    pub max_len: usize,
    /// Byte embedding width.
    #[config(default = 32)]
    pub d_embed: usize,
    /// Output channels of each convolution.
    #[config(default = 64)]
    pub channels: usize,
    /// Kernel widths, one convolution each; odd widths keep "same" padding symmetric.
    #[config(default = "vec![3, 5, 7]")]
    pub kernel_sizes: Vec<usize>,
    /// Dropout before the output layer (0 keeps training free of backend randomness).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl ByteCnnConfig {
    /// The featuriser this student reads.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::Bytes {
            max_len: self.max_len,
        }
    }

    /// A randomly initialised model (uses the backend's RNG).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ByteCnn<B> {
        let convs = self
            .kernel_sizes
            .iter()
            .map(|&k| {
                Conv1dConfig::new(self.d_embed, self.channels, k)
                    .with_padding(PaddingConfig1d::Same)
                    .init(device)
            })
            .collect();
        ByteCnn {
            embedding: EmbeddingConfig::new(257, self.d_embed).init(device),
            convs,
            activation: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.channels * self.kernel_sizes.len(), self.num_labels)
                .init(device),
        }
    }
}

/// Convolutions of several widths over byte embeddings, each max-pooled over the unpadded positions.
#[derive(Module, Debug)]
pub struct ByteCnn<B: Backend> {
    embedding: Embedding<B>,
    convs: Vec<Conv1d<B>>,
    activation: Relu,
    dropout: Dropout,
    output: Linear<B>,
}

/// A `Linear` layer's parameters as plain floats (zeros for a missing bias).
pub(crate) fn dense_linear<B: Backend>(linear: &Linear<B>) -> DenseLinearLayer {
    let weight = floats(linear.weight.val());
    let [_, d_out] = linear.weight.val().dims();
    DenseLinearLayer {
        weight,
        bias: linear
            .bias
            .as_ref()
            .map(|b| floats(b.val()))
            .unwrap_or_else(|| vec![0.0; d_out]),
    }
}

impl<B: Backend> ByteCnn<B> {
    /// Every parameter as plain floats, for serving one text without tensors
    /// (see [`crate::artefact::Predictor::classify`]). Dropout is the identity at inference.
    pub fn to_dense(&self) -> DenseCnnParams {
        DenseCnnParams {
            embedding: floats(self.embedding.weight.val()),
            convs: self
                .convs
                .iter()
                .map(|conv| {
                    let [channels, _, kernel] = conv.weight.val().dims();
                    let bias = conv
                        .bias
                        .as_ref()
                        .map(|b| floats(b.val()))
                        .unwrap_or_else(|| vec![0.0; channels]);
                    (floats(conv.weight.val()), bias, kernel)
                })
                .collect(),
            output: dense_linear(&self.output),
        }
    }

    /// `[batch, num_labels]` logits.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let [batch, _] = inputs.tokens.dims();
        // [batch, d_embed, seq], padded positions zeroed: a text's convolutions see the zero
        // padding past its end whatever the batch's longest text, so a text gets the same logits in
        // any batch (and from the plain-float single-text path).
        let x = (self.embedding.forward(inputs.tokens.clone())
            * inputs.mask.clone().unsqueeze_dim::<3>(2))
        .swap_dims(1, 2);
        // [batch, 1, seq]: relu outputs are ≥ 0, so zeroing padded positions keeps them out of the max.
        let mask = inputs.mask.clone().unsqueeze_dim::<3>(1);
        let pooled: Vec<Tensor<B, 2>> = self
            .convs
            .iter()
            .map(|conv| {
                let h = self.activation.forward(conv.forward(x.clone())) * mask.clone();
                let [_, channels, _] = h.dims();
                h.max_dim(2).reshape([batch, channels])
            })
            .collect();
        self.output
            .forward(self.dropout.forward(Tensor::cat(pooled, 1)))
    }
}
