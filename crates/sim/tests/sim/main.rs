//! Integration tests: real sockets, reqwest clients, against `retort_sim::spawn`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod anthropic;
mod faults;
mod fidelity;
mod modes;
mod openai;

use std::time::Duration;

use retort_sim::{ModelBehavior, SimConfig, SimHandle};
use serde_json::Value;

/// A simulator with one model `m` of behaviour `b` (unknown models get the default behaviour).
pub async fn sim_with(b: ModelBehavior) -> SimHandle {
    let mut cfg = SimConfig::default();
    cfg.models.insert("m".into(), b);
    retort_sim::spawn(cfg).await.unwrap()
}

pub async fn sim() -> SimHandle {
    sim_with(ModelBehavior::default()).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub async fn post(sim: &SimHandle, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

pub async fn post_json(sim: &SimHandle, path: &str, body: &Value) -> (u16, Value) {
    let resp = post(sim, path, body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// One SSE event: its `event:` name (if any) and its `data:`.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }
}

pub fn events(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut ev = Event {
                name: None,
                data: String::new(),
            };
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    ev.name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    ev.data.push_str(d);
                }
            }
            ev
        })
        .collect()
}

/// Reads a streamed body to its end: the text received, and whether it ended in an error.
pub async fn read_stream(resp: reqwest::Response) -> (String, Option<reqwest::Error>) {
    use futures::StreamExt;
    let mut s = resp.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        match chunk {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (String::from_utf8_lossy(&out).into_owned(), Some(e)),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), None)
}

/// The text of an OpenAI chat stream's content deltas.
pub fn chat_stream_text(evs: &[Event]) -> String {
    evs.iter()
        .filter_map(Event::json)
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

pub fn chat(model: &str, prompt: &str) -> Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] })
}

pub fn chat_stream(model: &str, prompt: &str) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{ "role": "user", "content": prompt }],
        "stream": true,
        "stream_options": { "include_usage": true },
    })
}

pub fn messages(model: &str, prompt: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 1024,
        "messages": [{ "role": "user", "content": prompt }],
        "stream": stream,
    })
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = sim().await;
    let url = format!("{}/healthz", s.base_url());
    assert_eq!(
        client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    s.shutdown();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(reqwest::Client::new().get(&url).send().await.is_err());
}

#[tokio::test]
async fn serve_on_own_listener() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(retort_sim::serve(listener, SimConfig::demo()));
    let v: Value = client()
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for m in [
        "sim-fast",
        "sim-paced",
        "sim-flaky",
        "sim-down",
        "sim-claude",
        "sim-small",
        "sim-tools",
    ] {
        assert!(ids.contains(&m), "{m} missing from {ids:?}");
    }
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["owned_by"], "retort-sim");
    task.abort();
}
