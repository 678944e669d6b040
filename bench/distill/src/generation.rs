//! The generation section of the distill bench: date normalisation (synthetic, generated here
//! deterministically), a simulated teacher that mistypes a given fraction of its answers by one
//! character, answers obtained through the gateway, a `seq2seq` student trained on them and scored
//! on the gold answers (exact match, character error rate) next to the teacher, then deployed and
//! timed through the gateway.
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use retort_proto::v1::{self as pb, students_client::StudentsClient};
use retort_training::{Example, GenTrainJob, StudentSpec, TrainOptions, engine, eval};
use serde_json::{Value, json};

use crate::{ADMIN, Pcts, Teacher, pcts};

/// The prompt the teacher and the student read.
pub const TEMPLATE: &str = "Normalise the date to YYYY-MM-DD: {input}";
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The generation section's settings.
pub struct GenArgs {
    pub train: usize,
    pub evals: usize,
    pub students: Vec<String>,
    pub error_rates: Vec<f64>,
    pub max_epochs: usize,
    pub latency_requests: usize,
    pub concurrency: usize,
}

/// `n` distinct (input, answer) pairs: five surface forms of dates 1990–2030, deterministic.
pub fn dates(n: usize, seed: u64) -> Vec<(String, String)> {
    let mut state = seed;
    let mut next = move |k: u64| {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % k
    };
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (y, m, d) = (1990 + next(41), 1 + next(12) as usize, 1 + next(28));
        let month = MONTHS[m - 1];
        let input = match next(5) {
            0 => format!("{d} {month} {y}"),
            1 => format!("{month} {d}, {y}"),
            2 => format!("{d}.{m}.{y}"),
            3 => format!("{y}/{m}/{d}"),
            _ => format!("{} {d} {y}", &month[..3]),
        };
        if seen.insert(input.clone()) {
            out.push((input, format!("{y:04}-{m:02}-{d:02}")));
        }
    }
    out
}

fn prompt(input: &str) -> String {
    TEMPLATE.replace("{input}", input)
}

struct GenStudent {
    spec: String,
    exact_match: f64,
    cer: f64,
    agreement: f64,
    train_secs: f64,
    epochs: usize,
    params: usize,
    size_bytes: u64,
    in_process: Pcts,
    out_tokens: f64,
    dir: std::path::PathBuf,
}

struct GenRate {
    error_rate: f64,
    teacher_em: f64,
    teacher_cer: f64,
    teacher_in: f64,
    teacher_out: f64,
    label_secs: f64,
    students: Vec<GenStudent>,
    best: usize,
    gateway: Pcts,
    pipeline_secs: f64,
}

/// Labels every prompt through the gateway; answers trimmed, whitespace collapsed (as distill does).
async fn label(
    http: &reqwest::Client,
    url: &str,
    prompts: &[String],
    concurrency: usize,
) -> anyhow::Result<(Vec<String>, u64, u64)> {
    let results: Vec<anyhow::Result<(String, u64, u64)>> = futures::stream::iter(prompts.iter().cloned())
        .map(|p| async move {
            let r: Value = http
                .post(url)
                .bearer_auth(ADMIN)
                .json(&json!({"model": "teacher", "max_tokens": 128, "messages": [{"role": "user", "content": p}]}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let a = r["choices"][0]["message"]["content"].as_str().unwrap_or_default();
            Ok((
                a.split_whitespace().collect::<Vec<_>>().join(" "),
                r["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
                r["usage"]["completion_tokens"].as_u64().unwrap_or(0),
            ))
        })
        .buffered(concurrency)
        .collect()
        .await;
    let (mut answers, mut i, mut o) = (Vec::with_capacity(prompts.len()), 0, 0);
    for r in results {
        let (a, ti, to) = r?;
        answers.push(a);
        i += ti;
        o += to;
    }
    Ok((answers, i, o))
}

async fn run_rate(
    g: &GenArgs,
    rate: f64,
    data: &[(String, String)],
    work: &Path,
) -> anyhow::Result<GenRate> {
    let started = Instant::now();
    eprintln!("== generation, teacher error rate {rate}");
    std::fs::create_dir_all(work)?;
    let key = work.join("teacher.jsonl");
    let lines: String = data
        .iter()
        .map(|(i, a)| format!("{}\n", json!({"prompt": prompt(i), "answer": a})))
        .collect();
    std::fs::write(&key, lines)?;
    let sim_toml = format!(
        "[models.teacher]\nmode = \"dataset\"\ndataset = {:?}\nerror_rate = {rate}\nwrong_answers = \"typo\"\nseed = 7\n",
        key.display().to_string()
    );
    let Teacher { sim, gw, http, url } = Teacher::start(&sim_toml, "").await?;

    let prompts: Vec<String> = data.iter().map(|(i, _)| prompt(i)).collect();
    let t0 = Instant::now();
    let (answers, tin, tout) = label(&http, &url, &prompts, g.concurrency).await?;
    let label_secs = t0.elapsed().as_secs_f64();
    let (teacher_train, teacher_eval) = answers.split_at(g.train);
    let gold: Vec<Example> = prompts[g.train..]
        .iter()
        .zip(&data[g.train..])
        .map(|(p, (_, a))| Example::new(p.clone(), a.clone()))
        .collect();
    let teacher_report = eval::gen_report(&gold, teacher_eval, 0)?;
    eprintln!(
        "  labelled {} prompts in {label_secs:.1}s; teacher exact match {:.4}, CER {:.4}",
        prompts.len(),
        teacher_report.exact_match,
        teacher_report.cer
    );
    let noisy: Vec<Example> = prompts[..g.train]
        .iter()
        .zip(teacher_train)
        .map(|(p, a)| Example::new(p.clone(), a.clone()))
        .collect();
    let cut = noisy.len() * 9 / 10;
    let (fit, validation) = noisy.split_at(cut);

    let mut students = Vec::new();
    for spec in &g.students {
        let s: StudentSpec = spec.parse()?;
        let job = GenTrainJob {
            config: s.config(0)?,
            train: fit,
            validation,
            options: TrainOptions::new()
                .with_max_epochs(g.max_epochs)
                .with_patience(3),
            checkpoint_dir: None,
        };
        let t = Instant::now();
        let trained = engine::train_generator(&job, &mut |p| {
            eprintln!(
                "  {spec} epoch {}: loss {:.4} val exact {:.4} ({:.1}s)",
                p.epoch, p.train_loss, p.val_accuracy, p.epoch_secs
            );
            std::ops::ControlFlow::Continue(())
        })?;
        let train_secs = t.elapsed().as_secs_f64();
        let dir = work.join(spec.replace('/', "-"));
        let size_bytes = trained.generator.save(&dir)?;
        let generator = engine::load_generator(&dir)?;
        let report = engine::evaluate_generation(&generator, &gold, 0)?;
        let texts: Vec<&str> = gold.iter().map(|e| e.text.as_str()).collect();
        let generated = generator.generate_batch(&texts);
        let agreement = generated
            .iter()
            .zip(teacher_eval)
            .filter(|(s, t)| s.text == **t)
            .count() as f64
            / gold.len().max(1) as f64;
        let out_tokens = generated
            .iter()
            .map(|g| g.output_tokens as f64)
            .sum::<f64>()
            / generated.len().max(1) as f64;
        let mut times = Vec::new();
        for text in texts.iter().cycle().take(texts.len().max(300)) {
            let t = Instant::now();
            std::hint::black_box(generator.generate(text));
            times.push(t.elapsed());
        }
        eprintln!(
            "  {spec}: exact match {:.4}, CER {:.4} in {train_secs:.1}s",
            report.exact_match, report.cer
        );
        students.push(GenStudent {
            spec: spec.clone(),
            exact_match: report.exact_match,
            cer: report.cer,
            agreement,
            train_secs,
            epochs: trained.report.epochs_run,
            params: trained.report.num_params,
            size_bytes,
            in_process: pcts(times),
            out_tokens,
            dir,
        });
    }
    let best = (0..students.len())
        .max_by(|&i, &j| {
            students[i]
                .exact_match
                .total_cmp(&students[j].exact_match)
                .then(students[j].cer.total_cmp(&students[i].cer))
        })
        .context("no students")?;

    let mut sc = StudentsClient::connect(format!("http://{}", gw.grpc_addr)).await?;
    let mut req = tonic::Request::new(pb::DeployStudentRequest {
        name: "dates".into(),
        artefact_path: students[best].dir.display().to_string(),
        route: String::new(),
        first: false,
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse()?);
    sc.deploy_student(req).await?;
    let pipeline_secs = started.elapsed().as_secs_f64();
    let mut times: Vec<Duration> = Vec::with_capacity(g.latency_requests);
    for (k, p) in gold
        .iter()
        .map(|e| &e.text)
        .cycle()
        .take(g.latency_requests + 20)
        .enumerate()
    {
        let t = Instant::now();
        let r = http
            .post(&url)
            .bearer_auth(ADMIN)
            .json(
                &json!({"model": "distilled/dates", "messages": [{"role": "user", "content": p}]}),
            )
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await?;
        let d = t.elapsed();
        if !status.is_success() {
            bail!("the deployed student answered {status}: {v}");
        }
        if k >= 20 {
            times.push(d);
        }
    }
    let gateway = pcts(times);
    eprintln!(
        "  through the gateway: p50 {:.0} µs p99 {:.0} µs",
        gateway.p50, gateway.p99
    );
    gw.shutdown().await;
    sim.shutdown();
    let n = prompts.len().max(1) as f64;
    Ok(GenRate {
        error_rate: rate,
        teacher_em: teacher_report.exact_match,
        teacher_cer: teacher_report.cer,
        teacher_in: tin as f64 / n,
        teacher_out: tout as f64 / n,
        label_secs,
        students,
        best,
        gateway,
        pipeline_secs,
    })
}

/// Runs the generation section and returns its Markdown. `prices`: (input, output USD per M
/// tokens, effective date) of the frontier teacher.
pub async fn run(
    g: &GenArgs,
    work: &Path,
    prices: (f64, f64, &str, &str),
    compute_usd_per_core_hour: f64,
    teacher_latency_ms: f64,
) -> anyhow::Result<String> {
    let data = dates(g.train + g.evals, 20_261_124);
    let mut results = Vec::new();
    for &rate in &g.error_rates {
        results.push(run_rate(g, rate, &data, &work.join(format!("gen-{rate}"))).await?);
    }
    let (pin, pout, model, from) = prices;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Short generation: date normalisation — `retort-bench-distill`\n"
    );
    let _ = writeln!(
        md,
        "Data: {} training and {} held-out dates generated deterministically by the bench (five surface forms such \
         as `14 July 2011`, `Jul 14 2011`, `14.7.2011`, `2011/7/14`, years 1990–2030) with gold answers `YYYY-MM-DD`; \
         prompt `{TEMPLATE}`. Teacher: the simulator in dataset mode, `wrong_answers = \"typo\"` (a wrong answer is the \
         right one with one character replaced, dropped or doubled), through the gateway ({} at a time). Students: \
         `seq2seq` (byte-level transformer encoder-decoder) trained on the teacher's answers (10% for early stopping on \
         exact match, at most {} epochs) on {}; exact match (EM) and character error rate (CER = Σ edit distance ÷ Σ \
         reference characters) on the gold answers of the held-out dates. Gateway latency: the best student deployed, \
         then {} OpenAI chat requests one at a time (after 20 warm-up), timed at the client.\n",
        g.train,
        g.evals,
        g.concurrency,
        g.max_epochs,
        retort_training::backend::name(),
        g.latency_requests
    );
    let _ = writeln!(
        md,
        "| teacher error rate | teacher EM / CER | student | student EM / CER | identical to teacher | train s | epochs | params | artefact | in-process p50/p99 µs | gateway p50/p99 µs | pipeline s |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &results {
        for (i, s) in r.students.iter().enumerate() {
            let gw = if i == r.best {
                format!("{:.0} / {:.0}", r.gateway.p50, r.gateway.p99)
            } else {
                "—".into()
            };
            let _ = writeln!(
                md,
                "| {:.2} | {:.2} % / {:.2} % | {}{} | {:.2} % / {:.2} % | {:.2} % | {:.1} | {} | {} | {:.2} MB | {:.0} / {:.0} | {gw} | {:.0} |",
                r.error_rate,
                r.teacher_em * 100.0,
                r.teacher_cer * 100.0,
                s.spec,
                if i == r.best { " **(best)**" } else { "" },
                s.exact_match * 100.0,
                s.cer * 100.0,
                s.agreement * 100.0,
                s.train_secs,
                s.epochs,
                s.params,
                s.size_bytes as f64 / 1e6,
                s.in_process.p50,
                s.in_process.p99,
                r.pipeline_secs
            );
        }
    }
    if let Some(r) = results.first() {
        let best = &r.students[r.best];
        let teacher_per_1k = 1000.0 * (r.teacher_in * pin + r.teacher_out * pout) / 1e6;
        let student_per_1k =
            1000.0 * best.in_process.mean / 1e6 / 3600.0 * compute_usd_per_core_hour;
        let _ = writeln!(
            md,
            "\nCost and speed against a frontier teacher (`{model}` at ${pin}/M input, ${pout}/M output tokens, effective \
             {from}): the teacher's mean usage per date was {:.1} input and {:.1} output tokens (the simulator's word \
             counts) — **${teacher_per_1k:.4} per 1,000 requests**; the student ({}) spends {:.0} µs of one core per \
             answer (in-process mean of one greedy generation, {:.1} output bytes), priced at ${compute_usd_per_core_hour} \
             per core-hour (assumption): **${student_per_1k:.8} per 1,000 requests**, a cost ratio of **{:.0}×**. Speed: \
             assuming the teacher answers in {teacher_latency_ms} ms (the simulator answered at once), the deployed \
             student's {:.2} ms p50 through the gateway is **{:.0}× faster**. Labelling took {:.1} s.\n",
            r.teacher_in,
            r.teacher_out,
            best.spec,
            best.in_process.mean,
            best.out_tokens,
            teacher_per_1k / student_per_1k.max(1e-12),
            r.gateway.p50 / 1e3,
            teacher_latency_ms / (r.gateway.p50 / 1e3).max(1e-9),
            r.label_secs,
        );
    }
    Ok(md)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn dates_are_deterministic_distinct_and_right() {
        let a = super::dates(500, 1);
        assert_eq!(a, super::dates(500, 1));
        let inputs: std::collections::HashSet<_> = a.iter().map(|(i, _)| i).collect();
        assert_eq!(inputs.len(), 500);
        for (input, answer) in &a {
            let (y, rest) = answer.split_once('-').unwrap();
            let (m, d) = rest.split_once('-').unwrap();
            assert!(input.contains(y), "{input} -> {answer}");
            let day = d.trim_start_matches('0');
            assert!(
                input.split(|c: char| !c.is_ascii_digit()).any(|t| t == day),
                "{input} -> {answer}"
            );
            let month: usize = m.parse().unwrap();
            assert!(
                input.contains(&super::MONTHS[month - 1][..3])
                    || input
                        .split(|c: char| !c.is_ascii_digit())
                        .any(|t| t == month.to_string()),
                "{input} -> {answer}"
            );
        }
    }
}
