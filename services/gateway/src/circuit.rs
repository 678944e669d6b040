//! Provider circuit breakers, one per target model, shared by every request in the process:
//! closed → open after `failure_threshold` consecutive failures → after `open_for`, half-open with a
//! single probe → closed on the probe's success (open again on its failure). While a breaker is open
//! the router skips that target, so traffic moves to the next one without waiting.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
}

/// Permission to send one attempt. Report its outcome with [`Breaker::record`]; a permit dropped
/// without a report (a cancelled request) frees the half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// Records the attempt's outcome. `healthy` is false for failures that say the target is sick
    /// (connection errors, timeouts, 429/5xx); request-specific refusals count as healthy.
    pub fn record(mut self, healthy: bool) -> Option<BreakerState> {
        self.reported = true;
        self.breaker.record(self.probe, healthy)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe
            && !self.reported
            && let Ok(mut g) = self.breaker.inner.lock()
            && let Inner::HalfOpen { probing } = &mut *g
        {
            *probing = false;
        }
    }
}

impl Breaker {
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.inner.lock().map(|g| match &*g {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }) {
            Ok(s) => s,
            Err(_) => BreakerState::Closed,
        }
    }

    /// A permit to try this target now, or `None` while the breaker is open (or its one probe is out).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let mut g = self.inner.lock().ok()?;
        let probe = match &mut *g {
            Inner::Closed { .. } => false,
            Inner::Open { until } => {
                if Instant::now() < *until {
                    return None;
                }
                *g = Inner::HalfOpen { probing: true };
                true
            }
            Inner::HalfOpen { probing } => {
                if *probing {
                    return None;
                }
                *probing = true;
                true
            }
        };
        Some(Permit {
            breaker: Arc::clone(self),
            probe,
            reported: false,
        })
    }

    /// Returns the new state when it changed.
    fn record(&self, probe: bool, healthy: bool) -> Option<BreakerState> {
        let mut g = self.inner.lock().ok()?;
        let open = || Inner::Open {
            until: Instant::now() + self.cfg.open_for,
        };
        match (&mut *g, healthy) {
            (Inner::Closed { failures }, true) => {
                *failures = 0;
                None
            }
            (Inner::Closed { failures }, false) => {
                *failures += 1;
                if *failures >= self.cfg.failure_threshold {
                    *g = open();
                    Some(BreakerState::Open)
                } else {
                    None
                }
            }
            (Inner::HalfOpen { .. }, true) if probe => {
                *g = Inner::Closed { failures: 0 };
                Some(BreakerState::Closed)
            }
            (Inner::HalfOpen { .. }, false) if probe => {
                *g = open();
                Some(BreakerState::Open)
            }
            // Outcomes of attempts admitted before the breaker opened change nothing.
            _ => None,
        }
    }
}

/// Every target's breaker, created once at start-up (the map itself is never locked).
#[derive(Debug)]
pub struct Breakers {
    map: HashMap<String, Arc<Breaker>>,
}

impl Breakers {
    pub fn new<'a>(targets: impl IntoIterator<Item = &'a str>, cfg: BreakerConfig) -> Self {
        Breakers {
            map: targets
                .into_iter()
                .map(|t| (t.to_owned(), Arc::new(Breaker::new(cfg))))
                .collect(),
        }
    }
    pub fn get(&self, target: &str) -> Option<&Arc<Breaker>> {
        self.map.get(target)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Breaker>)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Arc<Breaker> {
        Arc::new(Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let b = breaker();
        for _ in 0..2 {
            assert_eq!(b.try_acquire().unwrap().record(false), None);
        }
        assert_eq!(
            b.try_acquire().unwrap().record(false),
            Some(BreakerState::Open)
        );
        assert!(b.try_acquire().is_none(), "open breaker admits nothing");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "only one probe while half-open");
        assert_eq!(probe.record(true), Some(BreakerState::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_dropped_probe_frees_slot() {
        let b = breaker();
        for _ in 0..3 {
            b.try_acquire().unwrap().record(false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().unwrap());
        let probe = b.try_acquire().expect("slot freed by the dropped probe");
        assert_eq!(probe.record(false), Some(BreakerState::Open));
        assert!(b.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_failure_count() {
        let b = breaker();
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(true);
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(false);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
