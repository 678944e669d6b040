//! The backend, chosen here at the edge and nowhere else: model, trainer and artefact code are
//! generic over burn's `Backend`; services and binaries use these aliases.
//!
//! Without features the CPU backend is burn-ndarray. With the `cuda` feature it is burn-cuda (device 0).
//!
//! Why ndarray and not burn-flex (both ship with burn 0.21): see `bench/results/distill.md`
//! (training-speed section) and the crate README; on this 2-core machine ndarray trained the
//! n-gram students faster, which is where nearly all of the work is.

use burn::backend::Autodiff;
use burn::prelude::Backend;

/// The CPU backend: burn-ndarray, f32.
pub type NdArrayCpu = burn::backend::NdArray<f32>;
/// burn's newer pure-Rust CPU backend, kept for comparison in the training bench.
pub type FlexCpu = burn::backend::Flex;

/// The backend students are served and evaluated on.
#[cfg(not(feature = "cuda"))]
pub type Inference = NdArrayCpu;
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
