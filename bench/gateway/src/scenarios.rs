//! The scenarios, run against systems given by base URL, so the `bench` binary (which starts the
//! systems as processes) and the smoke test (which starts some in-process) share them.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;

use crate::{
    configs::{MODEL_20MS, MODEL_FAST, MODEL_PACED, MODEL_SOAK, MODEL_STREAM},
    grpc,
    load::{self, Endpoint, RssSample, Summary, chat_body},
};

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemKind {
    /// Client straight to the simulator.
    Direct,
    /// The bare pass-through proxy.
    Floor,
    /// The Retort gateway.
    Retort,
    /// The LiteLLM proxy.
    Litellm,
}

impl SystemKind {
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Direct => "direct",
            SystemKind::Floor => "floor",
            SystemKind::Retort => "retort",
            SystemKind::Litellm => "litellm",
        }
    }
}

/// One system under test.
#[derive(Debug, Clone)]
pub struct System {
    pub kind: SystemKind,
    /// `http://127.0.0.1:PORT`: `/v1/chat/completions` is appended.
    pub base_url: String,
    pub key: Option<String>,
    /// Whose RSS to read (the server process).
    pub pid: Option<u32>,
    /// Read the RSS of this whole process group instead (a server with worker processes).
    pub pgid: Option<u32>,
}

impl System {
    fn rss_kib(&self) -> Option<u64> {
        match (self.pgid, self.pid) {
            (Some(g), _) => load::group_rss_kib(g),
            (None, Some(p)) => load::rss_kib(p),
            _ => None,
        }
    }
}

/// What to run: the systems (direct must be among them) and Retort's gRPC address.
#[derive(Debug, Clone)]
pub struct Setup {
    pub systems: Vec<System>,
    /// `http://127.0.0.1:PORT` of Retort's gRPC ingress.
    pub retort_grpc_url: Option<String>,
}

/// How much of each scenario to run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// (a) measured requests at concurrency 1, per system, split into interleaved rounds.
    pub latency_requests: u64,
    pub latency_rounds: u64,
    /// Unrecorded requests before each round.
    pub latency_warmup: u64,
    /// (a) for LiteLLM, whose requests take milliseconds.
    pub litellm_latency_requests: u64,
    /// (b) connections, warm-up and measured window.
    pub throughput_concurrency: usize,
    pub throughput_warmup_s: f64,
    pub throughput_s: f64,
    pub litellm_throughput_s: f64,
    /// (b′) peak throughput: connections and window (zero-delay simulator, so the systems and
    /// not the simulator's latency set the rate; same warm-up as (b)).
    pub peak_concurrency: usize,
    pub peak_s: f64,
    /// (c) streamed requests at concurrency 1.
    pub stream_requests: u64,
    pub stream_warmup: u64,
    pub litellm_stream_requests: u64,
    /// (c′) streamed requests at concurrency 1 from a paced provider (8 tokens, about 2 ms apart).
    pub paced_requests: u64,
    pub litellm_paced_requests: u64,
    /// gRPC `Complete`: concurrency, HTTP/2 connections, window.
    pub grpc_concurrency: usize,
    pub grpc_connections: usize,
    pub grpc_s: f64,
    /// (d) concurrent streams held open, soak length, ramp-up and sampling period.
    pub soak_streams: usize,
    pub soak_s: f64,
    pub soak_ramp_s: f64,
    pub soak_sample_s: f64,
}

impl Plan {
    /// The full run (about 10 minutes with LiteLLM and a 5-minute soak).
    pub fn full() -> Plan {
        Plan {
            latency_requests: 20_000,
            latency_rounds: 4,
            latency_warmup: 500,
            litellm_latency_requests: 2_000,
            throughput_concurrency: 256,
            throughput_warmup_s: 2.0,
            throughput_s: 10.0,
            litellm_throughput_s: 10.0,
            peak_concurrency: 64,
            peak_s: 5.0,
            stream_requests: 5_000,
            stream_warmup: 200,
            litellm_stream_requests: 300,
            paced_requests: 2_000,
            litellm_paced_requests: 100,
            grpc_concurrency: 64,
            grpc_connections: 4,
            grpc_s: 10.0,
            soak_streams: 2_000,
            soak_s: 300.0,
            soak_ramp_s: 10.0,
            soak_sample_s: 1.0,
        }
    }

    /// A few seconds: every scenario, tiny counts.
    pub fn smoke() -> Plan {
        Plan {
            latency_requests: 300,
            latency_rounds: 2,
            latency_warmup: 20,
            litellm_latency_requests: 40,
            throughput_concurrency: 16,
            throughput_warmup_s: 0.2,
            throughput_s: 1.0,
            litellm_throughput_s: 1.0,
            peak_concurrency: 8,
            peak_s: 0.5,
            stream_requests: 100,
            stream_warmup: 10,
            litellm_stream_requests: 20,
            paced_requests: 40,
            litellm_paced_requests: 10,
            grpc_concurrency: 8,
            grpc_connections: 2,
            grpc_s: 1.0,
            soak_streams: 50,
            soak_s: 3.0,
            soak_ramp_s: 0.5,
            soak_sample_s: 0.25,
        }
    }
}

/// (a) One system's latency at concurrency 1.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub system: SystemKind,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Summary,
}

/// (b) and gRPC: one closed-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputRow {
    pub system: SystemKind,
    pub concurrency: usize,
    pub window_s: f64,
    pub ok: u64,
    pub errors: u64,
    pub rps: f64,
    pub first_error: Option<String>,
    pub latency: Summary,
}

/// (c) One system's streaming at concurrency 1.
#[derive(Debug, Clone, Serialize)]
pub struct StreamRow {
    pub system: SystemKind,
    pub errors: u64,
    pub first_error: Option<String>,
    pub ttft: Summary,
    pub total: Summary,
    pub min_tokens: u32,
    pub max_tokens: u32,
}

/// (d) Retort's memory under a soak of concurrent streams.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub streams: usize,
    pub duration_s: f64,
    pub completed_streams: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub peak_kib: u64,
    /// Peak RSS while at least 90 % of the streams were open (0 when that never happened).
    pub peak_at_target_kib: u64,
    pub max_active: i64,
    /// Samples from this time on count as steady state (after ramp-up and the first streams).
    pub steady_from_s: f64,
    /// Median RSS of the first and the last quarter of the steady samples.
    pub first_quarter_kib: u64,
    pub last_quarter_kib: u64,
    pub growth_pct: f64,
    /// RSS one second after the soak ended.
    pub after_kib: Option<u64>,
    pub samples: Vec<RssSample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrpcRow {
    pub connections: usize,
    #[serde(flatten)]
    pub run: ThroughputRow,
}

/// Everything measured, raw.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub plan: Plan,
    pub systems: Vec<SystemKind>,
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    /// (b′) peak throughput, zero-delay simulator.
    pub peak: Vec<ThroughputRow>,
    pub streaming: Vec<StreamRow>,
    /// (c′) streaming from a paced provider: the first token arrives alone, as from a real model.
    pub paced: Vec<StreamRow>,
    pub grpc: Option<GrpcRow>,
    /// RSS of each system before any load, KiB (LiteLLM: all its processes).
    pub idle_rss_kib: BTreeMap<SystemKind, u64>,
    pub soak: Option<SoakResult>,
}

/// Streams one after another on each system, `rounds` interleaved rounds; `counts` is (every
/// system, LiteLLM) in all. A system that fails gets a row holding its error.
#[allow(clippy::too_many_arguments)]
async fn stream_rounds(
    systems: &[System],
    eps: &[Endpoint],
    body: &Bytes,
    counts: (u64, u64),
    rounds: u64,
    warmup: u64,
    what: &str,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Vec<StreamRow>> {
    let mut acc: Vec<Option<load::StreamRun>> = systems.iter().map(|_| None).collect();
    for round in 0..rounds {
        for (i, (s, ep)) in systems.iter().zip(eps).enumerate() {
            let total = if s.kind == SystemKind::Litellm {
                counts.1
            } else {
                counts.0
            };
            let n = total / rounds + u64::from(round < total % rounds);
            let warmup = if round == 0 { warmup } else { warmup.min(20) };
            log(&format!(
                "{what}: {} round {}/{rounds}, {n} streams",
                s.kind.name(),
                round + 1
            ));
            let (ep, body) = (ep.clone(), body.clone());
            match load::on_own_thread(move || async move {
                load::sequential_streams(&ep, body, n, warmup).await
            })
            .await
            {
                Ok(r) => match &mut acc[i] {
                    Some(a) => a.merge(r),
                    slot => *slot = Some(r),
                },
                Err(e) => {
                    let a = match &mut acc[i] {
                        Some(a) => a,
                        slot => slot.insert(load::StreamRun::empty()?),
                    };
                    a.errors += n;
                    a.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    Ok(systems
        .iter()
        .zip(acc)
        .filter_map(|(s, a)| {
            a.map(|r| StreamRow {
                system: s.kind,
                errors: r.errors,
                first_error: r.first_error,
                ttft: Summary::of(&r.ttft),
                total: Summary::of(&r.total),
                min_tokens: if r.ttft.is_empty() { 0 } else { r.min_tokens },
                max_tokens: r.max_tokens,
            })
        })
        .collect())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs every scenario in order: idle memory, (a), (b), (c), gRPC, (d). A failing system gets a
/// row holding its error rather than ending the run.
pub async fn run(
    setup: &Setup,
    plan: &Plan,
    log: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Results> {
    let systems = &setup.systems;
    anyhow::ensure!(
        systems.iter().any(|s| s.kind == SystemKind::Direct),
        "the direct system is required"
    );
    let eps: Vec<Endpoint> = systems
        .iter()
        .map(|s| Endpoint::new(&s.base_url, s.key.as_deref()))
        .collect::<anyhow::Result<_>>()?;
    let mut results = Results {
        plan: plan.clone(),
        systems: systems.iter().map(|s| s.kind).collect(),
        latency: Vec::new(),
        throughput: Vec::new(),
        peak: Vec::new(),
        streaming: Vec::new(),
        paced: Vec::new(),
        grpc: None,
        idle_rss_kib: BTreeMap::new(),
        soak: None,
    };

    for s in systems {
        if let Some(kib) = s.rss_kib() {
            results.idle_rss_kib.insert(s.kind, kib);
        }
    }

    // (a) Latency at concurrency 1, zero-delay simulator; rounds interleave the systems so that
    // drift on a shared machine hits them alike.
    let body = chat_body(MODEL_FAST, false);
    let rounds = plan.latency_rounds.max(1);
    let mut acc: Vec<Option<load::SeqRun>> = systems.iter().map(|_| None).collect();
    for round in 0..rounds {
        for (i, (s, ep)) in systems.iter().zip(&eps).enumerate() {
            let total = if s.kind == SystemKind::Litellm {
                plan.litellm_latency_requests
            } else {
                plan.latency_requests
            };
            let n = total / rounds + u64::from(round < total % rounds);
            let warmup = if s.kind == SystemKind::Litellm {
                plan.latency_warmup.min(50)
            } else {
                plan.latency_warmup
            };
            log(&format!(
                "(a) latency c=1: {} round {}/{rounds}, {n} requests",
                s.kind.name(),
                round + 1
            ));
            let (ep, body) = (ep.clone(), body.clone());
            match load::on_own_thread(move || async move {
                load::sequential(&ep, body, n, warmup).await
            })
            .await
            {
                Ok(r) => match &mut acc[i] {
                    Some(a) => {
                        a.hist.add(&r.hist).ok();
                        a.errors += r.errors;
                        if a.first_error.is_none() {
                            a.first_error = r.first_error;
                        }
                    }
                    slot => *slot = Some(r),
                },
                Err(e) => {
                    let a = acc[i].get_or_insert(load::SeqRun {
                        hist: load::histogram()?,
                        errors: 0,
                        first_error: None,
                    });
                    a.errors += n;
                    a.first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    for (s, a) in systems.iter().zip(acc) {
        if let Some(a) = a {
            results.latency.push(LatencyRow {
                system: s.kind,
                errors: a.errors,
                first_error: a.first_error,
                latency: Summary::of(&a.hist),
            });
        }
    }

    // (b) Sustained throughput: many connections, 20 ms simulator latency.
    let body = chat_body(MODEL_20MS, false);
    for (s, ep) in systems.iter().zip(&eps) {
        let window = if s.kind == SystemKind::Litellm {
            plan.litellm_throughput_s
        } else {
            plan.throughput_s
        };
        let c = plan.throughput_concurrency;
        log(&format!(
            "(b) throughput c={c}: {} for {window} s",
            s.kind.name()
        ));
        let r = load::closed_loop(
            ep,
            body.clone(),
            c,
            secs(plan.throughput_warmup_s),
            secs(window),
        )
        .await;
        results
            .throughput
            .push(throughput_row(s.kind, c, window, r));
    }

    // (b′) Peak throughput: the zero-delay simulator at a moderate connection count, so each system's
    // own cost per request sets the rate (in (b) the simulator's 20 ms caps every system alike).
    let body = chat_body(MODEL_FAST, false);
    for (s, ep) in systems.iter().zip(&eps) {
        let c = plan.peak_concurrency;
        log(&format!(
            "(b') peak throughput c={c}: {} for {} s",
            s.kind.name(),
            plan.peak_s
        ));
        let r = load::closed_loop(
            ep,
            body.clone(),
            c,
            secs(plan.throughput_warmup_s),
            secs(plan.peak_s),
        )
        .await;
        results.peak.push(throughput_row(s.kind, c, plan.peak_s, r));
    }

    // (c) Streaming: time to first token, 64 chunks per answer delivered at once, concurrency 1;
    // interleaved rounds as in (a).
    let body = chat_body(MODEL_STREAM, true);
    let counts = (plan.stream_requests, plan.litellm_stream_requests);
    results.streaming = stream_rounds(
        systems,
        &eps,
        &body,
        counts,
        rounds,
        plan.stream_warmup,
        "(c) streaming TTFT c=1",
        log,
    )
    .await?;
    // (c′) The same from a provider that paces its tokens, so the first one arrives alone.
    let body = chat_body(MODEL_PACED, true);
    let counts = (plan.paced_requests, plan.litellm_paced_requests);
    results.paced = stream_rounds(
        systems,
        &eps,
        &body,
        counts,
        rounds,
        plan.stream_warmup,
        "(c') paced streaming TTFT c=1",
        log,
    )
    .await?;

    // gRPC Complete through Retort.
    if let Some(url) = &setup.retort_grpc_url {
        let key = systems
            .iter()
            .find(|s| s.kind == SystemKind::Retort)
            .and_then(|s| s.key.as_deref());
        let c = plan.grpc_concurrency;
        log(&format!(
            "gRPC Complete c={c}: retort for {} s",
            plan.grpc_s
        ));
        let r = grpc::closed_loop(
            url,
            key,
            MODEL_FAST,
            c,
            plan.grpc_connections,
            secs(plan.throughput_warmup_s),
            secs(plan.grpc_s),
        )
        .await;
        results.grpc = Some(GrpcRow {
            connections: plan.grpc_connections,
            run: throughput_row(SystemKind::Retort, c, plan.grpc_s, r),
        });
    }

    // (d) Retort's memory while holding many streams open.
    if let Some((s, ep)) = systems
        .iter()
        .zip(&eps)
        .find(|(s, _)| s.kind == SystemKind::Retort)
        && let Some(pid) = s.pid
    {
        log(&format!(
            "(d) soak: {} streams for {} s",
            plan.soak_streams, plan.soak_s
        ));
        let run = load::soak(
            ep,
            chat_body(MODEL_SOAK, true),
            plan.soak_streams,
            secs(plan.soak_ramp_s),
            secs(plan.soak_s),
            secs(plan.soak_sample_s),
            pid,
        )
        .await
        .context("soak")?;
        results.soak = Some(soak_result(plan, run));
    }
    Ok(results)
}

fn throughput_row(
    system: SystemKind,
    concurrency: usize,
    window_s: f64,
    r: anyhow::Result<load::LoadRun>,
) -> ThroughputRow {
    match r {
        Ok(r) => ThroughputRow {
            system,
            concurrency,
            window_s,
            ok: r.ok,
            errors: r.errors,
            rps: r.rps(),
            first_error: r.first_error.clone(),
            latency: Summary::of(&r.hist),
        },
        Err(e) => ThroughputRow {
            system,
            concurrency,
            window_s,
            ok: 0,
            errors: 0,
            rps: 0.0,
            first_error: Some(format!("{e:#}")),
            latency: Summary::default(),
        },
    }
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

fn soak_result(plan: &Plan, run: load::SoakRun) -> SoakResult {
    let samples = run.samples;
    let peak_kib = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let target = (plan.soak_streams as f64 * 0.9).ceil() as i64;
    let peak_at_target_kib = samples
        .iter()
        .filter(|s| s.active >= target)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0);
    let max_active = samples.iter().map(|s| s.active).max().unwrap_or(0);
    // Steady state: after the ramp and the first full streams (8 s each), or the last two thirds
    // of a short soak.
    let steady_from_s = (plan.soak_ramp_s + 10.0).min(plan.soak_s / 3.0);
    let steady: Vec<u64> = samples
        .iter()
        .filter(|s| s.t_s >= steady_from_s)
        .map(|s| s.rss_kib)
        .collect();
    let q = (steady.len() / 4).max(1).min(steady.len());
    let first_quarter_kib = median(steady[..q].to_vec());
    let last_quarter_kib = median(steady[steady.len() - q..].to_vec());
    let growth_pct = if first_quarter_kib > 0 {
        (last_quarter_kib as f64 - first_quarter_kib as f64) / first_quarter_kib as f64 * 100.0
    } else {
        0.0
    };
    SoakResult {
        streams: plan.soak_streams,
        duration_s: plan.soak_s,
        completed_streams: run.completed,
        errors: run.errors,
        first_error: run.first_error,
        peak_kib,
        peak_at_target_kib,
        max_active,
        steady_from_s,
        first_quarter_kib,
        last_quarter_kib,
        growth_pct,
        after_kib: run.after_kib,
        samples,
    }
}
