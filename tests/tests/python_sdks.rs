//! The official Python SDKs (openai, anthropic) against a gateway in this process. The scripts in
//! `tests/python/` make the calls and check what the SDKs return; they exit non-zero, saying which
//! check failed, on any difference.
#![allow(clippy::expect_used, clippy::unwrap_used)]
use retort_tests::*;
use serde_json::json;

const PROMPT: &str = "Summarise the plot of Hamlet in one sentence.";

async fn sdk_config(e: &Env) -> serde_json::Value {
    json!({
        "addr": e.http_addr(),
        "key": KEY,
        "alias": ALIAS,
        "served": SERVED,
        "claude": CLAUDE,
        "tools": TOOLS,
        "prompt": PROMPT,
        "expected": e.expected_answer(PROMPT).await,
    })
}

#[tokio::test]
async fn openai_sdk_chat_responses_tools_and_errors() {
    let e = env().await;
    let run = run_python("openai_client.py", sdk_config(&e).await).await;
    run.assert_ok();
    eprintln!("{}", run.report());
    assert!(
        run.stdout.contains("openai client: all checks passed"),
        "{}",
        run.report()
    );
    // Each of the 4 answers through the alias failed over: the down target was tried and retried.
    assert_eq!(
        e.sim.attempts(DOWN),
        2 * 4,
        "attempts on the failing target"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn anthropic_sdk_messages_tools_count_tokens_and_errors() {
    let e = env().await;
    let run = run_python("anthropic_client.py", sdk_config(&e).await).await;
    run.assert_ok();
    eprintln!("{}", run.report());
    assert!(
        run.stdout.contains("anthropic client: all checks passed"),
        "{}",
        run.report()
    );
    // messages.create and messages.stream through the alias; count_tokens reaches no provider.
    assert_eq!(
        e.sim.attempts(DOWN),
        2 * 2,
        "attempts on the failing target"
    );
    e.shutdown().await;
}
