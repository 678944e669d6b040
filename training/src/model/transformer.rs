//! A small transformer encoder over hashed words with learnt positions, mean-pooled, linear head.

use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::cnn::dense_linear;
use super::floats;
use crate::dense::{DenseEncoderLayer, DenseEncoderParams, DenseNorm};
use crate::features::{Featuriser, Inputs};

/// Size of an [`Encoder`].
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Number of output classes.
    pub num_labels: usize,
    /// Hash buckets for words.
    #[config(default = 32768)]
    pub buckets: usize,
    /// Words read per text (the first ones); also the number of learnt positions.
    #[config(default = 256)]
    pub max_len: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder layers.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Feed-forward width.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Dropout inside the encoder (0 keeps training free of backend randomness).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl EncoderConfig {
    /// The featuriser this student reads.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::WordSequence {
            buckets: self.buckets,
            max_len: self.max_len,
        }
    }

    /// A randomly initialised model (uses the backend's RNG).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Encoder<B> {
        Encoder {
            tokens: EmbeddingConfig::new(self.buckets, self.d_model).init(device),
            positions: EmbeddingConfig::new(self.max_len, self.d_model).init(device),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.n_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            output: LinearConfig::new(self.d_model, self.num_labels).init(device),
        }
    }
}

/// Token + position embeddings → pre-norm transformer encoder → masked mean → linear.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    encoder: TransformerEncoder<B>,
    output: Linear<B>,
}

fn dense_norm<B: Backend>(norm: &burn::nn::LayerNorm<B>) -> DenseNorm {
    let gamma = floats(norm.gamma.val());
    let beta = norm
        .beta
        .as_ref()
        .map(|b| floats(b.val()))
        .unwrap_or_else(|| vec![0.0; gamma.len()]);
    DenseNorm { gamma, beta }
}

impl<B: Backend> Encoder<B> {
    /// Every parameter as plain floats, for serving one text without tensors
    /// (see [`crate::artefact::Predictor::classify`]). The layers are pre-norm (`norm_first`).
    pub fn to_dense(&self) -> DenseEncoderParams {
        DenseEncoderParams {
            tokens: floats(self.tokens.weight.val()),
            positions: floats(self.positions.weight.val()),
            n_heads: self.encoder.layers.first().map_or(0, |l| l.mha.n_heads),
            layers: self
                .encoder
                .layers
                .iter()
                .map(|l| DenseEncoderLayer {
                    norm_attn: dense_norm(&l.norm_2),
                    norm_ff: dense_norm(&l.norm_1),
                    query: dense_linear(&l.mha.query),
                    key: dense_linear(&l.mha.key),
                    value: dense_linear(&l.mha.value),
                    out: dense_linear(&l.mha.output),
                    ff_in: dense_linear(&l.pwff.linear_inner),
                    ff_out: dense_linear(&l.pwff.linear_outer),
                })
                .collect(),
            output: dense_linear(&self.output),
        }
    }

    /// `[batch, num_labels]` logits.
    pub fn forward(&self, inputs: &Inputs<B>) -> Tensor<B, 2> {
        let [batch, seq] = inputs.tokens.dims();
        let device = inputs.tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        let x = self.tokens.forward(inputs.tokens.clone()) + self.positions.forward(positions);
        let pad = inputs.mask.clone().equal_elem(0.0);
        let h = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_pad(pad));
        let [_, _, d] = h.dims();
        let mask = inputs.mask.clone().unsqueeze_dim::<3>(2);
        let summed = (h * mask).sum_dim(1).reshape([batch, d]);
        let count = inputs.mask.clone().sum_dim(1).clamp_min(1.0);
        self.output.forward(summed / count)
    }
}
