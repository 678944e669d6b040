//! Bad input over HTTP, on each generation endpoint: every mistake gets the right 4xx in the
//! endpoint's own error shape with a message that names the problem, nothing reaches a provider,
//! and the gateway keeps serving afterwards.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use retort_tests::*;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    OpenAi,
    Anthropic,
}

struct Endpoint {
    path: &'static str,
    shape: Shape,
    /// A valid request for `model`.
    valid: fn(&str) -> Value,
    /// The same request with the conversation replaced by `v`.
    with_conversation: fn(Value) -> Value,
    /// The field that holds the conversation.
    conversation_field: &'static str,
}

const ENDPOINTS: [Endpoint; 3] = [
    Endpoint {
        path: "/v1/chat/completions",
        shape: Shape::OpenAi,
        valid: |m| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]}),
        with_conversation: |v| json!({"model": SERVED, "messages": v}),
        conversation_field: "messages",
    },
    Endpoint {
        path: "/v1/responses",
        shape: Shape::OpenAi,
        valid: |m| json!({"model": m, "input": "hi"}),
        with_conversation: |v| json!({"model": SERVED, "input": v}),
        conversation_field: "input",
    },
    Endpoint {
        path: "/v1/messages",
        shape: Shape::Anthropic,
        valid: |m| json!({"model": m, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
        with_conversation: |v| json!({"model": SERVED, "max_tokens": 64, "messages": v}),
        conversation_field: "messages",
    },
];

#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    XApiKey(&'a str),
    None,
}

async fn send(
    e: &Env,
    path: &str,
    auth: Auth<'_>,
    body: impl Into<reqwest::Body>,
) -> (u16, Value, String) {
    let mut r = e
        .http
        .post(e.url(path))
        .header("content-type", "application/json")
        .body(body);
    r = match auth {
        Auth::Bearer(k) => r.bearer_auth(k),
        Auth::XApiKey(k) => r.header("x-api-key", k),
        Auth::None => r,
    };
    let resp = r.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// Checks the error shape of `ep` and returns (type, message); `code` is OpenAI's `error.code`.
fn error_of(
    ep: &Endpoint,
    case: &str,
    body: &Value,
    raw: &str,
) -> (String, String, Option<String>) {
    let ctx = format!("{} {case}: {raw}", ep.path);
    let err = &body["error"];
    let s = |v: &Value| v.as_str().map(str::to_owned);
    match ep.shape {
        Shape::OpenAi => {
            assert!(
                err.is_object(),
                "OpenAI shape {{\"error\": {{...}}}}: {ctx}"
            );
            let (ty, msg, code) = (s(&err["type"]), s(&err["message"]), s(&err["code"]));
            assert!(
                ty.is_some() && msg.is_some() && code.is_some(),
                "error.type, .message and .code: {ctx}"
            );
            (ty.unwrap_or_default(), msg.unwrap_or_default(), code)
        }
        Shape::Anthropic => {
            assert_eq!(
                body["type"], "error",
                "Anthropic shape {{\"type\": \"error\", ...}}: {ctx}"
            );
            let (ty, msg) = (s(&err["type"]), s(&err["message"]));
            assert!(
                ty.is_some() && msg.is_some(),
                "error.type and .message: {ctx}"
            );
            (ty.unwrap_or_default(), msg.unwrap_or_default(), None)
        }
    }
}

struct Want {
    status: u16,
    openai: (&'static str, &'static str),
    anthropic: &'static str,
    /// Every one of these appears in the message (case-insensitive).
    mentions: Vec<String>,
}

async fn expect_error(
    e: &Env,
    ep: &Endpoint,
    case: &str,
    auth: Auth<'_>,
    body: impl Into<reqwest::Body>,
    want: Want,
) {
    let (status, json, raw) = send(e, ep.path, auth, body).await;
    assert_eq!(status, want.status, "{} {case}: {raw}", ep.path);
    let (ty, msg, code) = error_of(ep, case, &json, &raw);
    match ep.shape {
        Shape::OpenAi => assert_eq!(
            (ty.as_str(), code.as_deref()),
            (want.openai.0, Some(want.openai.1)),
            "{} {case}: {raw}",
            ep.path
        ),
        Shape::Anthropic => assert_eq!(ty, want.anthropic, "{} {case}: {raw}", ep.path),
    }
    let lower = msg.to_lowercase();
    for m in &want.mentions {
        assert!(
            lower.contains(&m.to_lowercase()),
            "{} {case}: the message should mention {m:?}: {msg}",
            ep.path
        );
    }
}

fn bad_request(mentions: &[&str]) -> Want {
    Want {
        status: 400,
        openai: ("invalid_request_error", "invalid_request"),
        anthropic: "invalid_request_error",
        mentions: mentions.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn not_found() -> Want {
    Want {
        status: 404,
        openai: ("invalid_request_error", "model_not_found"),
        anthropic: "not_found_error",
        mentions: vec!["no-such-model".into()],
    }
}

fn too_large() -> Want {
    Want {
        status: 413,
        openai: ("invalid_request_error", "request_too_large"),
        anthropic: "request_too_large",
        mentions: vec!["65536".into()],
    }
}

fn unauthorized(mention: &str) -> Want {
    Want {
        status: 401,
        openai: ("invalid_request_error", "invalid_api_key"),
        anthropic: "authentication_error",
        mentions: vec![mention.to_owned()],
    }
}

/// `body` as a chunked stream, without Content-Length.
fn chunked(body: &str) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .as_bytes()
        .chunks(8192)
        .map(|c| Ok(c.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn bad_requests_get_4xx_in_each_protocols_shape() {
    let e = env().await;
    for ep in &ENDPOINTS {
        let field = ep.conversation_field;
        let valid = (ep.valid)(SERVED);
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut v = valid.clone();
            f(&mut v);
            v.to_string()
        };
        let mut unknown = (ep.valid)("no-such-model");
        let unknown_plain = unknown.to_string();
        unknown["stream"] = json!(true);
        let big = edit(&|v| v["metadata"] = json!({"padding": "x".repeat(100 * 1024)}));
        let bearer = Auth::Bearer(KEY);

        let mut cases: Vec<(&str, Auth, reqwest::Body, Want)> = vec![
            (
                "malformed JSON",
                bearer,
                r#"{"model": "sim-fast", "#.into(),
                bad_request(&["JSON"]),
            ),
            (
                "not an object",
                bearer,
                "[1, 2]".into(),
                bad_request(&["object"]),
            ),
            (
                "wrong type",
                bearer,
                (ep.with_conversation)(json!(42)).to_string().into(),
                bad_request(&[field]),
            ),
            (
                "model as a number",
                bearer,
                edit(&|v| v["model"] = json!(7)).into(),
                bad_request(&["model"]),
            ),
            (
                "no model",
                bearer,
                edit(&|v| drop(v.as_object_mut().map(|o| o.remove("model")))).into(),
                bad_request(&["model"]),
            ),
            (
                "empty conversation",
                bearer,
                (ep.with_conversation)(json!([])).to_string().into(),
                bad_request(&[field]),
            ),
            ("unknown model", bearer, unknown_plain.into(), not_found()),
            // Streamed, the error is still a plain 404 response, not a 200 stream.
            (
                "unknown model, streamed",
                bearer,
                unknown.to_string().into(),
                not_found(),
            ),
            ("100 KB body", bearer, big.clone().into(), too_large()),
            // Without Content-Length the limit holds while reading.
            ("100 KB chunked body", bearer, chunked(&big), too_large()),
            (
                "no key",
                Auth::None,
                valid.to_string().into(),
                unauthorized("missing API key"),
            ),
            (
                "unknown bearer key",
                Auth::Bearer("sk-wrong"),
                valid.to_string().into(),
                unauthorized("invalid API key"),
            ),
            (
                "unknown x-api-key",
                Auth::XApiKey("sk-wrong"),
                valid.to_string().into(),
                unauthorized("invalid API key"),
            ),
            // Authentication comes before parsing: an unknown caller learns nothing about the body.
            (
                "no key, bad body",
                Auth::None,
                "{".into(),
                unauthorized("API key"),
            ),
        ];
        if ep.path != "/v1/responses" {
            // A plain string is valid `input` for the Responses API, but not valid `messages`.
            let string = (ep.with_conversation)(json!("hi")).to_string();
            cases.push((
                "messages as a string",
                bearer,
                string.into(),
                bad_request(&[field]),
            ));
        }
        if ep.shape == Shape::Anthropic {
            let body = edit(&|v| drop(v.as_object_mut().map(|o| o.remove("max_tokens"))));
            cases.push((
                "no max_tokens",
                bearer,
                body.into(),
                bad_request(&["max_tokens"]),
            ));
        }
        for (case, auth, body, want) in cases {
            expect_error(&e, ep, case, auth, body, want).await;
        }
    }
    assert_eq!(
        e.sim.total_attempts(),
        0,
        "no bad request reached a provider"
    );

    // The process is still up and serves normal requests on every endpoint, with either header.
    let expected = e.expected_answer("hi").await;
    for ep in &ENDPOINTS {
        for auth in [Auth::Bearer(KEY), Auth::XApiKey(KEY)] {
            let (status, body, raw) = send(&e, ep.path, auth, (ep.valid)(SERVED).to_string()).await;
            assert_eq!(status, 200, "{}: {raw}", ep.path);
            let text = match ep.path {
                "/v1/chat/completions" => body["choices"][0]["message"]["content"].as_str(),
                "/v1/responses" => body["output"][0]["content"][0]["text"].as_str(),
                _ => body["content"][0]["text"].as_str(),
            };
            assert_eq!(text, Some(expected.as_str()), "{}: {raw}", ep.path);
        }
    }
    let health = e.http.get(e.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    e.shutdown().await;
}
