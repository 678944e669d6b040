//! The evaluation (what the evaluate stage measured) and the report built from it: accuracy,
//! agreement, errors by class, latency, size, cost per 1,000 requests for teacher and student, the
//! speed and cost ratios, the objective's verdict, and every assumption behind those numbers.
use std::fmt::Write as _;

use retort_pricing::{Price, PriceTable};
use retort_training::{EvalReport, GenEvalReport, LatencyStats, TaskKind, TrainReport};
use serde::{Deserialize, Serialize};

use crate::data::Features;

/// How the teacher labelled the job's items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LabelStats {
    /// Items sent to the teacher (train + evals).
    pub items: usize,
    /// Answers that came from the gateway during this job.
    pub fresh: usize,
    /// Answers found in the cache (paid for by an earlier run).
    pub cached: usize,
    /// Calls that failed for good (after retries).
    pub failed_calls: usize,
    /// Answers that named no label of the set (or several).
    pub unparseable: usize,
    /// A few failure messages, for the report.
    pub failure_examples: Vec<String>,
    /// Training items per label (teacher's answers).
    pub label_counts: Vec<(String, usize)>,
}

/// What the teacher's calls cost in tokens and time (over every answer of the job).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TeacherUsage {
    pub answers: usize,
    pub mean_input_tokens: f64,
    pub mean_output_tokens: f64,
    /// Through the gateway, as measured when the answer was first obtained.
    pub mean_latency_ms: f64,
    pub p50_latency_ms: f64,
    /// The models that actually answered (`x-retort-model`).
    pub served_models: Vec<String>,
}

/// A generation student's measurements, next to the shared ones of [`Evaluation`] (where, for
/// generation, `student_accuracy` / `teacher_accuracy` are exact match and `agreement` is the
/// fraction of identical answers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationEval {
    /// Character error rate of the student: against the expected answers, or against the
    /// teacher's without them.
    pub student_cer: f64,
    /// Of the teacher against the expected answers (a failed call counts as an empty answer).
    pub teacher_cer: Option<f64>,
    /// Of the student against the teacher, on the evals the teacher answered.
    pub agreement_cer: Option<f64>,
    /// Tokens the student generated per answer, on average.
    pub mean_output_tokens: f64,
    /// The student's exact match, CER and errors with examples.
    pub student: GenEvalReport,
    /// The teacher's (expected answers only).
    pub teacher: Option<GenEvalReport>,
}

/// How the student's training went, from its artefact's training report (zeros for an untrained
/// artefact).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Training {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    pub stopped_early: bool,
    pub train_secs: f64,
    pub train_examples: usize,
    pub validation_examples: usize,
}

impl From<Option<&TrainReport>> for Training {
    fn from(t: Option<&TrainReport>) -> Training {
        t.map_or_else(Training::default, |t| Training {
            epochs_run: t.epochs_run,
            best_epoch: t.best_epoch,
            best_val_accuracy: t.best_val_accuracy,
            stopped_early: t.stopped_early,
            train_secs: t.train_secs,
            train_examples: t.train_examples,
            validation_examples: t.validation_examples,
        })
    }
}

/// The evaluate stage's measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// `classification` or `generation` (evaluations stored before generation existed are
    /// classification).
    #[serde(default)]
    pub task: TaskKind,
    /// Generation only: exact match, CER, errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationEval>,
    pub teacher: String,
    pub student: String,
    pub backend: String,
    pub labels: Vec<String>,
    pub features: Features,
    pub label_stats: LabelStats,
    /// Evals scored.
    pub n_evals: usize,
    /// Student accuracy against the evals' expected answers (gold), when they have them.
    pub student_accuracy: Option<f64>,
    /// Teacher accuracy against the same expected answers (a failed teacher answer counts as wrong).
    pub teacher_accuracy: Option<f64>,
    /// Fraction of evals (those the teacher answered) on which student and teacher agree.
    pub agreement: f64,
    pub agreement_n: usize,
    /// The student by expected class (gold, or the teacher's labels without gold), with examples.
    pub student_eval: EvalReport,
    /// The teacher by expected class (gold only).
    pub teacher_eval: Option<EvalReport>,
    /// Single-item prediction in-process (no network).
    pub latency: LatencyStats,
    /// Batched predictions per second in-process (batches of 256).
    pub throughput_per_sec: f64,
    pub parameters: usize,
    pub artefact_bytes: u64,
    /// How training went (stored flat, beside the other fields).
    #[serde(flatten)]
    pub training: Training,
    pub teacher_usage: TeacherUsage,
    /// Through the gateway once deployed (`distilled/NAME`), sequential single requests.
    pub gateway_latency: Option<LatencyStats>,
    pub deployed_model: Option<String>,
}

/// Cost of 1,000 requests, in USD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    /// `None` when no price is known for the teacher's served model.
    pub teacher_usd_per_1k: Option<f64>,
    pub teacher_price: Option<String>,
    pub student_usd_per_1k: f64,
    pub compute_usd_per_cpu_hour: f64,
    /// teacher ÷ student.
    pub cost_ratio: Option<f64>,
    /// Teacher latency through the gateway ÷ student p50 in-process.
    pub speed_ratio: f64,
    /// Teacher latency ÷ student p50 through the gateway, once deployed.
    pub speed_ratio_via_gateway: Option<f64>,
    /// USD saved per 1,000 requests by the student.
    pub savings_usd_per_1k: Option<f64>,
}

/// The objective's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub kind: String,
    pub max_accuracy_drop_points: f64,
    /// What was compared, in words.
    pub rule: String,
    pub met: bool,
    /// Why the verdict cannot be trusted whatever the numbers say (the teacher's labels are
    /// worthless); set, the objective is never met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Below this accuracy on the expected answers, a teacher's labels are noise: a student that copies
/// them well "meets" an objective measured against the teacher, and is worthless.
pub const TEACHER_ACCURACY_FLOOR: f64 = 0.20;

/// What makes the teacher's labels not worth distilling, if anything: an accuracy on the expected
/// answers below [`TEACHER_ACCURACY_FLOOR`] or, without expected answers, agreement that measures
/// nothing (the teacher gave every eval the same label, so a constant student agrees with it).
pub fn teacher_warning(e: &Evaluation) -> Option<String> {
    const CHECK: &str = "check the teacher and the template";
    if let Some(t) = e.teacher_accuracy {
        return (t < TEACHER_ACCURACY_FLOOR).then(|| {
            format!(
                "the teacher answered {:.0} % of the evals correctly: its labels are not worth distilling — {CHECK}",
                t * 100.0
            )
        });
    }
    if e.task == TaskKind::Generation || e.agreement_n < 2 {
        return None;
    }
    let answered: Vec<&str> = e
        .student_eval
        .per_class
        .iter()
        .filter(|c| c.support > 0)
        .map(|c| c.label.as_str())
        .collect();
    match answered.as_slice() {
        [only] => Some(format!(
            "the teacher gave every eval the same label ({only}): agreement with it measures nothing and its labels are not worth distilling — {CHECK}"
        )),
        _ => None,
    }
}

/// The whole report (also stored as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub job_id: String,
    #[serde(flatten)]
    pub evaluation: Evaluation,
    pub costs: Costs,
    pub objective: Verdict,
    pub assumptions: Vec<String>,
}

/// The teacher's price: the first served model with a price, else the teacher's own name.
fn teacher_price<'a>(table: &'a PriceTable, e: &Evaluation, day: i64) -> Option<&'a Price> {
    e.teacher_usage
        .served_models
        .iter()
        .chain(std::iter::once(&e.teacher))
        .find_map(|m| table.lookup(m, day))
}

/// Builds the report from the evaluation.
pub fn build(
    job_id: &str,
    e: &Evaluation,
    prices: &PriceTable,
    compute_usd_per_cpu_hour: f64,
    objective_kind: &str,
    max_drop_points: f64,
) -> Report {
    let day = retort_time::day_of(retort_time::now_ms());
    let price = teacher_price(prices, e, day);
    let u = &e.teacher_usage;
    let teacher_usd_per_1k = price
        .map(|p| (u.mean_input_tokens * p.input + u.mean_output_tokens * p.output) / 1e6 * 1000.0);
    let student_usd_per_1k = e.latency.mean_us / 1e6 / 3600.0 * compute_usd_per_cpu_hour * 1000.0;
    let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
    let costs = Costs {
        teacher_usd_per_1k,
        teacher_price: price.map(|p| {
            format!(
                "{} (${}/M input, ${}/M output)",
                p.version(),
                p.input,
                p.output
            )
        }),
        student_usd_per_1k,
        compute_usd_per_cpu_hour,
        cost_ratio: teacher_usd_per_1k.and_then(|t| ratio(t, student_usd_per_1k)),
        speed_ratio: ratio(u.mean_latency_ms * 1000.0, e.latency.p50_us).unwrap_or(0.0),
        speed_ratio_via_gateway: e
            .gateway_latency
            .as_ref()
            .and_then(|g| ratio(u.mean_latency_ms * 1000.0, g.p50_us)),
        savings_usd_per_1k: teacher_usd_per_1k.map(|t| t - student_usd_per_1k),
    };
    let drop = max_drop_points / 100.0;
    let generation = e.task == TaskKind::Generation;
    let metric = if generation {
        "exact match"
    } else {
        "accuracy"
    };
    let mut objective = match (e.student_accuracy, e.teacher_accuracy) {
        (Some(s), Some(t)) => Verdict {
            kind: objective_kind.into(),
            max_accuracy_drop_points: max_drop_points,
            rule: format!(
                "student {metric} {:.2}% ≥ teacher {metric} {:.2}% − {max_drop_points} points",
                s * 100.0,
                t * 100.0
            ),
            met: s + 1e-12 >= t - drop,
            warning: None,
        },
        _ => Verdict {
            kind: objective_kind.into(),
            max_accuracy_drop_points: max_drop_points,
            rule: format!(
                "{} with the teacher {:.2}% ≥ 100% − {max_drop_points} points (the evals have no expected answers)",
                if generation {
                    "identical answers"
                } else {
                    "agreement"
                },
                e.agreement * 100.0
            ),
            met: e.agreement + 1e-12 >= 1.0 - drop,
            warning: None,
        },
    };
    if let Some(w) = teacher_warning(e) {
        objective.met = false;
        objective.warning = Some(w);
    }
    let mut assumptions = vec![
        format!(
            "Teacher cost per request = mean tokens of its answers in this job ({:.1} input, {:.1} output over {} answers) × the price of the served model; cached-input discounts are not applied.",
            u.mean_input_tokens, u.mean_output_tokens, u.answers
        ),
        match &costs.teacher_price {
            Some(p) => format!("Teacher price: {p}, from the price table in force today."),
            None => format!(
                "No price is configured for the teacher ({}; served as {}): its cost is unknown.",
                e.teacher,
                u.served_models.join(", ")
            ),
        },
        format!(
            "Student cost per request = mean single-item in-process latency ({:.1} µs) × ${compute_usd_per_cpu_hour}/CPU-hour (configured `compute_usd_per_cpu_hour`), one core per request, no idle capacity.",
            e.latency.mean_us
        ),
        format!(
            "Teacher latency = mean end-to-end time of its calls through the gateway when first made ({:.1} ms); cached answers keep the time of their first call.",
            u.mean_latency_ms
        ),
        format!(
            "Student latency in-process: {} single predictions on backend {} after warm-up, on this machine.",
            e.latency.n, e.backend
        ),
        "The student reads the rendered prompt (template + input): clients must send that same text as the last user message.".into(),
    ];
    if generation {
        assumptions.push("Generation: the teacher's answers and the expected answers are trimmed and their whitespace collapsed to single spaces; exact match then compares them byte for byte with the student's greedy generation (case and punctuation count).".into());
        assumptions.push("Character error rate (CER) = Σ Levenshtein distance in characters ÷ Σ characters of the reference answers (an empty reference counts as 1 character); it can exceed 100%.".into());
        assumptions.push(
            "Student latency and cost are those of one greedy generation (encoder once, decoder token by token, no batching); the student's tokens are bytes."
                .into(),
        );
        if e.student_accuracy.is_none() {
            assumptions.push("The evals have no expected answers: exact match and CER are against the teacher's answers.".into());
        } else {
            assumptions.push(
                "A teacher call that failed, or whose answer was empty, counts as an empty (wrong) teacher answer."
                    .into(),
            );
        }
    } else if e.student_accuracy.is_none() {
        assumptions.push(
            "The evals have no expected answers: accuracy is agreement with the teacher.".into(),
        );
    } else {
        assumptions.push("A teacher call that failed, or whose answer named no label, counts as a wrong teacher answer.".into());
    }
    if let Some(g) = &e.gateway_latency {
        assumptions.push(format!(
            "Latency through the gateway: {} sequential requests to {} over HTTP on loopback.",
            g.n,
            e.deployed_model
                .as_deref()
                .unwrap_or("the deployed student")
        ));
    }
    Report {
        job_id: job_id.into(),
        evaluation: e.clone(),
        costs,
        objective,
        assumptions,
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| format!("{:.2}%", v * 100.0))
}

fn usd(x: Option<f64>) -> String {
    match x {
        None => "unknown".into(),
        Some(v) if v != 0.0 && v.abs() < 0.001 => format!("${v:.3e}"),
        Some(v) => format!("${v:.6}"),
    }
}

fn short(s: &str, n: usize) -> String {
    let one_line = s.replace(['\n', '\r', '|'], " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

/// The student's latency through the gateway, for the reports' tables.
fn gateway_cell(e: &Evaluation) -> String {
    e.gateway_latency.as_ref().map_or_else(
        || "not deployed".into(),
        |l| {
            format!(
                "p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs",
                l.p50_us, l.p95_us, l.p99_us
            )
        },
    )
}

/// The report's "Labelling" and "Training" sections, shared by both task kinds: `unparseable` names what
/// the teacher's unusable answers were and introduces the answer counts, each written by `count`;
/// `metric` names what the best epoch was chosen on.
fn labelling_and_training_markdown(
    m: &mut String,
    e: &Evaluation,
    unparseable: &str,
    count: impl Fn(&str, &usize) -> String,
    metric: &str,
) {
    let s = &e.label_stats;
    let _ = writeln!(
        m,
        "## Labelling\n\n{} items: {} answered now, {} from the cache, {} calls failed, {} {unparseable}: {}.\n",
        s.items,
        s.fresh,
        s.cached,
        s.failed_calls,
        s.unparseable,
        s.label_counts
            .iter()
            .map(|(l, n)| count(l, n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for f in &s.failure_examples {
        let _ = writeln!(m, "- {}", short(f, 160));
    }
    let _ = writeln!(
        m,
        "\n## Training\n\n{} examples, {} for validation; {} epochs ({}), best epoch {} at {:.2}% {metric}, {:.1} s.\n",
        e.training.train_examples,
        e.training.validation_examples,
        e.training.epochs_run,
        if e.training.stopped_early {
            "stopped early"
        } else {
            "no early stop"
        },
        e.training.best_epoch,
        e.training.best_val_accuracy * 100.0,
        e.training.train_secs
    );
}

impl Report {
    /// The objective's verdict, with the warning that overrides it above it, in bold.
    fn objective_markdown(&self, m: &mut String) {
        if let Some(w) = &self.objective.warning {
            let _ = writeln!(m, "**Warning: {w}.**\n");
        }
        let _ = writeln!(
            m,
            "**Objective** ({}): {} — **{}**.\n",
            self.objective.kind,
            self.objective.rule,
            if self.objective.met { "met" } else { "not met" }
        );
    }

    /// The cost row of the table and the speed and cost ratios under it.
    fn costs_markdown(&self, m: &mut String) {
        let c = &self.costs;
        let _ = writeln!(
            m,
            "| cost per 1,000 requests | {} | {} |",
            usd(c.teacher_usd_per_1k),
            usd(Some(c.student_usd_per_1k))
        );
        let _ = writeln!(
            m,
            "\nSpeed ratio (teacher ÷ student): **{:.0}×** in-process{}. Cost ratio: **{}**. Saved per 1,000 requests: {}.\n",
            c.speed_ratio,
            c.speed_ratio_via_gateway
                .map_or_else(String::new, |r| format!(", {r:.0}× through the gateway")),
            c.cost_ratio
                .map_or_else(|| "unknown".into(), |r| format!("{r:.0}×")),
            usd(c.savings_usd_per_1k)
        );
    }

    /// The body of a generation job's report (after its title).
    fn generation_markdown(&self, m: &mut String, g: &GenerationEval) {
        let e = &self.evaluation;
        let gold = e.student_accuracy.is_some();
        let _ = writeln!(
            m,
            "Task: **generation**. Teacher `{}` → student `{}` ({} parameters, {:.1} KiB, backend `{}`).\n",
            e.teacher,
            e.student,
            e.parameters,
            e.artefact_bytes as f64 / 1024.0,
            e.backend,
        );
        self.objective_markdown(m);
        let against = if gold {
            "the expected answers"
        } else {
            "the teacher's answers"
        };
        let _ = writeln!(m, "| | teacher | student |\n|---|---|---|");
        let _ = writeln!(
            m,
            "| exact match on {} evals (against {against}) | {} | {} |",
            e.n_evals,
            pct(e.teacher_accuracy),
            pct(Some(g.student.exact_match))
        );
        let _ = writeln!(
            m,
            "| character error rate | {} | {} |",
            pct(g.teacher_cer),
            pct(Some(g.student_cer))
        );
        let _ = writeln!(
            m,
            "| identical answers (student = teacher) | — | {} (on {} evals; CER against the teacher {}) |",
            pct(Some(e.agreement)),
            e.agreement_n,
            pct(g.agreement_cer)
        );
        let gw = gateway_cell(e);
        let _ = writeln!(
            m,
            "| latency in-process (one generation) | — | p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs |",
            e.latency.p50_us, e.latency.p95_us, e.latency.p99_us
        );
        let _ = writeln!(
            m,
            "| latency through the gateway | mean {:.1} ms, p50 {:.1} ms | {gw} |",
            e.teacher_usage.mean_latency_ms, e.teacher_usage.p50_latency_ms
        );
        let _ = writeln!(
            m,
            "| tokens per answer | {:.1} | {:.1} (bytes) |",
            e.teacher_usage.mean_output_tokens, g.mean_output_tokens
        );
        let _ = writeln!(
            m,
            "| throughput in-process (batches of 128) | — | {:.0} answers/s |",
            e.throughput_per_sec
        );
        self.costs_markdown(&mut *m);
        labelling_and_training_markdown(
            m,
            e,
            "answers were empty. Most frequent answers",
            |l, n| format!("“{}” ×{n}", short(l, 40)),
            "validation exact match",
        );
        let _ = writeln!(
            m,
            "## Errors (student, against {against}): {} of {}\n\n| input | expected | student | CER |\n|---|---|---|---|",
            ((1.0 - g.student.exact_match) * g.student.examples as f64).round(),
            g.student.examples
        );
        for x in &g.student.errors {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {:.2} |",
                short(&x.input, 60),
                short(&x.expected, 40),
                short(&x.predicted, 40),
                x.cer
            );
        }
        if let Some(t) = &g.teacher {
            let _ = writeln!(
                m,
                "\nTeacher errors against the expected answers, first {}: {}.",
                t.errors.len().min(5),
                t.errors
                    .iter()
                    .take(5)
                    .map(|x| format!(
                        "“{}” for “{}”",
                        short(&x.predicted, 30),
                        short(&x.expected, 30)
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let _ = writeln!(m, "\n## Assumptions\n");
        for a in &self.assumptions {
            let _ = writeln!(m, "- {a}");
        }
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let e = &self.evaluation;
        let mut m = String::new();
        let _ = writeln!(m, "# Distillation report `{}`\n", self.job_id);
        if let Some(g) = &e.generation {
            self.generation_markdown(&mut m, g);
            return m;
        }
        let _ = writeln!(
            m,
            "Teacher `{}` → student `{}` ({} parameters, {:.1} KiB, backend `{}`), labels: {}.\n",
            e.teacher,
            e.student,
            e.parameters,
            e.artefact_bytes as f64 / 1024.0,
            e.backend,
            e.labels.join(", ")
        );
        self.objective_markdown(&mut m);
        let _ = writeln!(m, "| | teacher | student |\n|---|---|---|");
        let _ = writeln!(
            m,
            "| accuracy on {} evals | {} | {} |",
            e.n_evals,
            pct(e.teacher_accuracy),
            pct(e.student_accuracy)
        );
        let _ = writeln!(
            m,
            "| agreement with the teacher | — | {} (on {} evals) |",
            pct(Some(e.agreement)),
            e.agreement_n
        );
        let gw = gateway_cell(e);
        let _ = writeln!(
            m,
            "| latency in-process | — | p50 {:.0} µs, p95 {:.0} µs, p99 {:.0} µs |",
            e.latency.p50_us, e.latency.p95_us, e.latency.p99_us
        );
        let _ = writeln!(
            m,
            "| latency through the gateway | mean {:.1} ms, p50 {:.1} ms | {gw} |",
            e.teacher_usage.mean_latency_ms, e.teacher_usage.p50_latency_ms
        );
        let _ = writeln!(
            m,
            "| throughput in-process | — | {:.0} predictions/s |",
            e.throughput_per_sec
        );
        self.costs_markdown(&mut m);
        labelling_and_training_markdown(
            &mut m,
            e,
            "answers named no label. Training labels",
            |l, n| format!("{l} {n}"),
            "validation accuracy",
        );
        let _ = writeln!(
            m,
            "## Errors by class (student, against {})\n\n| class | support | accuracy | examples of errors |\n|---|---|---|---|",
            if e.student_accuracy.is_some() {
                "the expected answers"
            } else {
                "the teacher"
            }
        );
        for cl in &e.student_eval.per_class {
            let ex = cl
                .errors
                .iter()
                .take(3)
                .map(|x| format!("“{}” → {}", short(&x.text, 80), x.predicted))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = writeln!(
                m,
                "| {} | {} | {:.2}% | {} |",
                cl.label,
                cl.support,
                cl.accuracy * 100.0,
                ex
            );
        }
        if let Some(t) = &e.teacher_eval {
            let _ = writeln!(
                m,
                "\nTeacher by class: {}.",
                t.per_class
                    .iter()
                    .map(|c| format!("{} {:.2}%", c.label, c.accuracy * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let _ = writeln!(m, "\n## Assumptions\n");
        for a in &self.assumptions {
            let _ = writeln!(m, "- {a}");
        }
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use retort_training::eval::ClassReport;

    use super::*;

    fn class(label: &str, support: usize, correct: usize) -> ClassReport {
        ClassReport {
            label: label.into(),
            support,
            correct,
            accuracy: correct as f64 / support.max(1) as f64,
            errors: Vec::new(),
        }
    }

    /// A spam/ham evaluation on 100 evals: the student agrees with the teacher on all of them.
    fn evaluation(
        student: Option<f64>,
        teacher: Option<f64>,
        per_class: Vec<ClassReport>,
    ) -> Evaluation {
        Evaluation {
            task: TaskKind::Classification,
            generation: None,
            teacher: "teacher".into(),
            student: "linear/tiny".into(),
            backend: "cpu".into(),
            labels: vec!["ham".into(), "spam".into()],
            features: Features::default(),
            label_stats: LabelStats::default(),
            n_evals: 100,
            student_accuracy: student,
            teacher_accuracy: teacher,
            agreement: 1.0,
            agreement_n: 100,
            student_eval: EvalReport {
                n: 100,
                accuracy: student.unwrap_or(1.0),
                per_class,
                confusions: Vec::new(),
            },
            teacher_eval: None,
            latency: LatencyStats {
                n: 100,
                mean_us: 10.0,
                p50_us: 10.0,
                p95_us: 12.0,
                p99_us: 15.0,
                max_us: 20.0,
            },
            throughput_per_sec: 1e5,
            parameters: 1000,
            artefact_bytes: 4096,
            training: Training::default(),
            teacher_usage: TeacherUsage::default(),
            gateway_latency: None,
            deployed_model: None,
        }
    }

    fn report_of(e: &Evaluation) -> Report {
        let prices = PriceTable::new(Vec::new()).unwrap();
        build("dj-test", e, &prices, 0.05, "max_cost_savings", 1.0)
    }

    #[test]
    fn a_teacher_right_on_almost_no_eval_fails_the_objective_loudly() {
        // Student and teacher equally (un)able: by the accuracy rule alone this would be "met".
        let e = evaluation(
            Some(0.02),
            Some(0.03),
            vec![class("ham", 50, 1), class("spam", 50, 1)],
        );
        let r = report_of(&e);
        assert!(!r.objective.met, "{:?}", r.objective);
        let warning = r.objective.warning.as_deref().unwrap();
        assert_eq!(
            warning,
            "the teacher answered 3 % of the evals correctly: its labels are not worth distilling — check the teacher and the template"
        );
        let md = r.markdown();
        assert!(md.contains(&format!("**Warning: {warning}.**")), "{md}");
        assert!(md.contains("— **not met**"), "{md}");
    }

    #[test]
    fn a_good_teacher_gets_no_warning_and_the_usual_verdict() {
        let e = evaluation(
            Some(0.95),
            Some(0.96),
            vec![class("ham", 50, 48), class("spam", 50, 47)],
        );
        let r = report_of(&e);
        assert!(r.objective.met, "{:?}", r.objective);
        assert_eq!(r.objective.warning, None);
        assert!(!r.markdown().contains("Warning"));
        // A verdict stored before warnings existed still reads.
        let json = serde_json::to_value(&r.objective).unwrap();
        assert!(json.get("warning").is_none(), "{json}");
    }

    #[test]
    fn the_floor_is_twenty_percent_of_the_expected_answers() {
        let per_class = || vec![class("ham", 50, 10), class("spam", 50, 10)];
        assert!(teacher_warning(&evaluation(Some(0.2), Some(0.19), per_class())).is_some());
        assert!(teacher_warning(&evaluation(Some(0.2), Some(0.2), per_class())).is_none());
    }

    #[test]
    fn without_expected_answers_a_teacher_with_one_label_for_every_eval_is_degenerate() {
        // Agreement 100 % with a teacher that said "ham" to all 100 evals measures nothing.
        let e = evaluation(
            None,
            None,
            vec![class("ham", 100, 100), class("spam", 0, 0)],
        );
        let r = report_of(&e);
        assert!(!r.objective.met, "{:?}", r.objective);
        assert!(
            r.objective
                .warning
                .as_deref()
                .unwrap()
                .starts_with("the teacher gave every eval the same label (ham)"),
            "{:?}",
            r.objective
        );
        let varied = evaluation(
            None,
            None,
            vec![class("ham", 60, 60), class("spam", 40, 40)],
        );
        assert!(report_of(&varied).objective.met);
    }
}
