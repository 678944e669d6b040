//! The validate stage: the job's data reads back, and the teacher is a model or alias the gateway
//! serves (asked with a few tries: under `retort up` the gateway may still be starting).
use std::time::Duration;

use super::{Engine, JobSpec};
use crate::{Error, data};

impl Engine {
    pub(super) async fn validate(&self, id: &str, spec: &JobSpec) -> Result<String, Error> {
        let (train, evals) = self.load_items(id)?;
        // The gateway may still be starting (retort up): a few tries before giving up.
        let mut models = Err(Error::Gateway("not tried".into()));
        for attempt in 0..20 {
            models = self.gateway.models().await;
            if models.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 * (attempt + 1).min(4))).await;
        }
        let models = models?;
        if !models.contains(&spec.teacher) {
            return Err(Error::Job(format!(
                "teacher {:?} is not a model or alias of the gateway (it serves: {})",
                spec.teacher,
                models.join(", ")
            )));
        }
        let f = data::features(&train, &evals, &spec.template, spec.task);
        Ok(format!(
            "{} inputs, {} evals ({}), inputs {:.0} chars on average (p95 {:.0})",
            f.n_train,
            f.n_evals,
            if f.gold_evals {
                "with expected answers"
            } else {
                "no expected answers: agreement is the measure"
            },
            f.mean_input_chars,
            f.p95_input_chars
        ))
    }
}
