//! The label stage: every rendered prompt asked of the teacher through the gateway (cache first,
//! concurrency-limited, retried), answers normalised to labels, failures counted and reported.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use futures::StreamExt;
use retort_training::{Example, TaskKind};

use super::{Engine, JobSpec, Labelled, write_atomic};
use crate::{
    Error, data,
    report::{LabelStats, TeacherUsage},
    store::CachedAnswer,
};

impl Engine {
    pub(super) async fn label(
        &self,
        id: &str,
        spec: &JobSpec,
        flag: &AtomicBool,
        deadline: Option<i64>,
    ) -> Result<String, Error> {
        let (train, evals) = self.load_items(id)?;
        let prompts: Vec<String> = train
            .iter()
            .chain(&evals)
            .map(|i| data::render(&spec.template, &i.text))
            .collect();
        let hashes: Vec<String> = prompts.iter().map(|p| data::prompt_hash(p)).collect();
        let mut unique: Vec<(String, &str)> = Vec::new();
        let mut seen = HashSet::new();
        for (h, p) in hashes.iter().zip(&prompts) {
            if seen.insert(h.clone()) {
                unique.push((h.clone(), p.as_str()));
            }
        }
        let keys: Vec<String> = unique.iter().map(|(h, _)| h.clone()).collect();
        let mut answers: HashMap<String, CachedAnswer> =
            self.store.cached(&spec.teacher, &keys).await?;
        let cached = answers.len();
        let total = unique.len() as u64;
        self.set_progress(id, |p| {
            p.items_total = total;
            p.items_labelled = cached as u64;
            p.cache_hits = cached as u64;
            p.teacher_failures = 0;
        });
        let misses: Vec<(String, String)> = unique
            .iter()
            .filter(|(h, _)| !answers.contains_key(h))
            .map(|(h, p)| (h.clone(), p.to_string()))
            .collect();
        let session = format!("distill-{id}");
        let generation = spec.task == TaskKind::Generation;
        let max_tokens = generation.then_some(self.cfg.generation_max_tokens);
        let started = Instant::now();
        let mut failures: Vec<String> = Vec::new();
        let mut fresh = 0usize;
        {
            let gateway = &self.gateway;
            let session = session.as_str();
            let teacher = spec.teacher.as_str();
            let mut calls = futures::stream::iter(misses)
                .map(move |(h, prompt): (String, String)| async move {
                    if flag.load(Ordering::SeqCst) {
                        return (h, Err("cancelled".to_string()));
                    }
                    let r = gateway.ask(teacher, &prompt, session, max_tokens).await;
                    (h, r)
                })
                .buffer_unordered(spec.max_teacher_concurrency.max(1));
            let mut done = 0u64;
            while let Some((h, r)) = calls.next().await {
                self.check(flag, deadline, spec.time_limit_secs)?;
                match r {
                    Ok(a) => {
                        let c = CachedAnswer {
                            prompt_hash: h.clone(),
                            answer: a.text,
                            served_model: a.served_model,
                            input_tokens: a.input_tokens,
                            output_tokens: a.output_tokens,
                            latency_ms: a.latency_ms,
                        };
                        self.store.cache(&spec.teacher, &c).await?;
                        answers.insert(h, c);
                        fresh += 1;
                    }
                    Err(e) => failures.push(e),
                }
                done += 1;
                let left = total.saturating_sub(cached as u64 + done);
                let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                let nfail = failures.len() as u64;
                self.set_progress(id, |p| {
                    p.items_labelled = cached as u64 + done - nfail;
                    p.teacher_failures = nfail;
                    p.eta_secs = left as f64 / rate;
                });
            }
        }
        // Labels: the given set, or the teacher's distinct answers on the training inputs; for
        // generation, the answer's text (trimmed, whitespace collapsed).
        let answer_of = |h: &String| answers.get(h).map(|a| a.answer.as_str());
        let normalise = |a: &str| {
            if generation {
                data::normalise_text(a)
            } else {
                data::normalise(a, &spec.labels)
            }
        };
        let nothing = if generation {
            "answer was empty"
        } else {
            "answer named no label"
        };
        let mut stats = LabelStats {
            items: prompts.len(),
            fresh,
            cached,
            failed_calls: failures.len(),
            ..LabelStats::default()
        };
        let mut examples = Vec::new();
        let mut unparseable: Vec<String> = Vec::new();
        for (i, h) in hashes.iter().enumerate().take(train.len()) {
            if let Some(a) = answer_of(h) {
                match normalise(a) {
                    Some(l) => examples.push(Example::new(prompts[i].clone(), l)),
                    None => unparseable.push(a.to_string()),
                }
            }
        }
        let mut eval_teacher = Vec::new();
        for h in hashes.iter().skip(train.len()) {
            let l = answer_of(h).and_then(|a| {
                let n = normalise(a);
                if n.is_none() {
                    unparseable.push(a.to_string());
                }
                n
            });
            eval_teacher.push(l);
        }
        stats.unparseable = unparseable.len();
        stats.failure_examples = failures
            .iter()
            .take(3)
            .map(|f| format!("call failed: {f}"))
            .chain(
                unparseable
                    .iter()
                    .take(3)
                    .map(|a| format!("{nothing}: {a:?}")),
            )
            .collect();
        let bad = stats.failed_calls + stats.unparseable;
        let fraction = bad as f64 / prompts.len().max(1) as f64;
        if fraction > spec.max_teacher_failure_fraction {
            return Err(Error::Job(format!(
                "{bad} of {} teacher answers failed or {} ({:.1}% > the {:.1}% allowed); first: {}",
                prompts.len(),
                if generation {
                    "were empty"
                } else {
                    "named no label"
                },
                fraction * 100.0,
                spec.max_teacher_failure_fraction * 100.0,
                stats.failure_examples.first().cloned().unwrap_or_default()
            )));
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in &examples {
            *counts.entry(e.label.clone()).or_default() += 1;
        }
        let distinct = counts.len();
        if generation {
            // Thousands of distinct answers: the report keeps the most frequent few.
            let mut top: Vec<(String, usize)> =
                counts.iter().map(|(l, n)| (l.clone(), *n)).collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            top.truncate(5);
            stats.label_counts = top;
            counts.clear();
        } else {
            stats.label_counts = counts.iter().map(|(l, n)| (l.clone(), *n)).collect();
        }
        if !generation && counts.len() < 2 {
            return Err(Error::Job(format!(
                "the teacher gave fewer than 2 distinct labels on the training inputs ({}): nothing to learn",
                stats
                    .label_counts
                    .iter()
                    .map(|(l, n)| format!("{l} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if spec.gold_evals && !generation {
            let mut never: Vec<String> = evals
                .iter()
                .filter_map(|e| e.label.clone())
                .filter(|l| !counts.keys().any(|k| k.eq_ignore_ascii_case(l)))
                .collect();
            never.sort();
            never.dedup();
            if !never.is_empty() {
                return Err(Error::Job(format!(
                    "eval labels never produced by the teacher on the training inputs: {} (the teacher's labels: {}); the student cannot learn them",
                    never.join(", "),
                    counts.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if bad > 0 {
            let warn = format!(
                "{} teacher calls failed and {} answers {} (of {}); those items were left out",
                stats.failed_calls,
                stats.unparseable,
                if generation {
                    "were empty"
                } else {
                    "named no label"
                },
                prompts.len()
            );
            self.store.set_error(id, &warn).await?;
        }
        // Teacher usage over every answer of this job (fresh or cached).
        let mut used: Vec<&CachedAnswer> = keys.iter().filter_map(|h| answers.get(h)).collect();
        used.sort_by_key(|a| a.latency_ms);
        let n = used.len().max(1) as f64;
        let mut served: Vec<String> = used.iter().map(|a| a.served_model.clone()).collect();
        served.sort();
        served.dedup();
        let usage = TeacherUsage {
            answers: used.len(),
            mean_input_tokens: used.iter().map(|a| a.input_tokens as f64).sum::<f64>() / n,
            mean_output_tokens: used.iter().map(|a| a.output_tokens as f64).sum::<f64>() / n,
            mean_latency_ms: used.iter().map(|a| a.latency_ms as f64).sum::<f64>() / n,
            p50_latency_ms: used
                .get(used.len() / 2)
                .map_or(0.0, |a| a.latency_ms as f64),
            served_models: served,
        };
        let labelled = Labelled {
            labels: counts.keys().cloned().collect(),
            train: examples,
            eval_teacher,
            stats: stats.clone(),
            usage,
        };
        write_atomic(
            &self.job_dir(id).join("labelled.json"),
            serde_json::to_string(&labelled)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        let kinds = if generation {
            format!("{distinct} distinct answers")
        } else {
            format!(
                "labels: {}",
                stats
                    .label_counts
                    .iter()
                    .map(|(l, n)| format!("{l} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        Ok(format!(
            "{} answers ({} from the teacher now, {} cached), {} failed calls, {} answers {}; {kinds}",
            prompts.len() - stats.failed_calls,
            fresh,
            cached,
            stats.failed_calls,
            stats.unparseable,
            if generation {
                "empty"
            } else {
                "without a label"
            },
        ))
    }
}
