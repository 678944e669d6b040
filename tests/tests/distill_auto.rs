//! Auto-target end to end over real sockets: simulator (a dataset-mode teacher wrong on 10%) →
//! gateway → distill → selector. A job submitted with `target: "auto"` is screened (successive
//! halving over the selector's top arms, every probe recorded), its winner trained, evaluated and
//! reported with what was chosen and why; an objective no student can meet ends in "keep the
//! teacher" with the evidence; too few evals and unknown objectives are refused at Submit.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "distill/common.rs"]
mod common;

use std::sync::Arc;

use common::*;
use retort_hooks::{Identity, Principal, Role};
use retort_proto::v1::{self as pb, selector_client::SelectorClient};
use retort_server::auth::KeyRing;

/// The key distill records runs with (a service identity of the selector's ring).
const SELECTOR_KEY: &str = "sk-e2e-selector-service";
const USER_KEY: &str = "sk-e2e-selector-user";

async fn selector(dir: &std::path::Path) -> retort_selector::Running {
    let mut ring = KeyRing::new();
    for (key, user, role) in [
        (SELECTOR_KEY, "distill", Role::Service),
        (USER_KEY, "uma", Role::User),
    ] {
        ring.insert(
            key,
            Principal {
                identity: Identity {
                    user: user.into(),
                    ..Identity::default()
                },
                role,
            },
        )
        .unwrap();
    }
    retort_selector::start(
        retort_selector::SelectorConfig {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            ..Default::default()
        },
        Arc::new(ring),
    )
    .await
    .unwrap()
}

fn keyed<T>(msg: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// Past long-input tasks on which the n-gram bags meet a 5-point floor and the byte models do not:
/// the selector's prior for a task like spam.
fn history() -> Vec<pb::Run> {
    let mut out = Vec::new();
    for n in 0..6u64 {
        let task = pb::TaskDescription {
            kind: "classification".into(),
            n_train: 300 + 200 * n,
            n_evals: 100,
            n_labels: 2,
            label_balance: 0.95,
            majority_fraction: 0.55,
            mean_input_chars: 150.0 + 30.0 * n as f64,
            p95_input_chars: 400.0,
            mean_output_chars: 4.0,
            mean_input_words: 25.0,
            vocabulary: 2000,
            type_token_ratio: 0.3,
            alpha_fraction: 0.8,
            digit_fraction: 0.02,
            punct_fraction: 0.05,
            non_ascii_fraction: 0.0,
            teacher_accuracy: Some(0.9),
            teacher_usd_per_1k: Some(0.3),
            teacher_latency_us: Some(5_000.0),
        };
        for (class, acc, us) in [
            ("linear", 0.9, 10.0),
            ("mlp", 0.9, 30.0),
            ("cnn", 0.7, 400.0),
            ("transformer", 0.72, 900.0),
        ] {
            for (i, size) in ["tiny", "small", "base"].into_iter().enumerate() {
                out.push(pb::Run {
                    task: format!("past-{n}"),
                    context: Some(task.clone()),
                    arm: format!("{class}/{size}"),
                    data_fraction: 1.0,
                    epoch_fraction: 1.0,
                    accuracy: acc + 0.005 * i as f64,
                    latency_p99_us: us * (1.0 + i as f64),
                    usd_per_1k: us * (1.0 + i as f64) * 1.4e-8,
                    train_secs: 1.0,
                    evaluated: 100,
                });
            }
        }
    }
    out
}

fn auto_request(objective: pb::Objective) -> pb::SubmitRequest {
    let mut r = spam_request();
    r.target = "auto".into();
    r.objective = Some(objective);
    r.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 4,
        max_epochs: 4,
        ..Default::default()
    });
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_target_screens_trains_reports_and_teaches_the_selector() {
    let world = World::new(
        Db::sqlite(),
        TeacherSpec {
            error_rate: 0.1,
            ..Default::default()
        },
    )
    .await;
    let sel = selector(&world.dir.join("selector")).await;
    let mut sc = SelectorClient::connect(format!("http://{}", sel.addr))
        .await
        .unwrap();
    let past = history();
    let n_past = past.len() as u64;
    sc.record(keyed(pb::RecordRequest { runs: past }, SELECTOR_KEY))
        .await
        .unwrap();

    // A distill service without a selector refuses auto.
    let lone = world.distill().await;
    let mut c = client(&lone).await;
    let e = c
        .submit(auto_request(pb::Objective::default()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    lone.shutdown().await;

    let mut cfg = world.cfg.clone();
    cfg.selector_addr = format!("http://{}", sel.addr);
    cfg.selector_key = Some(SELECTOR_KEY.into());
    let distill =
        retort_distill::grpc::start_with_store(cfg, World::prices(), world.db.store().await)
            .await
            .unwrap();
    let mut c = client(&distill).await;

    // Bad input, refused at once.
    let mut few = auto_request(pb::Objective::default());
    let evals = String::from_utf8(fixture_bytes("spam_evals.jsonl")).unwrap();
    few.evals = inline(
        evals
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    );
    let e = c.submit(few).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("at least 20"), "{}", e.message());
    for kind in ["max_vibes", "min_latency"] {
        let e = c
            .submit(auto_request(pb::Objective {
                kind: kind.into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{kind}: {e:?}");
    }

    // Cheapest student within 5 points of the teacher.
    let id = c
        .submit(auto_request(pb::Objective {
            kind: "max_cost_savings".into(),
            max_accuracy_drop_points: 5.0,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(job.state, "succeeded", "{job:?}");
    let names: Vec<&str> = job.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["validate", "label", "screen", "train", "evaluate", "report"]
    );
    assert!(
        seen.iter()
            .any(|p| p.stage == "screen" && p.message.contains("screening round 1/2: 4 arms alive")),
        "{:?}",
        seen.iter().map(|p| &p.message).collect::<Vec<_>>()
    );
    assert!(
        seen.iter()
            .any(|p| p.stage == "screen" && p.message.contains("round 2/2: 2 arms alive")),
        "{:?}",
        seen.iter().map(|p| &p.message).collect::<Vec<_>>()
    );
    let report = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let r: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    let auto = &r["auto"];
    let chosen = auto["chosen"].as_str().unwrap();
    assert!(
        chosen.starts_with("linear/") || chosen.starts_with("mlp/"),
        "the prior and the probes point at the n-gram bags: {auto:#}"
    );
    assert_eq!(r["student"], chosen, "the report is the winner's");
    assert_eq!(auto["considered"].as_array().unwrap().len(), 13);
    assert_eq!(auto["probes"].as_array().unwrap().len(), 6, "4 + 2 probes");
    assert_eq!(auto["dropped"].as_array().unwrap().len(), 3);
    assert!(auto["predicted"]["accuracy"].as_f64().unwrap() > 0.5);
    let measured = auto["measured"]["accuracy"].as_f64().unwrap();
    let teacher = auto["measured"]["teacher_accuracy"].as_f64().unwrap();
    let met = measured >= teacher - 0.05;
    assert_eq!(auto["objective_met"], met, "{auto:#}");
    assert_eq!(
        auto["verdict"],
        if met {
            format!("distill to {chosen}")
        } else {
            "keep the teacher".into()
        }
    );
    assert!(!auto["pareto_front"].as_array().unwrap().is_empty());
    let share = auto["compute"]["share_of_every_arm"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{share}");
    for section in [
        "## Auto-target",
        "### Arms considered",
        "### Screening",
        "### Pareto front",
        "### Compute",
    ] {
        assert!(
            report.markdown.contains(section),
            "{section}: {}",
            report.markdown
        );
    }
    // The selector learned from the six probes and the final result.
    let status = sc
        .status(keyed(pb::SelectorStatusRequest {}, USER_KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.runs, n_past + 7, "{status:?}");
    assert_eq!(status.probes, 6);

    // An objective no arm can meet (every answer within 1 µs): keep the teacher, with evidence.
    let id = c
        .submit(auto_request(pb::Objective {
            kind: "max_accuracy".into(),
            max_latency_us: 1.0,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(job.state, "succeeded", "{job:?}");
    let report = c
        .report(pb::JobReportRequest { job_id: id })
        .await
        .unwrap()
        .into_inner();
    let r: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert_eq!(r["auto"]["verdict"], "keep the teacher", "{:#}", r["auto"]);
    assert_eq!(r["auto"]["objective_met"], false);
    assert!(
        r["auto"]["why"]
            .as_str()
            .unwrap()
            .contains("does not meet the objective"),
        "{:#}",
        r["auto"]
    );
    assert!(
        report.markdown.contains("## Auto-target: keep the teacher"),
        "{}",
        report.markdown
    );
    distill.shutdown().await;
    sel.shutdown().await;
}
