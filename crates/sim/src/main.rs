//! `retort-sim`: serve the provider simulator on a socket.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use retort_sim::SimConfig;

/// A stand-in LLM provider speaking the OpenAI and Anthropic HTTP APIs, with scriptable faults.
#[derive(Debug, Parser)]
#[command(name = "retort-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "RETORT_SIM_ADDR", default_value = "127.0.0.1:9000")]
    addr: String,
    /// TOML configuration (see sim.example.toml); without it, the demo models are served.
    #[arg(long, env = "RETORT_SIM_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let cfg = match &args.config {
        Some(path) => {
            SimConfig::from_file(path).with_context(|| format!("loading {}", path.display()))?
        }
        None => SimConfig::demo(),
    };
    let models: Vec<&str> = cfg.models.keys().map(String::as_str).collect();
    tracing::info!(?models, "models configured");
    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    tokio::select! {
        r = retort_sim::serve(listener, cfg) => r?,
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for ctrl-c")?;
            tracing::info!("shutting down");
        }
    }
    Ok(())
}
