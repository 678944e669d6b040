//! The distill service end to end over real sockets: simulator (dataset-mode teacher) → gateway →
//! distill, on SQLite and on Postgres: a noisy teacher that fails on some items, the report, the
//! cache on resubmission, a restart in the middle of a job, cancel, deploy through the gateway,
//! problems found only once a job runs, and grpcurl via reflection. (Here, not in the distill crate,
//! because they need a gateway and no service crate may depend on another.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "distill/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use retort_distill::{JobState, Stage, StageState};
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

    // Deployed onto a route: an alias that does not exist is refused, the real one then serves the
    // student first (the teacher becomes its fallback).
    let e = c
        .deploy(pb::DeployRequest {
            job_id: id.clone(),
            name: "spam2".into(),
            route: "no-such-alias".into(),
            first: true,
        })
        .await
        .unwrap_err();
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("spam-check"),
        "{e:?}"
    );
    let before = world.sim.attempts("sim-teacher");
    let d = c
        .deploy(pb::DeployRequest {
            job_id: id.clone(),
            name: "spam2".into(),
            route: "spam-check".into(),
            first: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.model, "distilled/spam2");
    let deploy = d
        .job
        .unwrap()
        .stages
        .into_iter()
        .find(|s| s.name == "deploy")
        .unwrap();
    assert!(
        deploy.summary.contains("(route spam-check)"),
        "{}",
        deploy.summary
    );
    let http = reqwest::Client::new();
    for (mail, label) in [
        (mail, "spam"),
        (
            "Notes today report attached call attached now review meeting notes with cheers, tom",
            "ham",
        ),
    ] {
        let resp = http
            .post(format!("http://{}/v1/chat/completions", world.gateway.http_addr))
            .bearer_auth(KEY)
            .json(&serde_json::json!({"model": "spam-check", "messages": [{"role": "user", "content": TEMPLATE.replace("{input}", mail)}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-retort-model"].to_str().unwrap(),
            "distilled/spam2"
        );
        let r: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(r["choices"][0]["message"]["content"], label, "{r}");
    }
    assert_eq!(
        world.sim.attempts("sim-teacher"),
        before,
        "the alias went to the teacher, not the student"
    );
    distill.shutdown().await;
}

/// A job over its time limit fails with that reason and leaves nothing half-written behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_limit_fails_the_job_and_leaves_no_artefact() {
    let world = World::new(
        Db::sqlite(),
        TeacherSpec {
            latency_ms: 30,
            ..Default::default()
        },
    )
    .await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    let mut req = spam_request();
    // ~400 prompts one at a time at 30 ms each: 12 s of labelling against a 1 s limit.
    req.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 1,
        time_limit_secs: 1,
        ..Default::default()
    });
    let id = c.submit(req).await.unwrap().into_inner().job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let last = seen.last().unwrap();
    assert!(
        last.done && last.state == "failed" && last.error == "time limit of 1 s exceeded",
        "{last:?}"
    );
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.error.as_str()),
        ("failed", "time limit of 1 s exceeded"),
        "{job:?}"
    );
    let failed: Vec<_> = job.stages.iter().filter(|s| s.state == "failed").collect();
    assert_eq!(failed.len(), 1, "{:?}", job.stages);
    assert_eq!(failed[0].summary, "time limit of 1 s exceeded");
    assert!(
        world.sim.attempts("sim-teacher") < distinct_prompts(),
        "the job went on past its limit"
    );
    let dir = world.cfg.data_dir.join("distill").join(&id);
    for gone in ["student", "checkpoint", "labelled.json"] {
        assert!(!dir.join(gone).exists(), "{gone} left behind");
    }
    let partial = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".partial"))
        .count();
    assert_eq!(partial, 0);
    let err = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    distill.shutdown().await;
}

/// Two distill processes on one Postgres database (and one data folder): a job runs in exactly
/// one of them, a `Watch` served by the other follows it, and when its process dies the other
/// takes it over once the lease lapses, at its last finished stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_postgres_share_jobs_by_lease() {
    let world = World::new(
        Db::postgres(),
        TeacherSpec {
            latency_ms: 10,
            ..Default::default()
        },
    )
    .await;
    let a = world.distill().await;
    let b = world.distill().await;
    assert_ne!(a.engine.owner(), b.engine.owner());
    let (mut ca, mut cb) = (client(&a).await, client(&b).await);
    let mut req = spam_request();
    req.limits = Some(pb::ResourceLimits {
        max_teacher_concurrency: 2,
        max_epochs: 5,
        ..Default::default()
    });
    let id = ca.submit(req.clone()).await.unwrap().into_inner().job_id;
    // Watched through B, which does not run it: A's progress as A stores it.
    let seen = watch_to_end(&mut cb, &id).await;
    assert!(!b.engine.is_live(&id));
    let last = seen.last().unwrap();
    assert!(last.done && last.state == "succeeded", "{last:?}");
    let labelled: Vec<u64> = seen
        .iter()
        .filter(|p| p.stage == "label")
        .map(|p| p.items_labelled)
        .collect();
    assert!(
        labelled.iter().any(|n| *n > 0 && *n < distinct_prompts()),
        "B saw no labelling in progress: {seen:?}"
    );
    assert!(labelled.windows(2).all(|w| w[0] <= w[1]), "{labelled:?}");
    // Only A asked the teacher: every distinct prompt exactly once.
    assert_eq!(world.sim.attempts("sim-teacher"), distinct_prompts());
    let row = a.engine.store.job(&id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Succeeded);

    // A dies in the middle of labelling a second job (new prompts: another template).
    req.prompt_template = "Spam or ham?\n\n{input}".into();
    let id2 = ca.submit(req).await.unwrap().into_inner().job_id;
    let mut s = ca
        .watch(pb::WatchJobRequest {
            job_id: id2.clone(),
        })
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
    let before = a.engine.store.stages(&id2).await.unwrap();
    let validate = before
        .iter()
        .find(|s| s.name == Stage::Validate)
        .unwrap()
        .clone();
    assert_eq!(validate.state, StageState::Done);
    let asked = world.sim.attempts("sim-teacher");
    a.kill().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let in_flight = world.sim.attempts("sim-teacher") - asked;
    let row = b.engine.store.job(&id2).await.unwrap().unwrap();
    assert!(!row.lease_owner.is_empty() && row.lease_owner != b.engine.owner());
    // B takes it over once A's lease lapses (2 s) and finishes it.
    let seen = watch_to_end(&mut cb, &id2).await;
    assert!(seen.last().unwrap().done);
    let job = get(&mut cb, &id2).await;
    assert_eq!(job.state, "succeeded", "{job:?}");
    let row = b.engine.store.job(&id2).await.unwrap().unwrap();
    assert_eq!(row.lease_owner, b.engine.owner());
    let again = job.stages.iter().find(|s| s.name == "validate").unwrap();
    assert_eq!(
        again.started_ms, validate.started_ms,
        "validate ran again: the job did not resume at its last finished stage"
    );
    let first_job_asks = distinct_prompts();
    let total = world.sim.attempts("sim-teacher") - first_job_asks;
    assert!(
        total <= distinct_prompts() + in_flight + 2,
        "second job asked {total}, distinct {}",
        distinct_prompts()
    );
    let label = job.stages.iter().find(|s| s.name == "label").unwrap();
    assert!(
        !label.summary.contains(" 0 cached"),
        "B's label stage used what A had cached: {}",
        label.summary
    );
    b.shutdown().await;
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

/// Short generation end to end on SQLite: bad task/target pairs refused at Submit, a date
/// normalisation job with a teacher that mistypes 10% of its answers, the report's exact match and
/// CER for both, the results row, and the deployed student answering through the gateway exactly
/// as it does in-process, with its real token counts, streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generation_job_reports_exact_match_and_cer_and_serves_through_the_gateway() {
    let world = World::new(
        Db::sqlite(),
        TeacherSpec {
            key: "dates_teacher.jsonl",
            error_rate: 0.1,
            typos: true,
            ..Default::default()
        },
    )
    .await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;
    for (change, needle) in [
        (
            Box::new(|r: &mut pb::SubmitRequest| r.target = "linear/tiny".into())
                as Box<dyn Fn(&mut pb::SubmitRequest)>,
            "a classification student",
        ),
        (
            Box::new(|r: &mut pb::SubmitRequest| r.labels = vec!["a".into(), "b".into()]),
            "no label set",
        ),
        (
            Box::new(|r: &mut pb::SubmitRequest| r.task = "translation".into()),
            "task \"translation\"",
        ),
        (
            Box::new(|r: &mut pb::SubmitRequest| r.task = String::new()),
            "a generation student, and this is a classification task",
        ),
    ] {
        let mut r = dates_request();
        change(&mut r);
        let e = c.submit(r).await.unwrap_err();
        assert!(
            e.code() == tonic::Code::InvalidArgument && e.message().contains(needle),
            "{needle}: {e:?}"
        );
    }

    let id = c.submit(dates_request()).await.unwrap().into_inner().job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.task.as_str()),
        ("succeeded", "generation"),
        "{job:?}"
    );
    assert!(
        seen.iter()
            .any(|p| p.stage == "train" && p.message.contains("exact match")),
        "{seen:?}"
    );
    let report = c
        .report(pb::JobReportRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let r: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert_eq!(r["task"], "generation");
    // A teacher that mistypes ~10% of its answers by one character.
    let teacher_em = r["teacher_accuracy"].as_f64().unwrap();
    let teacher_cer = r["generation"]["teacher_cer"].as_f64().unwrap();
    assert!(
        (0.75..0.99).contains(&teacher_em),
        "teacher exact match {teacher_em}"
    );
    assert!(
        teacher_cer > 0.0 && teacher_cer < 0.05,
        "teacher CER {teacher_cer}"
    );
    let student_em = r["student_accuracy"].as_f64().unwrap();
    let student_cer = r["generation"]["student_cer"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&student_em) && student_cer >= 0.0,
        "{r}"
    );
    assert_eq!(
        r["generation"]["student"]["exact_match"].as_f64(),
        Some(student_em)
    );
    assert!(r["costs"]["teacher_usd_per_1k"].as_f64().unwrap() > 0.0);
    assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    for needle in [
        "exact match",
        "character error rate",
        "## Errors",
        "Levenshtein",
    ] {
        assert!(
            report.markdown.contains(needle),
            "{needle}: {}",
            report.markdown
        );
    }
    let row = distill.engine.store.result(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            row.task_kind.as_str(),
            row.student_class.as_str(),
            row.n_labels
        ),
        ("generation", "seq2seq", 0)
    );
    assert_eq!(row.student_cer, Some(student_cer));
    assert_eq!(row.teacher_cer, Some(teacher_cer));
    assert_eq!(row.teacher_accuracy, Some(teacher_em));

    // Deployed, it answers through the gateway exactly as in-process.
    let d = c
        .deploy(pb::DeployRequest {
            job_id: id.clone(),
            name: "dates".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.model, "distilled/dates");
    let generator = retort_training::engine::load_generator(
        &world.cfg.data_dir.join("distill").join(&id).join("student"),
    )
    .unwrap();
    let prompt = DATE_TEMPLATE.replace("{input}", "14 July 2011");
    let want = generator.generate(&prompt);
    let http = reqwest::Client::new();
    let base = format!("http://{}", world.gateway.http_addr);
    let r: serde_json::Value = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "distilled/dates", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["choices"][0]["message"]["content"],
        want.text.as_str(),
        "{r}"
    );
    assert_eq!(r["usage"]["prompt_tokens"], want.input_tokens, "{r}");
    assert_eq!(r["usage"]["completion_tokens"], want.output_tokens, "{r}");
    // Anthropic messages, streamed: the deltas add up to the same text.
    let sse = http
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model": "distilled/dates", "max_tokens": 64, "stream": true, "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed: String = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter(|v| v["type"] == "content_block_delta")
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, want.text, "{sse}");
    let report = c
        .report(pb::JobReportRequest { job_id: id })
        .await
        .unwrap()
        .into_inner();
    let j: serde_json::Value = serde_json::from_str(&report.json).unwrap();
    assert_eq!(j["gateway_latency"]["n"], 50, "{}", report.json);
    distill.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problems_found_later_fail_the_job_with_a_clear_status() {
    let world = World::new(Db::sqlite(), TeacherSpec::default()).await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;

    // A teacher the gateway does not serve.
    let id = c
        .submit(pb::SubmitRequest {
            teacher: "gpt-nonexistent".into(),
            ..spam_request()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.stage.as_str()),
        ("failed", "validate"),
        "{job:?}"
    );
    assert!(
        job.error
            .contains("\"gpt-nonexistent\" is not a model or alias of the gateway"),
        "{}",
        job.error
    );

    // Evals expecting a label the teacher never gives (no label set given: the teacher's answers are the labels).
    let mut evals = fixture_bytes("spam_evals.jsonl");
    evals.extend_from_slice(
        b"{\"text\": \"Your parcel is held, pay the fee at this link\", \"label\": \"phishing\"}\n",
    );
    let req = pb::SubmitRequest {
        labels: vec![],
        evals: inline(evals),
        ..spam_request()
    };
    let id = c.submit(req).await.unwrap().into_inner().job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.stage.as_str()),
        ("failed", "label"),
        "{job:?}"
    );
    assert!(
        job.error
            .contains("eval labels never produced by the teacher on the training inputs: phishing"),
        "{}",
        job.error
    );
    assert!(seen.last().unwrap().error.contains("phishing"));
    let label = job.stages.iter().find(|s| s.name == "label").unwrap();
    assert_eq!(label.state, "failed");

    // Too many items the teacher cannot answer.
    let world2 = World::new(
        Db::sqlite(),
        TeacherSpec {
            unknown: 100,
            ..Default::default()
        },
    )
    .await;
    let distill2 = world2.distill().await;
    let mut c2 = client(&distill2).await;
    let id = c2.submit(spam_request()).await.unwrap().into_inner().job_id;
    watch_to_end(&mut c2, &id).await;
    let job = get(&mut c2, &id).await;
    assert_eq!(job.state, "failed", "{job:?}");
    assert!(
        job.error
            .contains("100 of 400 teacher answers failed or named no label"),
        "{}",
        job.error
    );
    distill2.shutdown().await;
    distill.shutdown().await;
}
