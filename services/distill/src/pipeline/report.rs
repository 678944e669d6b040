//! The report stage: the report built from the stored evaluation (costs, the objective's verdict,
//! assumptions), stored as JSON and Markdown, and the run's row in `distill_results` for the
//! student selector.
use super::{Engine, JobSpec};
use crate::{
    Error,
    report::{self as reporting, Evaluation},
    store::ResultRow,
};

impl Engine {
    pub(super) fn build_report(
        &self,
        id: &str,
        spec: &JobSpec,
        eval: &Evaluation,
    ) -> reporting::Report {
        reporting::build(
            id,
            eval,
            &self.prices,
            self.cfg.compute_usd_per_cpu_hour,
            &spec.objective,
            spec.max_accuracy_drop_points,
        )
    }

    pub(super) async fn report(&self, id: &str, spec: &JobSpec) -> Result<String, Error> {
        let row = self.row(id).await?;
        let eval: Evaluation =
            serde_json::from_str(&row.eval_json).map_err(|source| Error::Unreadable {
                job: id.to_string(),
                what: "evaluation",
                source,
            })?;
        let report = self.build_report(id, spec, &eval);
        let (json, markdown) = match self.auto_section(id, spec, &eval, &report)? {
            // An auto job's report adds what was chosen and why (`auto` in the JSON).
            Some((auto, section)) => {
                let mut value = serde_json::to_value(&report).unwrap_or_default();
                if let Some(o) = value.as_object_mut() {
                    o.insert("auto".into(), auto);
                }
                (
                    serde_json::to_string_pretty(&value).unwrap_or_default(),
                    format!("{}{section}", report.markdown()),
                )
            }
            None => (
                serde_json::to_string_pretty(&report).unwrap_or_default(),
                report.markdown(),
            ),
        };
        self.store.set_report(id, &json, &markdown).await?;
        let (class, size) = spec.target.split_once('/').unwrap_or((&spec.target, ""));
        let f = &eval.features;
        self.store
            .insert_result(&ResultRow {
                job_id: id.into(),
                teacher: spec.teacher.clone(),
                task_kind: f.kind.clone(),
                n_train: f.n_train as i64,
                n_evals: f.n_evals as i64,
                n_labels: eval.labels.len() as i64,
                mean_input_chars: f.mean_input_chars,
                p95_input_chars: f.p95_input_chars,
                gold_evals: f.gold_evals,
                teacher_accuracy: eval.teacher_accuracy,
                student_class: class.into(),
                student_size: size.into(),
                student_accuracy: eval.student_accuracy.unwrap_or(eval.agreement),
                agreement: eval.agreement,
                latency_p50_us: eval.latency.p50_us,
                latency_p99_us: eval.latency.p99_us,
                parameters: eval.parameters as i64,
                artefact_bytes: eval.artefact_bytes as i64,
                train_secs: eval.training.train_secs,
                teacher_usd_per_1k: report.costs.teacher_usd_per_1k,
                student_usd_per_1k: report.costs.student_usd_per_1k,
                objective_met: report.objective.met,
                backend: eval.backend.clone(),
                student_cer: eval.generation.as_ref().map(|g| g.student_cer),
                teacher_cer: eval.generation.as_ref().and_then(|g| g.teacher_cer),
            })
            .await?;
        // Every result teaches the selector, whatever the job's target.
        self.record_result(id, spec, &eval, &report).await;
        if let Some(w) = report
            .objective
            .warning
            .as_ref()
            .filter(|w| !row.error.contains(w.as_str()))
        {
            // On the job itself too, beside the label stage's warnings (once, if the stage runs
            // again after a restart): a job that "succeeded" with a worthless teacher must say so
            // wherever it is looked at.
            let warning = if row.error.is_empty() {
                w.clone()
            } else {
                format!("{}; {w}", row.error)
            };
            self.store.set_error(id, &warning).await?;
        }
        Ok(format!(
            "objective {}; cost per 1,000 requests: teacher {}, student ${:.3e}",
            match (&report.objective.warning, report.objective.met) {
                (Some(w), _) => format!("not met: {w}"),
                (None, true) => "met".into(),
                (None, false) => "not met".into(),
            },
            report
                .costs
                .teacher_usd_per_1k
                .map_or_else(|| "unknown".into(), |c| format!("${c:.4}")),
            report.costs.student_usd_per_1k
        ))
    }
}
