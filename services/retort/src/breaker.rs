//! `retort breaker`: the breaker service alone (`--config FILE`, its `[breaker]` section), the CLI
//! that confirms, stops or shows a session, and the breaker's part of `retort up`.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use retort_breaker::{BreakerConfig, grpc, guard};
use retort_proto::v1::{self as pb, breaker_client::BreakerClient};

use crate::config::RetortConfig;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BreakerArgs {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Configuration file (TOML) with a `[breaker]` section; serves the breaker alone.
    #[arg(long, short, env = "RETORT_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The session goes on; its thresholds rise by the policy's step.
    Confirm(Target),
    /// The session ends for good.
    Stop(Target),
    /// Shows a session (or, without one, every session).
    Status {
        /// The session id (as sent in `x-retort-session`); without it, every session.
        session: Option<String>,
        #[command(flatten)]
        at: At,
    },
}

#[derive(Args)]
struct At {
    /// The breaker's gRPC address: `host:port` or a URL.
    #[arg(
        long,
        alias = "endpoint",
        env = "RETORT_BREAKER_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    addr: String,
    /// The session's user, when two users have sessions with the same id.
    #[arg(long, default_value = "")]
    user: String,
}

#[derive(Args)]
struct Target {
    /// The session id (as sent in `x-retort-session`).
    session: String,
    #[command(flatten)]
    at: At,
}

/// `retort up`: with a `[breaker]` section, starts the breaker in-process on its own gRPC address
/// and plugs a breaker guard (its gRPC client) and the confirm page into the gateway.
pub async fn up(
    file: &RetortConfig,
    gateway: &retort_gateway::config::Config,
    mut up: super::Up,
) -> anyhow::Result<super::Up> {
    let Some(section) = &file.breaker else {
        return Ok(up);
    };
    let mut cfg = BreakerConfig::from_raw(section.clone())?;
    if !cfg.enabled {
        return Ok(up);
    }
    if cfg.public_url.is_none() {
        cfg.public_url = Some(format!("http://{}", gateway.server.http_addr));
    }
    cfg.keys = Some(std::sync::Arc::clone(&up.keys));
    cfg.service_key = Some(up.service_key.clone());
    let running = grpc::start(&cfg).await.context("starting the breaker")?;
    cfg.endpoint = format!("http://{}", running.addr);
    tracing::info!(addr = %running.addr, redis = cfg.redis_url.is_some(), "breaker: sessions and budgets guarded");
    tokio::spawn(running.wait());
    // One `[[prices]]` list serves metering and the breaker.
    let table = retort_pricing::PriceTable::new(file.prices.clone()).context("[[prices]]")?;
    let guard = std::sync::Arc::new(guard::Guard::start_with_key(
        guard::GuardConfig::from_breaker(&cfg),
        table,
        cfg.service_key.clone(),
    )?);
    up.http = up.http.merge(retort_breaker::web::router_with_keys(
        &cfg.endpoint,
        Some(std::sync::Arc::clone(&guard)),
        std::sync::Arc::clone(&up.keys),
        &up.service_key,
    )?);
    up.hooks.breaker = guard;
    Ok(up)
}

pub async fn run(args: BreakerArgs) -> anyhow::Result<()> {
    match args.cmd {
        None => {
            let path = args.config.context(
                "retort breaker needs --config FILE (or a subcommand: confirm, stop, status)",
            )?;
            let file = RetortConfig::read(&path)?;
            let section = file
                .breaker
                .clone()
                .context("the configuration has no [breaker] section")?;
            let mut cfg = BreakerConfig::from_raw(section)?;
            cfg.keys = Some(file.key_ring()?);
            let running = grpc::start(&cfg).await?;
            let stop = running.stopper();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                let _ = stop.send(true);
            });
            running.wait().await;
            Ok(())
        }
        Some(Cmd::Confirm(t)) => act(t, false).await,
        Some(Cmd::Stop(t)) => act(t, true).await,
        Some(Cmd::Status { session, at }) => {
            let mut c = client(&at).await?;
            match session {
                Some(s) => print(
                    &c.get_session(pb::GetSessionRequest {
                        session_id: s,
                        user: at.user,
                    })
                    .await?
                    .into_inner(),
                ),
                None => {
                    for s in c
                        .list_sessions(pb::ListSessionsRequest { user: at.user })
                        .await?
                        .into_inner()
                        .sessions
                    {
                        print(&s);
                    }
                }
            }
            Ok(())
        }
    }
}

async fn client(at: &At) -> anyhow::Result<BreakerClient<super::Keyed>> {
    let endpoint = super::endpoint(&at.addr);
    Ok(BreakerClient::new(
        super::keyed_channel(&endpoint).await.with_context(|| {
            format!("connecting to the breaker at {endpoint} (--addr, RETORT_BREAKER_ADDR)")
        })?,
    ))
}

async fn act(t: Target, stop: bool) -> anyhow::Result<()> {
    let mut c = client(&t.at).await?;
    let by = format!(
        "cli ({})",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let a = pb::SessionAction {
        session_id: t.session,
        user: t.at.user,
        by,
    };
    let s = if stop {
        c.stop(a).await
    } else {
        c.confirm(a).await
    }
    .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    print(&s.into_inner());
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print(s: &pb::Session) {
    let th = s.thresholds.clone().unwrap_or_default();
    // A threshold of 0 is no threshold.
    let cap = |none: bool, show: String| if none { "no limit".into() } else { show };
    println!(
        "session {} (user {}, team {}): {} [mode {}] — {} tokens / {}, ${:.4} / {}, {} requests / {}, tier {} / {}; started {}, last request {}",
        s.session_id,
        s.user,
        s.team,
        s.state,
        s.mode,
        s.tokens,
        cap(th.tokens == 0, th.tokens.to_string()),
        s.cost_micros as f64 / 1e6,
        cap(
            th.cost_micros == 0,
            format!("${:.4}", th.cost_micros as f64 / 1e6)
        ),
        s.requests,
        cap(th.requests == 0, th.requests.to_string()),
        s.tier,
        if th.tier.is_empty() {
            "any"
        } else {
            th.tier.as_str()
        },
        retort_time::human(s.started_unix_ms),
        retort_time::human(s.last_unix_ms)
    );
    for t in &s.history {
        println!(
            "  {} → {} by {} at {} ({})",
            if t.from.is_empty() { "·" } else { &t.from },
            t.to,
            t.by,
            retort_time::human(t.at_unix_ms),
            t.reason
        );
    }
}
