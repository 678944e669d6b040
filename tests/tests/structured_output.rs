//! Structured output with the official Python SDKs (#19): `tests/python/structured_output.py` asks
//! for JSON matching a schema through the openai SDK (Chat Completions, Responses) and the anthropic
//! SDK (`output_config`), on an OpenAI-shaped and an Anthropic-shaped target, and checks the answers
//! against the schema (the simulator answers JSON only when the format reached it).
#![allow(clippy::expect_used, clippy::unwrap_used)]
use retort_tests::*;
use serde_json::json;

#[tokio::test]
async fn structured_output_round_trips_through_both_sdks_and_both_upstreams() {
    let e = env().await;
    let run = run_python(
        "structured_output.py",
        json!({"addr": e.http_addr(), "key": KEY, "served": SERVED, "claude": CLAUDE}),
    )
    .await;
    run.assert_ok();
    eprintln!("{}", run.report());
    assert!(
        run.stdout.contains("structured output: all checks passed"),
        "{}",
        run.report()
    );
    // The last request to each upstream (the mid-conversation system message) kept it in place.
    let oa = e.sim.last_request(SERVED).unwrap();
    assert_eq!(
        oa["body"]["messages"][2],
        json!({"role": "system", "content": "Answer tersely from now on."}),
        "{oa}"
    );
    let an = e.sim.last_request(CLAUDE).unwrap();
    assert_eq!(
        an["headers"]["anthropic-beta"], "mid-conversation-system-2026-04-07",
        "{an}"
    );
    assert_eq!(an["body"]["messages"][2]["role"], "system", "{an}");
    e.shutdown().await;
}
