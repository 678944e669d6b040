//! The selector over a real socket: key checks per method, learning from recorded runs, bad input
//! refused with INVALID_ARGUMENT, and a corrupt or missing state rebuilt from the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::{path::Path, sync::Arc};

use retort_hooks::{Identity, Principal, Role};
use retort_proto::v1::{self as pb, selector_client::SelectorClient};
use retort_selector::{Running, SelectorConfig, start};
use retort_server::auth::KeyRing;
use tonic::{Code, Request, transport::Channel};

const ADMIN: &str = "sk-sel-admin";
const USER: &str = "sk-sel-user";
const SERVICE: &str = "sk-sel-service";

fn ring() -> Arc<KeyRing> {
    let mut r = KeyRing::new();
    for (key, user, role) in [
        (ADMIN, "ada", Role::Admin),
        (USER, "uma", Role::User),
        (SERVICE, "distill", Role::Service),
    ] {
        r.insert(
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
    Arc::new(r)
}

async fn serve(dir: &Path) -> Running {
    let cfg = SelectorConfig {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        retrain_every: 40,
        ..SelectorConfig::default()
    };
    start(cfg, ring()).await.unwrap()
}

async fn client(r: &Running) -> SelectorClient<Channel> {
    SelectorClient::connect(format!("http://{}", r.addr))
        .await
        .unwrap()
}

fn keyed<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

fn task(short: bool, n: u64) -> pb::TaskDescription {
    pb::TaskDescription {
        kind: "classification".into(),
        n_train: 1000 + 100 * n,
        n_evals: 200,
        n_labels: 2 + (n % 4) as u32,
        label_balance: 0.8,
        majority_fraction: 0.4,
        mean_input_chars: if short {
            7.0 + n as f64
        } else {
            400.0 + 20.0 * n as f64
        },
        p95_input_chars: if short { 14.0 } else { 900.0 },
        mean_output_chars: 5.0,
        mean_input_words: if short { 1.0 } else { 60.0 },
        vocabulary: if short { 800 } else { 20_000 },
        type_token_ratio: if short { 0.9 } else { 0.2 },
        alpha_fraction: 0.8,
        digit_fraction: 0.01,
        punct_fraction: 0.04,
        non_ascii_fraction: 0.0,
        teacher_accuracy: Some(0.88),
        teacher_usd_per_1k: Some(0.4),
        teacher_latency_us: Some(700_000.0),
    }
}

/// Every classification arm on a task: the byte CNN wins on short inputs, the n-gram bags on long.
fn runs(id: &str, short: bool, n: u64) -> Vec<pb::Run> {
    let mut out = Vec::new();
    for (class, short_acc, long_acc, us) in [
        ("linear", 0.55, 0.89, 10.0),
        ("mlp", 0.66, 0.90, 30.0),
        ("cnn", 0.86, 0.80, 300.0),
        ("transformer", 0.62, 0.78, 600.0),
    ] {
        for (i, size) in ["tiny", "small", "base"].into_iter().enumerate() {
            let latency = us * (1.0 + i as f64);
            out.push(pb::Run {
                task: id.into(),
                context: Some(task(short, n)),
                arm: format!("{class}/{size}"),
                data_fraction: 1.0,
                epoch_fraction: 1.0,
                accuracy: if short { short_acc } else { long_acc } + 0.01 * i as f64,
                latency_p99_us: latency,
                usd_per_1k: latency * 1.4e-8,
                train_secs: latency / 10.0,
                evaluated: 200,
            });
        }
    }
    out
}

/// The most accurate student answering within 0.1 s (the teacher, at 0.7 s, does not).
fn best() -> pb::Objective {
    pb::Objective {
        kind: "max_accuracy".into(),
        max_latency_us: 100_000.0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_selector_learns_from_recorded_runs_and_checks_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let running = serve(dir.path()).await;
    let mut c = client(&running).await;

    // Keys: none, a user recording, a user retraining.
    let e = c
        .status(Request::new(pb::SelectorStatusRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c
        .record(keyed(
            pb::RecordRequest {
                runs: runs("t0", true, 0),
            },
            USER,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = c
        .retrain(keyed(pb::RetrainRequest {}, USER))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Eight past tasks, recorded by a service identity (and the last by an admin).
    for n in 0..8u64 {
        let key = if n == 7 { ADMIN } else { SERVICE };
        let r = c
            .record(keyed(
                pb::RecordRequest {
                    runs: runs(&format!("t{n}"), n % 2 == 0, n),
                },
                key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.recorded, 12);
    }
    let status = c
        .retrain(keyed(pb::RetrainRequest {}, ADMIN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.runs, status.tasks, status.full_runs), (96, 8, 96));
    assert_eq!(status.arms.len(), 12);

    // A new short-input task: the CNN, with uncertainty; keep-the-teacher among the arms.
    let rec = c
        .recommend(keyed(
            pb::RecommendRequest {
                task: Some(task(true, 9)),
                objective: Some(best()),
                ..Default::default()
            },
            USER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(rec.arms[0].arm.starts_with("cnn/"), "{:#?}", rec.arms);
    assert!(rec.arms[0].accuracy.unwrap().sd > 0.0);
    assert!(rec.arms.iter().any(|a| a.arm == "keep-the-teacher"));
    assert_eq!(rec.arms.len(), 13);
    assert_eq!(rec.runs, 96);
    let long = c
        .recommend(keyed(
            pb::RecommendRequest {
                task: Some(task(false, 10)),
                objective: Some(best()),
                ..Default::default()
            },
            USER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        long.arms[0].arm.starts_with("mlp/") || long.arms[0].arm.starts_with("linear/"),
        "{:#?}",
        long.arms
    );

    // Bad input: INVALID_ARGUMENT, nothing stored.
    for (what, req) in [
        (
            "unknown objective",
            pb::RecommendRequest {
                task: Some(task(true, 1)),
                objective: Some(pb::Objective {
                    kind: "max_vibes".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "min_latency without a floor",
            pb::RecommendRequest {
                task: Some(task(true, 1)),
                objective: Some(pb::Objective {
                    kind: "min_latency".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        (
            "a balance above 1",
            pb::RecommendRequest {
                task: Some(pb::TaskDescription {
                    label_balance: 2.0,
                    ..task(true, 1)
                }),
                ..Default::default()
            },
        ),
        ("no task", pb::RecommendRequest::default()),
    ] {
        let e = c.recommend(keyed(req, USER)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
    }
    let mut bad = runs("bad", true, 1);
    bad[3].arm = "cnn/enormous".into();
    let e = c
        .record(keyed(pb::RecordRequest { runs: bad }, SERVICE))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("runs[3]"), "{}", e.message());
    let mut bad = runs("bad", true, 1);
    bad[0].accuracy = 1.7;
    let e = c
        .record(keyed(pb::RecordRequest { runs: bad }, SERVICE))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let status = c
        .status(keyed(pb::SelectorStatusRequest {}, USER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.runs, 96, "refused runs are not stored");
    running.shutdown().await;

    // Restarts: the intact state file is used; a corrupt or missing one is rebuilt from the store.
    let state = dir.path().join("selector").join("state.json");
    for (damage, restored) in [
        (None, "state file"),
        (Some(b"{not json".as_slice()), "rebuilt from 96 stored runs"),
        (Some(b"".as_slice()), "rebuilt from 96 stored runs"),
    ] {
        match damage {
            Some(b"") => std::fs::remove_file(&state).unwrap(),
            Some(bytes) => std::fs::write(&state, bytes).unwrap(),
            None => {}
        }
        let running = serve(dir.path()).await;
        let mut c = client(&running).await;
        let status = c
            .status(keyed(pb::SelectorStatusRequest {}, USER))
            .await
            .unwrap()
            .into_inner();
        assert!(
            status.restored.starts_with(restored),
            "{damage:?}: {}",
            status.restored
        );
        assert_eq!(status.runs, 96);
        let rec = c
            .recommend(keyed(
                pb::RecommendRequest {
                    task: Some(task(true, 9)),
                    objective: Some(best()),
                    ..Default::default()
                },
                USER,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(rec.arms[0].arm.starts_with("cnn/"), "{:#?}", rec.arms);
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_calls_the_selector_through_reflection() {
    let Ok(grpcurl) = std::env::var("RETORT_GRPCURL") else {
        eprintln!("RETORT_GRPCURL is not set (./scripts/test sets it): skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let running = serve(dir.path()).await;
    let addr = running.addr.to_string();
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "list"])
        .output()
        .await
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("retort.v1.Selector") && list.contains("grpc.health.v1.Health"),
        "{list}"
    );
    assert!(!list.contains("retort.v1.Distill"), "{list}");
    let out = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {USER}"),
            "-d",
            "{}",
            &addr,
            "retort.v1.Selector/Status",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"backend\""),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", "-d", "{}", &addr, "retort.v1.Selector/Status"])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    running.shutdown().await;
}

/// The experience store on Postgres: its own schema, runs read back in order, migrations run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_runs_on_postgres_in_a_schema_of_its_own() {
    let url = std::env::var("RETORT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    let schema = format!("sel_test_{}", std::process::id());
    let runs: Vec<_> = runs("pg", true, 1)
        .iter()
        .map(|r| retort_selector::convert::run(r).unwrap())
        .collect();
    let store = retort_selector::store::Store::connect(&url, Some(&schema))
        .await
        .unwrap();
    assert_eq!(store.kind(), "postgres");
    store.insert(&runs).await.unwrap();
    store.close().await;
    // Connecting again finds the tables migrated and the runs there.
    let store = retort_selector::store::Store::connect(&url, Some(&schema))
        .await
        .unwrap();
    store.insert(&runs[..2]).await.unwrap();
    let back = store.all().await.unwrap();
    assert_eq!(back.len(), 14);
    assert_eq!(back[..12], runs[..]);
    assert_eq!(store.count().await.unwrap(), 14);
    assert!(
        retort_selector::store::Store::connect(&url, Some("bad-schema; drop"))
            .await
            .is_err()
    );
    store.close().await;
}
