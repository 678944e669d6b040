//! Shared set-up: a simulator and a gateway, both on real loopback sockets.
#![allow(dead_code)]
use retort_gateway::{Running, config::Config};
use retort_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

pub const KEY: &str = "sk-test";

pub struct Env {
    pub sim: SimHandle,
    pub gw: Running,
    pub http: reqwest::Client,
}

/// `sim_models`: TOML `[models."..."]` tables for the simulator. `gateway`: the gateway's models,
/// aliases and routing tables; providers `oa` (OpenAI API) and `an` (Anthropic API) point at the sim.
pub async fn env(sim_models: &str, gateway: &str) -> Env {
    let sim = retort_sim::spawn(SimConfig::from_toml(sim_models).expect("sim config"))
        .await
        .expect("sim");
    let text = format!(
        r#"
        [server]
        http_addr = "127.0.0.1:0"
        grpc_addr = "127.0.0.1:0"
        max_body_bytes = 65536
        [[users]]
        name = "tester"
        team = "qa"
        discipline = "backend"
        level = "senior"
        key = "{KEY}"
        [providers.oa]
        kind = "openai"
        base_url = "{base}/v1"
        [providers.an]
        kind = "anthropic"
        base_url = "{base}/v1"
        {gateway}
        "#,
        base = sim.base_url()
    );
    let cfg = Config::from_toml(&text).expect("gateway config");
    let gw = retort_gateway::start(cfg).await.expect("gateway");
    Env {
        sim,
        gw,
        http: reqwest::Client::new(),
    }
}

impl Env {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.http_addr)
    }

    /// POST /v1/chat/completions; returns status, headers and body.
    pub async fn chat(&self, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.post("/v1/chat/completions", body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A streamed chat completion: the `data:` payloads in order (including "[DONE]").
    pub async fn chat_stream(&self, body: Value) -> (u16, Vec<String>) {
        let r = self
            .http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let data = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect();
        (status, data)
    }

    /// The answer a healthy simulator model gives to `prompt` (answers depend only on the prompt).
    pub async fn expected_answer(&self, prompt: &str) -> String {
        let r: Value = self
            .http
            .post(format!("{}/v1/chat/completions", self.sim.base_url()))
            .json(&json!({"model": "reference-healthy", "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

pub fn user(prompt: &str) -> Value {
    json!([{"role": "user", "content": prompt}])
}

/// Concatenated text of a streamed chat completion and whether it ended with [DONE].
pub fn stream_text(data: &[String]) -> (String, bool, Option<Value>) {
    let mut text = String::new();
    let mut error = None;
    for d in data {
        if d == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(d).expect("chunk json");
        if v.get("error").is_some() {
            error = Some(v);
            continue;
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    (text, data.last().is_some_and(|d| d == "[DONE]"), error)
}
