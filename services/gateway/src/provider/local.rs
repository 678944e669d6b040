//! The `local` provider: distilled students (artefacts of the training crate) answering in-process.
//! A student reads the text of the request's last user message and answers with the label it
//! predicts (a classifier) or the text it generates (a generator; the artefact's metadata says
//! which). Usage is real: input tokens are the student's tokens of that text, output tokens the
//! student's tokens of the answer (a generator's: the tokens it generated).
//!
//! Students are loaded once, at deploy time ([`Local::load`]), and swapped in and out atomically; a
//! request in flight keeps the student it started with. Inference runs inline on the request's task
//! when the student answers quickly (measured at load: a hop to the blocking pool costs more than
//! the prediction itself), otherwise on tokio's blocking pool so a slow student never stalls the
//! other requests of a worker thread.
use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use retort_training::{Artefact, Generator, Predictor, TaskKind, backend::Inference};

use super::{EventStream, Provider, ProviderError, StatusKind};
use crate::{
    config::ProviderConfig,
    types::{ChatRequest, ChatResponse, Part, RequestMeta, Role, StopReason, StreamEvent, Usage},
};

/// Students whose median prediction (measured at load) is at most this run inline.
pub const INLINE_BUDGET: Duration = Duration::from_micros(250);

/// The model of a loaded student. One per deployed student, behind an `Arc`: the size difference
/// between the variants costs nothing, and a box would add an indirection to every answer.
#[allow(clippy::large_enum_variant)]
enum Model {
    Classifier(Predictor<Inference>),
    Generator(Generator),
}

/// A loaded student, ready to answer.
pub struct LoadedStudent {
    model: Model,
    /// Whether predictions run on the request's task (see [`INLINE_BUDGET`]).
    inline: bool,
    /// Median single-text prediction time measured at load.
    pub predict_p50: Duration,
}

impl std::fmt::Debug for LoadedStudent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedStudent")
            .field("class", &self.metadata().class)
            .field("inline", &self.inline)
            .field("predict_p50", &self.predict_p50)
            .finish()
    }
}

impl LoadedStudent {
    /// The artefact's metadata (class, size, labels, parameters).
    pub fn metadata(&self) -> &retort_training::ArtefactMetadata {
        match &self.model {
            Model::Classifier(p) => p.metadata(),
            Model::Generator(g) => g.metadata(),
        }
    }

    /// Runs on the blocking pool instead of inline.
    pub fn runs_on_blocking_pool(&self) -> bool {
        !self.inline
    }

    /// The answer (the label, or the generated text) to `text` and its usage.
    pub fn answer(&self, text: &str) -> (String, Usage) {
        match &self.model {
            Model::Classifier(p) => {
                let c = p.classify(text);
                let output = p.count_tokens(c.label) as u64;
                (
                    c.label.to_owned(),
                    Usage {
                        input: c.input_tokens as u64,
                        output,
                        ..Usage::default()
                    },
                )
            }
            Model::Generator(g) => {
                let out = g.generate(text);
                let usage = Usage {
                    input: out.input_tokens as u64,
                    output: out.output_tokens as u64,
                    ..Usage::default()
                };
                (out.text, usage)
            }
        }
    }
}

/// The adapter: a name → student map, swapped atomically.
pub struct Local {
    name: String,
    students: ArcSwap<HashMap<String, Arc<LoadedStudent>>>,
}

impl Local {
    pub fn new(cfg: &ProviderConfig) -> Self {
        Local {
            name: cfg.name.clone(),
            students: ArcSwap::from_pointee(HashMap::new()),
        }
    }

    /// Loads the artefact in `dir` (a classifier or a generator, as its metadata says), warms it
    /// up and measures how fast it answers. Blocking (file I/O and a few predictions): call it off
    /// the async workers.
    pub fn load(dir: &Path) -> Result<LoadedStudent, retort_training::TrainingError> {
        let model = match Artefact::metadata(dir)?.task {
            TaskKind::Classification => {
                Model::Classifier(Predictor::<Inference>::load_for_serving(dir)?)
            }
            TaskKind::Generation => Model::Generator(Generator::load_for_serving(dir)?),
        };
        let mut student = LoadedStudent {
            model,
            inline: false,
            predict_p50: Duration::ZERO,
        };
        let probe = "Hello, this is a short probe message to time one prediction of the student.";
        // Generators take milliseconds an answer: fewer probes.
        let (warm, timed) = match student.model {
            Model::Classifier(_) => (20, 31),
            Model::Generator(_) => (2, 5),
        };
        for _ in 0..warm {
            student.answer(probe);
        }
        let mut times: Vec<Duration> = (0..timed)
            .map(|_| {
                let t = Instant::now();
                student.answer(probe);
                t.elapsed()
            })
            .collect();
        times.sort();
        student.predict_p50 = times[times.len() / 2];
        student.inline = student.predict_p50 <= INLINE_BUDGET;
        Ok(student)
    }

    /// Serves `student` as `model` (replacing any student of that name).
    pub fn insert(&self, model: &str, student: Arc<LoadedStudent>) {
        self.students.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(model.to_owned(), Arc::clone(&student));
            m
        });
    }

    /// Stops serving `model`.
    pub fn remove(&self, model: &str) {
        self.students.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.remove(model);
            m
        });
    }

    fn student(&self, model: &str) -> Result<Arc<LoadedStudent>, ProviderError> {
        self.students
            .load()
            .get(model)
            .cloned()
            .ok_or_else(|| ProviderError::Status {
                status: 404,
                kind: StatusKind::NotFound,
                message: format!("student {model} is not deployed"),
                retry_after: None,
            })
    }

    async fn infer(
        &self,
        req: &ChatRequest,
        model: &str,
    ) -> Result<(String, Usage), ProviderError> {
        let student = self.student(model)?;
        let text = last_user_text(req).ok_or_else(|| ProviderError::Status {
            status: 400,
            kind: StatusKind::InvalidRequest,
            message: format!(
                "{model} answers the text of the last user message, and the request has none"
            ),
            retry_after: None,
        })?;
        if student.inline {
            return Ok(student.answer(&text));
        }
        tokio::task::spawn_blocking(move || student.answer(&text))
            .await
            .map_err(|e| ProviderError::Malformed(format!("the student's prediction failed: {e}")))
    }
}

/// The text parts of the last user message, joined.
fn last_user_text(req: &ChatRequest) -> Option<String> {
    let m = req.messages.iter().rev().find(|m| m.role == Role::User)?;
    let mut parts = m.parts.iter().filter_map(|p| match p {
        Part::Text { text } => Some(text.as_str()),
        _ => None,
    });
    let first = parts.next()?;
    let mut text = first.to_owned();
    for p in parts {
        text.push('\n');
        text.push_str(p);
    }
    Some(text)
}

fn response_id() -> String {
    format!("retort-{}", uuid::Uuid::new_v4().simple())
}

#[async_trait::async_trait]
impl Provider for Local {
    fn name(&self) -> &str {
        &self.name
    }

    async fn complete(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<ChatResponse, ProviderError> {
        let (label, usage) = self.infer(req, model).await?;
        Ok(ChatResponse {
            id: response_id(),
            provider: self.name.clone(),
            model: model.to_owned(),
            content: vec![Part::Text { text: label }],
            stop_reason: StopReason::EndTurn,
            usage,
            failed_attempts: Vec::new(),
        })
    }

    async fn stream(
        &self,
        req: &ChatRequest,
        model: &str,
        _meta: &RequestMeta,
    ) -> Result<EventStream, ProviderError> {
        let (label, usage) = self.infer(req, model).await?;
        let events = [
            StreamEvent::Start {
                id: response_id(),
                provider: self.name.clone(),
                model: model.to_owned(),
            },
            StreamEvent::TextDelta { text: label },
            StreamEvent::Finish {
                stop_reason: StopReason::EndTurn,
                usage,
                failed_attempts: Vec::new(),
            },
        ];
        Ok(Box::pin(futures::stream::iter(events.into_iter().map(Ok))))
    }
}
