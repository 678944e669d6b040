//! Answer modes, attempt counting, stats, auth.

use retort_sim::{AnswerMode, ModelBehavior, SimConfig};
use serde_json::{Value, json};

use crate::*;

async fn answer(s: &retort_sim::SimHandle, model: &str, prompt: &str) -> String {
    let (status, v) = post_json(s, "/v1/chat/completions", &chat(model, prompt)).await;
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn dataset_file(n: usize) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "retort-sim-test-{}-{}.jsonl",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(
            &json!({ "prompt": format!("question {i}?"), "answer": format!("answer {i}") })
                .to_string(),
        );
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn dataset_model(path: &std::path::Path, error_rate: f64, seed: u64) -> ModelBehavior {
    ModelBehavior {
        mode: AnswerMode::Dataset,
        dataset: Some(path.to_owned()),
        error_rate,
        seed,
        ..Default::default()
    }
}

#[tokio::test]
async fn dataset_mode() {
    let path = dataset_file(200);
    let mut cfg = SimConfig::default();
    cfg.models
        .insert("exact".into(), dataset_model(&path, 0.0, 0));
    cfg.models
        .insert("always-wrong".into(), dataset_model(&path, 1.0, 0));
    cfg.models
        .insert("quarter".into(), dataset_model(&path, 0.25, 7));
    let s = retort_sim::spawn(cfg).await.unwrap();
    assert_eq!(answer(&s, "exact", "question 17?").await, "answer 17");
    assert_eq!(answer(&s, "exact", "  question 3?\n").await, "answer 3");
    assert_eq!(
        answer(&s, "exact", "Please answer: question 42? Thanks").await,
        "answer 42"
    );
    assert_eq!(answer(&s, "exact", "no such thing").await, "unknown");
    let wrong = answer(&s, "always-wrong", "question 17?").await;
    assert_ne!(wrong, "answer 17");
    assert!(wrong.starts_with("answer "));

    let mut wrong = Vec::new();
    for i in 0..200 {
        let q = format!("question {i}?");
        if answer(&s, "quarter", &q).await != format!("answer {i}") {
            wrong.push(i);
        }
    }
    assert!(
        (30..=70).contains(&wrong.len()),
        "{} of 200 wrong",
        wrong.len()
    );
    // Deterministic: the same prompts are wrong again, on another API too.
    for i in wrong.iter().take(10) {
        let (_, v) = post_json(
            &s,
            "/v1/messages",
            &messages("quarter", &format!("question {i}?"), false),
        )
        .await;
        assert_ne!(v["content"][0]["text"], format!("answer {i}"));
    }
    drop(s);
    std::fs::remove_file(&path).ok();
}

#[tokio::test]
async fn dataset_errors_are_reported() {
    let b = dataset_model(
        std::path::Path::new("/nonexistent/retort-sim.jsonl"),
        0.0,
        0,
    );
    assert!(matches!(
        retort_sim::spawn(SimConfig {
            default: b,
            ..Default::default()
        })
        .await,
        Err(retort_sim::SimError::Io { .. })
    ));
}

#[tokio::test]
async fn script_and_echo_modes() {
    let mut cfg = SimConfig::default();
    cfg.models.insert(
        "scripted".into(),
        ModelBehavior {
            mode: AnswerMode::Script,
            script: vec!["first".into(), "second answer".into()],
            ..Default::default()
        },
    );
    cfg.models.insert(
        "echo".into(),
        ModelBehavior {
            mode: AnswerMode::Echo,
            ..Default::default()
        },
    );
    let s = retort_sim::spawn(cfg).await.unwrap();
    assert_eq!(answer(&s, "scripted", "a").await, "first");
    assert_eq!(answer(&s, "scripted", "b").await, "second answer");
    assert_eq!(answer(&s, "scripted", "c").await, "first");
    assert_eq!(answer(&s, "echo", "say  this back").await, "say  this back");
    let (text, _) = read_stream(
        post(
            &s,
            "/v1/chat/completions",
            &chat_stream("echo", "one two three"),
        )
        .await,
    )
    .await;
    let evs = events(&text);
    let deltas: Vec<String> = evs
        .iter()
        .filter_map(Event::json)
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(deltas, ["one ", "two ", "three"]);
}

#[tokio::test]
async fn attempts_and_stats() {
    let mut cfg = SimConfig::default();
    cfg.models.insert(
        "down".into(),
        ModelBehavior {
            fault: Some("unavailable".parse().unwrap()),
            ..Default::default()
        },
    );
    let s = retort_sim::spawn(cfg).await.unwrap();
    for _ in 0..3 {
        post(&s, "/v1/chat/completions", &chat("down", "x")).await;
    }
    post(&s, "/v1/messages", &messages("up", "x", false)).await;
    assert_eq!(s.attempts("down"), 3);
    assert_eq!(s.attempts("up"), 1);
    assert_eq!(s.attempts("never"), 0);
    assert_eq!(s.total_attempts(), 4);
    let stats: Value = client()
        .get(format!("{}/sim/stats", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({ "attempts": { "down": 3, "up": 1 }, "total": 4 })
    );
    let r = client()
        .post(format!("{}/sim/reset", s.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.total_attempts(), 0);
    let stats: Value = client()
        .get(format!("{}/sim/stats", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, json!({ "attempts": {}, "total": 0 }));
}

#[tokio::test]
async fn api_key() {
    let cfg = SimConfig {
        api_key: Some("sekrit".into()),
        ..Default::default()
    };
    let s = retort_sim::spawn(cfg).await.unwrap();
    let url = |p: &str| format!("{}{p}", s.base_url());
    let resp = client()
        .post(url("/v1/chat/completions"))
        .json(&chat("m", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let resp = client()
        .post(url("/v1/messages"))
        .header("x-api-key", "wrong")
        .json(&messages("m", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    // Unauthorised requests still count as attempts.
    assert_eq!(s.attempts("m"), 2);
    let ok = client()
        .post(url("/v1/chat/completions"))
        .bearer_auth("sekrit")
        .json(&chat("m", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = client()
        .post(url("/v1/messages"))
        .header("x-api-key", "sekrit")
        .json(&messages("m", "x", false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        client()
            .get(url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Bad JSON without a key: 401 first.
    assert_eq!(
        client()
            .post(url("/v1/chat/completions"))
            .body("{")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn config_from_toml() {
    let cfg = SimConfig::from_toml(
        r#"
        strict_models = true
        [models."t"]
        mode = "script"
        script = ["hi there"]
        fault = "cut_after:1"
        "#,
    )
    .unwrap();
    let s = retort_sim::spawn(cfg).await.unwrap();
    let (text, err) =
        read_stream(post(&s, "/v1/chat/completions", &chat_stream("t", "x")).await).await;
    assert!(err.is_some());
    assert_eq!(chat_stream_text(&events(&text)), "hi ");
    // The example config parses.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sim.example.toml")).unwrap();
    SimConfig::from_toml(&example).unwrap();
}
