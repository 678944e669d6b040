//! The group commit's queue, shared by both writers: each ingest call's batch waits as a [`Job`];
//! a writer takes every batch waiting (up to [`GROUP_MAX`] events) into one transaction, writes
//! each event id once, and answers every caller with its own records newly recorded.
use std::sync::Arc;

// foldhash: these sets hold a group's ids (SipHash was the service's top symbol at ingest).
use foldhash::{HashSet, HashSetExt};
use tokio::sync::oneshot;

use super::record::Record;
use crate::error::MeteringError;

/// One ingest call's batch, waiting for the writer; answered with the records newly recorded.
pub(super) struct Job {
    pub(super) records: Vec<Record>,
    pub(super) done: oneshot::Sender<Result<Vec<Record>, Arc<MeteringError>>>,
}

/// Batches queued for the writer before `insert` waits (backpressure).
pub(super) const QUEUE_JOBS: usize = 64;
/// A group commit takes waiting batches until it holds this many events.
const GROUP_MAX: usize = 20_000;

/// A group commit's batches: `first` and every batch waiting (`next`), up to [`GROUP_MAX`] events.
pub(super) fn take_group(first: Job, mut next: impl FnMut() -> Option<Job>) -> Vec<Job> {
    let mut n = first.records.len();
    let mut jobs = vec![first];
    while n < GROUP_MAX {
        let Some(j) = next() else { break };
        n += j.records.len();
        jobs.push(j);
    }
    jobs
}

/// A group's records, each event id once: an id that appears twice in a group is written and
/// counted once.
pub(super) fn firsts(jobs: &[Job]) -> Vec<&Record> {
    let mut seen: HashSet<&str> = HashSet::new();
    jobs.iter()
        .flat_map(|j| j.records.iter())
        .filter(|r| seen.insert(r.event_id.as_str()))
        .collect()
}

/// Answers each caller with its records newly recorded (or the group's error).
pub(super) fn answer(jobs: Vec<Job>, result: Result<HashSet<String>, MeteringError>) {
    match result {
        Ok(mut inserted) => {
            for j in jobs {
                // Removing the id hands each newly recorded event to the first batch that had it.
                let new = j
                    .records
                    .into_iter()
                    .filter(|r| inserted.remove(&r.event_id))
                    .collect();
                let _ = j.done.send(Ok(new));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batches = jobs.len(), "metering: group write failed");
            let e = Arc::new(e);
            for j in jobs {
                let _ = j.done.send(Err(Arc::clone(&e)));
            }
        }
    }
}
