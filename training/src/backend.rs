//! The backend, chosen here at the edge and nowhere else: model, trainer and artefact code are
//! generic over burn's `Backend`; services and binaries use these aliases.
//!
//! Without features the CPU backend is burn-flex. With the `cuda` feature it is burn-cuda (device 0).
//!
//! Why flex and not ndarray (both ship with burn 0.21), measured on this 2-core machine with
//! `retort-bench-training` (dev profile, burn at opt-level 3; one epoch, batch 32, ~120-word mails),
//! training examples/s, ndarray → flex: linear/small 1771 → 2822, mlp/tiny 451 → 481,
//! mlp/small 37 → 48, cnn/tiny 4 → 248, transformer/tiny 165 → 111; single-item predict p50:
//! linear/small 178 → 44 µs, cnn/tiny 67 ms → 1.4 ms. Flex wins everywhere but the transformer.
//! Full table: `bench/results/distill.md`, training-speed section.

use burn::backend::Autodiff;
use burn::prelude::Backend;

/// burn's pure-Rust CPU backend (f32): the default.
pub type FlexCpu = burn::backend::Flex;
/// burn-ndarray (f32), kept for comparison in the training bench.
pub type NdArrayCpu = burn::backend::NdArray<f32>;

/// The backend students are served and evaluated on.
#[cfg(not(feature = "cuda"))]
pub type Inference = FlexCpu;
/// The backend students are served and evaluated on.
#[cfg(feature = "cuda")]
pub type Inference = burn::backend::Cuda<f32, i32>;

/// The backend students are trained on: [`Inference`] with autodiff.
pub type Training = Autodiff<Inference>;

/// The device of [`Inference`] (the CPU, or CUDA device 0).
pub fn device() -> burn::tensor::Device<Inference> {
    Default::default()
}

/// A short name for reports: which backend ran.
pub fn name() -> String {
    <Inference as Backend>::name(&device())
}
