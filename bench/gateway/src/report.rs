//! The results file: a Markdown report (tables per scenario, ratios, pass/fail per target, the
//! machine and versions) and the raw JSON beside it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    load::Summary,
    scenarios::{Results, StreamRow, SystemKind, ThroughputRow},
};

/// Where and with what the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
    pub rustc: String,
    pub litellm: Option<String>,
    pub git_rev: Option<String>,
    pub smoke: bool,
    /// Anything the reader must know: peers left out and why, caps.
    pub notes: Vec<String>,
}

/// The machine's facts, from `/proc`.
pub fn machine() -> (usize, String, u64, String) {
    let nproc = std::thread::available_parallelism().map_or(1, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    (nproc, cpu, mem_kib / 1024, kernel)
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time.
pub fn utc(unix: u64) -> String {
    retort_time::human(i64::try_from(unix).unwrap_or(i64::MAX).saturating_mul(1000))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not measured (a peer left out, a scenario not run).
    Na,
}

impl Verdict {
    fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "**FAIL**",
            Verdict::Na => "n/a",
        }
    }
}

/// One target with its measured value.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

fn lat(r: &Results, k: SystemKind) -> Option<&Summary> {
    r.latency
        .iter()
        .find(|x| x.system == k && x.latency.count > 0)
        .map(|x| &x.latency)
}

fn ttft_in(rows: &[StreamRow], k: SystemKind) -> Option<&Summary> {
    rows.iter()
        .find(|x| x.system == k && x.ttft.count > 0)
        .map(|x| &x.ttft)
}

fn rps(r: &Results, k: SystemKind) -> Option<f64> {
    rps_in(&r.throughput, k)
}

fn rps_in(rows: &[ThroughputRow], k: SystemKind) -> Option<f64> {
    rows.iter()
        .find(|x| x.system == k && x.ok > 0)
        .map(|x| x.rps)
}

/// `sys − direct` at one percentile.
fn added(sys: Option<&Summary>, direct: Option<&Summary>, f: fn(&Summary) -> f64) -> Option<f64> {
    Some(f(sys?) - f(direct?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The targets of the issue, judged on `r`.
pub fn targets(r: &Results) -> Vec<Target> {
    use SystemKind::*;
    let mut t = Vec::new();
    let mut push = |target: &str, measured: String, verdict: Verdict| {
        t.push(Target {
            target: target.to_owned(),
            measured,
            verdict,
        });
    };
    let direct = lat(r, Direct);
    let p99 = |s: &Summary| s.p99_us;
    let retort_added = added(lat(r, Retort), direct, p99);
    let floor_added = added(lat(r, Floor), direct, p99);
    let litellm_added = added(lat(r, Litellm), direct, p99);

    match retort_added {
        Some(a) if a < 0.0 => push(
            "(a) Retort added p99 at c=1 ≤ 150 µs",
            format!(
                "{a:.1} µs: inconclusive, direct's p99 was above Retort's (noise on the shared machine)"
            ),
            Verdict::Na,
        ),
        Some(a) => push(
            "(a) Retort added p99 at c=1 ≤ 150 µs",
            format!("{a:.1} µs"),
            Verdict::of(a <= 150.0),
        ),
        None => push(
            "(a) Retort added p99 at c=1 ≤ 150 µs",
            "not measured".into(),
            Verdict::Na,
        ),
    }
    match (retort_added, floor_added) {
        (Some(a), Some(f)) if f <= 0.0 => push(
            "(a) Retort added p99 ≤ 1.5 × the floor's",
            format!(
                "{a:.1} µs vs floor {f:.1} µs: inconclusive, direct's p99 was above the floor's (noise)"
            ),
            if a > 0.0 { Verdict::Fail } else { Verdict::Na },
        ),
        (Some(a), Some(f)) => push(
            "(a) Retort added p99 ≤ 1.5 × the floor's",
            format!("{a:.1} µs vs floor {f:.1} µs ({})", ratio(a, f)),
            Verdict::of(a <= 1.5 * f),
        ),
        _ => push(
            "(a) Retort added p99 ≤ 1.5 × the floor's",
            "not measured".into(),
            Verdict::Na,
        ),
    }
    match (rps(r, Retort), rps(r, Floor)) {
        (Some(a), Some(f)) => push(
            "(b) Retort throughput ≥ 90 % of the floor's",
            format!("{a:.0} vs {f:.0} req/s ({:.1} %)", a / f * 100.0),
            Verdict::of(a >= 0.9 * f),
        ),
        _ => push(
            "(b) Retort throughput ≥ 90 % of the floor's",
            "not measured".into(),
            Verdict::Na,
        ),
    }
    match (rps(r, Retort), rps(r, Litellm)) {
        (Some(a), Some(l)) => push(
            "(b) Retort throughput ≥ 100 × LiteLLM's",
            format!("{a:.0} vs {l:.0} req/s ({})", ratio(a, l)),
            Verdict::of(a >= 100.0 * l),
        ),
        _ => push(
            "(b) Retort throughput ≥ 100 × LiteLLM's",
            "LiteLLM not measured".into(),
            Verdict::Na,
        ),
    }
    let name = "(b′) Retort peak throughput ≥ 100 × LiteLLM's (zero-delay simulator; added to the issue's scenarios)";
    match (rps_in(&r.peak, Retort), rps_in(&r.peak, Litellm)) {
        (Some(a), Some(l)) => push(
            name,
            format!("{a:.0} vs {l:.0} req/s ({})", ratio(a, l)),
            Verdict::of(a >= 100.0 * l),
        ),
        _ => push(name, "LiteLLM not measured".into(), Verdict::Na),
    }
    match (retort_added, litellm_added) {
        (Some(a), Some(l)) => push(
            "(a) Retort added p99 ≤ 1/50 of LiteLLM's",
            format!("{a:.1} µs vs {l:.1} µs (LiteLLM adds {})", ratio(l, a)),
            Verdict::of(a <= l / 50.0),
        ),
        _ => push(
            "(a) Retort added p99 ≤ 1/50 of LiteLLM's",
            "LiteLLM not measured".into(),
            Verdict::Na,
        ),
    }
    for (name, rows) in [
        (
            "(c) Retort added TTFT ≤ 200 µs (at p50 and p99)",
            &r.streaming,
        ),
        (
            "(c′) Retort added TTFT ≤ 200 µs (at p50 and p99) from a paced provider (first token alone; added to the issue's scenarios)",
            &r.paced,
        ),
    ] {
        let d = ttft_in(rows, Direct);
        match (
            added(ttft_in(rows, Retort), d, p99),
            added(ttft_in(rows, Retort), d, |s| s.p50_us),
        ) {
            (Some(a99), Some(a50)) => {
                let measured = format!("p50 {a50:.1} µs, p99 {a99:.1} µs");
                if a50 > 200.0 || a99 > 200.0 {
                    push(name, measured, Verdict::Fail);
                } else if a99 < 0.0 {
                    push(
                        name,
                        format!("{measured}: p99 inconclusive (noise on the shared machine)"),
                        Verdict::Na,
                    );
                } else {
                    push(name, measured, Verdict::Pass);
                }
            }
            _ => push(name, "not measured".into(), Verdict::Na),
        }
    }
    match r.idle_rss_kib.get(&Retort) {
        Some(&k) => push(
            "(d) Retort RSS idle ≤ 50 MiB",
            format!("{:.1} MiB", mib(k)),
            Verdict::of(mib(k) <= 50.0),
        ),
        None => push(
            "(d) Retort RSS idle ≤ 50 MiB",
            "not measured".into(),
            Verdict::Na,
        ),
    }
    match &r.soak {
        Some(s) => {
            let name = format!("(d) Retort RSS at {} streams ≤ 200 MiB", s.streams);
            if s.peak_at_target_kib > 0 {
                push(
                    &name,
                    format!("peak {:.1} MiB", mib(s.peak_at_target_kib)),
                    Verdict::of(mib(s.peak_at_target_kib) <= 200.0),
                );
            } else {
                push(
                    &name,
                    format!(
                        "never reached 90 % of the streams (max {} open); peak {:.1} MiB",
                        s.max_active,
                        mib(s.peak_kib)
                    ),
                    Verdict::Fail,
                );
            }
            push(
                "(d) Retort RSS flat during the soak (last-quarter median ≤ first-quarter median + 10 %)",
                format!(
                    "{:.1} → {:.1} MiB ({:+.1} %)",
                    mib(s.first_quarter_kib),
                    mib(s.last_quarter_kib),
                    s.growth_pct
                ),
                Verdict::of(s.first_quarter_kib > 0 && s.growth_pct <= 10.0),
            );
        }
        None => push(
            "(d) Retort RSS under the soak",
            "not measured".into(),
            Verdict::Na,
        ),
    }
    let retort_errors: u64 = r
        .latency
        .iter()
        .filter(|x| x.system == Retort)
        .map(|x| x.errors)
        .sum::<u64>()
        + r.throughput
            .iter()
            .chain(&r.peak)
            .filter(|x| x.system == Retort)
            .map(|x| x.errors)
            .sum::<u64>()
        + r.streaming
            .iter()
            .chain(&r.paced)
            .filter(|x| x.system == Retort)
            .map(|x| x.errors)
            .sum::<u64>()
        + r.grpc.as_ref().map_or(0, |g| g.run.errors)
        + r.soak.as_ref().map_or(0, |s| s.errors);
    push(
        "Retort served every request without error",
        format!("{retort_errors} errors"),
        Verdict::of(retort_errors == 0),
    );
    t
}

/// One streaming scenario's table: TTFT, added TTFT (system − direct) and whole-stream time.
fn stream_table(s: &mut String, rows: &[StreamRow]) {
    use SystemKind::Direct;
    let d_ttft = ttft_in(rows, Direct).copied();
    let _ = writeln!(
        s,
        "| system | streams | errors | chunks/answer | TTFT p50 | TTFT p99 | TTFT p99.9 | added p50 | added p99 | added p99.9 | whole stream p50 | whole stream p99 |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let t = &row.ttft;
        let add = |f: fn(&Summary) -> f64| {
            if row.system == Direct || t.count == 0 {
                "—".to_owned()
            } else {
                opt(d_ttft.map(|d| f(t) - f(&d)), us)
            }
        };
        let chunks = if row.min_tokens == row.max_tokens {
            row.min_tokens.to_string()
        } else {
            format!("{}–{}", row.min_tokens, row.max_tokens)
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system.name(),
            t.count,
            err_cell(row.errors, &row.first_error),
            chunks,
            us(t.p50_us),
            us(t.p99_us),
            us(t.p999_us),
            add(|x| x.p50_us),
            add(|x| x.p99_us),
            add(|x| x.p999_us),
            us(row.total.p50_us),
            us(row.total.p99_us)
        );
    }
    let _ = writeln!(s);
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".to_owned()
    }
}

fn us(v: f64) -> String {
    format!("{v:.1}")
}

fn ms(v_us: f64) -> String {
    format!("{:.2}", v_us / 1000.0)
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "—".to_owned(), f)
}

fn err_cell(errors: u64, first: &Option<String>) -> String {
    match (errors, first) {
        (0, None) => "0".to_owned(),
        (n, Some(e)) => format!(
            "{n} ({})",
            e.replace('|', "/").chars().take(120).collect::<String>()
        ),
        (n, None) => n.to_string(),
    }
}

/// The Markdown report.
pub fn markdown(meta: &Meta, r: &Results, targets: &[Target], json_name: &str) -> String {
    use SystemKind::*;
    let p = &r.plan;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Gateway benchmark: direct vs floor vs Retort vs LiteLLM\n"
    );
    let _ = writeln!(
        s,
        "Generated by `bench/gateway/run.sh{}` (the `bench` binary of `bench/gateway`) on {} UTC. \
         All systems ran in one run on this machine, against one `retort-sim` and one load generator; \
         the load generator, the simulator and the system under test share the machine's cores.\n",
        if meta.smoke { " --smoke" } else { "" },
        meta.date
    );
    if meta.smoke {
        let _ = writeln!(
            s,
            "> **Smoke run**: tiny request counts and a 3 s soak. The numbers only show that every scenario runs.\n"
        );
    }
    let _ = writeln!(s, "| machine | |\n|---|---|");
    let _ = writeln!(s, "| CPUs (nproc) | {} |", meta.nproc);
    let _ = writeln!(s, "| CPU model | {} |", meta.cpu_model);
    let _ = writeln!(
        s,
        "| memory | {:.1} GiB |",
        meta.mem_total_mib as f64 / 1024.0
    );
    let _ = writeln!(s, "| kernel | {} |", meta.kernel);
    let _ = writeln!(s, "| rustc | {} |", meta.rustc);
    let _ = writeln!(
        s,
        "| LiteLLM | {} |",
        meta.litellm.as_deref().unwrap_or("not run")
    );
    let _ = writeln!(
        s,
        "| commit | {} |",
        meta.git_rev.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "Systems: **direct** (client straight to the simulator), **floor** (a bare hyper pass-through proxy: no parsing, no auth, pooled keep-alive upstream connections, TCP_NODELAY — the physical limit for any gateway), **retort** (`retort gateway`: auth on, every model an alias over a primary and a fallback target, breakers, metrics and usage accounting), **litellm** (LiteLLM proxy, `--num_workers {}`, the same models as `openai/NAME` at the simulator). \"Added\" = system − direct at the same percentile, in the same run.\n",
        meta.nproc
    );
    if !meta.notes.is_empty() {
        let _ = writeln!(s, "Notes:\n");
        for n in &meta.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    let _ = writeln!(
        s,
        "## Targets\n\n| target | measured | result |\n|---|---|---|"
    );
    for t in targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            t.target,
            t.measured,
            t.verdict.label()
        );
    }
    let _ = writeln!(s);

    // (a)
    let direct = lat(r, Direct).copied();
    let _ = writeln!(
        s,
        "## (a) Added latency at concurrency 1 (zero-delay simulator, non-streaming, 16-token answers)\n\n\
         {} measured requests per system ({} for LiteLLM, capped: its requests take milliseconds), in {} interleaved rounds, \
         {} warm-up requests per round, one keep-alive connection, the client on one thread of its own (a current-thread runtime, as a single-event-loop client). Latencies in µs.\n",
        p.latency_requests, p.litellm_latency_requests, p.latency_rounds, p.latency_warmup
    );
    let _ = writeln!(
        s,
        "| system | requests | errors | p50 | p99 | p99.9 | mean | max | added p50 | added p99 | added p99.9 |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &r.latency {
        let l = &row.latency;
        let add = |f: fn(&Summary) -> f64| {
            if row.system == Direct || l.count == 0 {
                "—".to_owned()
            } else {
                opt(direct.map(|d| f(l) - f(&d)), us)
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system.name(),
            l.count,
            err_cell(row.errors, &row.first_error),
            us(l.p50_us),
            us(l.p99_us),
            us(l.p999_us),
            us(l.mean_us),
            us(l.max_us),
            add(|x| x.p50_us),
            add(|x| x.p99_us),
            add(|x| x.p999_us)
        );
    }
    let _ = writeln!(s);

    // (b)
    let _ = writeln!(
        s,
        "## (b) Sustained throughput at {} connections (simulator latency 20 ms)\n\n\
         Closed loop: each connection sends its next request when the last one is answered. {} s warm-up, then a {} s window \
         ({} s for LiteLLM). The simulator alone caps this at {} / 20 ms = {:.0} req/s. Latencies in ms.\n",
        p.throughput_concurrency,
        p.throughput_warmup_s,
        p.throughput_s,
        p.litellm_throughput_s,
        p.throughput_concurrency,
        p.throughput_concurrency as f64 / 0.020
    );
    throughput_table(&mut s, &r.throughput);

    // (b′)
    let _ = writeln!(
        s,
        "## (b′) Peak throughput at {} connections (zero-delay simulator)\n\n\
         Added to the issue's scenarios: in (b) the simulator's 20 ms caps every system at {} req/s, so that ratio to LiteLLM \
         cannot show what each system carries. Here nothing waits upstream, so each system's own cost per request sets the rate \
         (the issue's \"for scale\" figures are at 64 connections too). Same closed loop, {} s warm-up, {} s window. Latencies in ms.\n",
        p.peak_concurrency,
        p.throughput_concurrency as f64 / 0.020,
        p.throughput_warmup_s,
        p.peak_s,
    );
    throughput_table(&mut s, &r.peak);

    // (c), (c′)
    let _ = writeln!(
        s,
        "## (c) Streaming: time to first token (64 chunks per answer, unpaced, concurrency 1)\n\n\
         {} streams per system ({} for LiteLLM) in {} interleaved rounds. TTFT = from sending the request to the arrival of the frame that carries the first non-empty content delta (taken before the frame is scanned), the client on one thread of its own. \
         Latencies in µs.\n",
        p.stream_requests, p.litellm_stream_requests, p.latency_rounds
    );
    stream_table(&mut s, &r.streaming);
    let _ = writeln!(
        s,
        "## (c′) Streaming from a paced provider: time to first token (8 chunks about 2 ms apart, concurrency 1)\n\n\
         Added to the issue's scenarios. The simulator sends the role chunk and the first token at once and each later token \
         about 2 ms after the one before (1,000 tokens/s, rounded up by its 1 ms timer), as a model that generates while it \
         sends; in (c) the whole 64-chunk answer arrives in one burst. Here every process sleeps between tokens, so each \
         request and token pays the wake-ups a real provider's stream costs. \
         {} streams per system ({} for LiteLLM) in {} interleaved rounds. Latencies in µs.\n",
        p.paced_requests, p.litellm_paced_requests, p.latency_rounds
    );
    stream_table(&mut s, &r.paced);

    // gRPC
    if let Some(g) = &r.grpc {
        let l = &g.run.latency;
        let _ = writeln!(
            s,
            "## gRPC throughput (Retort, `retort.v1.Gateway/Complete`, zero-delay simulator)\n\n\
             tonic client (`GatewayClient`), {} concurrent calls over {} HTTP/2 connections, {} s window. Latencies in ms.\n",
            g.run.concurrency, g.connections, g.run.window_s
        );
        let _ = writeln!(
            s,
            "| interface | calls | errors | req/s | p50 | p99 | p99.9 | max |\n|---|---:|---|---:|---:|---:|---:|---:|"
        );
        let _ = writeln!(
            s,
            "| gRPC Complete | {} | {} | {:.0} | {} | {} | {} | {} |\n",
            g.run.ok,
            err_cell(g.run.errors, &g.run.first_error),
            g.run.rps,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }

    // (d)
    let _ = writeln!(s, "## (d) Memory (RSS from /proc/PID/status VmRSS)\n");
    let _ = writeln!(
        s,
        "Idle = after start-up and one probe request, before any load.\n"
    );
    let _ = writeln!(s, "| system | idle RSS |\n|---|---:|");
    for (k, v) in &r.idle_rss_kib {
        let what = if *k == Litellm {
            " (all processes)"
        } else {
            ""
        };
        let _ = writeln!(s, "| {}{what} | {:.1} MiB |", k.name(), mib(*v));
    }
    let _ = writeln!(s);
    if let Some(sk) = &r.soak {
        let _ = writeln!(
            s,
            "Soak: {} connections each streaming answers back to back (64 chunks at 8 per second, about 8 s per stream) for {} s, \
             opened over {} s; RSS sampled every {} s. Steady state from {:.0} s.\n",
            sk.streams, sk.duration_s, p.soak_ramp_s, p.soak_sample_s, sk.steady_from_s
        );
        let _ = writeln!(
            s,
            "| streams completed | errors | max open at once | peak RSS | peak RSS at ≥ 90 % open | first-quarter median | last-quarter median | growth | 1 s after |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:+.1} % | {} |\n",
            sk.completed_streams,
            err_cell(sk.errors, &sk.first_error),
            sk.max_active,
            mib(sk.peak_kib),
            mib(sk.peak_at_target_kib),
            mib(sk.first_quarter_kib),
            mib(sk.last_quarter_kib),
            sk.growth_pct,
            sk.after_kib
                .map_or_else(|| "—".to_owned(), |k| format!("{:.1} MiB", mib(k)))
        );
        if !sk.samples.is_empty() {
            let n = sk.samples.len();
            let picks: Vec<_> = (0..=10).map(|i| &sk.samples[(i * (n - 1)) / 10]).collect();
            let _ = writeln!(s, "RSS over the soak (11 evenly spaced samples):\n");
            let _ = writeln!(
                s,
                "| t (s) | {} |",
                picks
                    .iter()
                    .map(|x| format!("{:.0}", x.t_s))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(s, "|---|{}", "---:|".repeat(picks.len()));
            let _ = writeln!(
                s,
                "| RSS (MiB) | {} |",
                picks
                    .iter()
                    .map(|x| format!("{:.1}", mib(x.rss_kib)))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(
                s,
                "| open streams | {} |\n",
                picks
                    .iter()
                    .map(|x| x.active.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    let _ = writeln!(
        s,
        "Raw numbers: `{json_name}` beside this file (every percentile and every RSS sample)."
    );
    s
}

/// The JSON written beside the report.
#[derive(Debug, Serialize)]
pub struct Raw<'a> {
    pub meta: &'a Meta,
    pub targets: &'a [Target],
    pub results: &'a Results,
}

/// A throughput table: req/s against the floor's and LiteLLM's in the same rows, and latencies.
fn throughput_table(s: &mut String, rows: &[ThroughputRow]) {
    let floor_rps = rps_in(rows, SystemKind::Floor);
    let lite_rps = rps_in(rows, SystemKind::Litellm);
    let _ = writeln!(
        s,
        "| system | requests | errors | req/s | vs floor | vs LiteLLM | p50 | p99 | p99.9 | max |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let l = &row.latency;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            row.system.name(),
            row.ok,
            err_cell(row.errors, &row.first_error),
            row.rps,
            floor_rps.map_or_else(
                || "—".to_owned(),
                |f| format!("{:.1} %", row.rps / f * 100.0)
            ),
            lite_rps.map_or_else(|| "—".to_owned(), |f| ratio(row.rps, f)),
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }
    let _ = writeln!(s);
}
