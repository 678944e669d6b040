#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

/// Streams as servers send them (one `data:` payload per entry), covering what the fast path must
/// read itself: the simulator's and OpenAI's shapes, escapes, tool calls, reasoning, Azure's sorted
/// keys and filter results, Groq's trailer, an error, pretty-printed JSON.
fn corpus() -> Vec<Vec<&'static str>> {
    vec![
        // The simulator (bench (c)), with usage on.
        vec![
            r#"{"id":"chatcmpl-5f3c0a8e1b2d","object":"chat.completion.chunk","created":1764000000,"model":"sim-fast","service_tier":"default","system_fingerprint":"fp_retort_sim","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-5f3c0a8e1b2d","object":"chat.completion.chunk","created":1764000000,"model":"sim-fast","service_tier":"default","system_fingerprint":"fp_retort_sim","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-5f3c0a8e1b2d","object":"chat.completion.chunk","created":1764000000,"model":"sim-fast","service_tier":"default","system_fingerprint":"fp_retort_sim","choices":[{"index":0,"delta":{"content":"line\none \"quoted\" caf\u00e9 café 🦀"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-5f3c0a8e1b2d","object":"chat.completion.chunk","created":1764000000,"model":"sim-fast","service_tier":"default","system_fingerprint":"fp_retort_sim","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            r#"{"id":"chatcmpl-5f3c0a8e1b2d","object":"chat.completion.chunk","created":1764000000,"model":"sim-fast","service_tier":"default","system_fingerprint":"fp_retort_sim","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
        ],
        // OpenAI with obfuscation padding, and a tool call whose arguments are escaped JSON.
        vec![
            r#"{"id":"chatcmpl-C1x","object":"chat.completion.chunk","created":1764000001,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Ab1","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"obfuscation":"kE3"}"#,
            r#"{"id":"chatcmpl-C1x","object":"chat.completion.chunk","created":1764000001,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"logprobs":null,"finish_reason":null}],"obfuscation":"Zq"}"#,
            r#"{"id":"chatcmpl-C1x","object":"chat.completion.chunk","created":1764000001,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]},"logprobs":null,"finish_reason":null}],"obfuscation":"p0Lx7"}"#,
            r#"{"id":"chatcmpl-C1x","object":"chat.completion.chunk","created":1764000001,"model":"gpt-4.1-2025-04-14","service_tier":"default","system_fingerprint":"fp_51e1070cf2","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"obfuscation":"a"}"#,
        ],
        // DeepSeek-style reasoning, then a refusal and two choices.
        vec![
            r#"{"id":"d1","object":"chat.completion.chunk","created":1764000002,"model":"deepseek-reasoner","system_fingerprint":"fp_x","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me think"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"d1","object":"chat.completion.chunk","created":1764000002,"model":"deepseek-reasoner","system_fingerprint":"fp_x","choices":[{"index":0,"delta":{"reasoning":"step 2","refusal":"no"},"logprobs":{"content":[{"token":"a","logprob":-0.25e-3,"bytes":[97],"top_logprobs":[]}]},"finish_reason":null},{"index":1,"delta":{"content":"other"},"finish_reason":null}]}"#,
        ],
        // Azure: a filter-results chunk with no choices, then sorted keys with `choices` first.
        vec![
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false}}}]}"#,
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0,"logprobs":null}],"created":1764000003,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_az"}"#,
            r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"length","index":0,"logprobs":null}],"created":1764000003,"id":"chatcmpl-az","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_az","usage":null}"#,
        ],
        // Groq's trailer, an error chunk, pretty-printed JSON, odd but valid values.
        vec![
            r#"{"id":"chatcmpl-g","object":"chat.completion.chunk","created":1764000004,"model":"llama-3.3-70b","system_fingerprint":"fp_g","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01","usage":{"queue_time":0.019,"prompt_tokens":9,"completion_tokens":2,"total_time":1.2E+1}}}"#,
            r#"{"error":{"message":"The server is overloaded","type":"server_error","param":null,"code":"overloaded"}}"#,
            "{ \"id\" : \"chatcmpl-p\" ,\n  \"model\":\"m\",\t\"choices\" : [ { \"index\" : 0 , \"delta\" : { \"content\" : \"x\" } , \"finish_reason\" : null } ] ,\r\n \"flags\":[true,false,null,{},[],[[1]],\"\\u0041\\/\"] }\n",
            r#"{"id":null,"model":null,"choices":null,"usage":null,"error":null}"#,
            r#"{"choices":[{"delta":null,"index":4294967295}],"id":"","":"empty key"}"#,
            r#"{}"#,
        ],
    ]
}

fn serde(data: &str) -> Option<OaChunk<'_>> {
    serde_json::from_str(data).ok()
}

#[test]
fn every_corpus_chunk_is_read_by_the_fast_path_as_serde_reads_it() {
    for stream in corpus() {
        let mut head = Head::default();
        for data in stream {
            let expected = serde(data).unwrap_or_else(|| panic!("the corpus is valid: {data}"));
            let fresh = decode(data, &mut Head::default())
                .unwrap_or_else(|| panic!("fast path refused {data}"));
            assert_eq!(fresh, expected, "{data}");
            let continued =
                decode(data, &mut head).unwrap_or_else(|| panic!("fast path refused {data}"));
            assert_eq!(
                continued, expected,
                "{data} after its stream's earlier chunks"
            );
        }
    }
}

#[test]
fn a_repeated_head_is_resumed_and_a_changed_one_is_read_again() {
    let first = r#"{"id":"c1","object":"chat.completion.chunk","model":"model-a","choices":[{"index":0,"delta":{"content":"a"}}]}"#;
    let mut head = Head::default();
    decode(first, &mut head).unwrap();
    assert_eq!(
        head.bytes,
        br#"{"id":"c1","object":"chat.completion.chunk","model":"model-a","choices":"#
    );

    // Same head: resumed, and id and model come from this chunk's own bytes.
    let second = r#"{"id":"c1","object":"chat.completion.chunk","model":"model-a","choices":[{"index":0,"delta":{"content":"b"}}],"usage":null}"#;
    let chunk = decode(second, &mut head).unwrap();
    assert_eq!(chunk, serde(second).unwrap());
    assert_eq!(chunk.model.as_ref().map(Text::as_str), Some("model-a"));

    // A head of the same length that differs (another model): read again, and kept as the new head.
    let third = r#"{"id":"c1","object":"chat.completion.chunk","model":"model-b","choices":[{"index":0,"delta":{"content":"c"}}]}"#;
    let chunk = decode(third, &mut head).unwrap();
    assert_eq!(chunk.model.as_ref().map(Text::as_str), Some("model-b"));
    assert!(head.bytes.ends_with(br#""model":"model-b","choices":"#));

    // Fields after `choices` are read in every chunk, resumed or not; a duplicate goes to serde.
    let late = r#"{"id":"c1","object":"chat.completion.chunk","model":"model-b","choices":[],"model":"late"}"#;
    assert!(decode(late, &mut head).is_none());
    assert!(serde(late).is_none(), "serde rejects the duplicate too");

    // A head with an escaped id is not kept (and the chunk is still read).
    let escaped = r#"{"id":"c\u0031","model":"m","choices":[]}"#;
    let mut head = Head::default();
    assert_eq!(decode(escaped, &mut head).unwrap(), serde(escaped).unwrap());
    assert!(head.bytes.is_empty());
}

/// Every chunk of the corpus, cut short, with a byte deleted, or with an ASCII byte replaced by one
/// of JSON's structural or troublesome bytes or by a multi-byte character: whenever the fast path
/// reads a mutant, serde reads it too and to the same value — with a fresh head and with the head of
/// the chunk before it.
#[test]
fn mutated_chunks_mean_the_same_on_both_paths() {
    const SUBSTITUTES: &[u8] = b"\"\\{}[],:0-9.eEn tfu\x01\t/a";
    let mut checked = 0usize;
    let mut fast = 0usize;
    for stream in corpus() {
        let mut previous: Option<&str> = None;
        for data in stream {
            let mut mutants = Vec::new();
            let bytes = data.as_bytes();
            for i in 0..bytes.len() {
                if !bytes[i].is_ascii() {
                    continue;
                }
                mutants.push([&bytes[..i], &bytes[i + 1..]].concat());
                mutants.push(bytes[..i].to_vec());
                for &b in SUBSTITUTES {
                    if b != bytes[i] {
                        mutants.push([&bytes[..i], &[b][..], &bytes[i + 1..]].concat());
                    }
                }
                // Multi-byte characters where the grammar expects ASCII: nothing may slice into them.
                for wide in ["é", "🦀"] {
                    mutants.push([&bytes[..i], wide.as_bytes(), &bytes[i + 1..]].concat());
                }
            }
            let mut primed = Head::default();
            if let Some(p) = previous {
                decode(p, &mut primed);
            }
            for mutant in mutants {
                let Ok(mutant) = String::from_utf8(mutant) else {
                    continue;
                };
                let expected = serde(&mutant);
                for head in [&mut Head::default(), &mut primed.clone()] {
                    checked += 1;
                    if let Some(got) = decode(&mutant, head) {
                        fast += 1;
                        assert_eq!(
                            Some(&got),
                            expected.as_ref(),
                            "fast path and serde differ on {mutant}"
                        );
                    }
                }
            }
            previous = Some(data);
        }
    }
    // The property is not vacuous: the fast path read a good share of the mutants itself.
    assert!(checked > 50_000, "{checked} mutants");
    assert!(fast * 10 > checked, "fast path read {fast} of {checked}");
}
