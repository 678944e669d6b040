//! Anthropic wire formats: messages, streaming, tools, count_tokens.

use retort_sim::ModelBehavior;
use serde_json::{Value, json};

use crate::*;

fn stream_text(evs: &[Event]) -> String {
    evs.iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .filter_map(Event::json)
        .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn messages_non_streaming() {
    let s = sim_with(ModelBehavior {
        cached_tokens: 1,
        ..Default::default()
    })
    .await;
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "system": [{ "type": "text", "text": "you are terse" }],
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hello there world" }] }],
    });
    let (status, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(status, 200);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "m");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["content"][0]["type"], "text");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 16);
    // 6 input words, one of them reported as a cache read.
    assert_eq!(v["usage"]["input_tokens"], 5);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 1);
    assert_eq!(v["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(v["usage"]["output_tokens"], 16);
    // The same prompt gives the same answer as on the OpenAI API.
    let (_, o) = post_json(&s, "/v1/chat/completions", &chat("m", "hello there world")).await;
    assert_eq!(o["choices"][0]["message"]["content"], text);
}

#[tokio::test]
async fn messages_streaming() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 3,
        ..Default::default()
    })
    .await;
    let full = post_json(&s, "/v1/messages", &messages("m", "hi", false))
        .await
        .1;
    let resp = post(&s, "/v1/messages", &messages("m", "hi", true)).await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, err) = read_stream(resp).await;
    assert!(err.is_none());
    let evs = events(&text);
    let names: Vec<&str> = evs.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let js: Vec<Value> = evs.iter().map(|e| e.json().unwrap()).collect();
    for (e, j) in evs.iter().zip(&js) {
        assert_eq!(j["type"], e.name.as_deref().unwrap());
    }
    assert_eq!(js[0]["message"]["content"], json!([]));
    assert_eq!(js[0]["message"]["model"], "m");
    assert_eq!(js[0]["message"]["usage"]["input_tokens"], 1);
    assert_eq!(
        js[1]["content_block"],
        json!({ "type": "text", "text": "" })
    );
    assert_eq!(js[3]["delta"]["type"], "text_delta");
    assert_eq!(
        stream_text(&evs),
        full["content"][0]["text"].as_str().unwrap()
    );
    assert_eq!(js[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(js[7]["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn messages_max_tokens() {
    let s = sim().await;
    let mut body = messages("m", "cut me short", false);
    body["max_tokens"] = json!(2);
    let (_, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);
    // max_tokens is required.
    let (status, v) = post_json(
        &s,
        "/v1/messages",
        &json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }] }),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Bad JSON.
    let resp = client()
        .post(format!("{}/v1/messages", s.base_url()))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn messages_tool_use() {
    let s = sim_with(ModelBehavior {
        tool_calls: true,
        ..Default::default()
    })
    .await;
    let tools = json!([{ "name": "get_weather", "description": "d", "input_schema": { "type": "object" } }]);
    let body = json!({ "model": "m", "max_tokens": 100, "tools": tools, "messages": [{ "role": "user", "content": "weather in Oslo" }] });
    let (_, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({ "query": "weather in Oslo" }));

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (text, _) = read_stream(post(&s, "/v1/messages", &sb).await).await;
    let js: Vec<Value> = events(&text).iter().map(|e| e.json().unwrap()).collect();
    assert_eq!(js[1]["content_block"]["type"], "tool_use");
    assert_eq!(js[1]["content_block"]["id"], block["id"]);
    assert_eq!(js[1]["content_block"]["input"], json!({}));
    let partial: String = js
        .iter()
        .filter(|j| j["type"] == "content_block_delta")
        .map(|j| {
            assert_eq!(j["delta"]["type"], "input_json_delta");
            j["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        block["input"]
    );
    assert!(
        js.iter()
            .any(|j| j["type"] == "message_delta" && j["delta"]["stop_reason"] == "tool_use")
    );

    let body = json!({ "model": "m", "max_tokens": 100, "tools": tools, "messages": [
        { "role": "user", "content": "weather in Oslo" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": { "query": "Oslo" } }] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": [{ "type": "text", "text": "snow" }] }] },
    ]});
    let (_, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(v["content"][0]["text"], "tool said: snow");
    assert_eq!(v["stop_reason"], "end_turn");
}

#[tokio::test]
async fn messages_prefill_continues_the_answer() {
    let s = sim().await;
    let full = post_json(&s, "/v1/messages", &messages("m", "a question", false))
        .await
        .1;
    let full = full["content"][0]["text"].as_str().unwrap().to_owned();
    let words: Vec<&str> = full.split(' ').collect();
    let prefill = words[..5].join(" ");
    let body = json!({ "model": "m", "max_tokens": 100, "stream": true, "messages": [
        { "role": "user", "content": "a question" },
        { "role": "assistant", "content": [{ "type": "text", "text": prefill }] },
    ]});
    let (text, _) = read_stream(post(&s, "/v1/messages", &body).await).await;
    let rest = stream_text(&events(&text));
    assert_eq!(format!("{prefill}{rest}"), full);
}

#[tokio::test]
async fn count_tokens() {
    let s = sim().await;
    let body = json!({ "model": "m", "system": "be brief", "messages": [{ "role": "user", "content": "one two three" }] });
    let (status, v) = post_json(&s, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({ "input_tokens": 5 }));
    assert_eq!(s.attempts("m"), 0);
}

#[tokio::test]
async fn anthropic_model_list_shape() {
    let s = sim().await;
    let v: Value = client()
        .get(format!("{}/v1/models", s.base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["id"], "m");
    assert_eq!(v["has_more"], false);
}

/// A model with reasoning tokens thinks first: one thinking block of that many words (with a
/// signature) before the text, counted in output_tokens; streamed, the same blocks at indexes 0
/// and 1, and a cut counts thinking deltas as tokens.
#[tokio::test]
async fn reasoning_models_think_in_a_block_before_the_answer() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 3,
        reasoning_tokens: 5,
        ..Default::default()
    })
    .await;
    let (status, v) = post_json(&s, "/v1/messages", &messages("m", "hi", false)).await;
    assert_eq!(status, 200);
    let content = v["content"].as_array().unwrap();
    assert_eq!(content.len(), 2, "{v}");
    assert_eq!(content[0]["type"], "thinking");
    let thinking = content[0]["thinking"].as_str().unwrap();
    assert_eq!(thinking.split(' ').count(), 5);
    assert!(
        content[0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("sig_")
    );
    assert_eq!(content[1]["type"], "text");
    let text = content[1]["text"].as_str().unwrap();
    assert_eq!(v["usage"]["output_tokens"], 8);

    let resp = post(&s, "/v1/messages", &messages("m", "hi", true)).await;
    let evs = events(&resp.text().await.unwrap());
    let deltas: Vec<Value> = evs
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .filter_map(Event::json)
        .collect();
    let streamed_thinking: String = deltas
        .iter()
        .filter(|d| d["index"] == 0)
        .filter_map(|d| d["delta"]["thinking"].as_str())
        .collect();
    assert_eq!(streamed_thinking, thinking);
    assert!(
        deltas
            .iter()
            .any(|d| d["delta"]["type"] == "signature_delta" && d["index"] == 0)
    );
    assert!(
        deltas
            .iter()
            .filter(|d| d["index"] == 1)
            .all(|d| d["delta"]["type"] == "text_delta")
    );
    assert_eq!(stream_text(&evs), text);
    let starts: Vec<Value> = evs
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_start"))
        .filter_map(Event::json)
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["content_block"]["type"], "thinking");
    assert_eq!(
        (
            starts[1]["index"].clone(),
            starts[1]["content_block"]["type"].clone()
        ),
        (json!(1), json!("text"))
    );
    let last = evs
        .iter()
        .filter(|e| e.name.as_deref() == Some("message_delta"))
        .find_map(Event::json)
        .unwrap();
    assert_eq!(last["usage"]["output_tokens"], 8);

    // Cut after 6 tokens: all 5 thinking deltas and one text delta went out.
    let resp = client()
        .post(format!("{}/v1/messages", s.base_url()))
        .header("x-sim-fault", "cut_after:6")
        .json(&messages("m", "hi", true))
        .send()
        .await
        .unwrap();
    let (body, err) = read_stream(resp).await;
    assert!(err.is_some());
    let evs = events(&body);
    assert_eq!(stream_text(&evs).split_whitespace().count(), 1, "{body}");

    // A prefill continues the answer without thinking again.
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "messages": [
            { "role": "user", "content": "hi" },
            { "role": "assistant", "content": text.split(' ').next().unwrap() },
        ],
    });
    let (_, v) = post_json(&s, "/v1/messages", &body).await;
    assert_eq!(v["content"][0]["type"], "text", "{v}");
}
