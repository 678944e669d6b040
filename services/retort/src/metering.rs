//! `retort metering` (the service alone, with its dashboard on its own HTTP port), `retort usage`
//! (readable tables from the metering gRPC API), and metering's part of `retort up`.
use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use retort_metering::client::MeteringSink;
use retort_proto::v1::{self as pb, metering_client::MeteringClient};

use crate::config::RetortConfig;

/// Metering in-process under `retort up`: the gateway reaches it through its gRPC client (the
/// [`MeteringSink`]), and the dashboard and JSON API join the gateway's HTTP listener. Runs from
/// `[metering]` (or its defaults) unless that says `enabled = false`; prices events with
/// `[[prices]]`.
pub async fn up(file: &RetortConfig, mut up: super::Up) -> anyhow::Result<super::Up> {
    let mut cfg = file.metering()?;
    if !cfg.enabled {
        return Ok(up);
    }
    cfg.keys = Some(Arc::clone(&up.keys));
    let running = retort_metering::start(&cfg, file.prices.clone())
        .await
        .context("starting metering")?;
    let mut client = cfg.client_settings()?;
    if cfg.client.endpoint.is_none() {
        client.endpoint = format!("http://{}", running.grpc_addr);
    }
    // The gateway's usage reaches metering as a service identity (Ingest admits no other).
    client.key = Some(up.service_key.clone());
    let sink = MeteringSink::start(client)?;
    tracing::info!(grpc = %running.grpc_addr, db = %super::redact_url(&cfg.database_url()), "metering: in-process; dashboard at /dashboard on the gateway's HTTP address");
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
    /// Configuration file (TOML): runs its `[metering]` with its `[[prices]]`; without it, the
    /// defaults.
    #[arg(long, short, env = "RETORT_CONFIG")]
    config: Option<PathBuf>,
}

/// `retort metering`: the gRPC service and, on `[metering] http_addr`, the dashboard and JSON API.
pub async fn run(args: MeteringArgs) -> anyhow::Result<()> {
    let file = RetortConfig::read_or_default(args.config.as_deref())?;
    let mut cfg = file.metering()?;
    cfg.keys = Some(file.key_ring()?);
    let running = retort_metering::start(&cfg, file.prices).await?;
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
    /// Metering's gRPC address: `host:port` or a URL.
    #[arg(
        long,
        global = true,
        env = "RETORT_METERING_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    addr: String,
}

/// Which events a report reads, and how many rows it shows.
#[derive(Args)]
struct Range {
    /// Start of the time range: 7d, 24h, 30m, 2w (that long ago), YYYY-MM-DD, an RFC 3339 time or
    /// epoch ms.
    #[arg(long, default_value = "7d")]
    since: String,
    /// End of the time range, in the same forms (default: now).
    #[arg(long)]
    until: Option<String>,
    /// Only events matching `dimension=value` (repeatable): user, team, discipline, level, model,
    /// provider, harness, route, tier.
    #[arg(long = "filter", short = 'f')]
    filters: Vec<String>,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

/// What `usage top` ranks users by.
#[derive(Clone, Copy, ValueEnum)]
enum TopBy {
    /// Spend on the most expensive price tier.
    Cost,
    /// Spend on every tier.
    Spend,
    /// Reasoning tokens and time.
    Reasoning,
    /// Tokens.
    Tokens,
}

/// What `usage by` orders its groups by.
#[derive(Clone, Copy, ValueEnum)]
enum Order {
    Cost,
    Tokens,
    ReasoningTokens,
    ReasoningMs,
    Requests,
    /// The group key itself (the default when grouping by day or hour).
    Key,
}

/// What `usage sessions` ranks sessions by.
#[derive(Clone, Copy, ValueEnum)]
enum SessionsBy {
    Cost,
    Duration,
}

#[derive(Subcommand)]
enum UsageCmd {
    /// Users ranked by spend on the most expensive tier (or `--by spend|reasoning|tokens`).
    Top {
        /// What to rank by.
        #[arg(long, value_enum, default_value = "cost")]
        by: TopBy,
        #[command(flatten)]
        range: Range,
    },
    /// Spend and tokens grouped by dimensions, e.g. `retort usage by discipline level`.
    By {
        /// Any of user, team, discipline, level, model, provider, harness, route, tier, day, hour.
        #[arg(required = true)]
        dims: Vec<String>,
        /// What to order the groups by (default: cost; key when grouping by day or hour).
        #[arg(long, value_enum)]
        order: Option<Order>,
        #[command(flatten)]
        range: Range,
    },
    /// Sessions ranked by spend (or `--by duration`).
    Sessions {
        /// What to rank by.
        #[arg(long, value_enum, default_value = "cost")]
        by: SessionsBy,
        #[command(flatten)]
        range: Range,
    },
    /// Raw events as CSV on stdout (a header, then one row an event).
    Export {
        /// Start of the time range: 7d, 24h, 30m, 2w (that long ago), YYYY-MM-DD, an RFC 3339 time
        /// or epoch ms.
        #[arg(long, default_value = "7d")]
        since: String,
        /// End of the time range, in the same forms (default: now).
        #[arg(long)]
        until: Option<String>,
        /// Only events matching `dimension=value` (repeatable): user, team, discipline, level,
        /// model, provider, harness, route, tier.
        #[arg(long = "filter", short = 'f')]
        filters: Vec<String>,
        /// Rows to write after the header (default: every event).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// The price table in force.
    Prices,
}

fn filter(since: &str, until: Option<&str>, filters: &[String]) -> anyhow::Result<pb::UsageFilter> {
    let now = retort_time::now_ms();
    let mut f = pb::UsageFilter {
        since_ms: retort_time::parse_time(since, now).with_context(|| {
            format!(
                "--since {since:?}: expected 7d, 24h, 30m, YYYY-MM-DD, an RFC 3339 time or epoch ms"
            )
        })?,
        until_ms: match until {
            Some(u) => retort_time::parse_time(u, now).with_context(|| {
                format!(
                    "--until {u:?}: expected 7d, 24h, 30m, YYYY-MM-DD, an RFC 3339 time or epoch ms"
                )
            })?,
            None => 0,
        },
        ..Default::default()
    };
    for kv in filters {
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

impl Range {
    fn filter(&self) -> anyhow::Result<pb::UsageFilter> {
        filter(&self.since, self.until.as_deref(), &self.filters)
    }
}

/// The name metering's API knows a `ValueEnum` by (`reasoning-tokens` → `reasoning_tokens`).
fn api_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().replace('-', "_"))
        .unwrap_or_default()
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
        if i > 0 && (s.len() - i).is_multiple_of(3) {
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
    let addr = super::endpoint(&a.addr);
    let mut client = MeteringClient::new(super::keyed_channel(&addr).await.with_context(|| {
        format!("connecting to metering at {addr} (--addr, RETORT_METERING_ADDR)")
    })?);
    match &a.cmd {
        UsageCmd::Top { by, range } => {
            let f = range.filter()?;
            let req = pb::TopRequest {
                filter: Some(f.clone()),
                limit: range.limit,
                tier: String::new(),
            };
            let r = match by {
                TopBy::Cost => client.top_users(req).await?.into_inner(),
                TopBy::Reasoning => client.top_reasoning(req).await?.into_inner(),
                TopBy::Spend | TopBy::Tokens => {
                    let order = if matches!(by, TopBy::Spend) {
                        "cost"
                    } else {
                        "tokens"
                    };
                    client
                        .query(pb::UsageQuery {
                            group_by: vec!["user".into()],
                            filter: Some(f.clone()),
                            order_by: order.into(),
                            limit: range.limit,
                        })
                        .await?
                        .into_inner()
                }
            };
            if !r.tier.is_empty() {
                println!(
                    "Top users by spend on the {} tier, since {}",
                    r.tier,
                    retort_time::human(f.since_ms)
                );
            }
            println!("{}", grouped_table(&r));
        }
        UsageCmd::By { dims, order, range } => {
            let r = client
                .query(pb::UsageQuery {
                    group_by: dims.clone(),
                    filter: Some(range.filter()?),
                    order_by: order.map(api_name).unwrap_or_default(),
                    limit: range.limit,
                })
                .await?
                .into_inner();
            println!("{}", grouped_table(&r));
        }
        UsageCmd::Sessions { by, range } => {
            let r = client
                .sessions(pb::SessionsRequest {
                    filter: Some(range.filter()?),
                    order_by: api_name(*by),
                    limit: range.limit,
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
                    Cell::new(retort_time::human(s.first_ms)),
                    Cell::new(retort_time::human(s.last_ms)),
                    Cell::new(count(s.requests)).set_alignment(CellAlignment::Right),
                    Cell::new(count(s.tokens)).set_alignment(CellAlignment::Right),
                    Cell::new(usd(s.cost_micros)).set_alignment(CellAlignment::Right),
                ]);
            }
            println!("{t}");
        }
        UsageCmd::Export {
            since,
            until,
            filters,
            limit,
        } => {
            use std::io::Write;
            let mut stream = client
                .export_csv(pb::ExportRequest {
                    filter: Some(filter(since, until.as_deref(), filters)?),
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            // The header and `limit` rows; the stream is dropped (cancelled) after the last one.
            let mut rows = CsvRows::new(limit.map(|l| l + 1));
            while let Some(chunk) = stream.message().await? {
                let (keep, done) = rows.take(&chunk.text);
                out.write_all(keep.as_bytes())?;
                if done {
                    break;
                }
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

/// Counts CSV records across chunks (a quoted field may hold a newline) to stop after `max`.
struct CsvRows {
    max: Option<u64>,
    seen: u64,
    quoted: bool,
}

impl CsvRows {
    fn new(max: Option<u64>) -> Self {
        CsvRows {
            max,
            seen: 0,
            quoted: false,
        }
    }

    /// The part of `text` within the limit, and whether the limit is reached.
    fn take<'a>(&mut self, text: &'a str) -> (&'a str, bool) {
        let Some(max) = self.max else {
            return (text, false);
        };
        if self.seen >= max {
            return ("", true);
        }
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'"' => self.quoted = !self.quoted,
                b'\n' if !self.quoted => {
                    self.seen += 1;
                    if self.seen == max {
                        return (&text[..=i], true);
                    }
                }
                _ => {}
            }
        }
        (text, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_stops_after_the_header_and_limit_rows_across_chunks() {
        let mut rows = CsvRows::new(Some(3));
        assert_eq!(
            rows.take("id,note\n1,\"a\nb\"\n2,"),
            ("id,note\n1,\"a\nb\"\n2,", false)
        );
        assert_eq!(rows.take("x\n3,y\n"), ("x\n", true));
        assert_eq!(rows.take("4,z\n"), ("", true));
        let mut all = CsvRows::new(None);
        assert_eq!(all.take("a\nb\n"), ("a\nb\n", false));
    }

    #[test]
    fn value_names_are_the_ones_metering_knows() {
        assert_eq!(api_name(Order::ReasoningTokens), "reasoning_tokens");
        assert_eq!(api_name(Order::ReasoningMs), "reasoning_ms");
        assert_eq!(api_name(SessionsBy::Duration), "duration");
    }
}
