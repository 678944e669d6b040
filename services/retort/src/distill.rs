//! `retort distill`: the distillation service alone (`serve`), its client commands (`submit` with
//! live progress bars, `watch`, `get`, `list`, `cancel`, `report`, `deploy`), and distill's part of
//! `retort up` (with `--demo`: a spam distillation against the simulator's dataset-mode teacher).
use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use retort_proto::v1::{self as pb, distill_client::DistillClient};

use crate::config::RetortConfig;

/// The demo's training inputs, evals and the simulated teacher's answer key (a synthetic spam/ham set).
const DEMO_TRAIN: &str = include_str!("../../distill/fixtures/spam_train.jsonl");
const DEMO_EVALS: &str = include_str!("../../distill/fixtures/spam_evals.jsonl");
const DEMO_TEACHER: &str = include_str!("../../distill/fixtures/spam_teacher.jsonl");
/// The answer key of the README's generation example (dates to normalise; its prompts are
/// rendered with "Normalise the date to YYYY-MM-DD: {input}").
const DEMO_DATES_TEACHER: &str = include_str!("../../distill/fixtures/dates_teacher.jsonl");
/// The demo's prompt template.
pub const DEMO_TEMPLATE: &str = "Is this email spam or ham? Answer with one word.\n\n{input}";

/// `retort up --demo`: the simulator gets the demo's teachers, dataset-mode models that know the
/// answers of the bundled sets (a lorem-speaking model would teach a student nothing): `sim-teacher`
/// (spam/ham, wrong on 5%) and `sim-dates-teacher` (date normalisation, one character off on 5%).
/// Their answer keys are written under `dir`.
pub fn demo_teacher(sim: &mut retort_sim::SimConfig, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (model, file, key, wrong_answers) in [
        (
            "sim-teacher",
            "demo-teacher.jsonl",
            DEMO_TEACHER,
            retort_sim::WrongAnswers::Other,
        ),
        (
            "sim-dates-teacher",
            "demo-dates-teacher.jsonl",
            DEMO_DATES_TEACHER,
            retort_sim::WrongAnswers::Typo,
        ),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, key).with_context(|| format!("writing {}", path.display()))?;
        sim.models.insert(
            model.into(),
            retort_sim::ModelBehavior {
                mode: retort_sim::AnswerMode::Dataset,
                dataset: Some(path),
                error_rate: 0.05,
                wrong_answers,
                seed: 7,
                latency_ms: 5,
                ..retort_sim::ModelBehavior::default()
            },
        );
    }
    Ok(())
}

/// Distill in-process under `retort up`, from `[distill]` (absent: not run) with `[[prices]]`;
/// it reaches the gateway at the `[server]` addresses unless the section names others. With
/// `demo`, submits the spam distillation once the gateway answers.
pub async fn up(file: &RetortConfig, mut up: super::Up, demo: bool) -> anyhow::Result<super::Up> {
    if file.distill.is_none() {
        return Ok(up);
    }
    let mut cfg = file.distill()?;
    if !cfg.enabled {
        return Ok(up);
    }
    cfg.keys = Some(std::sync::Arc::clone(&up.keys));
    // Distill records its runs with the selector as the process's service identity.
    if cfg.selector_key.is_none() && !up.service_key.is_empty() {
        cfg.selector_key = Some(up.service_key.clone());
    }
    let running = retort_distill::start(cfg.clone(), file.prices.clone())
        .await
        .context("starting distill")?;
    tracing::info!(grpc = %running.addr, db = %super::redact_url(&cfg.database_url()), "distill: in-process; `retort distill list` reads it");
    if demo {
        let endpoint = format!("http://{}", running.addr);
        // The demo job is the demo user's (the first user with a key in the file).
        let key = file
            .users
            .first()
            .and_then(|u| u.key.clone())
            .unwrap_or_else(|| up.service_key.clone());
        tokio::spawn(async move {
            match submit_demo(&endpoint, &key).await {
                Ok(id) => {
                    tracing::info!(job = %id, "demo: spam distillation submitted; `retort distill watch {id}`, then `retort distill report {id}` and `retort distill deploy {id} --name spam`")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "demo: the spam distillation could not be submitted")
                }
            }
        });
    }
    up.on_stop
        .push(Box::pin(async move { running.shutdown().await }));
    Ok(up)
}

async fn submit_demo(endpoint: &str, key: &str) -> anyhow::Result<String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect()
        .await?;
    let mut c =
        DistillClient::with_interceptor(channel, retort_server::auth::WithKey::new(Some(key)))
            .max_encoding_message_size(retort_distill::grpc::MAX_MESSAGE_BYTES);
    let req = pb::SubmitRequest {
        teacher: "spam-teacher".into(),
        train: inline(DEMO_TRAIN.as_bytes().to_vec()),
        evals: inline(DEMO_EVALS.as_bytes().to_vec()),
        prompt_template: DEMO_TEMPLATE.into(),
        target: "linear/small".into(),
        labels: vec!["spam".into(), "ham".into()],
        description: "demo: spam/ham with the simulated teacher".into(),
        ..Default::default()
    };
    Ok(c.submit(req).await?.into_inner().job_id)
}

fn inline(bytes: Vec<u8>) -> Option<pb::DataSource> {
    Some(pb::DataSource {
        source: Some(pb::data_source::Source::Inline(bytes)),
    })
}

#[derive(Args)]
pub struct DistillArgs {
    #[command(subcommand)]
    cmd: DistillCmd,
    /// The distill service's gRPC address (client commands): `host:port` or a URL.
    #[arg(
        long,
        global = true,
        env = "RETORT_DISTILL_ADDR",
        default_value = "127.0.0.1:50054"
    )]
    addr: String,
}

#[derive(Subcommand)]
enum DistillCmd {
    /// Run the distill service alone: `[distill]` and `[[prices]]` of the configuration file.
    Serve {
        /// Configuration file (TOML); without it, the defaults.
        #[arg(long, short, env = "RETORT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Submit a job, then follow it with progress bars (unless --detach).
    Submit(Box<SubmitArgs>),
    /// Follow a job with progress bars until it ends.
    Watch {
        /// The job id.
        id: String,
    },
    /// A job's state and stages.
    Get {
        /// The job id.
        id: String,
        /// The job as JSON-ish debug output instead of a table.
        #[arg(long)]
        raw: bool,
    },
    /// Jobs, newest first.
    List {
        /// Jobs to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Stop a job (no artefact is left behind).
    Cancel {
        /// The job id.
        id: String,
    },
    /// Print a finished job's report (Markdown; --json for the JSON).
    Report {
        /// The job id.
        id: String,
        /// The report as JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Serve a finished job's student through the gateway as `distilled/NAME`.
    Deploy {
        /// The job id (a finished job).
        id: String,
        /// The student's name: it is served as `distilled/NAME`.
        #[arg(long)]
        name: String,
        /// Also add it to this alias of the gateway.
        #[arg(long)]
        route: Option<String>,
        /// With --route: put it first (the alias's other targets become its fallbacks).
        #[arg(long)]
        first: bool,
    },
}

#[derive(Args)]
struct SubmitArgs {
    /// A model or alias of the gateway.
    #[arg(long)]
    teacher: String,
    /// Training inputs, JSONL: {"text": "..."} a line.
    #[arg(long)]
    train: PathBuf,
    /// Evals, JSONL: {"text": "...", "label": "expected"} a line (label optional on every line).
    #[arg(long)]
    evals: PathBuf,
    /// The user message; {input} is replaced by each item's text.
    #[arg(long, conflicts_with = "template_file")]
    template: Option<String>,
    /// Read the template from a file.
    #[arg(long)]
    template_file: Option<PathBuf>,
    /// `classification` (the teacher's answers are labels) or `generation` (short answers kept as
    /// text, scored by exact match and character error rate; evals' label is the expected answer).
    #[arg(long, default_value = "classification", value_parser = ["classification", "generation"])]
    task: String,
    /// Student `class/size`: linear|mlp|cnn|transformer (classification) or seq2seq (generation) /
    /// tiny|small|base, or `auto`: the selector ranks every class × size for --objective, screens
    /// the best with cheap probes, trains the winner (or says to keep the teacher). Default:
    /// linear/small, or seq2seq/small with --task generation.
    #[arg(long)]
    target: Option<String>,
    /// `max_cost_savings` (the cheapest student within --max-accuracy-drop of the teacher),
    /// `max_accuracy` (the most accurate under --max-latency-us / --max-usd-per-1k) or
    /// `min_latency` (the fastest with accuracy ≥ --min-accuracy); the last two need --target auto.
    #[arg(long, default_value = "max_cost_savings")]
    objective: String,
    /// max_accuracy: cap on the p99 latency of one prediction, µs (0 = none).
    #[arg(long, default_value_t = 0.0)]
    max_latency_us: f64,
    /// max_accuracy: cap on the cost, USD per 1,000 requests (0 = none).
    #[arg(long, default_value_t = 0.0)]
    max_usd_per_1k: f64,
    /// min_latency: the accuracy floor, percent.
    #[arg(long, default_value_t = 0.0)]
    min_accuracy: f64,
    /// The label set, comma-separated (default: the teacher's distinct answers).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Accept the student when its accuracy ≥ the teacher's minus this many points.
    #[arg(long, default_value_t = 1.0)]
    max_accuracy_drop: f64,
    /// Teacher requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Training epochs at most (training stops earlier when validation stops improving).
    #[arg(long, default_value_t = 20)]
    max_epochs: u32,
    /// Seconds; 0 = no limit.
    #[arg(long, default_value_t = 0)]
    time_limit: u64,
    /// Fail the job when more than this fraction of teacher answers fail.
    #[arg(long, default_value_t = 0.1)]
    max_failures: f64,
    /// Random seed of the job (the validation split and training).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// A note kept with the job.
    #[arg(long, default_value = "")]
    description: String,
    /// Send the paths instead of the contents: the files are on the machine of the distill service.
    #[arg(long)]
    server_paths: bool,
    /// Print the job id and return without watching.
    #[arg(long)]
    detach: bool,
}

async fn connect(addr: &str) -> anyhow::Result<DistillClient<super::Keyed>> {
    let endpoint = super::endpoint(addr);
    let c = DistillClient::new(super::keyed_channel(&endpoint).await.with_context(|| {
        format!("connecting to the distill service at {endpoint} (--addr, RETORT_DISTILL_ADDR)")
    })?);
    Ok(c.max_decoding_message_size(64 << 20)
        .max_encoding_message_size(retort_distill::grpc::MAX_MESSAGE_BYTES))
}

fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", e.code(), e.message())
}

fn out(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

pub async fn run(args: DistillArgs) -> anyhow::Result<()> {
    match args.cmd {
        DistillCmd::Serve { config } => {
            let file = RetortConfig::read_or_default(config.as_deref())?;
            let mut cfg = file.distill()?;
            cfg.keys = Some(file.key_ring()?);
            let running = retort_distill::start(cfg, file.prices).await?;
            tracing::info!(grpc = %running.addr, "distill ready");
            let stop = running.stopper();
            tokio::spawn(async move {
                super::shutdown_signal().await;
                let _ = stop.send(true);
            });
            let engine = std::sync::Arc::clone(&running.engine);
            running.wait().await;
            // Jobs in flight stop where they stand; their leases are given back so another
            // distill process on the same database (or this one, restarted) goes on at once.
            engine.stop().await;
            engine.store.close().await;
            Ok(())
        }
        DistillCmd::Submit(s) => {
            let template = match (&s.template, &s.template_file) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?,
                (None, None) => bail!("give --template or --template-file"),
            };
            let source = |p: &PathBuf| -> anyhow::Result<Option<pb::DataSource>> {
                Ok(Some(pb::DataSource {
                    source: Some(if s.server_paths {
                        pb::data_source::Source::Path(p.display().to_string())
                    } else {
                        pb::data_source::Source::Inline(
                            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
                        )
                    }),
                }))
            };
            let req = pb::SubmitRequest {
                teacher: s.teacher.clone(),
                train: source(&s.train)?,
                evals: source(&s.evals)?,
                prompt_template: template,
                target: s.target.clone().unwrap_or_else(|| {
                    if s.task == "generation" {
                        "seq2seq/small".into()
                    } else {
                        "linear/small".into()
                    }
                }),
                task: s.task.clone(),
                objective: Some(pb::Objective {
                    kind: s.objective.clone(),
                    max_accuracy_drop_points: s.max_accuracy_drop,
                    max_latency_us: s.max_latency_us,
                    max_usd_per_1k: s.max_usd_per_1k,
                    min_accuracy_percent: s.min_accuracy,
                }),
                limits: Some(pb::ResourceLimits {
                    max_teacher_concurrency: s.concurrency,
                    max_epochs: s.max_epochs,
                    time_limit_secs: s.time_limit,
                    max_teacher_failure_fraction: s.max_failures,
                }),
                labels: s.labels.clone(),
                seed: s.seed,
                description: s.description.clone(),
            };
            let mut c = connect(&args.addr).await?;
            let id = c.submit(req).await.map_err(status)?.into_inner().job_id;
            out(&format!("job {id}"));
            if s.detach {
                return Ok(());
            }
            watch(&mut c, &id).await
        }
        DistillCmd::Watch { id } => watch(&mut connect(&args.addr).await?, &id).await,
        DistillCmd::Get { id, raw } => {
            let job = connect(&args.addr)
                .await?
                .get(pb::GetJobRequest { job_id: id })
                .await
                .map_err(status)?
                .into_inner();
            if raw {
                out(&format!("{job:#?}"));
            } else {
                print_job(&job);
            }
            Ok(())
        }
        DistillCmd::List { limit } => {
            let jobs = connect(&args.addr)
                .await?
                .list(pb::ListJobsRequest { limit })
                .await
                .map_err(status)?
                .into_inner()
                .jobs;
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED).set_header([
                "job", "teacher", "target", "state", "stage", "deployed", "note",
            ]);
            for j in jobs {
                t.add_row([
                    j.id,
                    j.teacher,
                    j.target,
                    j.state,
                    j.stage,
                    j.deployed_model,
                    j.error.chars().take(60).collect(),
                ]);
            }
            out(&t.to_string());
            Ok(())
        }
        DistillCmd::Cancel { id } => {
            let job = connect(&args.addr)
                .await?
                .cancel(pb::CancelJobRequest { job_id: id })
                .await
                .map_err(status)?
                .into_inner();
            print_job(&job);
            Ok(())
        }
        DistillCmd::Report { id, json } => {
            let r = connect(&args.addr)
                .await?
                .report(pb::JobReportRequest { job_id: id })
                .await
                .map_err(status)?
                .into_inner();
            out(if json { &r.json } else { &r.markdown });
            Ok(())
        }
        DistillCmd::Deploy {
            id,
            name,
            route,
            first,
        } => {
            let r = connect(&args.addr)
                .await?
                .deploy(pb::DeployRequest {
                    job_id: id,
                    name,
                    route: route.unwrap_or_default(),
                    first,
                })
                .await
                .map_err(status)?
                .into_inner();
            out(&format!(
                "deployed: call model {:?} through the gateway",
                r.model
            ));
            if let Some(job) = r.job {
                print_job(&job);
            }
            Ok(())
        }
    }
}

fn print_job(j: &pb::Job) {
    out(&format!(
        "job {} · teacher {} → {} · {} (stage {})",
        j.id, j.teacher, j.target, j.state, j.stage
    ));
    if !j.error.is_empty() {
        out(&format!("note: {}", j.error));
    }
    if !j.deployed_model.is_empty() {
        out(&format!("deployed as {}", j.deployed_model));
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["stage", "state", "seconds", "summary"]);
    for s in &j.stages {
        let secs = if s.finished_ms > 0 {
            format!("{:.1}", (s.finished_ms - s.started_ms) as f64 / 1000.0)
        } else {
            "…".into()
        };
        t.add_row([s.name.clone(), s.state.clone(), secs, s.summary.clone()]);
    }
    out(&t.to_string());
}

/// Follows a job with a bar per stage until it ends; fails when the job does not succeed.
async fn watch(c: &mut DistillClient<super::Keyed>, id: &str) -> anyhow::Result<()> {
    let mut stream = c
        .watch(pb::WatchJobRequest { job_id: id.into() })
        .await
        .map_err(status)?
        .into_inner();
    let multi = MultiProgress::new();
    let bar_style =
        ProgressStyle::with_template("{prefix:>9} [{bar:32}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    let spin_style = ProgressStyle::with_template("{prefix:>9} {spinner} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut current: Option<(String, ProgressBar)> = None;
    let mut last = pb::JobProgress::default();
    while let Some(p) = stream.message().await.map_err(status)? {
        if current.as_ref().is_none_or(|(s, _)| *s != p.stage) {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
            let bar = match p.stage.as_str() {
                "label" | "train" => multi.add(ProgressBar::new(0).with_style(bar_style.clone())),
                _ => {
                    let b = multi.add(ProgressBar::new_spinner().with_style(spin_style.clone()));
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                }
            };
            bar.set_prefix(p.stage.clone());
            current = Some((p.stage.clone(), bar));
        }
        if let Some((_, bar)) = &current {
            match p.stage.as_str() {
                "label" => {
                    bar.set_length(p.items_total);
                    bar.set_position(p.items_labelled);
                    bar.set_message(format!(
                        "answers ({} cached, {} failed)",
                        p.cache_hits, p.teacher_failures
                    ));
                }
                "train" => {
                    bar.set_length(u64::from(p.max_epochs.max(1)));
                    bar.set_position(u64::from(p.epoch));
                    bar.set_message(format!(
                        "epochs, loss {:.4}, validation {:.2}%",
                        p.loss,
                        p.val_accuracy * 100.0
                    ));
                }
                _ => bar.set_message(p.message.clone()),
            }
        }
        last = p;
        if last.done {
            break;
        }
    }
    if let Some((_, bar)) = current.take() {
        bar.finish();
    }
    let job = c
        .get(pb::GetJobRequest { job_id: id.into() })
        .await
        .map_err(status)?
        .into_inner();
    print_job(&job);
    match job.state.as_str() {
        "succeeded" => {
            out(&format!(
                "report: retort distill report {id}; deploy: retort distill deploy {id} --name NAME"
            ));
            Ok(())
        }
        "queued" | "running" => {
            bail!(
                "the watch ended while the job is {} (is the service stopping?)",
                job.state
            )
        }
        state => bail!(
            "job {id} {state}: {}",
            if last.error.is_empty() {
                &job.error
            } else {
                &last.error
            }
        ),
    }
}
