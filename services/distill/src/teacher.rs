//! The gateway, seen from the distill service: teacher calls (`POST /v1/chat/completions`, retried
//! on connection errors, 429 and 5xx with exponential back-off), the model list, and timing of
//! deployed students. Nothing here talks to a provider directly.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Error;

/// An answer from the gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub text: String,
    /// `x-retort-model`: the model that actually answered.
    pub served_model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub latency_ms: i64,
}

/// HTTP client of the gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
    key: String,
    max_tokens: u32,
    attempts: u32,
}

enum CallError {
    Retry(String),
    Fatal(String),
}

impl Gateway {
    pub fn new(
        base: &str,
        key: &str,
        max_tokens: u32,
        attempts: u32,
        timeout: Duration,
    ) -> Result<Gateway, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("retort-distill/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(Gateway {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
            max_tokens,
            attempts: attempts.max(1),
        })
    }

    /// The ids of every model and alias the gateway serves to this key.
    pub async fn models(&self) -> Result<Vec<String>, Error> {
        let r = self
            .http
            .get(format!("{}/v1/models", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|source| Error::GatewayHttp {
                context: "GET /v1/models",
                source,
            })?;
        let status = r.status();
        let body: Value = r.json().await.map_err(|source| Error::GatewayHttp {
            context: "GET /v1/models",
            source,
        })?;
        if !status.is_success() {
            return Err(Error::Gateway(format!(
                "GET /v1/models: {status}: {}",
                error_text(&body)
            )));
        }
        Ok(body["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Asks `model` for the answer to `prompt` (one user message), retrying transient failures.
    /// `session` groups the job's calls in metering and the breaker; `max_tokens` overrides the
    /// configured `max_tokens` of a call.
    pub async fn ask(
        &self,
        model: &str,
        prompt: &str,
        session: &str,
        max_tokens: Option<u32>,
    ) -> Result<Answer, String> {
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1).min(6))).await;
            }
            match self
                .once(
                    model,
                    prompt,
                    session,
                    max_tokens.unwrap_or(self.max_tokens),
                )
                .await
            {
                Ok(a) => return Ok(a),
                Err(CallError::Fatal(e)) => return Err(e),
                Err(CallError::Retry(e)) => last = e,
            }
        }
        Err(format!("{last} (after {} attempts)", self.attempts))
    }

    /// One request through the gateway, timed end to end (for deployed students).
    pub async fn time_one(&self, model: &str, prompt: &str) -> Result<Duration, String> {
        let start = Instant::now();
        match self.once(model, prompt, "", 8).await {
            Ok(_) => Ok(start.elapsed()),
            Err(CallError::Retry(e) | CallError::Fatal(e)) => Err(e),
        }
    }

    async fn once(
        &self,
        model: &str,
        prompt: &str,
        session: &str,
        max_tokens: u32,
    ) -> Result<Answer, CallError> {
        let start = Instant::now();
        let mut req = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(&self.key)
            .json(&json!({
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }));
        if !session.is_empty() {
            req = req.header("x-retort-session", session);
        }
        let r = req
            .send()
            .await
            .map_err(|e| CallError::Retry(format!("gateway unreachable: {e}")))?;
        let status = r.status();
        let served = r
            .headers()
            .get("x-retort-model")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(model)
            .to_string();
        let body: Value = r
            .json()
            .await
            .map_err(|e| CallError::Retry(format!("reading the gateway's answer: {e}")))?;
        if !status.is_success() {
            let msg = format!("{status}: {}", error_text(&body));
            return Err(
                if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
                    CallError::Retry(msg)
                } else {
                    CallError::Fatal(msg)
                },
            );
        }
        let text = body["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| CallError::Fatal("the answer has no choices[0].message.content".into()))?
            .to_string();
        Ok(Answer {
            text,
            served_model: served,
            input_tokens: body["usage"]["prompt_tokens"].as_i64().unwrap_or(0),
            output_tokens: body["usage"]["completion_tokens"].as_i64().unwrap_or(0),
            latency_ms: start.elapsed().as_millis() as i64,
        })
    }
}

fn error_text(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string().chars().take(300).collect())
}
