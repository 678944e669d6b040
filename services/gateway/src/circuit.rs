//! Provider circuits, one per target model, shared by every request in the process: closed → open
//! after `failure_threshold` consecutive failures → after `open_for`, half-open with a single probe →
//! closed on the probe's success (open again on its failure). While a circuit is open the router
//! skips that target, so traffic moves to the next one without waiting. ("Breaker" names the breaker
//! service's session and budget breakers; these are the gateway's own, per target.)
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

use crate::config::CircuitConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
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
pub struct Circuit {
    cfg: CircuitConfig,
    inner: Mutex<Inner>,
}

/// Permission to send one attempt. Report its outcome with [`Circuit::record`]; a permit dropped
/// without a report (a cancelled request) frees the half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    circuit: Arc<Circuit>,
    probe: bool,
    reported: bool,
}

impl Permit {
    /// Records the attempt's outcome. `healthy` is false for failures that say the target is sick
    /// (connection errors, timeouts, 429/5xx); request-specific refusals count as healthy.
    pub fn record(mut self, healthy: bool) -> Option<CircuitState> {
        self.reported = true;
        self.circuit.record(self.probe, healthy)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe
            && !self.reported
            && let Ok(mut g) = self.circuit.inner.lock()
            && let Inner::HalfOpen { probing } = &mut *g
        {
            *probing = false;
        }
    }
}

impl Circuit {
    pub fn new(cfg: CircuitConfig) -> Self {
        Circuit {
            cfg,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.inner.lock().map(|g| match &*g {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if Instant::now() >= *until => CircuitState::HalfOpen,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }) {
            Ok(s) => s,
            Err(_) => CircuitState::Closed,
        }
    }

    /// A permit to try this target now, or `None` while the circuit is open (or its one probe is out).
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
            circuit: Arc::clone(self),
            probe,
            reported: false,
        })
    }

    /// Returns the new state when it changed.
    fn record(&self, probe: bool, healthy: bool) -> Option<CircuitState> {
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
                    Some(CircuitState::Open)
                } else {
                    None
                }
            }
            (Inner::HalfOpen { .. }, true) if probe => {
                *g = Inner::Closed { failures: 0 };
                Some(CircuitState::Closed)
            }
            (Inner::HalfOpen { .. }, false) if probe => {
                *g = open();
                Some(CircuitState::Open)
            }
            // Outcomes of attempts admitted before the circuit opened change nothing.
            _ => None,
        }
    }
}

/// Every target's circuit, created once at start-up (the map itself is never locked).
#[derive(Debug)]
pub struct Circuits {
    map: HashMap<String, Arc<Circuit>>,
}

impl Circuits {
    pub fn new<'a>(targets: impl IntoIterator<Item = &'a str>, cfg: CircuitConfig) -> Self {
        Circuits {
            map: targets
                .into_iter()
                .map(|t| (t.to_owned(), Arc::new(Circuit::new(cfg))))
                .collect(),
        }
    }
    pub fn get(&self, target: &str) -> Option<&Arc<Circuit>> {
        self.map.get(target)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Circuit>)> {
        self.map.iter()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn circuit() -> Arc<Circuit> {
        Arc::new(Circuit::new(CircuitConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let b = circuit();
        for _ in 0..2 {
            assert_eq!(b.try_acquire().unwrap().record(false), None);
        }
        assert_eq!(
            b.try_acquire().unwrap().record(false),
            Some(CircuitState::Open)
        );
        assert!(b.try_acquire().is_none(), "open circuit admits nothing");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "only one probe while half-open");
        assert_eq!(probe.record(true), Some(CircuitState::Closed));
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_dropped_probe_frees_slot() {
        let b = circuit();
        for _ in 0..3 {
            b.try_acquire().unwrap().record(false);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().unwrap());
        let probe = b.try_acquire().expect("slot freed by the dropped probe");
        assert_eq!(probe.record(false), Some(CircuitState::Open));
        assert!(b.try_acquire().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_failure_count() {
        let b = circuit();
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(true);
        b.try_acquire().unwrap().record(false);
        b.try_acquire().unwrap().record(false);
        assert_eq!(b.state(), CircuitState::Closed);
    }
}
