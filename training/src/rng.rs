//! Serialises use of burn's backend RNG.
//!
//! burn's CPU backends keep one process-wide RNG, so two trainings in one process would draw from
//! each other's stream. Every draw this crate makes (weight initialisation; each epoch of a student
//! with dropout) happens under this lock, right after seeding, so a seed reproduces a run even when
//! jobs run side by side.

use std::sync::{Mutex, MutexGuard};

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

static BACKEND_RNG: Mutex<()> = Mutex::new(());

/// Holds the lock with the backend seeded to `seed` until dropped.
pub(crate) fn seeded<B: Backend>(device: &B::Device, seed: u64) -> MutexGuard<'static, ()> {
    // A panic while holding the lock leaves nothing half-done that we rely on.
    let guard = BACKEND_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    guard
}

/// Builds a model with `init` under the lock, seeded to `seed`, and runs every parameter's
/// initialiser before releasing it. burn initialises parameters lazily, on first use: without
/// this, the draws would happen at the first forward pass, outside the lock, interleaved with
/// whatever another training in the process draws at that moment (seen as different initial
/// weights, and so different runs, under one seed while tests train side by side).
pub(crate) fn init_seeded<B: Backend, M: Module<B>>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> crate::error::Result<M>,
) -> crate::error::Result<M> {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    let _guard = seeded::<B>(device, seed);
    let model = init()?;
    model.visit(&mut Touch);
    Ok(model)
}
