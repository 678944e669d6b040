//! Bad input: refused at Submit with INVALID_ARGUMENT where it can be known then (line numbers for
//! malformed JSONL), and in the job's status otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

use common::*;
use retort_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_at_submit() {
    let world = World::new(Db::sqlite(), TeacherSpec::default()).await;
    let distill = world.distill().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn problems_found_later_fail_the_job_with_a_clear_status() {
    let world = World::new(Db::sqlite(), TeacherSpec::default()).await;
    let distill = world.distill().await;
    let mut c = client(&distill).await;

    // A teacher the gateway does not serve.
    let id = c
        .submit(pb::SubmitRequest {
            teacher: "gpt-nonexistent".into(),
            ..spam_request()
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.stage.as_str()),
        ("failed", "validate"),
        "{job:?}"
    );
    assert!(
        job.error
            .contains("\"gpt-nonexistent\" is not a model or alias of the gateway"),
        "{}",
        job.error
    );

    // Evals expecting a label the teacher never gives (no label set given: the teacher's answers are the labels).
    let mut evals = fixture_bytes("spam_evals.jsonl");
    evals.extend_from_slice(
        b"{\"text\": \"Your parcel is held, pay the fee at this link\", \"label\": \"phishing\"}\n",
    );
    let req = pb::SubmitRequest {
        labels: vec![],
        evals: inline(evals),
        ..spam_request()
    };
    let id = c.submit(req).await.unwrap().into_inner().job_id;
    let seen = watch_to_end(&mut c, &id).await;
    let job = get(&mut c, &id).await;
    assert_eq!(
        (job.state.as_str(), job.stage.as_str()),
        ("failed", "label"),
        "{job:?}"
    );
    assert!(
        job.error
            .contains("eval labels never produced by the teacher on the training inputs: phishing"),
        "{}",
        job.error
    );
    assert!(seen.last().unwrap().error.contains("phishing"));
    let label = job.stages.iter().find(|s| s.name == "label").unwrap();
    assert_eq!(label.state, "failed");

    // Too many items the teacher cannot answer.
    let world2 = World::new(
        Db::sqlite(),
        TeacherSpec {
            unknown: 100,
            ..Default::default()
        },
    )
    .await;
    let distill2 = world2.distill().await;
    let mut c2 = client(&distill2).await;
    let id = c2.submit(spam_request()).await.unwrap().into_inner().job_id;
    watch_to_end(&mut c2, &id).await;
    let job = get(&mut c2, &id).await;
    assert_eq!(job.state, "failed", "{job:?}");
    assert!(
        job.error
            .contains("100 of 400 teacher answers failed or named no label"),
        "{}",
        job.error
    );
    distill2.shutdown().await;
    distill.shutdown().await;
}
