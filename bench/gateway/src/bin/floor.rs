//! `floor`: the bare pass-through proxy of the gateway benchmark (see `retort_bench_gateway::floor`).

use anyhow::Context;
use clap::Parser;

/// A bare HTTP/1 pass-through proxy: no parsing, no auth; pooled upstream connections, TCP_NODELAY.
#[derive(Debug, Parser)]
#[command(name = "floor")]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// The upstream, `http://127.0.0.1:PORT`.
    #[arg(long)]
    upstream: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the floor listens on loopback addresses only"
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tokio::select! {
        r = retort_bench_gateway::floor::serve(listener, &args.upstream) => r,
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c"),
    }
}
