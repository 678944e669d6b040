//! The gateway's side of metering: [`MeteringSink`] implements the gateway's `UsageSink`.
//! `record` never waits: it puts the event on a bounded in-memory queue (when the queue is full it
//! appends the event to the on-disk spool instead). A background task sends batches over the
//! client-streaming `Ingest` RPC; a batch that cannot be delivered goes to the spool, and the spool
//! is replayed (metering deduplicates by event id) once metering answers again.
//!
//! What a SIGKILL of the gateway can lose: the events still in memory — at most `queue_size +
//! batch_size`, and in steady state about `batch_interval` (plus one send) worth of traffic.
//! Spooled events survive any crash of the process (a torn last line is skipped); SIGTERM drains
//! everything through [`MeteringSink::shutdown`].
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use retort_hooks::{UsageEvent, UsageSink};
use retort_proto::v1::{self as pb, metering_client::MeteringClient};
use retort_server::auth::WithKey;
use tokio::sync::{mpsc, oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::{config::ClientSettings, convert, error::MeteringError, spool::Spool};

enum Msg {
    Event(Box<pb::UsageEvent>),
    /// Send what is queued now and try the spool; answered when done.
    Flush(oneshot::Sender<()>),
    /// Drain everything to metering or the spool, then stop.
    Shutdown(oneshot::Sender<()>),
}

/// Counters (monotonic) of what the sink did.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events acknowledged by metering (sent directly or replayed).
    pub delivered: AtomicU64,
    /// Events written to the spool (failed sends, metering away, or a full queue).
    pub spooled: AtomicU64,
    /// Of those, events spilled because the in-memory queue was full.
    pub overflowed: AtomicU64,
    /// Events replayed from the spool and acknowledged.
    pub replayed: AtomicU64,
    /// Events metering rejected as malformed (logged; never resent).
    pub rejected: AtomicU64,
    /// Events lost: the spool itself failed (disk full, permissions).
    pub lost: AtomicU64,
}

pub struct MeteringSink {
    tx: mpsc::Sender<Msg>,
    spool: Arc<Spool>,
    stats: Arc<SinkStats>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MeteringSink {
    /// Starts the background sender (needs a Tokio runtime). Nothing connects until the first send.
    pub fn start(settings: ClientSettings) -> Result<Arc<MeteringSink>, MeteringError> {
        let spool = Arc::new(Spool::open(&settings.spool_dir)?);
        let endpoint = Endpoint::from_shared(settings.endpoint.clone())
            .map_err(|source| MeteringError::Endpoint {
                endpoint: settings.endpoint.clone(),
                source,
            })?
            .connect_timeout(settings.send_timeout)
            .tcp_nodelay(true);
        let client = MeteringClient::with_interceptor(
            endpoint.connect_lazy(),
            WithKey::new(settings.key.as_deref()),
        )
        .max_encoding_message_size(16 << 20);
        let (tx, rx) = mpsc::channel(settings.queue_size);
        let stats = Arc::new(SinkStats::default());
        let worker = Worker {
            rx,
            client,
            spool: Arc::clone(&spool),
            stats: Arc::clone(&stats),
            down_until: if spool.pending() {
                Some(Instant::now())
            } else {
                None
            },
            s: settings,
        };
        let task = tokio::spawn(worker.run());
        Ok(Arc::new(MeteringSink {
            tx,
            spool,
            stats,
            task: Mutex::new(Some(task)),
        }))
    }

    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Sends everything queued now (to metering, or to the spool) and tries to replay the spool.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Drains the queue to metering or the spool and stops the sender (on SIGTERM). Events
    /// recorded afterwards go straight to the spool.
    pub async fn shutdown(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(ack)).await.is_ok() {
            let _ = done.await;
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    fn spill(&self, e: pb::UsageEvent) {
        match self.spool.append(std::slice::from_ref(&e)) {
            Ok(()) => {
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
                self.stats.overflowed.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %err, event_id = %e.event_id, "metering: event lost (queue full and spool failed)");
            }
        }
    }
}

impl UsageSink for MeteringSink {
    fn record(&self, event: UsageEvent) {
        let e = convert::from_gateway(&event);
        match self.tx.try_send(Msg::Event(Box::new(e))) {
            Ok(()) => {}
            Err(
                mpsc::error::TrySendError::Full(Msg::Event(e))
                | mpsc::error::TrySendError::Closed(Msg::Event(e)),
            ) => self.spill(*e),
            Err(_) => {}
        }
    }
}

struct Worker {
    rx: mpsc::Receiver<Msg>,
    client: MeteringClient<InterceptedService<Channel, WithKey>>,
    spool: Arc<Spool>,
    stats: Arc<SinkStats>,
    /// Metering was unreachable: new batches go to the spool until a replay succeeds (after this).
    down_until: Option<Instant>,
    s: ClientSettings,
}

impl Worker {
    async fn run(mut self) {
        let mut batch: Vec<pb::UsageEvent> = Vec::with_capacity(self.s.batch_size);
        let mut tick = tokio::time::interval(self.s.batch_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Messages are taken as many at a time as are queued: one wake-up of this task per
        // burst of requests, not one per request.
        let mut msgs: Vec<Msg> = Vec::with_capacity(self.s.batch_size);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut msgs, self.s.batch_size) => {
                    if n == 0 {
                        self.deliver(&mut batch).await;
                        return;
                    }
                    let mut taken = std::mem::take(&mut msgs).into_iter();
                    while let Some(msg) = taken.next() {
                        match msg {
                            Msg::Event(e) => {
                                batch.push(*e);
                                if batch.len() >= self.s.batch_size {
                                    self.deliver(&mut batch).await;
                                }
                            }
                            Msg::Flush(ack) => {
                                self.drain(&mut batch).await;
                                if self.spool.pending() {
                                    self.replay().await;
                                }
                                let _ = ack.send(());
                            }
                            Msg::Shutdown(ack) => {
                                // What was taken after the shutdown message is drained with the rest.
                                for later in taken.by_ref() {
                                    match later {
                                        Msg::Event(e) => batch.push(*e),
                                        Msg::Flush(a) | Msg::Shutdown(a) => {
                                            let _ = a.send(());
                                        }
                                    }
                                }
                                self.drain(&mut batch).await;
                                if let Err(e) = self.spool.sync() {
                                    tracing::error!(error = %e, "metering: cannot sync the spool");
                                }
                                let _ = ack.send(());
                                return;
                            }
                        }
                    }
                    // Keep the buffer's capacity for the next burst.
                    msgs = taken.collect();
                    msgs.clear();
                },
                _ = tick.tick() => {
                    self.deliver(&mut batch).await;
                    if let Some(t) = self.down_until && Instant::now() >= t {
                        self.replay().await;
                    }
                }
            }
        }
    }

    /// Takes everything queued right now into batches and delivers them.
    async fn drain(&mut self, batch: &mut Vec<pb::UsageEvent>) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Event(e) => {
                    batch.push(*e);
                    if batch.len() >= self.s.batch_size {
                        self.deliver(batch).await;
                    }
                }
                Msg::Flush(ack) | Msg::Shutdown(ack) => {
                    let _ = ack.send(());
                }
            }
        }
        self.deliver(batch).await;
    }

    /// Sends `events` (copied into the request; the caller keeps them to spool if this fails).
    async fn send(&mut self, events: &[pb::UsageEvent]) -> Result<pb::IngestSummary, String> {
        let batches: Vec<pb::UsageBatch> = events
            .chunks(self.s.batch_size)
            .map(|c| pb::UsageBatch { events: c.to_vec() })
            .collect();
        // A replayed file may hold many batches: each gets the send timeout.
        let limit = self.s.send_timeout * (batches.len().clamp(1, 10_000) as u32);
        let call = self.client.ingest(futures::stream::iter(batches));
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(status.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    fn accepted(&self, s: &pb::IngestSummary) {
        self.stats
            .rejected
            .fetch_add(s.rejected_count, Ordering::Relaxed);
        for r in &s.rejected {
            tracing::warn!(event_id = %r.event_id, field = %r.field, reason = %r.reason, "metering rejected a usage event");
        }
    }

    /// Sends the batch, or spools it while metering is away (or when the send fails).
    async fn deliver(&mut self, batch: &mut Vec<pb::UsageEvent>) {
        if batch.is_empty() {
            return;
        }
        let events = std::mem::take(batch);
        if self.down_until.is_none() {
            let n = events.len() as u64;
            match self.send(&events).await {
                Ok(summary) => {
                    self.stats.delivered.fetch_add(n, Ordering::Relaxed);
                    self.accepted(&summary);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = n, "metering unreachable: spooling usage events");
                    self.down_until = Some(Instant::now() + self.s.retry);
                }
            }
        }
        self.to_spool(&events);
    }

    fn to_spool(&self, events: &[pb::UsageEvent]) {
        match self.spool.append(events) {
            Ok(()) => {
                self.stats
                    .spooled
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats
                    .lost
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, events = events.len(), "metering: usage events lost (spool failed)");
            }
        }
    }

    /// Replays sealed spool files oldest first; a file is removed once metering acknowledged it.
    async fn replay(&mut self) {
        let files = match self.spool.seal() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "metering: cannot read the spool");
                self.down_until = Some(Instant::now() + self.s.retry);
                return;
            }
        };
        for path in files {
            let events = match Spool::read(&path) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!(error = %e, "metering: cannot read a spool file");
                    continue;
                }
            };
            let n = events.len() as u64;
            match self.send(&events).await {
                Ok(summary) => {
                    self.stats.delivered.fetch_add(n, Ordering::Relaxed);
                    self.stats.replayed.fetch_add(n, Ordering::Relaxed);
                    self.accepted(&summary);
                    if let Err(e) = Spool::remove(&path) {
                        tracing::error!(error = %e, "metering: cannot remove a replayed spool file (it will be replayed again, deduplicated)");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "metering still unreachable; spool kept");
                    self.down_until = Some(Instant::now() + self.s.retry);
                    return;
                }
            }
        }
        if self.down_until.take().is_some() {
            tracing::info!("metering reachable again: spool replayed");
        }
    }
}
