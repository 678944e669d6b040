//! `retort metering` (the service alone, with its dashboard on its own HTTP port), `retort usage`
//! (readable tables from the metering gRPC API), and metering's part of `retort up`.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use retort_metering::{MeteringConfig, client::MeteringSink, time};
use retort_proto::v1::{self as pb, metering_client::MeteringClient};

/// Metering in-process under `retort up`: the gateway reaches it through its gRPC client (the
/// [`MeteringSink`]), and the dashboard and JSON API join the gateway's HTTP listener. Reads
/// `[metering]` and `[[prices]]` (leaving `[[prices]]` for the breaker when `[spend]` is present).
pub async fn up(file: &mut toml::Table, mut up: super::Up) -> anyhow::Result<super::Up> {
    let (cfg, prices) = MeteringConfig::from_table(file)?;
    if !file.contains_key("spend") {
        file.remove("prices");
    }
    if !cfg.enabled {
        return Ok(up);
    }
    let running = retort_metering::start(&cfg, prices)
        .await
        .context("starting metering")?;
    let mut client = cfg.client_settings()?;
    if cfg.client.endpoint.is_none() {
        client.endpoint = format!("http://{}", running.grpc_addr);
    }
    let sink = MeteringSink::start(client)?;
    tracing::info!(grpc = %running.grpc_addr, db = %cfg.database_url().split('?').next().unwrap_or_default(), "metering: in-process; dashboard at /dashboard on the gateway's HTTP address");
    up.hooks.usage = Arc::clone(&sink) as Arc<dyn retort_gateway::hooks::UsageSink>;
    up.http = up.http.merge(running.http_router());
    up.on_stop.push(Box::pin(async move {
        // The gateway has stopped: what it recorded is drained to metering (or the spool).
        sink.shutdown().await;
        running.shutdown().await;
    }));
    Ok(up)
}

#[derive(Args)]
pub struct MeteringArgs {
    /// Configuration file (TOML): `[metering]` and `[[prices]]`; without it, the defaults.
    #[arg(long, short, env = "RETORT_CONFIG")]
    config: Option<PathBuf>,
}

/// `retort metering`: the gRPC service and, on `[metering] http_addr`, the dashboard and JSON API.
pub async fn run(args: MeteringArgs) -> anyhow::Result<()> {
    let text = match &args.config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        None => String::new(),
    };
    let (cfg, prices) = MeteringConfig::from_toml(&text)?;
    let running = retort_metering::start(&cfg, prices).await?;
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("listening on {}", cfg.http_addr))?;
    tracing::info!(grpc = %running.grpc_addr, dashboard = %format!("http://{}/dashboard", listener.local_addr()?), "metering ready");
    axum::serve(listener, running.http_router())
        .with_graceful_shutdown(super::shutdown_signal())
        .await?;
    running.shutdown().await;
    Ok(())
}

#[derive(Args)]
pub struct UsageArgs {
    #[command(subcommand)]
    cmd: UsageCmd,
    /// Metering's gRPC address.
    #[arg(
        long,
        global = true,
        env = "RETORT_METERING_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    addr: String,
    /// Start of the time range: 7d, 24h, 30m, YYYY-MM-DD or epoch ms.
    #[arg(long, global = true, default_value = "7d")]
    since: String,
    /// End of the time range (default: now).
    #[arg(long, global = true)]
    until: Option<String>,
    /// Filters, `dimension=value` (repeatable): user, team, discipline, level, model, provider, harness, route, tier.
    #[arg(long = "filter", short = 'f', global = true)]
    filters: Vec<String>,
    /// Rows to show.
    #[arg(long, global = true, default_value_t = 20)]
    limit: u32,
}

#[derive(Subcommand)]
enum UsageCmd {
    /// Users ranked: `--by cost` (spend on the most expensive tier), `spend` (all tiers),
    /// `reasoning` (reasoning tokens and time), `tokens`.
    Top {
        #[arg(long, default_value = "cost")]
        by: String,
    },
    /// Spend and tokens grouped by dimensions, e.g. `retort usage by discipline level`.
    By {
        /// Any of user, team, discipline, level, model, provider, harness, route, tier, day, hour.
        #[arg(required = true)]
        dims: Vec<String>,
        /// cost, tokens, reasoning_tokens, reasoning_ms, requests or key.
        #[arg(long, default_value = "")]
        order: String,
    },
    /// Sessions ranked by spend (or `--by duration`).
    Sessions {
        #[arg(long, default_value = "cost")]
        by: String,
    },
    /// Raw events as CSV on stdout.
    Export {
        /// CSV (the only format).
        #[arg(long, default_value_t = true)]
        csv: bool,
    },
    /// The price table in force.
    Prices,
}

fn filter(a: &UsageArgs) -> anyhow::Result<pb::UsageFilter> {
    let now = time::now_ms();
    let mut f = pb::UsageFilter {
        since_ms: time::parse_time(&a.since, now)
            .with_context(|| format!("--since {:?}", a.since))?,
        until_ms: match &a.until {
            Some(u) => time::parse_time(u, now).with_context(|| format!("--until {u:?}"))?,
            None => 0,
        },
        ..Default::default()
    };
    for kv in &a.filters {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--filter {kv:?}: expected dimension=value"))?;
        let list = match k {
            "user" => &mut f.users,
            "team" => &mut f.teams,
            "discipline" => &mut f.disciplines,
            "level" => &mut f.levels,
            "model" => &mut f.models,
            "provider" => &mut f.providers,
            "harness" => &mut f.harnesses,
            "route" => &mut f.routes,
            "tier" => &mut f.tiers,
            _ => anyhow::bail!("--filter {kv:?}: unknown dimension {k:?}"),
        };
        list.push(v.to_string());
    }
    Ok(f)
}

fn usd(micros: i64) -> String {
    let v = micros as f64 / 1e6;
    if v.abs() < 1.0 && v != 0.0 {
        format!("${v:.4}")
    } else {
        format!("${v:.2}")
    }
}

fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn table(head: Vec<String>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(head);
    t
}

fn grouped_table(r: &pb::UsageQueryResponse) -> Table {
    let mut head: Vec<String> = r.group_by.clone();
    head.extend(
        [
            "spend",
            "requests",
            "failed",
            "input",
            "output",
            "reasoning",
            "reasoning time",
            "unpriced",
        ]
        .map(String::from),
    );
    let mut t = table(head);
    for row in &r.rows {
        let mut cells: Vec<Cell> = row.key.iter().map(Cell::new).collect();
        for v in [
            usd(row.cost_micros),
            count(row.requests),
            count(row.failed),
            count(row.input_tokens),
            count(row.output_tokens),
            count(row.reasoning_tokens),
            format!("{:.1} s", row.reasoning_ms as f64 / 1000.0),
            count(row.unpriced),
        ] {
            cells.push(Cell::new(v).set_alignment(CellAlignment::Right));
        }
        t.add_row(cells);
    }
    t
}

/// `retort usage ...`.
#[allow(clippy::print_stdout)]
pub async fn usage(a: UsageArgs) -> anyhow::Result<()> {
    let mut client = MeteringClient::connect(a.addr.clone())
        .await
        .with_context(|| format!("connecting to metering at {}", a.addr))?;
    let f = filter(&a)?;
    match &a.cmd {
        UsageCmd::Top { by } => {
            let req = pb::TopRequest {
                filter: Some(f.clone()),
                limit: a.limit,
                tier: String::new(),
            };
            let r = match by.as_str() {
                "cost" => client.top_users(req).await?.into_inner(),
                "reasoning" => client.top_reasoning(req).await?.into_inner(),
                "spend" | "tokens" => {
                    let order = if by == "spend" { "cost" } else { "tokens" };
                    client
                        .query(pb::UsageQuery {
                            group_by: vec!["user".into()],
                            filter: Some(f),
                            order_by: order.into(),
                            limit: a.limit,
                        })
                        .await?
                        .into_inner()
                }
                o => anyhow::bail!("--by {o:?}: expected cost, spend, reasoning or tokens"),
            };
            if !r.tier.is_empty() {
                println!(
                    "Top users by spend on the {} tier, since {}",
                    r.tier, a.since
                );
            }
            println!("{}", grouped_table(&r));
        }
        UsageCmd::By { dims, order } => {
            let r = client
                .query(pb::UsageQuery {
                    group_by: dims.clone(),
                    filter: Some(f),
                    order_by: order.clone(),
                    limit: a.limit,
                })
                .await?
                .into_inner();
            println!("{}", grouped_table(&r));
        }
        UsageCmd::Sessions { by } => {
            let r = client
                .sessions(pb::SessionsRequest {
                    filter: Some(f),
                    order_by: by.clone(),
                    limit: a.limit,
                    live_within_ms: 0,
                })
                .await?
                .into_inner();
            let mut t = table(
                [
                    "session", "user", "harness", "models", "first", "last", "requests", "tokens",
                    "spend",
                ]
                .map(String::from)
                .to_vec(),
            );
            for s in r.sessions {
                t.add_row(vec![
                    Cell::new(s.session_id),
                    Cell::new(s.user),
                    Cell::new(s.harness),
                    Cell::new(s.models),
                    Cell::new(time::iso(s.first_ms)),
                    Cell::new(time::iso(s.last_ms)),
                    Cell::new(count(s.requests)).set_alignment(CellAlignment::Right),
                    Cell::new(count(s.tokens)).set_alignment(CellAlignment::Right),
                    Cell::new(usd(s.cost_micros)).set_alignment(CellAlignment::Right),
                ]);
            }
            println!("{t}");
        }
        UsageCmd::Export { .. } => {
            use std::io::Write;
            let mut stream = client
                .export_csv(pb::ExportRequest { filter: Some(f) })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.message().await? {
                out.write_all(chunk.text.as_bytes())?;
            }
        }
        UsageCmd::Prices => {
            let r = client
                .list_prices(pb::ListPricesRequest {})
                .await?
                .into_inner();
            let mut t = table(
                [
                    "model",
                    "from",
                    "tier",
                    "input $/M",
                    "output $/M",
                    "reasoning $/M",
                    "cache read $/M",
                    "cache write $/M",
                ]
                .map(String::from)
                .to_vec(),
            );
            let opt = |v: Option<f64>| v.map(|v| format!("{v}")).unwrap_or_else(|| "—".into());
            for p in r.prices {
                t.add_row(vec![
                    p.model,
                    p.effective_from,
                    p.tier,
                    format!("{}", p.input),
                    format!("{}", p.output),
                    opt(p.reasoning),
                    opt(p.cache_read),
                    opt(p.cache_write),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}
