//! A small transformer encoder-decoder over UTF-8 bytes, for short generation tasks (extraction,
//! normalisation, short answers).
//!
//! Tokens: `0` padding, `1..=256` the bytes `0..=255` (as [`crate::features::Featuriser::Bytes`]),
//! [`BOS`] starts every decoder input, [`EOS`] ends every target. Encoder and decoder share one
//! token embedding; each has its own learnt positions. Both stacks are pre-norm with a final
//! layer norm. Training is teacher-forced under a causal mask; [`Seq2seq::greedy`] encodes the
//! input once and decodes with burn's autoregressive cache (per step only the newest position goes
//! through the norms, projections and feed-forward layers; the input's keys and values for the
//! cross-attention are computed once).

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerDecoder, TransformerDecoderConfig, TransformerDecoderInput, TransformerEncoder,
    TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::features::Featuriser;

/// Padding id.
pub const PAD: u32 = 0;
/// Start of the decoder's input.
pub const BOS: u32 = 257;
/// End of a target.
pub const EOS: u32 = 258;
/// Token ids: padding, 256 bytes, BOS, EOS.
pub const VOCAB: usize = 259;

/// Size of a [`Seq2seq`] student.
#[derive(Config, Debug)]
pub struct Seq2seqConfig {
    /// Input bytes read per text (the first ones); also the encoder's learnt positions.
    #[config(default = 256)]
    pub max_input_len: usize,
    /// Most output tokens (bytes) generated per text, the end token not counted; longer training
    /// targets are cut to this length (at a character boundary).
    #[config(default = 64)]
    pub max_output_len: usize,
    /// Model width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads (must divide `d_model`).
    #[config(default = 4)]
    pub n_heads: usize,
    /// Encoder layers.
    #[config(default = 2)]
    pub encoder_layers: usize,
    /// Decoder layers.
    #[config(default = 2)]
    pub decoder_layers: usize,
    /// Feed-forward width.
    #[config(default = 128)]
    pub d_ff: usize,
    /// Dropout inside both stacks (0 keeps training free of backend randomness).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl Seq2seqConfig {
    /// The featuriser of the input side.
    pub fn featuriser(&self) -> Featuriser {
        Featuriser::Bytes {
            max_len: self.max_input_len,
        }
    }

    /// Checks dimensions before anything is allocated.
    pub fn validate(&self) -> Result<(), String> {
        if self.d_model == 0 || self.n_heads == 0 || !self.d_model.is_multiple_of(self.n_heads) {
            return Err(format!(
                "seq2seq d_model must be a positive multiple of n_heads: {self:?}"
            ));
        }
        if self.encoder_layers == 0 || self.decoder_layers == 0 || self.d_ff == 0 {
            return Err(format!(
                "seq2seq needs at least one encoder and one decoder layer and d_ff > 0: {self:?}"
            ));
        }
        if self.max_input_len == 0 || self.max_output_len == 0 {
            return Err(format!(
                "seq2seq max_input_len and max_output_len must be > 0: {self:?}"
            ));
        }
        Ok(())
    }

    /// Input token ids of `text`: its first `max_input_len` bytes (never empty).
    pub fn encode_input(&self, text: &str) -> Vec<u32> {
        self.featuriser().encode(text)
    }

    /// Target token ids of `text` (bytes, cut to `max_output_len` at a character boundary), without
    /// BOS or EOS.
    pub fn encode_target(&self, text: &str) -> Vec<u32> {
        let mut end = text.len().min(self.max_output_len);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.as_bytes()[..end]
            .iter()
            .map(|&b| u32::from(b) + 1)
            .collect()
    }

    /// A randomly initialised model (uses the backend's RNG).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Seq2seq<B> {
        Seq2seq {
            tokens: EmbeddingConfig::new(VOCAB, self.d_model).init(device),
            input_positions: EmbeddingConfig::new(self.max_input_len, self.d_model).init(device),
            output_positions: EmbeddingConfig::new(self.max_output_len + 1, self.d_model)
                .init(device),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.encoder_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            encoder_norm: LayerNormConfig::new(self.d_model).init(device),
            decoder: TransformerDecoderConfig::new(
                self.d_model,
                self.d_ff,
                self.n_heads,
                self.decoder_layers,
            )
            .with_dropout(self.dropout)
            .with_norm_first(true)
            .init(device),
            decoder_norm: LayerNormConfig::new(self.d_model).init(device),
            output: LinearConfig::new(self.d_model, VOCAB).init(device),
            max_output_len: self.max_output_len,
        }
    }
}

/// Maps token ids back to text: the bytes of ids `1..=256`, other ids dropped, invalid UTF-8 replaced.
pub fn decode_tokens(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids
        .iter()
        .filter(|&&id| (1..=256).contains(&id))
        .map(|&id| (id - 1) as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The encoder's output for a batch, with its padding mask (what the decoder attends to).
#[derive(Clone, Debug)]
pub struct Memory<B: Backend> {
    /// `[batch, input_len, d_model]`.
    pub states: Tensor<B, 3>,
    /// `[batch, input_len]`, true where padded.
    pub pad: Tensor<B, 2, Bool>,
}

/// Byte embeddings → transformer encoder; BOS + target → causal transformer decoder with
/// cross-attention → linear over [`VOCAB`].
#[derive(Module, Debug)]
pub struct Seq2seq<B: Backend> {
    tokens: Embedding<B>,
    input_positions: Embedding<B>,
    output_positions: Embedding<B>,
    encoder: TransformerEncoder<B>,
    encoder_norm: LayerNorm<B>,
    decoder: TransformerDecoder<B>,
    decoder_norm: LayerNorm<B>,
    output: Linear<B>,
    max_output_len: usize,
}

/// `[batch, len]` ids padded with [`PAD`] to the longest sequence (at least 1).
pub(crate) fn pad_ids<B: Backend>(sequences: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let batch = sequences.len();
    let len = sequences.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = vec![PAD as i32; batch * len];
    for (row, seq) in sequences.iter().enumerate() {
        for (col, &id) in seq.iter().enumerate() {
            ids[row * len + col] = id as i32;
        }
    }
    Tensor::from_data(TensorData::new(ids, [batch, len]), device)
}

impl<B: Backend> Seq2seq<B> {
    fn positions(len: usize, device: &B::Device) -> Tensor<B, 2, Int> {
        Tensor::<B, 1, Int>::arange(0..len as i64, device).reshape([1, len])
    }

    /// Encodes a batch of input id sequences (each at most `max_input_len` long).
    pub fn encode(&self, inputs: &[Vec<u32>], device: &B::Device) -> Memory<B> {
        let ids = pad_ids::<B>(inputs, device);
        let [_, len] = ids.dims();
        let pad = ids.clone().equal_elem(PAD as i64);
        let x =
            self.tokens.forward(ids) + self.input_positions.forward(Self::positions(len, device));
        let states = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_pad(pad.clone()));
        Memory {
            states: self.encoder_norm.forward(states),
            pad,
        }
    }

    fn embed_target(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, len] = ids.dims();
        let device = ids.device();
        self.tokens.forward(ids) + self.output_positions.forward(Self::positions(len, &device))
    }

    /// Teacher-forced logits `[batch, len, VOCAB]` for decoder inputs `[batch, len]` (BOS + target,
    /// padded; `len` at most `max_output_len + 1`).
    pub fn decode_logits(
        &self,
        memory: &Memory<B>,
        decoder_inputs: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [batch, len] = decoder_inputs.dims();
        let device = decoder_inputs.device();
        let causal = generate_autoregressive_mask::<B>(batch, len, &device);
        let h = self.decoder.forward(
            TransformerDecoderInput::new(self.embed_target(decoder_inputs), memory.states.clone())
                .memory_mask_pad(memory.pad.clone())
                .target_mask_attn(causal),
        );
        self.output.forward(self.decoder_norm.forward(h))
    }

    /// Greedy decoding of every row of `memory` until [`EOS`] or `max_output_len` tokens; returns the
    /// tokens of each row without BOS/EOS.
    pub fn greedy(&self, memory: &Memory<B>) -> Vec<Vec<u32>> {
        let [batch, _, d] = memory.states.dims();
        let device = memory.states.device();
        let mut cache = self.decoder.new_autoregressive_cache();
        let mut sequence: Vec<i32> = vec![BOS as i32; batch];
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); batch];
        let mut done = vec![false; batch];
        for step in 1..=self.max_output_len + 1 {
            let ids = Tensor::<B, 2, Int>::from_data(
                TensorData::new(sequence.clone(), [batch, step]),
                &device,
            );
            let causal = generate_autoregressive_mask::<B>(batch, step, &device);
            let h = self.decoder.forward_autoregressive_inference(
                TransformerDecoderInput::new(self.embed_target(ids), memory.states.clone())
                    .memory_mask_pad(memory.pad.clone())
                    .target_mask_attn(causal),
                &mut cache,
            );
            let last = h
                .slice([0..batch, step - 1..step, 0..d])
                .reshape([batch, d]);
            let logits = self.output.forward(self.decoder_norm.forward(last));
            let next: Vec<i64> = logits
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .unwrap_or_else(|_| vec![i64::from(EOS); batch]);
            // Append this step's token to every row (rows are laid out [batch, step]).
            let mut grown = Vec::with_capacity(batch * (step + 1));
            for row in 0..batch {
                let token = next.get(row).copied().unwrap_or(i64::from(EOS)) as u32;
                if !done[row] {
                    if token == EOS || step > self.max_output_len {
                        done[row] = true;
                    } else {
                        out[row].push(token);
                    }
                }
                grown.extend_from_slice(&sequence[row * step..(row + 1) * step]);
                grown.push(token as i32);
            }
            sequence = grown;
            if done.iter().all(|&d| d) {
                break;
            }
        }
        out
    }
}
