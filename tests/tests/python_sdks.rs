//! The official Python SDKs (openai, anthropic) against a gateway in this process. The scripts in
//! `tests/python/` make the calls and check what the SDKs return; they exit non-zero, saying which
//! check failed, on any difference.
use retort_e2e::*;
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
    // Every answer through the alias failed over: the down target was tried (and retried) each time.
    assert!(
        e.sim.attempts(DOWN) >= 2 * 4,
        "the failing target was tried: {}",
        e.sim.attempts(DOWN)
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
    assert!(
        e.sim.attempts(DOWN) >= 2 * 2,
        "the failing target was tried: {}",
        e.sim.attempts(DOWN)
    );
    e.shutdown().await;
}
