//! `bench`: the gateway benchmark. Starts `retort-sim`, the `floor` proxy, `retort gateway` and
//! (with `--litellm`) LiteLLM's proxy on free loopback ports, runs the scenarios of
//! `retort_bench_gateway::scenarios` against all of them, stops them, and writes the report.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Parser;
use retort_bench_gateway::{
    configs::{self, MODEL_FAST, MODEL_STREAM, RETORT_KEY},
    load::{self, Conn, Endpoint, PATH},
    procs::{self, Child},
    report::{self, Meta},
    scenarios::{self, Plan, Setup, System, SystemKind},
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Measures direct, floor, Retort and LiteLLM side by side (see bench/gateway/README.md).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// A few seconds: tiny counts, a 3 s soak; writes bench/out/gateway-smoke.md.
    #[arg(long)]
    smoke: bool,
    /// Include LiteLLM (needs the virtual environment of --litellm-venv).
    #[arg(long)]
    litellm: bool,
    /// The virtual environment LiteLLM is installed in.
    #[arg(long, default_value_os_t = Path::new(MANIFEST_DIR).join("../.venv-litellm"))]
    litellm_venv: PathBuf,
    /// LiteLLM worker processes (default: as many as cores).
    #[arg(long)]
    litellm_workers: Option<usize>,
    /// Soak length in seconds (default 300, smoke 3).
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Concurrent streams held during the soak (default 2000, smoke 50).
    #[arg(long)]
    soak_streams: Option<usize>,
    /// Measured requests at concurrency 1 per system (default 20000).
    #[arg(long)]
    latency_requests: Option<u64>,
    /// Measured requests at concurrency 1 for LiteLLM (default 2000).
    #[arg(long)]
    litellm_latency_requests: Option<u64>,
    /// Throughput window in seconds (default 10).
    #[arg(long)]
    throughput_secs: Option<f64>,
    /// Throughput window for LiteLLM in seconds (default 10).
    #[arg(long)]
    litellm_throughput_secs: Option<f64>,
    /// Window of the peak-throughput scenario (b′) in seconds (default 5).
    #[arg(long)]
    peak_secs: Option<f64>,
    /// Connections of the throughput scenario (default 256).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Streams at concurrency 1 per system (default 5000; LiteLLM 300).
    #[arg(long)]
    stream_requests: Option<u64>,
    /// Streams from the paced provider at concurrency 1 per system (default 2000; LiteLLM 100).
    #[arg(long)]
    paced_requests: Option<u64>,
    /// Where the report goes (default bench/results, smoke bench/out).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where `retort`, `retort-sim` and `floor` are (default: beside this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Tokio worker threads of the Retort process (`TOKIO_WORKER_THREADS`; default: as many as cores).
    #[arg(long)]
    retort_workers: Option<usize>,
    /// Keep the temporary folder (configurations, child logs).
    #[arg(long)]
    keep_tmp: bool,
    /// A note for the report (repeatable).
    #[arg(long)]
    note: Vec<String>,
}

impl Args {
    fn plan(&self) -> Plan {
        let mut p = if self.smoke {
            Plan::smoke()
        } else {
            Plan::full()
        };
        if let Some(v) = self.soak_secs {
            p.soak_s = v;
            p.soak_ramp_s = p.soak_ramp_s.min(v / 3.0);
        }
        if let Some(v) = self.soak_streams {
            p.soak_streams = v;
        }
        if let Some(v) = self.latency_requests {
            p.latency_requests = v;
        }
        if let Some(v) = self.litellm_latency_requests {
            p.litellm_latency_requests = v;
        }
        if let Some(v) = self.throughput_secs {
            p.throughput_s = v;
        }
        if let Some(v) = self.litellm_throughput_secs {
            p.litellm_throughput_s = v;
        }
        if let Some(v) = self.peak_secs {
            p.peak_s = v;
        }
        if let Some(v) = self.concurrency {
            p.throughput_concurrency = v;
        }
        if let Some(v) = self.stream_requests {
            p.stream_requests = v;
        }
        if let Some(v) = self.paced_requests {
            p.paced_requests = v;
        }
        p
    }
}

fn log(msg: &str) {
    eprintln!("[bench] {msg}");
}

/// The output of a command, trimmed; `None` when it cannot run or fails.
fn command_output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One real request (and one stream) through a system, so a misconfigured one fails here, loudly.
async fn probe(ep: &Endpoint) -> anyhow::Result<()> {
    let mut conn = Conn::new(ep);
    conn.call(
        PATH,
        load::chat_body(MODEL_FAST, false),
        Duration::from_secs(60),
    )
    .await
    .context("probe request")?;
    let t = conn
        .stream(
            PATH,
            load::chat_body(MODEL_STREAM, true),
            Duration::from_secs(60),
            None,
        )
        .await
        .context("probe stream")?;
    if t.tokens != 64 {
        bail!("probe stream: expected 64 content chunks, saw {}", t.tokens);
    }
    Ok(())
}

/// The commit, and whether the sources differ from it (the bench runs what is in the work tree).
fn git_rev() -> Option<String> {
    let rev = command_output("git", &["-C", MANIFEST_DIR, "rev-parse", "--short", "HEAD"])?;
    let root = Path::new(MANIFEST_DIR).join("../..");
    let root = root.to_string_lossy();
    let dirty = command_output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--",
            "services",
            "proto",
            "bench/gateway",
            "Cargo.toml",
            "Cargo.lock",
        ],
    )
    .is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{rev} (with uncommitted changes in the work tree)")
    } else {
        rev
    })
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

struct Started {
    setup: Setup,
    litellm_version: Option<String>,
}

async fn start_all(
    args: &Args,
    bin_dir: &Path,
    tmp: &Path,
    children: &mut Vec<Child>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Started> {
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = bin_dir.join(name);
        if !p.is_file() {
            bail!(
                "{} not found: build it first (cargo build --release -p retort -p retort-sim -p retort-bench-gateway)",
                p.display()
            );
        }
        Ok(p)
    };

    // The simulator.
    let sim_port = procs::free_port()?;
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let sim_cfg = tmp.join("sim.toml");
    std::fs::write(&sim_cfg, configs::sim_toml())?;
    let mut cmd = tokio::process::Command::new(bin("retort-sim")?);
    cmd.arg("--addr")
        .arg(format!("127.0.0.1:{sim_port}"))
        .arg("--config")
        .arg(&sim_cfg)
        .env("RUST_LOG", "warn");
    children.push(Child::spawn(
        "retort-sim",
        cmd,
        &tmp.join("sim.log"),
        false,
    )?);
    let sim = children.last_mut().context("no child")?;
    procs::wait_ready(sim, &sim_url, "/healthz", Duration::from_secs(30)).await?;
    log(&format!("retort-sim ready at {sim_url}"));

    // The floor.
    let floor_port = procs::free_port()?;
    let floor_url = format!("http://127.0.0.1:{floor_port}");
    let mut cmd = tokio::process::Command::new(bin("floor")?);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{floor_port}"))
        .arg("--upstream")
        .arg(&sim_url);
    children.push(Child::spawn("floor", cmd, &tmp.join("floor.log"), false)?);
    let floor = children.last_mut().context("no child")?;
    procs::wait_ready(floor, &floor_url, "/healthz", Duration::from_secs(30)).await?;
    let floor_pid = floor.pid();
    log(&format!(
        "floor ready at {floor_url} (pid {})",
        floor_pid.unwrap_or(0)
    ));

    // Retort.
    let http_port = procs::free_port()?;
    let grpc_port = procs::free_port()?;
    let retort_url = format!("http://127.0.0.1:{http_port}");
    let retort_cfg = tmp.join("retort.toml");
    std::fs::write(
        &retort_cfg,
        configs::retort_toml(
            &sim_url,
            &format!("127.0.0.1:{http_port}"),
            &format!("127.0.0.1:{grpc_port}"),
        ),
    )?;
    let mut cmd = tokio::process::Command::new(bin("retort")?);
    cmd.arg("gateway").arg("--config").arg(&retort_cfg);
    if let Some(n) = args.retort_workers {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
        notes.push(format!(
            "Retort ran with {n} Tokio worker thread(s) (`--retort-workers`)."
        ));
    }
    children.push(Child::spawn("retort", cmd, &tmp.join("retort.log"), false)?);
    let retort = children.last_mut().context("no child")?;
    procs::wait_ready(retort, &retort_url, "/healthz", Duration::from_secs(30)).await?;
    let retort_pid = retort.pid();
    log(&format!(
        "retort ready at {retort_url} (gRPC 127.0.0.1:{grpc_port}, pid {})",
        retort_pid.unwrap_or(0)
    ));

    let mut systems = vec![
        System {
            kind: SystemKind::Direct,
            base_url: sim_url.clone(),
            key: None,
            pid: None,
            pgid: None,
        },
        System {
            kind: SystemKind::Floor,
            base_url: floor_url,
            key: None,
            pid: floor_pid,
            pgid: None,
        },
        System {
            kind: SystemKind::Retort,
            base_url: retort_url,
            key: Some(RETORT_KEY.to_owned()),
            pid: retort_pid,
            pgid: None,
        },
    ];
    for s in &systems {
        probe(&Endpoint::new(&s.base_url, s.key.as_deref())?)
            .await
            .with_context(|| format!("probing {}", s.kind.name()))?;
    }

    // LiteLLM, when asked for and installed; any failure leaves it out with a note.
    let mut litellm_version = None;
    if args.litellm {
        match start_litellm(args, &sim_url, tmp, children).await {
            Ok((sys, version)) => {
                log(&format!("litellm {version} ready at {}", sys.base_url));
                systems.push(sys);
                litellm_version = Some(version);
            }
            Err(e) => {
                log(&format!("LiteLLM left out: {e:#}"));
                notes.push(format!(
                    "LiteLLM was left out of this run: {}",
                    one_line(&format!("{e:#}"))
                ));
                if let Some(c) = children.iter_mut().find(|c| c.name == "litellm") {
                    c.stop().await;
                }
            }
        }
    } else {
        notes.push("LiteLLM was not part of this run (`--litellm` not given).".to_owned());
    }
    Ok(Started {
        setup: Setup {
            systems,
            retort_grpc_url: Some(format!("http://127.0.0.1:{grpc_port}")),
        },
        litellm_version,
    })
}

fn one_line(s: &str) -> String {
    let s: String = s
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    s.chars().take(600).collect()
}

async fn start_litellm(
    args: &Args,
    sim_url: &str,
    tmp: &Path,
    children: &mut Vec<Child>,
) -> anyhow::Result<(System, String)> {
    let exe = args.litellm_venv.join("bin/litellm");
    let python = args.litellm_venv.join("bin/python");
    if !exe.is_file() {
        bail!(
            "no LiteLLM installed at {} (run bench/gateway/run.sh, which creates it)",
            exe.display()
        );
    }
    let version = command_output(
        &python.to_string_lossy(),
        &[
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
    )
    .unwrap_or_else(|| "unknown".to_owned());
    let port = procs::free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let cfg = tmp.join("litellm.yaml");
    let key = configs::litellm_master_key();
    std::fs::write(&cfg, configs::litellm_yaml(sim_url, &key))?;
    let workers = args
        .litellm_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("--config")
        .arg(&cfg)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--num_workers",
            &workers.to_string(),
        ])
        .current_dir(tmp)
        // No network beyond loopback: use the bundled model cost map, no telemetry, quiet logs.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .env("LITELLM_TELEMETRY", "False")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("DATABASE_URL");
    children.push(Child::spawn(
        "litellm",
        cmd,
        &tmp.join("litellm.log"),
        true,
    )?);
    let child = children.last_mut().context("no child")?;
    procs::wait_ready(child, &url, "/health/liveliness", Duration::from_secs(240)).await?;
    let pid = child.pid();
    let ep = Endpoint::new(&url, Some(&key))?;
    probe(&ep)
        .await
        .context("a request through LiteLLM failed")?;
    Ok((
        System {
            kind: SystemKind::Litellm,
            base_url: url,
            key: Some(key),
            pid,
            pgid: pid,
        },
        version,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = args.plan();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary's folder")?
            .to_path_buf(),
    };
    let out_dir = args.out.clone().unwrap_or_else(|| {
        Path::new(MANIFEST_DIR).join(if args.smoke { "../out" } else { "../results" })
    });
    let stem = if args.smoke {
        "gateway-smoke"
    } else {
        "gateway"
    };
    let tmp = std::env::temp_dir().join(format!("retort-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    log(&format!(
        "temporary files and child logs in {}",
        tmp.display()
    ));

    let mut children = Vec::new();
    let mut notes = args.note.clone();
    let load_start = loadavg();
    let outcome = async {
        let started = start_all(&args, &bin_dir, &tmp, &mut children, &mut notes).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let results = scenarios::run(&started.setup, &plan, &log).await?;
        anyhow::Ok((started, results))
    }
    .await;
    for c in children.iter_mut().rev() {
        c.stop().await;
    }
    let (started, results) = match outcome {
        Ok(x) => x,
        Err(e) => {
            log(&format!("failed; the child logs stay in {}", tmp.display()));
            return Err(e);
        }
    };

    if started
        .setup
        .systems
        .iter()
        .any(|s| s.kind == SystemKind::Litellm)
    {
        notes.push(format!(
            "LiteLLM's request counts are capped so the run stays near 10 minutes: {} requests at c=1 (others {}), \
             a {} s throughput window (others {} s), {} streams (others {}), {} paced streams (others {}).",
            plan.litellm_latency_requests,
            plan.latency_requests,
            plan.litellm_throughput_s,
            plan.throughput_s,
            plan.litellm_stream_requests,
            plan.stream_requests,
            plan.litellm_paced_requests,
            plan.paced_requests
        ));
    }
    notes.push(format!(
        "Load average (1, 5, 15 min) of the machine, which other work shares: {load_start} at the start, {} at the end.",
        loadavg()
    ));
    let (nproc, cpu_model, mem_total_mib, kernel) = report::machine();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let meta = Meta {
        date: report::utc(now),
        nproc,
        cpu_model,
        mem_total_mib,
        kernel,
        rustc: command_output("rustc", &["--version"]).unwrap_or_else(|| "unknown".to_owned()),
        litellm: started.litellm_version,
        git_rev: git_rev(),
        smoke: args.smoke,
        notes,
    };
    let targets = report::targets(&results);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let md_path = out_dir.join(format!("{stem}.md"));
    let json_path = out_dir.join(format!("{stem}.json"));
    let mut md = report::markdown(&meta, &results, &targets, &format!("{stem}.json"));
    // What was tried and what each change moved is written by hand (instruction counts, causes) and
    // kept beside the results, so a new run does not erase it.
    if let Ok(history) = std::fs::read_to_string(out_dir.join(format!("{stem}-history.md"))) {
        md.push('\n');
        md.push_str(&history);
    }
    std::fs::write(&md_path, md)?;
    let raw = report::Raw {
        meta: &meta,
        targets: &targets,
        results: &results,
    };
    std::fs::write(&json_path, serde_json::to_string_pretty(&raw)?)?;
    for t in &targets {
        log(&format!("{:?}: {} — {}", t.verdict, t.target, t.measured));
    }
    log(&format!(
        "wrote {} and {}",
        md_path.display(),
        json_path.display()
    ));
    if !args.keep_tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
