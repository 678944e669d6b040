//! Shared test set-up for the tests that need no gateway: the distill service alone on a fresh
//! SQLite file, its gateway URLs pointing at a port nothing listens on (what these tests submit is
//! refused before a job would call it). The tests that need a gateway live in the `retort-tests`
//! crate (`tests/tests/distill.rs`): no service crate may depend on another.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::path::PathBuf;

use retort_distill::{DistillConfig, Running, store::Store};
use retort_proto::v1::{self as pb, distill_client::DistillClient};
use tonic::transport::Channel;

pub const TEMPLATE: &str = "Is this email spam or ham? Answer with one word.\n\n{input}";

/// Where no gateway answers (the discard port).
const NO_GATEWAY: &str = "127.0.0.1:9";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "retort-distill-{tag}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The distill service on a fresh SQLite database and data folder, with no gateway behind it.
pub async fn distill_alone() -> Running {
    let dir = temp_dir("alone");
    let cfg = DistillConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        gateway_url: format!("http://{NO_GATEWAY}"),
        gateway_grpc: format!("http://{NO_GATEWAY}"),
        gateway_key: "sk-unused".into(),
        ..DistillConfig::default()
    };
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("distill.db").display());
    let store = Store::connect(&url, None).await.unwrap();
    retort_distill::grpc::start_with_store(cfg, Vec::new(), store)
        .await
        .unwrap()
}

pub async fn client(r: &Running) -> DistillClient<Channel> {
    DistillClient::connect(format!("http://{}", r.addr))
        .await
        .unwrap()
}

pub fn inline(bytes: Vec<u8>) -> Option<pb::DataSource> {
    Some(pb::DataSource {
        source: Some(pb::data_source::Source::Inline(bytes)),
    })
}

/// The spam task, labels given, linear/tiny.
pub fn spam_request() -> pb::SubmitRequest {
    pb::SubmitRequest {
        teacher: "teacher".into(),
        train: inline(fixture_bytes("spam_train.jsonl")),
        evals: inline(fixture_bytes("spam_evals.jsonl")),
        prompt_template: TEMPLATE.into(),
        target: "linear/tiny".into(),
        labels: vec!["spam".into(), "ham".into()],
        limits: Some(pb::ResourceLimits {
            max_teacher_concurrency: 4,
            max_epochs: 8,
            ..Default::default()
        }),
        ..Default::default()
    }
}
