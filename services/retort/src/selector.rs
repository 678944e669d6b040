//! `retort selector`: the student selector alone (`serve --config FILE`, its `[selector]` section),
//! its client commands (`status`, `recommend`, `retrain`), and the selector's part of `retort up`
//! (it runs beside distill, whose `target: "auto"` asks it which student to train).
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use retort_proto::v1::{self as pb, selector_client::SelectorClient};
use retort_training::{TaskKind, selector::TaskContext};

use crate::config::RetortConfig;

#[derive(Args)]
pub struct SelectorArgs {
    #[command(subcommand)]
    cmd: SelectorCmd,
    /// The selector's gRPC address: `host:port` or a URL.
    #[arg(
        long,
        global = true,
        env = "RETORT_SELECTOR_ADDR",
        default_value = "127.0.0.1:50055"
    )]
    addr: String,
}

#[derive(Subcommand)]
enum SelectorCmd {
    /// Run the selector alone, from the `[selector]` section of a configuration.
    Serve {
        #[arg(long, short, env = "RETORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// What the selector knows: runs, tasks, arms, when it last trained.
    Status,
    /// Rank the arms for a task described by its data (JSONL: {"text": ..., "label": the teacher's
    /// answer}), with mean ± sd of accuracy and latency, P(meets the objective) and P(best).
    Recommend(RecommendArgs),
    /// Refit the model on every stored run (admins).
    Retrain,
}

#[derive(Args)]
struct RecommendArgs {
    /// Labelled examples of the task (JSONL, `text` and `label`).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "classification", value_parser = ["classification", "generation"])]
    task: String,
    /// `max_cost_savings`, `max_accuracy` or `min_latency`.
    #[arg(long, default_value = "max_cost_savings")]
    objective: String,
    /// max_cost_savings: accuracy ≥ the teacher's minus this many points.
    #[arg(long, default_value_t = 1.0)]
    max_accuracy_drop: f64,
    /// max_accuracy: caps (0 = none). p99 latency of one prediction, µs; USD per 1,000 requests.
    #[arg(long, default_value_t = 0.0)]
    max_latency_us: f64,
    #[arg(long, default_value_t = 0.0)]
    max_usd_per_1k: f64,
    /// min_latency: the accuracy floor, in percent.
    #[arg(long, default_value_t = 0.0)]
    min_accuracy: f64,
    /// The teacher's accuracy on the task, in percent (absent: accuracy is agreement with it).
    #[arg(long)]
    teacher_accuracy: Option<f64>,
}

/// `retort up`: the selector runs in-process when `[distill]` or `[selector]` is present (unless
/// `[selector] enabled = false`), checking the same keys as every other service.
pub async fn up(file: &RetortConfig, mut up: super::Up) -> anyhow::Result<super::Up> {
    let Some(cfg) = file.selector()? else {
        return Ok(up);
    };
    let running = retort_selector::start(cfg.clone(), std::sync::Arc::clone(&up.keys))
        .await
        .context("starting the selector")?;
    tracing::info!(grpc = %running.addr, db = running.model.store.kind(), "selector: in-process; `retort selector status` reads it");
    up.on_stop
        .push(Box::pin(async move { running.shutdown().await }));
    Ok(up)
}

async fn connect(addr: &str) -> anyhow::Result<SelectorClient<super::Keyed>> {
    let endpoint = super::endpoint(addr);
    Ok(SelectorClient::new(
        super::keyed_channel(&endpoint).await.with_context(|| {
            format!("connecting to the selector at {endpoint} (--addr, RETORT_SELECTOR_ADDR)")
        })?,
    ))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code(), e.message())
}

fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

fn show_status(s: &pb::SelectorStatus) {
    out(&format!(
        "{} runs ({} full, {} probes) over {} tasks; backend {}; last trained {} ({} runs since); restored from {}",
        s.runs,
        s.full_runs,
        s.probes,
        s.tasks,
        s.backend,
        retort_time::human(s.trained_ms),
        s.since_retrain,
        s.restored
    ));
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["arm", "full runs", "probes", "mean accuracy"]);
    for a in &s.arms {
        t.add_row([
            a.arm.clone(),
            a.full_runs.to_string(),
            a.probes.to_string(),
            if a.full_runs > 0 {
                format!("{:.1}%", a.mean_accuracy * 100.0)
            } else {
                "—".into()
            },
        ]);
    }
    out(&t.to_string());
}

/// A task described from its labelled examples.
fn describe(a: &RecommendArgs) -> anyhow::Result<pb::TaskDescription> {
    let text = std::fs::read_to_string(&a.data)
        .with_context(|| format!("reading {}", a.data.display()))?;
    let mut inputs = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}, line {}", a.data.display(), i + 1))?;
        inputs.push(v["text"].as_str().unwrap_or_default().to_string());
        labels.push(v["label"].as_str().unwrap_or_default().to_string());
    }
    let kind = if a.task == "generation" {
        TaskKind::Generation
    } else {
        TaskKind::Classification
    };
    let i: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let l: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut c = TaskContext::from_data(kind, &i, &l);
    c.teacher_accuracy = a.teacher_accuracy.map(|p| p / 100.0);
    Ok(retort_distill::pipeline::auto::describe(&c))
}

pub async fn run(args: SelectorArgs) -> anyhow::Result<()> {
    match args.cmd {
        SelectorCmd::Serve { config } => {
            let file = RetortConfig::read_or_default(config.as_deref())?;
            let mut cfg = file.selector_config()?;
            // As metering does when it runs alone (the pod's secret names the database).
            if let Ok(url) = std::env::var("DATABASE_URL")
                && !url.is_empty()
            {
                cfg.database_url = Some(url);
            }
            let running = retort_selector::start(cfg, file.key_ring()?).await?;
            tracing::info!(grpc = %running.addr, "selector ready");
            let stop = running.stopper();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                let _ = stop.send(true);
            });
            running.wait().await;
            Ok(())
        }
        SelectorCmd::Status => {
            let s = connect(&args.addr)
                .await?
                .status(pb::SelectorStatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show_status(&s);
            Ok(())
        }
        SelectorCmd::Retrain => {
            let s = connect(&args.addr)
                .await?
                .retrain(pb::RetrainRequest {})
                .await
                .map_err(status)?
                .into_inner();
            show_status(&s);
            Ok(())
        }
        SelectorCmd::Recommend(a) => {
            let req = pb::RecommendRequest {
                task: Some(describe(&a)?),
                objective: Some(pb::Objective {
                    kind: a.objective.clone(),
                    max_accuracy_drop_points: a.max_accuracy_drop,
                    max_latency_us: a.max_latency_us,
                    max_usd_per_1k: a.max_usd_per_1k,
                    min_accuracy_percent: a.min_accuracy,
                }),
                ..Default::default()
            };
            let r = connect(&args.addr)
                .await?
                .recommend(req)
                .await
                .map_err(status)?
                .into_inner();
            out(&format!(
                "{} — learned from {} runs over {} tasks{}",
                r.objective,
                r.runs,
                r.tasks,
                if r.keep_teacher {
                    "; verdict: keep the teacher"
                } else {
                    ""
                }
            ));
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED).set_header([
                "arm",
                "accuracy",
                "p99 latency",
                "USD / 1k",
                "P(meets)",
                "P(best)",
            ]);
            for a in &r.arms {
                let acc = a.accuracy.unwrap_or_default();
                t.add_row([
                    a.arm.clone(),
                    format!("{:.1}% ± {:.1}", acc.mean * 100.0, acc.sd * 100.0),
                    format!("{:.0} µs", a.latency_us),
                    format!("{:.2e}", a.usd_per_1k),
                    format!("{:.2}", a.p_feasible),
                    format!("{:.2}", a.p_best),
                ]);
            }
            out(&t.to_string());
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use crate::config::RetortConfig;

    #[test]
    fn up_runs_the_selector_beside_distill_and_points_distill_at_it() {
        let c = RetortConfig::parse("data_dir = \"/srv/r\"\n[distill]\n").unwrap();
        let s = c.selector().unwrap().unwrap();
        assert_eq!(s.grpc_addr.port(), 50055);
        assert_eq!(s.data_dir, PathBuf::from("/srv/r"));
        assert_eq!(c.distill().unwrap().selector_addr, "http://127.0.0.1:50055");
        let off = RetortConfig::parse("[distill]\n[selector]\nenabled = false\n").unwrap();
        assert!(off.selector().unwrap().is_none());
        assert!(off.distill().unwrap().selector_addr.is_empty());
        assert!(
            RetortConfig::parse("")
                .unwrap()
                .selector()
                .unwrap()
                .is_none()
        );
        let e = RetortConfig::parse("[selector]\nretrain_everyy = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("at selector"), "{e:#}");
    }
}
