//! Serialises use of burn's backend RNG.
//!
//! burn's CPU backends keep one process-wide RNG, so two trainings in one process would draw from
//! each other's stream. Every draw this crate makes (weight initialisation; each epoch of a student
//! with dropout) happens under this lock, right after seeding, so a seed reproduces a run even when
//! jobs run side by side.

use std::sync::{Mutex, MutexGuard};

use burn::prelude::Backend;

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
