//! The gateway's request path must never hang: thousands of requests, one after another on keep-alive
//! connections, completions and streams at once, each with a deadline far beyond its normal time.
//!
//! Issue #19: one request in about a thousand hung for the client's whole 30 s timeout in the debug
//! build — a lost wake-up in the gateway's inline polling (`services/gateway/src/inline.rs`): a wake
//! raised on another thread at the very end of a poll was recorded by neither the poll nor the task.
//! At the default counts this test sends 6,000 completions and 1,800 streams, one after another; a
//! 1-in-1,000 hang escapes it with a probability under 0.1 %. `RETORT_STRESS_REQUESTS` scales the completions (the
//! streams are half as many); run it in both builds:
//!
//! ```sh
//! cargo test -p retort-bench-gateway --test stress
//! cargo test -p retort-bench-gateway --test stress --release
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use retort_bench_gateway::{
    configs,
    load::{self, Conn, Endpoint},
};

/// Far beyond any one request's time in a debug build on a loaded host: only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(10);

fn requests() -> u64 {
    std::env::var("RETORT_STRESS_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// `n` requests one after another on one keep-alive connection, on a client thread of its own (as
/// the bench's latency scenario runs them); the first failure ends the loop with its index.
async fn sequential(
    ep: Endpoint,
    model: &'static str,
    stream: bool,
    n: u64,
) -> anyhow::Result<u64> {
    load::on_own_thread(move || async move {
        let mut conn = Conn::new(&ep);
        conn.open().await?;
        let body = load::chat_body(model, stream);
        for i in 0..n {
            let t0 = Instant::now();
            let r = if stream {
                conn.stream(load::PATH, body.clone(), DEADLINE, None)
                    .await
                    .map(|t| t.tokens > 0)
            } else {
                conn.call(load::PATH, body.clone(), DEADLINE)
                    .await
                    .map(|b| !b.is_empty())
            };
            match r {
                Ok(true) => {}
                Ok(false) => anyhow::bail!("{model} request {i}: an empty answer"),
                Err(e) => anyhow::bail!(
                    "{model} request {i} of {n} failed after {:?}: {e:#}",
                    t0.elapsed()
                ),
            }
        }
        Ok(n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_hangs() {
    let sim = retort_sim::spawn(
        retort_sim::SimConfig::from_toml(&configs::sim_toml()).expect("sim config"),
    )
    .await
    .expect("sim");
    let cfg = retort_gateway::config::Config::from_toml(&configs::retort_toml(
        &sim.base_url(),
        "127.0.0.1:0",
        "127.0.0.1:0",
    ))
    .expect("gateway config");
    let gw = retort_gateway::start(cfg).await.expect("gateway");
    let ep = Endpoint::new(
        &format!("http://{}", gw.http_addr),
        Some(configs::RETORT_KEY),
    )
    .unwrap();

    // One client at a time, as in the bench's concurrency-1 scenarios where the hang showed: the
    // gateway's other worker sits idle in the I/O driver, so the upstream's answer is a wake from
    // another thread, raised while the request's own poll may still be ending. (Clients at once
    // keep both workers busy and hide the race.)
    let n = requests();
    let runs = [
        (configs::MODEL_FAST, false, n),
        (configs::MODEL_STREAM, true, n / 2),
        (configs::MODEL_PACED, true, n / 10),
        (configs::MODEL_FAST, false, n),
    ];
    for (model, stream, count) in runs {
        assert_eq!(
            sequential(ep.clone(), model, stream, count).await.unwrap(),
            count
        );
    }

    let _ = tokio::time::timeout(Duration::from_secs(10), gw.shutdown()).await;
}
