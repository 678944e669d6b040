//! End to end over real sockets: simulator (dataset-mode teacher) → gateway → distill, on SQLite and
//! on Postgres: a noisy teacher that fails on some items, the report, the cache on resubmission, a
//! restart in the middle of a job, cancel, deploy through the gateway, and grpcurl via reflection.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use std::time::Duration;

use common::*;
use retort_proto::v1 as pb;

/// The whole pipeline with a noisy, partly failing teacher; then the same job again from the cache.
async fn pipeline_with_noisy_teacher(db: Db) {
    let world = World::new(
        db,
        TeacherSpec {
            error_rate: 0.1,
            unknown: 6,
            error_once: true,
            ..Default::default()
        },
    )
    .await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    let id = c.submit(spam_request()).await.unwrap().into_inner().job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(job.state, "succeeded", "{job:?}");
    let names: Vec<&str> = job.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["validate", "label", "train", "evaluate", "report"]);
    assert!(
        job.stages.iter().all(|s| s.state == "done"),
        "{:?}",
        job.stages
    );
    // Six items the teacher could not answer: reported on the job, not fatal.
    assert!(
        job.error.contains("6 answers named no label"),
        "{}",
        job.error
    );
    assert!(
        seen.iter()
            .any(|p| p.stage == "label" && p.items_total == distinct_prompts()),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|p| p.stage == "train" && p.epoch >= 1),
        "{seen:?}"
    );
    // Every distinct prompt asked once, plus the one 500 that distill retried.
    assert_eq!(world.sim.attempts("sim-teacher"), distinct_prompts() + 1);

    let report = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let r: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    let teacher_acc = r["teacher_accuracy"].as_f64().unwrap();
    let student_acc = r["student_accuracy"].as_f64().unwrap();
    assert!(
        teacher_acc < 0.99 && teacher_acc > 0.75,
        "a teacher wrong on ~10%: {teacher_acc}"
    );
    assert!(student_acc > 0.8, "student accuracy {student_acc}");
    assert_eq!(r["label_stats"]["unparseable"], 6);
    assert_eq!(r["labels"], serde_json::json!(["ham", "spam"]));
    assert!(r["costs"]["teacher_usd_per_1k"].as_f64().unwrap() > 0.0);
    assert!(r["costs"]["student_usd_per_1k"].as_f64().unwrap() > 0.0);
    assert!(r["parameters"].as_u64().unwrap() > 0 && r["artefact_bytes"].as_u64().unwrap() > 0);
    assert!(r["latency"]["p99_us"].as_f64().unwrap() >= r["latency"]["p50_us"].as_f64().unwrap());
    assert!(!r["assumptions"].as_array().unwrap().is_empty());
    assert!(
        report.markdown.contains("## Errors by class"),
        "{}",
        report.markdown
    );
    assert!(
        report.markdown.contains("sim-teacher@2024-01-01"),
        "{}",
        report.markdown
    );
    let row = distill
        .engine
        .store
        .result(&id)
        .await
        .unwrap()
        .expect("a distill_results row");
    assert_eq!(
        (
            row.student_class.as_str(),
            row.student_size.as_str(),
            row.n_labels
        ),
        ("linear", "tiny", 2)
    );
    assert_eq!(
        (row.n_train, row.n_evals, row.task_kind.as_str()),
        (300, 100, "classification")
    );
    assert_eq!(row.teacher_accuracy, Some(teacher_acc));

    // The same job again: every answer comes from the cache, the teacher is not asked.
    let before = world.sim.attempts("sim-teacher");
    let again = c.submit(spam_request()).await.unwrap().into_inner().job_id;
    watch_to_end(&mut c, &again).await;
    let job2 = get(&mut c, &again).await;
    assert_eq!(job2.state, "succeeded", "{job2:?}");
    assert_eq!(
        world.sim.attempts("sim-teacher"),
        before,
        "a repeated job paid the teacher again"
    );
    let label = job2.stages.iter().find(|s| s.name == "label").unwrap();
    assert!(
        label.summary.contains("0 from the teacher now"),
        "{}",
        label.summary
    );
    distill.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_pipeline_noisy_teacher_report_and_cache() {
    pipeline_with_noisy_teacher(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pipeline_noisy_teacher_report_and_cache() {
    pipeline_with_noisy_teacher(Db::postgres()).await;
}

/// The service dies in the middle of labelling; started again, the job resumes and never pays twice.
async fn restart_resumes(db: Db) {
    let world = World::new(
        db,
        TeacherSpec {
            latency_ms: 10,
            ..Default::default()
        },
    )
    .await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    let mut req = spam_request();
    req.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 2,
        max_epochs: 5,
        ..Default::default()
    });
    let id = c.submit(req).await.unwrap().into_inner().job_id;
    // Wait until some, not all, items are labelled, then kill the service.
    let mut s = c
        .watch(pb::WatchJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = s.message().await.unwrap() {
        if p.stage == "label" && p.items_labelled >= 40 {
            break;
        }
        assert!(!p.done, "the job ended before the kill: {p:?}");
    }
    drop(s);
    distill.kill().await;
    let asked = world.sim.attempts("sim-teacher");
    assert!(
        asked < distinct_prompts(),
        "killed after the label stage: {asked}"
    );
    let store = world.db.store().await;
    let row = store.job(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.stage.as_str()),
        ("running", "label")
    );
    store.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let in_flight = world.sim.attempts("sim-teacher") - asked;

    let distill = world.distill().await;
    let mut c = client(&distill).await;
    watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(job.state, "succeeded", "{job:?}");
    // Answers cached before the kill were not bought again; only calls in flight at the kill (whose
    // answers were never stored) may be repeated.
    let total = world.sim.attempts("sim-teacher");
    assert!(
        total <= distinct_prompts() + in_flight + 2,
        "total {total}, distinct {}",
        distinct_prompts()
    );
    let validate = job.stages.iter().find(|s| s.name == "validate").unwrap();
    assert!(
        validate.started_ms
            < job
                .stages
                .iter()
                .find(|s| s.name == "label")
                .unwrap()
                .started_ms
    );
    let label = job.stages.iter().find(|s| s.name == "label").unwrap();
    assert!(
        !label.summary.contains(" 0 cached"),
        "the resumed label stage used the cache: {}",
        label.summary
    );
    distill.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_restart_resumes_at_the_last_finished_stage() {
    restart_resumes(Db::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_resumes_at_the_last_finished_stage() {
    restart_resumes(Db::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_leaves_no_artefact() {
    let world = World::new(
        Db::sqlite(),
        TeacherSpec {
            latency_ms: 20,
            ..Default::default()
        },
    )
    .await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    let mut req = spam_request();
    req.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 1,
        ..Default::default()
    });
    let id = c.submit(req).await.unwrap().into_inner().job_id;
    let mut s = c
        .watch(pb::WatchJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    while let Some(p) = s.message().await.unwrap() {
        if p.items_labelled >= 5 {
            break;
        }
    }
    let job = c
        .cancel(pb::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state, "cancelled", "{job:?}");
    let dir = world.cfg.data_dir.join("distill").join(&id);
    assert!(!dir.join("student").exists() && !dir.join("checkpoint").exists());
    let err = c
        .cancel(pb::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let err = c
        .deploy(pb::DeployRequest {
            job_id: id,
            name: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    distill.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploy_serves_the_student_through_the_gateway() {
    let world = World::new(Db::sqlite(), TeacherSpec::default()).await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    let id = c.submit(spam_request()).await.unwrap().into_inner().job_id;
    watch_to_end(&mut c, &id).await;
    let bad = c
        .deploy(pb::DeployRequest {
            job_id: id.clone(),
            name: "Bad Name".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let d = c
        .deploy(pb::DeployRequest {
            job_id: id.clone(),
            name: "spam".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.model, "distilled/spam");
    assert_eq!(d.job.as_ref().unwrap().deployed_model, "distilled/spam");
    // A client calls it like any model, with the rendered prompt as the user message.
    let mail = "WIN a FREE prize NOW, click here $$$ claim your CASH";
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", world.gateway.http_addr))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "distilled/spam", "messages": [{"role": "user", "content": TEMPLATE.replace("{input}", mail)}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["choices"][0]["message"]["content"], "spam", "{r}");
    let report = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let j: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert_eq!(j["gateway_latency"]["n"], 50, "{}", report.json);
    assert!(
        report.markdown.contains("through the gateway"),
        "{}",
        report.markdown
    );
    distill.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpcurl_lists_and_calls_distill_through_reflection() {
    let Ok(grpcurl) = std::env::var("RETORT_GRPCURL") else {
        eprintln!("RETORT_GRPCURL is not set (./scripts/test sets it): skipped");
        return;
    };
    let world = World::new(Db::sqlite(), TeacherSpec::default()).await;
    let distill = world.distill().await;
    let addr = distill.addr.to_string();
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "list"])
        .output()
        .await
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("retort.v1.Distill") && list.contains("grpc.health.v1.Health"),
        "{list}"
    );
    let out = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-d",
            r#"{"job_id": "dj-nope"}"#,
            &addr,
            "retort.v1.Distill/Get",
        ])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NotFound") && err.contains("dj-nope"), "{err}");
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", "-d", "{}", &addr, "retort.v1.Distill/List"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    distill.shutdown().await;
}
