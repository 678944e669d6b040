//! Single-text forward passes of the byte CNN and the transformer encoder on plain `f32`s, from the
//! trained weights: what [`crate::Predictor::classify`] answers one request with. burn's forward pass
//! on a batch of one allocates tensors and dispatches a kernel per operation (a CNN took ~459 µs for
//! one word); these compute exactly the same function, op for op, in a few microseconds.
//!
//! The CNN folds its byte embedding into its convolutions at load time: a convolution over embedded
//! bytes is a sum, over kernel offsets, of one precomputed `[channels]` row per (byte, offset).

/// `out += x · W` for a row-major `W` of `x.len() × out.len()` (burn's `Linear` multiplies `x · W`).
pub(crate) fn affine(x: &[f32], weight: &[f32], out: &mut [f32]) {
    let width = out.len();
    for (xi, row) in x.iter().zip(weight.chunks_exact(width)) {
        for (acc, w) in out.iter_mut().zip(row) {
            *acc += xi * w;
        }
    }
}

/// A `Linear` layer as plain floats: `[d_in × d_out]` weights and `[d_out]` bias.
#[derive(Clone, Debug, Default)]
pub struct DenseLinearLayer {
    /// `[d_in × d_out]`, row-major.
    pub weight: Vec<f32>,
    /// `[d_out]` (zeros when the layer has no bias).
    pub bias: Vec<f32>,
}

impl DenseLinearLayer {
    fn d_out(&self) -> usize {
        self.bias.len()
    }

    fn d_in(&self) -> usize {
        self.weight.len().checked_div(self.d_out()).unwrap_or(0)
    }

    fn valid(&self, d_in: usize, d_out: usize) -> bool {
        self.d_out() == d_out && self.weight.len() == d_in * d_out
    }

    /// `x · W + b` into `out` (resized to `d_out`).
    fn apply(&self, x: &[f32], out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(&self.bias);
        affine(x, &self.weight, out);
    }
}

/// A byte CNN's parameters as plain floats (see [`crate::model::ByteCnn::to_dense`]).
#[derive(Clone, Debug, Default)]
pub struct DenseCnnParams {
    /// `[257 × d_embed]`.
    pub embedding: Vec<f32>,
    /// Per convolution: weight `[channels × d_embed × kernel]`, bias `[channels]`, kernel width.
    pub convs: Vec<(Vec<f32>, Vec<f32>, usize)>,
    /// The head, `[channels · #convs → labels]`.
    pub output: DenseLinearLayer,
}

/// One convolution with the byte embedding folded in.
#[derive(Debug)]
struct FoldedConv {
    kernel: usize,
    /// `[257 × kernel × channels]`: the contribution of byte `b` at kernel offset `j`.
    table: Vec<f32>,
    bias: Vec<f32>,
}

/// A byte CNN outside burn: exactly [`crate::model::ByteCnn::forward`] for one text.
#[derive(Debug)]
pub(crate) struct DenseCnn {
    channels: usize,
    convs: Vec<FoldedConv>,
    output: DenseLinearLayer,
}

impl DenseCnn {
    /// Folds the embedding into each convolution; `None` if the shapes do not fit together.
    pub(crate) fn new(p: DenseCnnParams) -> Option<DenseCnn> {
        const BYTES: usize = 257;
        let d_embed = p.embedding.len() / BYTES;
        if d_embed == 0 || p.embedding.len() != BYTES * d_embed || p.convs.is_empty() {
            return None;
        }
        let channels = p.convs.first()?.1.len();
        let mut convs = Vec::with_capacity(p.convs.len());
        for (weight, bias, kernel) in p.convs {
            if kernel == 0 || bias.len() != channels || weight.len() != channels * d_embed * kernel
            {
                return None;
            }
            let mut table = vec![0f32; BYTES * kernel * channels];
            for byte in 0..BYTES {
                let e = &p.embedding[byte * d_embed..(byte + 1) * d_embed];
                for j in 0..kernel {
                    let row = &mut table[(byte * kernel + j) * channels..][..channels];
                    for (o, acc) in row.iter_mut().enumerate() {
                        // weight[o][i][j]
                        let w = &weight[o * d_embed * kernel..(o + 1) * d_embed * kernel];
                        *acc = e
                            .iter()
                            .enumerate()
                            .map(|(i, x)| x * w[i * kernel + j])
                            .sum();
                    }
                }
            }
            convs.push(FoldedConv {
                kernel,
                table,
                bias,
            });
        }
        if !p.output.valid(channels * convs.len(), p.output.d_out()) || p.output.d_out() == 0 {
            return None;
        }
        Some(DenseCnn {
            channels,
            convs,
            output: p.output,
        })
    }

    /// Logits for the byte ids `ids` (1..=256; `None` if one is out of range).
    pub(crate) fn logits(&self, ids: &[u32]) -> Option<Vec<f32>> {
        if ids.iter().any(|&id| id > 256) {
            return None;
        }
        let c = self.channels;
        let len = ids.len();
        let mut pooled = vec![0f32; c * self.convs.len()];
        let mut h = vec![0f32; c];
        for (conv, out) in self.convs.iter().zip(pooled.chunks_exact_mut(c)) {
            let pad = (conv.kernel - 1) / 2;
            // Max over positions of relu(...): relu ≥ 0, so starting from 0 is the same.
            for t in 0..len {
                h.copy_from_slice(&conv.bias);
                for j in 0..conv.kernel {
                    // Input position t + j - pad; outside the text the padding is zero.
                    let Some(pos) = (t + j).checked_sub(pad).filter(|&p| p < len) else {
                        continue;
                    };
                    let row = &conv.table[(ids[pos] as usize * conv.kernel + j) * c..][..c];
                    for (acc, w) in h.iter_mut().zip(row) {
                        *acc += w;
                    }
                }
                for (m, x) in out.iter_mut().zip(&h) {
                    *m = m.max(*x);
                }
            }
        }
        let mut logits = Vec::new();
        self.output.apply(&pooled, &mut logits);
        Some(logits)
    }
}

/// A layer norm's scale and shift.
#[derive(Clone, Debug, Default)]
pub struct DenseNorm {
    /// `[d]`.
    pub gamma: Vec<f32>,
    /// `[d]` (zeros without a shift).
    pub beta: Vec<f32>,
}

/// One pre-norm encoder layer as plain floats.
#[derive(Clone, Debug, Default)]
pub struct DenseEncoderLayer {
    /// Before attention (burn's `norm_2` when `norm_first`).
    pub norm_attn: DenseNorm,
    /// Before the feed-forward block (burn's `norm_1`).
    pub norm_ff: DenseNorm,
    /// Attention projections.
    pub query: DenseLinearLayer,
    /// Attention projections.
    pub key: DenseLinearLayer,
    /// Attention projections.
    pub value: DenseLinearLayer,
    /// Attention output projection.
    pub out: DenseLinearLayer,
    /// Feed-forward `d → d_ff`.
    pub ff_in: DenseLinearLayer,
    /// Feed-forward `d_ff → d`.
    pub ff_out: DenseLinearLayer,
}

/// A transformer encoder's parameters as plain floats (see [`crate::model::Encoder::to_dense`]).
#[derive(Clone, Debug, Default)]
pub struct DenseEncoderParams {
    /// `[buckets × d]`.
    pub tokens: Vec<f32>,
    /// `[max_len × d]`.
    pub positions: Vec<f32>,
    /// Attention heads.
    pub n_heads: usize,
    /// The layers, in order.
    pub layers: Vec<DenseEncoderLayer>,
    /// The head, `d → labels`.
    pub output: DenseLinearLayer,
}

/// burn's layer norm epsilon for the encoder (`TransformerEncoderConfig::layer_norm_eps`'s default).
const LAYER_NORM_EPS: f32 = 1e-5;

/// A transformer encoder outside burn: exactly [`crate::model::Encoder::forward`] for one text
/// (pre-norm layers, GELU feed-forward, masked mean, linear head).
#[derive(Debug)]
pub(crate) struct DenseEncoder {
    d: usize,
    p: DenseEncoderParams,
}

impl DenseEncoder {
    /// `None` if the shapes do not fit together.
    pub(crate) fn new(p: DenseEncoderParams) -> Option<DenseEncoder> {
        let d = p.output.d_in();
        let labels = p.output.d_out();
        let ok = d > 0
            && labels > 0
            && p.n_heads > 0
            && d.is_multiple_of(p.n_heads)
            && p.tokens.len().is_multiple_of(d)
            && p.positions.len().is_multiple_of(d)
            && !p.layers.is_empty()
            && p.layers.iter().all(|l| {
                let d_ff = l.ff_in.d_out();
                [&l.norm_attn, &l.norm_ff]
                    .iter()
                    .all(|n| n.gamma.len() == d && n.beta.len() == d)
                    && [&l.query, &l.key, &l.value, &l.out]
                        .iter()
                        .all(|x| x.valid(d, d))
                    && d_ff > 0
                    && l.ff_in.valid(d, d_ff)
                    && l.ff_out.valid(d_ff, d)
            });
        ok.then_some(DenseEncoder { d, p })
    }

    /// Logits for the word ids `ids` (`None` if one is out of range, or the text is longer than
    /// the learnt positions).
    pub(crate) fn logits(&self, ids: &[u32]) -> Option<Vec<f32>> {
        let d = self.d;
        let len = ids.len();
        if len == 0 || len * d > self.p.positions.len() {
            return None;
        }
        // x[t] = token + position.
        let mut x = vec![0f32; len * d];
        for (t, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(d)).enumerate() {
            let tok = self.p.tokens.get(id as usize * d..(id as usize + 1) * d)?;
            let pos = &self.p.positions[t * d..(t + 1) * d];
            for ((o, a), b) in row.iter_mut().zip(tok).zip(pos) {
                *o = a + b;
            }
        }
        let heads = self.p.n_heads;
        let d_k = d / heads;
        let scale = 1.0 / (d_k as f32).sqrt();
        let (mut q, mut k, mut v) = (
            vec![0f32; len * d],
            vec![0f32; len * d],
            vec![0f32; len * d],
        );
        let mut normed = vec![0f32; len * d];
        let mut context = vec![0f32; len * d];
        let mut scores = vec![0f32; len];
        let mut tmp = Vec::new();
        for layer in &self.p.layers {
            // Attention block: x += out(attention(norm(x))).
            layer_norm(&x, d, &layer.norm_attn, &mut normed);
            for (t, h) in normed.chunks_exact(d).enumerate() {
                // One position attends only to itself (weight 1): its query and key do not matter.
                for (proj, dst) in [
                    (&layer.query, &mut q),
                    (&layer.key, &mut k),
                    (&layer.value, &mut v),
                ]
                .into_iter()
                .skip(if len == 1 { 2 } else { 0 })
                {
                    proj.apply(h, &mut tmp);
                    dst[t * d..(t + 1) * d].copy_from_slice(&tmp);
                }
            }
            context.iter_mut().for_each(|c| *c = 0.0);
            for head in 0..heads {
                let span = head * d_k..(head + 1) * d_k;
                for i in 0..len {
                    let qi = &q[i * d..][span.clone()];
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kj = &k[j * d..][span.clone()];
                        *s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                    }
                    softmax_in_place(&mut scores);
                    let ci = &mut context[i * d..][span.clone()];
                    for (j, w) in scores.iter().enumerate() {
                        for (c, vj) in ci.iter_mut().zip(&v[j * d..][span.clone()]) {
                            *c += w * vj;
                        }
                    }
                }
            }
            for (t, c) in context.chunks_exact(d).enumerate() {
                layer.out.apply(c, &mut tmp);
                for (xv, o) in x[t * d..(t + 1) * d].iter_mut().zip(&tmp) {
                    *xv += o;
                }
            }
            // Feed-forward block: x += ff_out(gelu(ff_in(norm(x)))).
            layer_norm(&x, d, &layer.norm_ff, &mut normed);
            let mut hidden = Vec::new();
            for (t, h) in normed.chunks_exact(d).enumerate() {
                layer.ff_in.apply(h, &mut hidden);
                for y in &mut hidden {
                    *y = 0.5 * *y * (1.0 + libm::erff(*y / std::f32::consts::SQRT_2));
                }
                layer.ff_out.apply(&hidden, &mut tmp);
                for (xv, o) in x[t * d..(t + 1) * d].iter_mut().zip(&tmp) {
                    *xv += o;
                }
            }
        }
        // Mean over positions, then the head.
        let mut mean = vec![0f32; d];
        for row in x.chunks_exact(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= len as f32;
        }
        let mut logits = Vec::new();
        self.p.output.apply(&mean, &mut logits);
        Some(logits)
    }
}

/// Layer norm of each `d`-wide row of `x` into `out` (biased variance, as burn computes it).
fn layer_norm(x: &[f32], d: usize, norm: &DenseNorm, out: &mut [f32]) {
    for (row, dst) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
        for (((o, v), g), b) in dst.iter_mut().zip(row).zip(&norm.gamma).zip(&norm.beta) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    for v in x.iter_mut() {
        *v /= total;
    }
}
