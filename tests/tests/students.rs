//! Distilled students served by the gateway's `local` provider, end to end: a student is trained
//! here on the small spam/ham fixture, deployed over gRPC (`retort.v1.Students`, admin only), called
//! through the official openai and anthropic Python SDKs and a tonic client, by its own name and
//! through an alias it was put first on, then undeployed (404). A restarted gateway serves it again
//! from the local provider's `dir`.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use std::path::{Path, PathBuf};

use retort_gateway::config::Config;
use retort_proto::v1::{
    self as pb, gateway_client::GatewayClient, students_client::StudentsClient,
};
use retort_tests::*;
use retort_training::{
    Example, LabelVocab, Predictor, StudentSpec, TrainJob, TrainOptions, backend::Inference,
    data::read_jsonl,
};
use serde_json::json;
use tonic::{Code, Request, transport::Channel};

const ADMIN: &str = "sk-students-admin";
const USER: &str = "sk-students-user";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("retort-students-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Trains linear/tiny on the training crate's fixture (about a second) and saves the artefact.
fn train_student(dir: &Path) -> Vec<Example> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../training/tests/fixtures/spam_ham.jsonl");
    let examples = read_jsonl(&fixture).expect("fixture");
    let (train, validation) = examples.split_at(examples.len() * 4 / 5);
    let labels = LabelVocab::from_examples(&examples).unwrap();
    let spec: StudentSpec = "linear/tiny".parse().unwrap();
    let job = TrainJob {
        config: spec.config(labels.len()).unwrap(),
        labels,
        train,
        validation,
        options: TrainOptions::new().with_max_epochs(5),
        checkpoint_dir: None,
    };
    let trained = retort_training::trainer::train::<retort_training::backend::Training>(
        &job,
        &retort_training::backend::device(),
        |_| std::ops::ControlFlow::Continue(()),
    )
    .expect("train");
    trained.predictor.save(dir).expect("save");
    validation.to_vec()
}

async fn gateway(sim_base: &str, students_dir: &Path) -> retort_gateway::Running {
    let text = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        [[users]]
        name = "ops"
        key = "{ADMIN}"
        admin = true
        [[users]]
        name = "dev"
        key = "{USER}"
        [providers.oa]
        kind = "openai"
        base_url = "{sim_base}/v1"
        [providers.local]
        kind = "local"
        dir = "{dir}"
        [models."sim-fast"]
        provider = "oa"
        [aliases."spam-check"]
        targets = ["sim-fast"]
        "#,
        dir = students_dir.display()
    );
    retort_gateway::start(Config::from_toml(&text).expect("config"))
        .await
        .expect("gateway")
}

fn req<T>(msg: T, key: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    r
}

async fn students(addr: std::net::SocketAddr) -> StudentsClient<Channel> {
    StudentsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_serve_through_every_ingress_and_undeploy() {
    let work = scratch("e2e");
    let artefact = work.join("artefact");
    let validation = train_student(&artefact);
    let sim = retort_sim::spawn(retort_sim::SimConfig::from_toml("strict_models = false").unwrap())
        .await
        .unwrap();
    let gw = gateway(&sim.base_url(), &work.join("served")).await;
    let mut client = students(gw.grpc_addr).await;
    let deploy = |name: &str, path: &Path, route: &str| pb::DeployStudentRequest {
        name: name.into(),
        artefact_path: path.display().to_string(),
        route: route.into(),
        first: true,
    };

    // Only admins; bad input gets clear errors.
    let e = client
        .deploy_student(req(deploy("spam", &artefact, ""), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = client
        .deploy_student(req(deploy("spam", &artefact, ""), Some(USER)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = client
        .list_students(req(pb::ListStudentsRequest {}, Some(USER)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = client
        .deploy_student(req(deploy("Bad Name", &artefact, ""), Some(ADMIN)))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("invalid"),
        "{e:?}"
    );
    let e = client
        .deploy_student(req(deploy("spam", &artefact, "no-such-route"), Some(ADMIN)))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("spam-check"),
        "{e:?}"
    );
    let e = client
        .deploy_student(req(deploy("spam", &work.join("missing"), ""), Some(ADMIN)))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("cannot load the artefact"),
        "{e:?}"
    );
    let broken = work.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("metadata.json"), "{\"format\": 1}").unwrap();
    let e = client
        .deploy_student(req(deploy("spam", &broken, ""), Some(ADMIN)))
        .await
        .unwrap_err();
    assert!(
        e.code() == Code::InvalidArgument && e.message().contains("metadata.json"),
        "{e:?}"
    );
    let e = client
        .undeploy_student(req(
            pb::UndeployStudentRequest {
                name: "spam".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Deploy, first on the alias.
    let info = client
        .deploy_student(req(deploy("spam", &artefact, "spam-check"), Some(ADMIN)))
        .await
        .expect("deploy")
        .into_inner()
        .student
        .expect("student");
    assert_eq!(
        (info.model.as_str(), info.student.as_str()),
        ("distilled/spam", "linear/tiny")
    );
    assert_eq!(info.labels, ["ham", "spam"]);
    assert_eq!(info.routes, ["spam-check"]);
    assert!(info.parameters > 0 && info.deployed_at_ms > 0, "{info:?}");
    let listed = client
        .list_students(req(pb::ListStudentsRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.students, std::slice::from_ref(&info));

    // What the student answers, computed in-process from the same artefact.
    let predictor = Predictor::<Inference>::load_for_serving(&artefact).unwrap();
    let cases: Vec<_> = validation
        .iter()
        .filter(|e| e.text.len() > 40)
        .take(3)
        .map(|e| {
            let c = predictor.classify(&e.text);
            json!({"text": e.text, "label": c.label, "input_tokens": c.input_tokens,
                   "output_tokens": predictor.count_tokens(c.label)})
        })
        .collect();
    let cfg = |phase: &str| {
        json!({"addr": gw.http_addr.to_string(), "key": USER, "model": "distilled/spam", "alias": "spam-check",
               "cases": cases, "phase": phase})
    };
    let run = run_python("students_client.py", cfg("serve")).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("students client: all checks passed"),
        "{}",
        run.report()
    );
    assert_eq!(
        sim.attempts("sim-fast"),
        0,
        "the alias was served by the student, never by its fallback"
    );

    // gRPC: complete and listing.
    let mut gwc = GatewayClient::connect(format!("http://{}", gw.grpc_addr))
        .await
        .unwrap();
    let text = cases[0]["text"].as_str().unwrap();
    let complete = pb::CompleteRequest {
        model: "distilled/spam".into(),
        messages: vec![pb::Message {
            role: pb::Role::User as i32,
            text: text.into(),
            parts: vec![],
        }],
        ..Default::default()
    };
    let r = gwc
        .complete(req(complete.clone(), Some(USER)))
        .await
        .expect("complete")
        .into_inner();
    assert_eq!(r.text, cases[0]["label"].as_str().unwrap());
    assert_eq!(
        (r.provider.as_str(), r.model.as_str()),
        ("local", "distilled/spam")
    );
    let usage = r.usage.expect("usage");
    assert_eq!(
        usage.input_tokens,
        cases[0]["input_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        usage.output_tokens,
        cases[0]["output_tokens"].as_u64().unwrap()
    );
    let models = gwc
        .list_models(req(pb::ListModelsRequest {}, Some(USER)))
        .await
        .unwrap()
        .into_inner()
        .models;
    let m = models
        .iter()
        .find(|m| m.id == "distilled/spam")
        .expect("listed");
    assert_eq!(m.kind, "student");
    let alias = models
        .iter()
        .find(|m| m.id == "spam-check")
        .expect("alias listed");
    assert_eq!(alias.targets, ["distilled/spam", "sim-fast"]);

    // A restarted gateway serves it again, from its record in `dir`.
    let port_http = gw.http_addr;
    gw.shutdown().await;
    let gw = gateway(&sim.base_url(), &work.join("served")).await;
    let mut client = students(gw.grpc_addr).await;
    let listed = client
        .list_students(req(pb::ListStudentsRequest {}, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.students.len(),
        1,
        "restored after restart (was on {port_http})"
    );
    assert_eq!(listed.students[0].routes, ["spam-check"]);
    let mut gwc = GatewayClient::connect(format!("http://{}", gw.grpc_addr))
        .await
        .unwrap();
    let r = gwc
        .complete(req(complete.clone(), Some(USER)))
        .await
        .expect("complete after restart")
        .into_inner();
    assert_eq!(r.text, cases[0]["label"].as_str().unwrap());

    // Undeploy: a 404 everywhere, and the alias falls back to its configured target.
    client
        .undeploy_student(req(
            pb::UndeployStudentRequest {
                name: "spam".into(),
            },
            Some(ADMIN),
        ))
        .await
        .expect("undeploy");
    let e = gwc
        .complete(req(complete.clone(), Some(USER)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut via_alias = complete.clone();
    via_alias.model = "spam-check".into();
    let r = gwc
        .complete(req(via_alias, Some(USER)))
        .await
        .expect("alias after undeploy")
        .into_inner();
    assert_eq!(r.model, "sim-fast");
    let cfg_gone = json!({"addr": gw.http_addr.to_string(), "key": USER, "model": "distilled/spam", "alias": "spam-check",
                          "cases": cases, "phase": "gone"});
    let run = run_python("students_client.py", cfg_gone).await;
    run.assert_ok();
    assert!(
        client
            .list_students(req(pb::ListStudentsRequest {}, Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
            .students
            .is_empty()
    );
    gw.shutdown().await;
    sim.shutdown();
    let _ = std::fs::remove_dir_all(&work);
}
