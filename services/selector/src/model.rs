//! The selector's live model: restored at start (from its state file, or rebuilt from the stored
//! runs), updated by every recorded run, refitted every `retrain_every` runs and on request, and
//! persisted after each refit.
use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use retort_proto::v1 as pb;
use retort_training::selector::{
    Experience, Objective, Recommendation, Selector, SelectorState, TaskContext,
};

use crate::{Error, SelectorConfig, store::Store};

struct Live {
    selector: Selector,
    since_retrain: usize,
    trained_ms: i64,
}

/// The model behind the service.
pub struct Model {
    pub store: Store,
    cfg: SelectorConfig,
    live: Arc<Mutex<Live>>,
    /// How the model was restored at start.
    restored: String,
}

fn lock(live: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    // A panic while holding the lock leaves a usable model (every update is whole or absent).
    live.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads a persisted state; `Err` says why it cannot be used.
fn read_state(path: &Path, stored: usize) -> Result<Selector, String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "no state file".to_string(),
        _ => format!("cannot read {}: {e}", path.display()),
    })?;
    let state: SelectorState =
        serde_json::from_str(&text).map_err(|e| format!("{} is corrupt: {e}", path.display()))?;
    if state.experiences.len() != stored {
        return Err(format!(
            "the state holds {} runs, the store {stored}",
            state.experiences.len()
        ));
    }
    Selector::from_state(state).map_err(|e| e.to_string())
}

fn write_state(path: &Path, state: &SelectorState) -> Result<(), Error> {
    let io = |context: String| move |source| Error::Io { context, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Thread { what, source })
}

impl Model {
    /// Restores the model: from the state file when it matches the store, else rebuilt from the
    /// stored runs (and the state file rewritten).
    pub async fn open(cfg: SelectorConfig, store: Store) -> Result<Model, Error> {
        let path = cfg.state_path();
        let stored = store.count().await?;
        let p = path.clone();
        let restored = blocking("restore", move || read_state(&p, stored)).await?;
        let (selector, restored) = match restored {
            Ok(s) => (s, "state file".to_string()),
            Err(why) => {
                let runs = store.all().await?;
                let n = runs.len();
                tracing::warn!(reason = %why, runs = n, "selector: rebuilding the model from the stored runs");
                let s = blocking("rebuild", move || Selector::rebuild(runs)).await??;
                write_state(&path, &s.state())?;
                (s, format!("rebuilt from {n} stored runs: {why}"))
            }
        };
        tracing::info!(runs = selector.experiences().len(), tasks = selector.tasks(), restored = %restored, "selector model ready");
        Ok(Model {
            store,
            cfg,
            live: Arc::new(Mutex::new(Live {
                selector,
                since_retrain: 0,
                trained_ms: retort_time::now_ms(),
            })),
            restored,
        })
    }

    /// Stores runs and learns from them; refits when `retrain_every` runs have arrived since the
    /// last refit. Returns whether it refitted.
    pub async fn record(&self, runs: Vec<Experience>) -> Result<bool, Error> {
        // Checked (the same checks the model makes) before anything is stored.
        for r in &runs {
            retort_training::selector::check(r)?;
        }
        self.store.insert(&runs).await?;
        let live = Arc::clone(&self.live);
        let every = self.cfg.retrain_every.max(1);
        let path = self.cfg.state_path();
        let (retrained, state) = blocking("record", move || -> Result<_, Error> {
            let mut l = lock(&live);
            let n = runs.len();
            for r in runs {
                l.selector.record(r)?;
            }
            l.since_retrain += n;
            if l.since_retrain >= every {
                l.selector.retrain()?;
                l.since_retrain = 0;
                l.trained_ms = retort_time::now_ms();
            }
            Ok((l.since_retrain == 0, l.selector.state()))
        })
        .await??;
        // The state file follows the store after every record (a restart restores it as is).
        write_state(&path, &state)?;
        Ok(retrained)
    }

    pub async fn recommend(
        &self,
        ctx: TaskContext,
        objective: Objective,
        probes: Vec<Experience>,
        draws: usize,
        seed: u64,
    ) -> Result<Recommendation, Error> {
        let live = Arc::clone(&self.live);
        blocking("recommend", move || {
            lock(&live)
                .selector
                .recommend(&ctx, &objective, &probes, draws, seed)
        })
        .await
    }

    /// Refits on every stored run (the store is the truth: runs recorded by another replica are
    /// included).
    pub async fn retrain(&self) -> Result<pb::SelectorStatus, Error> {
        let runs = self.store.all().await?;
        let selector = blocking("retrain", move || Selector::rebuild(runs)).await??;
        write_state(&self.cfg.state_path(), &selector.state())?;
        {
            let mut l = lock(&self.live);
            l.selector = selector;
            l.since_retrain = 0;
            l.trained_ms = retort_time::now_ms();
        }
        Ok(self.status())
    }

    pub fn status(&self) -> pb::SelectorStatus {
        let l = lock(&self.live);
        let runs = l.selector.experiences();
        let mut arms: Vec<pb::ArmRuns> = Vec::new();
        for e in runs {
            let name = e.arm.to_string();
            let i = match arms.iter().position(|a| a.arm == name) {
                Some(i) => i,
                None => {
                    arms.push(pb::ArmRuns {
                        arm: name,
                        ..Default::default()
                    });
                    arms.len() - 1
                }
            };
            let a = &mut arms[i];
            if e.budget.is_full() {
                a.mean_accuracy = (a.mean_accuracy * a.full_runs as f64 + e.outcome.accuracy)
                    / (a.full_runs + 1) as f64;
                a.full_runs += 1;
            } else {
                a.probes += 1;
            }
        }
        arms.sort_by(|a, b| a.arm.cmp(&b.arm));
        let full = runs.iter().filter(|e| e.budget.is_full()).count() as u64;
        pb::SelectorStatus {
            runs: runs.len() as u64,
            full_runs: full,
            probes: runs.len() as u64 - full,
            tasks: l.selector.tasks() as u64,
            trained_ms: l.trained_ms,
            since_retrain: l.since_retrain as u64,
            backend: retort_training::backend::name(),
            restored: self.restored.clone(),
            arms,
        }
    }
}
