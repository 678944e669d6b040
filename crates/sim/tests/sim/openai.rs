//! OpenAI wire formats: chat completions, responses, models.

use retort_sim::ModelBehavior;
use serde_json::{Value, json};

use crate::*;

#[tokio::test]
async fn chat_completion_non_streaming() {
    let s = sim().await;
    let (status, v) = post_json(&s, "/v1/chat/completions", &chat("m", "hello there world")).await;
    assert_eq!(status, 200);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(text.split(' ').count(), 16);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(v["usage"]["total_tokens"], 19);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );
    // Deterministic: the same prompt gives the same answer, another prompt another one.
    let (_, again) = post_json(
        &s,
        "/v1/chat/completions",
        &chat("other-model", "hello there world"),
    )
    .await;
    assert_eq!(again["choices"][0]["message"]["content"], text);
    let (_, other) = post_json(&s, "/v1/chat/completions", &chat("m", "something else")).await;
    assert_ne!(other["choices"][0]["message"]["content"], text);
}

#[tokio::test]
async fn chat_completion_streaming() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 5,
        ..Default::default()
    })
    .await;
    let full = post_json(&s, "/v1/chat/completions", &chat("m", "stream me"))
        .await
        .1;
    let resp = post(&s, "/v1/chat/completions", &chat_stream("m", "stream me")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, err) = read_stream(resp).await;
    assert!(err.is_none());
    let evs = events(&text);
    let js: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert_eq!(js[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        js.iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "m")
    );
    let deltas: Vec<&str> = js
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(deltas.len(), 5);
    assert_eq!(
        deltas.concat(),
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    let finish = &js[js.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    let usage = js.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens"], 2);

    // Without include_usage there is no usage chunk.
    let body = json!({ "model": "m", "messages": [{"role": "user", "content": "stream me"}], "stream": true });
    let (text, _) = read_stream(post(&s, "/v1/chat/completions", &body).await).await;
    let evs = events(&text);
    assert!(
        evs.iter()
            .filter_map(Event::json)
            .all(|c| c.get("usage").is_none())
    );
    assert_eq!(evs.len(), 1 + 5 + 1 + 1);
}

#[tokio::test]
async fn chat_content_parts_and_max_tokens() {
    let s = sim_with(ModelBehavior {
        reasoning_tokens: 7,
        cached_tokens: 2,
        ..Default::default()
    })
    .await;
    let body = json!({
        "model": "m",
        "max_completion_tokens": 3,
        "messages": [
            { "role": "developer", "content": "be brief" },
            { "role": "user", "content": [{ "type": "text", "text": "one two" }, { "type": "image_url", "image_url": { "url": "x" } }] },
        ],
    });
    let (status, v) = post_json(&s, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        3
    );
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    assert_eq!(v["usage"]["completion_tokens"], 3 + 7);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        7
    );
}

#[tokio::test]
async fn chat_tool_calls() {
    let s = sim_with(ModelBehavior {
        tool_calls: true,
        ..Default::default()
    })
    .await;
    let tools = json!([{ "type": "function", "function": { "name": "search", "parameters": { "type": "object" } } }]);
    let body = json!({ "model": "m", "tools": tools, "messages": [{ "role": "user", "content": "weather in Paris" }] });
    let (_, v) = post_json(&s, "/v1/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "search");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({ "query": "weather in Paris" }));

    // Streamed: the call's id and name first, then argument deltas that add up.
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (text, _) = read_stream(post(&s, "/v1/chat/completions", &sb).await).await;
    let js: Vec<Value> = events(&text).iter().filter_map(Event::json).collect();
    let tcs: Vec<&Value> = js
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(tcs[0][0]["id"], call["id"]);
    assert_eq!(tcs[0][0]["function"]["name"], "search");
    let streamed: String = tcs
        .iter()
        .filter_map(|t| t[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
    assert_eq!(
        js.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // After the tool's result, a text answer quoting it.
    let body = json!({ "model": "m", "tools": tools, "messages": [
        { "role": "user", "content": "weather in Paris" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "search", "arguments": "{\"query\":\"weather in Paris\"}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C" },
    ]});
    let (_, v) = post_json(&s, "/v1/chat/completions", &body).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tool said: sunny, 21C"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_prefill_continues_the_answer() {
    let s = sim().await;
    let full = post_json(&s, "/v1/chat/completions", &chat("m", "continue me"))
        .await
        .1;
    let full = full["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let prefill = &full[..full.len() / 2];
    let body = json!({ "model": "m", "messages": [
        { "role": "user", "content": "continue me" },
        { "role": "assistant", "content": prefill },
    ]});
    let (_, v) = post_json(&s, "/v1/chat/completions", &body).await;
    let rest = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(format!("{prefill}{rest}"), full);
    // A prefill the answer does not start with is ignored.
    let body = json!({ "model": "m", "messages": [
        { "role": "user", "content": "continue me" },
        { "role": "assistant", "content": "zzz" },
    ]});
    let (_, v) = post_json(&s, "/v1/chat/completions", &body).await;
    assert_eq!(v["choices"][0]["message"]["content"], full.as_str());
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let s = sim().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", s.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().is_some());
    let (status, v) = post_json(&s, "/v1/chat/completions", &json!({ "model": "m" })).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, _) = post_json(
        &s,
        "/v1/chat/completions",
        &json!({ "model": "m", "messages": [] }),
    )
    .await;
    assert_eq!(status, 400);
    let (status, v) = post_json(&s, "/v1/responses", &json!({ "model": "m" })).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Malformed requests are not attempts (no model); validation failures with a model are.
    assert_eq!(s.attempts("m"), 2);
}

#[tokio::test]
async fn responses_non_streaming() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 6,
        ..Default::default()
    })
    .await;
    let body = json!({ "model": "m", "instructions": "be nice", "input": "say something" });
    let (status, v) = post_json(&s, "/v1/responses", &body).await;
    assert_eq!(status, 200);
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "m");
    let item = &v["output"][0];
    assert_eq!(item["type"], "message");
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["content"][0]["type"], "output_text");
    let text = item["content"][0]["text"].as_str().unwrap();
    assert_eq!(text.split(' ').count(), 6);
    assert_eq!(v["usage"]["input_tokens"], 4);
    assert_eq!(v["usage"]["output_tokens"], 6);
    assert_eq!(v["usage"]["total_tokens"], 10);
    assert_eq!(v["usage"]["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(v["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
    // Same prompt, same answer as chat completions.
    let chat_v = post_json(&s, "/v1/chat/completions", &chat("m", "say something"))
        .await
        .1;
    assert_eq!(chat_v["choices"][0]["message"]["content"], text);

    let body = json!({ "model": "m", "input": [
        { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "say something" }] }
    ], "max_output_tokens": 2 });
    let (_, v) = post_json(&s, "/v1/responses", &body).await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(v["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn responses_streaming() {
    let s = sim_with(ModelBehavior {
        answer_tokens: 4,
        ..Default::default()
    })
    .await;
    let body = json!({ "model": "m", "input": [{ "role": "user", "content": "stream it" }], "stream": true });
    let resp = post(&s, "/v1/responses", &body).await;
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
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let js: Vec<Value> = evs.iter().map(|e| e.json().unwrap()).collect();
    for (i, (e, j)) in evs.iter().zip(&js).enumerate() {
        assert_eq!(j["type"], e.name.as_deref().unwrap());
        assert_eq!(j["sequence_number"], i);
    }
    let deltas: String = js.iter().filter_map(|j| j["delta"].as_str()).collect();
    assert_eq!(js[8]["text"], deltas.as_str());
    let done = &js[11]["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], deltas.as_str());
    assert_eq!(done["usage"]["output_tokens"], 4);
    assert_eq!(js[4]["item_id"], done["output"][0]["id"]);
}

#[tokio::test]
async fn responses_function_calls() {
    let s = sim_with(ModelBehavior {
        tool_calls: true,
        ..Default::default()
    })
    .await;
    let tools = json!([{ "type": "function", "name": "lookup", "description": "d", "parameters": { "type": "object" } }]);
    let body = json!({ "model": "m", "tools": tools, "input": "find cats" });
    let (_, v) = post_json(&s, "/v1/responses", &body).await;
    let item = &v["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "lookup");
    assert_eq!(item["status"], "completed");
    assert!(item["call_id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        serde_json::from_str::<Value>(item["arguments"].as_str().unwrap()).unwrap(),
        json!({ "query": "find cats" })
    );

    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (text, _) = read_stream(post(&s, "/v1/responses", &sb).await).await;
    let js: Vec<Value> = events(&text).iter().map(|e| e.json().unwrap()).collect();
    assert_eq!(js[2]["item"]["type"], "function_call");
    let args: String = js
        .iter()
        .filter(|j| j["type"] == "response.function_call_arguments.delta")
        .map(|j| j["delta"].as_str().unwrap())
        .collect();
    assert_eq!(args, item["arguments"].as_str().unwrap());
    let done = js
        .iter()
        .find(|j| j["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"], args.as_str());

    let body = json!({ "model": "m", "tools": tools, "input": [
        { "role": "user", "content": "find cats" },
        { "type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}" },
        { "type": "function_call_output", "call_id": "call_1", "output": "3 cats" },
    ]});
    let (_, v) = post_json(&s, "/v1/responses", &body).await;
    assert_eq!(v["output"][0]["content"][0]["text"], "tool said: 3 cats");
}

#[tokio::test]
async fn models_endpoint() {
    let s = sim().await;
    let v: Value = client()
        .get(format!("{}/v1/models", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({ "object": "list", "data": [{ "id": "m", "object": "model", "created": v["data"][0]["created"], "owned_by": "retort-sim" }] })
    );
    let one: Value = client()
        .get(format!("{}/v1/models/m", s.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "m");
}
