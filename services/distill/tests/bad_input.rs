//! Bad input refused at Submit with INVALID_ARGUMENT, where it can be known then (line numbers for
//! malformed JSONL). Problems found only once a job runs need a gateway: `tests/tests/distill.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use retort_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_at_submit() {
    let distill = distill_alone().await;
    let mut c = client(&distill).await;
    let cases: Vec<(pb::SubmitRequest, &str)> = vec![
        (
            pb::SubmitRequest {
                train: inline(
                    b"{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"text\": oops}\n".to_vec(),
                ),
                ..spam_request()
            },
            "train, line 3: malformed JSON",
        ),
        (
            pb::SubmitRequest {
                train: inline(b"\n\n".to_vec()),
                ..spam_request()
            },
            "train: no examples (empty data)",
        ),
        (
            pb::SubmitRequest {
                evals: inline(b"{\"label\": \"spam\"}\n".to_vec()),
                ..spam_request()
            },
            "evals, line 1: missing the \"text\" field",
        ),
        (
            pb::SubmitRequest {
                target: "forest/tiny".into(),
                ..spam_request()
            },
            "target: unknown student class",
        ),
        (
            pb::SubmitRequest {
                target: "linear/huge".into(),
                ..spam_request()
            },
            "target: ",
        ),
        (
            pb::SubmitRequest {
                prompt_template: "no placeholder".into(),
                ..spam_request()
            },
            "{input}",
        ),
        (
            pb::SubmitRequest {
                teacher: String::new(),
                ..spam_request()
            },
            "teacher: missing",
        ),
        (
            pb::SubmitRequest {
                evals: None,
                ..spam_request()
            },
            "evals: missing",
        ),
        (
            pb::SubmitRequest {
                train: Some(pb::DataSource {
                    source: Some(pb::data_source::Source::Path("/nonexistent/x.jsonl".into())),
                }),
                ..spam_request()
            },
            "train: cannot read /nonexistent/x.jsonl",
        ),
        (
            pb::SubmitRequest {
                evals: inline(b"{\"text\": \"a\", \"label\": \"phishing\"}\n".to_vec()),
                ..spam_request()
            },
            "evals: item 1 expects \"phishing\", which is not one of the labels (spam, ham)",
        ),
    ];
    for (req, want) in cases {
        let err = c.submit(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}: {err}");
        assert!(
            err.message().contains(want),
            "expected {want:?} in {:?}",
            err.message()
        );
    }
    let err = c
        .get(pb::GetJobRequest {
            job_id: "dj-missing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    distill.shutdown().await;
}
