//! `metering-onoff`: the gateway's throughput with metering on against metering off, one run, side
//! by side. Starts the provider simulator and two gateways in this process, assembled as `retort up`
//! assembles them, on the gateway bench's configuration: one with no usage sink (metering off), one
//! with metering in-process on a SQLite file and the gateway's `MeteringSink` (bounded queue,
//! batches over gRPC) as its usage hook. Both are driven with the gateway bench's closed-loop load
//! generator (`retort_bench_gateway::load`, real HTTP/1 keep-alive connections), alternating which goes
//! first each round. Prints a Markdown table: median req/s of each, the ratio on/off, p99 latency.
//!
//! ```sh
//! cargo build --release -p retort-bench-metering
//! target/release/metering-onoff [--rounds 3] [--secs 10]
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]
use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use retort_bench_gateway::{
    configs::{self, MODEL_20MS, MODEL_FAST, RETORT_KEY},
    load::{self, Endpoint},
    procs,
};
use retort_metering::{
    MeteringConfig, Store,
    client::MeteringSink,
    store::{Col, StoreOptions},
};

struct Args {
    rounds: usize,
    secs: f64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        rounds: 3,
        secs: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--rounds" => a.rounds = v.parse()?,
            "--secs" => a.secs = v.parse()?,
            _ => bail!("unknown argument {k} (--rounds N, --secs S)"),
        }
    }
    Ok(a)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A gateway on the bench's configuration; with `metering`, its usage hook is a `MeteringSink`
/// sending to that metering service (as `retort up` wires them).
async fn start_gateway(
    sim_url: &str,
    metering: Option<&MeteringConfig>,
) -> anyhow::Result<(retort_gateway::Running, String, Option<Arc<MeteringSink>>)> {
    let http = procs::free_port()?;
    let grpc = procs::free_port()?;
    let text = configs::retort_toml(
        sim_url,
        &format!("127.0.0.1:{http}"),
        &format!("127.0.0.1:{grpc}"),
    );
    let cfg = retort_gateway::config::Config::from_toml(&text)?;
    let mut hooks = retort_gateway::hooks::Hooks::default();
    let mut sink = None;
    if let Some(m) = metering {
        let s = MeteringSink::start(m.client_settings()?)?;
        hooks.usage = Arc::clone(&s) as Arc<dyn retort_gateway::hooks::UsageSink>;
        sink = Some(s);
    }
    let running = retort_gateway::start_with_hooks(cfg, hooks, Default::default()).await?;
    let url = format!("http://{}", running.http_addr);
    Ok((running, url, sink))
}

struct Row {
    rps: f64,
    p99_us: f64,
    /// CPU time of this whole process (load generator, simulator, gateways, metering) per request.
    cpu_us: f64,
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let tmp = std::env::temp_dir().join(format!("retort-metering-onoff-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let load_before = loadavg();

    let sim = retort_sim::spawn(retort_sim::SimConfig::from_toml(&configs::sim_toml())?).await?;
    let sim_url = sim.base_url();
    let db = tmp.join("metering.db");
    let mcfg = MeteringConfig {
        database_url: Some(format!("sqlite://{}?mode=rwc", db.display())),
        grpc_addr: format!("127.0.0.1:{}", procs::free_port()?).parse()?,
        data_dir: tmp.clone(),
        ..Default::default()
    };
    let metering = retort_metering::start(&mcfg, vec![]).await?;
    let mut mcfg_client = mcfg.clone();
    mcfg_client.grpc_addr = metering.grpc_addr;
    let (off, off_url, _) = start_gateway(&sim_url, None).await?;
    let (on, on_url, sink) = start_gateway(&sim_url, Some(&mcfg_client)).await?;
    let sink = sink.context("metering sink")?;
    let off_ep = Endpoint::new(&off_url, Some(RETORT_KEY))?;
    let on_ep = Endpoint::new(&on_url, Some(RETORT_KEY))?;

    let scenarios = [
        (
            "20 ms upstream, 256 connections (gateway bench scenario b)",
            MODEL_20MS,
            256usize,
        ),
        (
            "zero-delay upstream, 64 connections (gateway CPU-bound)",
            MODEL_FAST,
            64,
        ),
    ];
    let window = Duration::from_secs_f64(a.secs);
    let warmup = Duration::from_secs(2);
    let mut out = String::new();
    out.push_str(
        "| scenario | metering off req/s | metering on req/s | on/off (medians) | on/off median of pairs | on/off mean of pairs | off p99 | on p99 | CPU µs/req off | CPU µs/req on |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut sent_on = 0u64;
    let mut worst: f64 = f64::INFINITY;
    for (name, model, conc) in scenarios {
        let body = load::chat_body(model, false);
        let mut offs = Vec::new();
        let mut ons = Vec::new();
        let mut pairs = Vec::new();
        for round in 0..a.rounds {
            let order: [bool; 2] = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for metering_on in order {
                let ep = if metering_on { &on_ep } else { &off_ep };
                let cpu0 = cpu_secs();
                let r = load::closed_loop(ep, body.clone(), conc, warmup, window).await?;
                if metering_on {
                    // Metering's work for these requests (send, ingest, SQLite) counts in this window.
                    sink.flush().await;
                }
                let cpu = cpu_secs() - cpu0;
                if r.errors > 0 {
                    bail!("{name}: {} errors (first: {:?})", r.errors, r.first_error);
                }
                // Requests in the warm-up are estimated at the window's rate.
                let requests = r.rps() * (warmup + window).as_secs_f64();
                let row = Row {
                    rps: r.rps(),
                    p99_us: load::Summary::of(&r.hist).p99_us,
                    cpu_us: if requests > 0.0 {
                        cpu * 1e6 / requests
                    } else {
                        0.0
                    },
                };
                eprintln!(
                    "[onoff] {name} round {round} metering {}: {:.0} req/s, p99 {:.0} µs, {:.1} CPU µs/req, load {}",
                    if metering_on { "on " } else { "off" },
                    row.rps,
                    row.p99_us,
                    row.cpu_us,
                    loadavg()
                );
                if metering_on {
                    sent_on += r.ok;
                    ons.push(row);
                } else {
                    offs.push(row);
                }
            }
            // The round's pair: on and off measured back to back.
            if let (Some(on), Some(off)) = (ons.last(), offs.last())
                && off.rps > 0.0
            {
                pairs.push(on.rps / off.rps);
            }
        }
        let off_rps = median(offs.iter().map(|r| r.rps).collect());
        let on_rps = median(ons.iter().map(|r| r.rps).collect());
        let ratio = if off_rps > 0.0 { on_rps / off_rps } else { 0.0 };
        worst = worst.min(median(pairs.clone()));
        out.push_str(&format!(
            "| {name} | {off_rps:.0} | {on_rps:.0} | {ratio:.3} | {:.3} | {:.3} | {:.1} ms | {:.1} ms | {:.1} | {:.1} |\n",
            median(pairs.clone()),
            mean(&pairs),
            median(offs.iter().map(|r| r.p99_us).collect()) / 1e3,
            median(ons.iter().map(|r| r.p99_us).collect()) / 1e3,
            median(offs.iter().map(|r| r.cpu_us).collect()),
            median(ons.iter().map(|r| r.cpu_us).collect()),
        ));
    }
    // Stop both gateways, drain the sink (as on SIGTERM), then count what metering recorded.
    let _ = on.stopper().send(true);
    let _ = off.stopper().send(true);
    on.wait().await;
    off.wait().await;
    sink.shutdown().await;
    let stats = sink.stats();
    let spooled = stats.spooled.load(std::sync::atomic::Ordering::Relaxed);
    metering.shutdown().await;
    let store = Store::connect(&StoreOptions::new(format!(
        "sqlite://{}?mode=rw",
        db.display()
    )))
    .await?;
    let recorded = store
        .select("SELECT COUNT(*) FROM usage_events", &[], &[Col::Int])
        .await?
        .first()
        .map(|r| r[0].int())
        .unwrap_or(0);
    store.close().await;
    println!("{out}");
    println!(
        "Worst on/off median of pairs {worst:.3} (target ≥ 0.95: {}). Metering recorded {recorded} usage events for the \
         metering-on gateway (≥ {sent_on} requests measured inside the windows, plus warm-ups); events spooled (metering unreachable or queue full): {spooled}. \
         Rounds {}, window {} s, 2 s warm-up each. Load average before {load_before}, after {}.",
        if worst >= 0.95 { "PASS" } else { "FAIL" },
        a.rounds,
        a.secs,
        loadavg()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
