//! The breaker bench: `cargo run --release -p retort-bench-breaker`.
//! 1. admit + settle of the spend guard, per request, from a warm lease (HDR histogram);
//! 2. gateway throughput with breakers and budgets off vs on (in-process, zero-delay simulator);
//! 3. overspend of one budget shared by two gateway replicas under 1,000-way concurrency, beside
//!    its bound (Redis when `REDIS_URL` is set, else the in-memory store).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]
use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use retort_breaker::{
    BreakerConfig, grpc,
    guard::{Guard, GuardConfig},
};
use retort_gateway::{
    hooks::{BreakerGuard, Hooks, SpendRequest},
    types::{Identity, Usage},
};
use serde_json::json;

const KEY: &str = "sk-bench";

fn spend(body: &str) -> BreakerConfig {
    let v: toml::Value = toml::from_str(&format!("grpc_addr = \"127.0.0.1:0\"\n{body}")).unwrap();
    BreakerConfig::load(v.try_into().unwrap(), std::env::var("REDIS_URL").ok()).unwrap()
}

fn prices() -> retort_pricing::PriceTable {
    let t: toml::Table = toml::from_str(
        "[[prices]]\nmodel = \"m\"\neffective_from = \"2025-01-01\"\ninput = 1.0\noutput = 2.0\n",
    )
    .unwrap();
    retort_pricing::PriceTable::new(t["prices"].clone().try_into().unwrap()).unwrap()
}

async fn gateway(sim: &retort_sim::SimHandle, hooks: Hooks) -> retort_gateway::Running {
    let text = format!(
        "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n[[users]]\nname = \"bench\"\nteam = \"perf\"\ndiscipline = \"x\"\nlevel = \"x\"\nkey = \"{KEY}\"\n\
         [providers.oa]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n[models.m]\nprovider = \"oa\"\n[circuit]\nfailure_threshold = 1000000\n",
        sim.base_url()
    );
    retort_gateway::start_with_hooks(
        retort_gateway::config::Config::from_toml(&text).unwrap(),
        hooks,
        axum::Router::new(),
    )
    .await
    .unwrap()
}

async fn load(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    conc: usize,
    dur: Duration,
    session: bool,
) -> (f64, usize, usize) {
    let until = Instant::now() + dur;
    let tasks: Vec<_> = (0..conc)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                let (mut ok, mut other) = (0, 0);
                while Instant::now() < until {
                    let mut r = http
                        .post(format!("http://{addr}/v1/chat/completions"))
                        .bearer_auth(KEY)
                        .json(&json!({"model": "m", "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}]}));
                    if session {
                        r = r.header("x-retort-session", format!("bench-{i}"));
                    }
                    match r.send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok += 1
                        }
                        _ => other += 1,
                    }
                }
                (ok, other)
            })
        })
        .collect();
    let (mut ok, mut other) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        ok += a;
        other += b;
    }
    (ok as f64 / dur.as_secs_f64(), ok, other)
}

#[tokio::main]
async fn main() {
    let backend = if std::env::var("REDIS_URL").is_ok() {
        "redis"
    } else {
        "memory"
    };
    let prefix = format!("retort-bench:{}:", retort_breaker::now_ms());
    // A budget large enough never to refuse, and a session policy that never trips: the guard does
    // all its work (two leases per request, session reports) without changing the answers.
    let cfg = spend(&format!(
        "key_prefix = \"{prefix}\"\nlease_usd = 50\nlease_tokens = 100000000\n[policies.default]\nmode = \"notify\"\nmax_tokens = 1e11\n\
         [[budgets]]\nscope = \"user\"\nname = \"bench\"\nwindow = \"day\"\nhard_usd = 100000\n[[budgets]]\nscope = \"team\"\nname = \"perf\"\nwindow = \"month\"\nhard_usd = 100000\n"
    ));
    let breaker = grpc::start(&cfg).await.unwrap();
    let endpoint = format!("http://{}", breaker.addr);
    let mut gc = GuardConfig::from_breaker(&cfg);
    gc.endpoint = endpoint.clone();

    // 1. admit + settle.
    let guard = Guard::start(gc.clone(), prices()).unwrap();
    let id = Identity {
        user: "bench".into(),
        team: "perf".into(),
        discipline: String::new(),
        level: String::new(),
    };
    let req = SpendRequest {
        identity: &id,
        session_id: Some("micro"),
        route: "m",
        models: vec!["m"],
        input_tokens: 100,
        max_output_tokens: 256,
    };
    let usage = Usage {
        input: 100,
        output: 50,
        ..Usage::default()
    };
    // Warm the leases.
    for _ in 0..3 {
        let t = tokio::task::block_in_place(|| guard.admit(&req));
        drop(t);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let n = 200_000;
    let t0 = Instant::now();
    for _ in 0..n {
        let s = Instant::now();
        let a = guard.admit(&req).unwrap();
        a.settle("oa", "m", &usage);
        hist.record(s.elapsed().as_nanos() as u64).unwrap();
    }
    let per = t0.elapsed() / n;
    println!(
        "admit+settle ({backend} breaker, warm lease, 1 thread, {n} requests): mean {per:?}, p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs",
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3,
        hist.max() as f64 / 1e3
    );
    drop(guard);

    // 2. throughput off vs on.
    let sim = retort_sim::spawn(retort_sim::SimConfig::from_toml("strict_models = false").unwrap())
        .await
        .unwrap();
    let off = gateway(&sim, Hooks::default()).await;
    let guard = Arc::new(Guard::start(gc.clone(), prices()).unwrap());
    let on = gateway(
        &sim,
        Hooks {
            breaker: guard.clone(),
            ..Hooks::default()
        },
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let conc = 64;
    let secs = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    load(&http, off.http_addr, conc, Duration::from_secs(1), false).await;
    load(&http, on.http_addr, conc, Duration::from_secs(1), true).await;
    // Side by side, alternating which goes first (off-on, on-off, ...), so that load from other
    // processes on the machine falls on both alike; the ratio of each pair, then their median.
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let (mut offs, mut ons, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = load(&http, off.http_addr, conc, secs, false).await;
            (a, load(&http, on.http_addr, conc, secs, true).await)
        } else {
            let b = load(&http, on.http_addr, conc, secs, true).await;
            (load(&http, off.http_addr, conc, secs, false).await, b)
        };
        println!(
            "round {round}: off {:.0} req/s ({} ok, {} failed) · on {:.0} req/s ({} ok, {} failed) · on/off {:.3}",
            a.0,
            a.1,
            a.2,
            b.0,
            b.1,
            b.2,
            b.0 / a.0
        );
        offs.push(a.0);
        ons.push(b.0);
        ratios.push(b.0 / a.0);
    }
    let (o, n2) = (
        offs.iter().sum::<f64>() / rounds as f64,
        ons.iter().sum::<f64>() / rounds as f64,
    );
    ratios.sort_by(f64::total_cmp);
    let median = (ratios[(rounds - 1) / 2] + ratios[rounds / 2]) / 2.0;
    println!(
        "throughput ({conc} connections, zero-delay simulator, {rounds} rounds of {secs:?}): off {o:.0} req/s, on {n2:.0} req/s, on/off {:.3} (mean of rounds), {median:.3} (median of pairs)",
        n2 / o
    );
    let h = guard.status();
    println!("guard: {h:?}");
    off.shutdown().await;
    on.shutdown().await;

    // 3. overspend under 1,000-way concurrency, two replicas, one budget.
    let hard: i64 = 20_000;
    let cfg2 = spend(&format!(
        "key_prefix = \"{prefix}o:\"\nlease_usd = 0.002\nlease_wait_ms = 200\nflush_ms = 20\n[[budgets]]\nscope = \"user\"\nname = \"bench\"\nwindow = \"day\"\nhard_usd = 0.02\n"
    ));
    let b2 = grpc::start(&cfg2).await.unwrap();
    let mut gc2 = GuardConfig::from_breaker(&cfg2);
    gc2.endpoint = format!("http://{}", b2.addr);
    let sim2 = retort_sim::spawn(
        retort_sim::SimConfig::from_toml("strict_models = false\n[default]\nlatency_ms = 20\n")
            .unwrap(),
    )
    .await
    .unwrap();
    let ga = Arc::new(Guard::start(gc2.clone(), prices()).unwrap());
    let gb = Arc::new(Guard::start(gc2, prices()).unwrap());
    let ra = gateway(
        &sim2,
        Hooks {
            breaker: ga.clone(),
            ..Hooks::default()
        },
    )
    .await;
    let rb = gateway(
        &sim2,
        Hooks {
            breaker: gb.clone(),
            ..Hooks::default()
        },
    )
    .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let addrs = [ra.http_addr, rb.http_addr];
    let res = futures::future::join_all((0..1000).map(|i| {
        let http = http.clone();
        let addr = addrs[i % 2];
        async move {
            http.post(format!("http://{addr}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hello there"}]}))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    }))
    .await;
    ga.flush().await;
    gb.flush().await;
    let used = b2.breaker.budgets("user:bench").await.unwrap()[0].used_micros;
    let overrun = ga.stats().overrun_micros.load(Ordering::Relaxed)
        + gb.stats().overrun_micros.load(Ordering::Relaxed);
    let r = ga.reservation(&SpendRequest {
        identity: &id,
        session_id: None,
        route: "m",
        models: vec!["m"],
        input_tokens: 4,
        max_output_tokens: 64,
    });
    println!(
        "overspend ({backend}, 2 replicas, 1000 concurrent, budget {hard} µ$): spent {used} µ$ by {} admitted ({} refused with 402); overspend {} µ$; bound Σ(real − reserved)⁺ = {overrun} µ$; issue's bound (reservations of the 1000 admitted) = {} µ$",
        res.iter().filter(|s| **s == 200).count(),
        res.iter().filter(|s| **s == 402).count(),
        (used - hard).max(0),
        1000 * r.0
    );
    std::process::exit(0);
}
