//! The selector learns from synthetic histories whose truth is known.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::model::{StudentClass, StudentSpec, TaskKind};

/// Short inputs favour the byte CNN, long ones the n-gram bags; "hard" tasks (many labels) defeat
/// every student. Bigger sizes are a little better and slower.
fn truth(ctx: &TaskContext, arm: &StudentSpec) -> Outcome {
    let short = ctx.mean_input_chars < 40.0;
    let hard = ctx.n_labels >= 30;
    let class_acc = match (arm.class, short) {
        (StudentClass::Cnn, true) => 0.86,
        (StudentClass::Linear, true) => 0.55,
        (StudentClass::Mlp, true) => 0.68,
        (_, true) => 0.62,
        (StudentClass::Linear, false) => 0.89,
        (StudentClass::Mlp, false) => 0.90,
        (StudentClass::Cnn, false) => 0.80,
        (_, false) => 0.78,
    };
    let size = StudentClass::SIZES
        .iter()
        .position(|s| *s == arm.size)
        .unwrap_or(0) as f64;
    let acc = if hard {
        0.35 + 0.02 * size
    } else {
        class_acc + 0.01 * size
    };
    let base_us = match arm.class {
        StudentClass::Linear => 10.0,
        StudentClass::Mlp => 30.0,
        StudentClass::Cnn => 300.0,
        _ => 600.0,
    };
    let latency_us = base_us * (1.0 + size);
    Outcome {
        accuracy: acc,
        latency_us,
        usd_per_1k: latency_us * 1.39e-8,
        train_secs: latency_us / 10.0,
    }
}

fn task(name: usize, short: bool, hard: bool) -> TaskContext {
    let mut c = TaskContext {
        kind: TaskKind::Classification,
        n_train: 1000 + 300 * name,
        n_evals: 200,
        n_labels: if hard { 40 } else { 2 + name % 5 },
        label_balance: 0.8,
        majority_fraction: 0.4,
        mean_input_chars: if short {
            6.0 + name as f64
        } else {
            300.0 + 40.0 * name as f64
        },
        p95_input_chars: if short { 12.0 + name as f64 } else { 900.0 },
        mean_output_chars: 5.0,
        mean_input_words: if short { 1.0 } else { 50.0 },
        vocabulary: if short { 900 } else { 20_000 },
        type_token_ratio: if short { 0.9 } else { 0.2 },
        alpha_fraction: 0.8,
        digit_fraction: 0.01,
        punct_fraction: 0.05,
        non_ascii_fraction: 0.0,
        teacher_accuracy: Some(0.88),
        teacher_usd_per_1k: Some(0.5),
        teacher_latency_us: Some(800_000.0),
    };
    if hard {
        c.teacher_accuracy = Some(0.9);
    }
    c
}

fn history(tasks: &[(usize, bool, bool)]) -> Vec<Experience> {
    let mut out = Vec::new();
    for &(name, short, hard) in tasks {
        let ctx = task(name, short, hard);
        for arm in arms_for(TaskKind::Classification)
            .iter()
            .filter_map(Arm::student)
        {
            out.push(Experience {
                task: format!("t{name}"),
                context: ctx.clone(),
                arm: arm.clone(),
                budget: Budget::FULL,
                outcome: truth(&ctx, arm),
                evaluated: 200,
            });
        }
    }
    out
}

fn past() -> Vec<(usize, bool, bool)> {
    vec![
        (0, true, false),
        (1, false, false),
        (2, true, false),
        (3, false, false),
        (4, true, false),
        (5, false, false),
        (6, false, true),
        (7, true, true),
        (8, true, false),
        (9, false, false),
    ]
}

fn top_student(r: &Recommendation) -> StudentSpec {
    r.students().next().unwrap().arm.student().unwrap().clone()
}

#[test]
fn it_prefers_the_arm_that_won_on_similar_past_tasks() {
    let s = Selector::rebuild(history(&past())).unwrap();
    assert_eq!(s.tasks(), 10);
    let best = Objective::MaxAccuracy {
        max_latency_us: None,
        max_usd_per_1k: None,
    };
    let short = s.recommend(&task(11, true, false), &best, &[], 64, 1);
    assert_eq!(
        top_student(&short).class,
        StudentClass::Cnn,
        "{:#?}",
        short.ranked
    );
    let long = s.recommend(&task(12, false, false), &best, &[], 64, 1);
    let top = top_student(&long).class;
    assert!(
        matches!(top, StudentClass::Mlp | StudentClass::Linear),
        "{top}: {:#?}",
        long.ranked
    );
    // Predictions carry uncertainty, and the CNN's predicted accuracy on short inputs is near its truth.
    let cnn = short
        .ranked
        .iter()
        .find(|r| {
            r.arm
                .student()
                .is_some_and(|a| a.class == StudentClass::Cnn)
        })
        .unwrap();
    assert!(cnn.accuracy.sd > 0.0);
    assert!(
        (cnn.accuracy.mean - 0.87).abs() < 0.06,
        "{:?}",
        cnn.accuracy
    );
    // Under max_cost_savings on a long-input task the cheapest arm that meets the floor wins: a
    // linear bag, not the slow CNN.
    let cheap = s.recommend(&task(13, false, false), &Objective::default(), &[], 64, 1);
    assert!(!cheap.keep_teacher(), "{:#?}", cheap.ranked);
    assert_eq!(
        top_student(&cheap).class,
        StudentClass::Linear,
        "{:#?}",
        cheap.ranked
    );
}

#[test]
fn it_says_keep_the_teacher_where_no_arm_came_close() {
    let s = Selector::rebuild(history(&past())).unwrap();
    let o = Objective::MaxCostSavings {
        max_accuracy_drop: 0.02,
    };
    let hard = s.recommend(&task(14, false, true), &o, &[], 64, 3);
    assert!(hard.keep_teacher(), "{:#?}", hard.ranked);
    let teacher = &hard.ranked[0];
    assert!(teacher.p_best > 0.5, "{:#?}", hard.ranked);
    assert!(hard.students().all(|r| r.p_feasible < 0.3));
    let easy = s.recommend(
        &task(15, true, false),
        &Objective::MinLatency { min_accuracy: 0.8 },
        &[],
        64,
        3,
    );
    assert!(!easy.keep_teacher(), "{:#?}", easy.ranked);
    assert_eq!(top_student(&easy).class, StudentClass::Cnn);
}

#[test]
fn probes_on_the_new_task_correct_the_prior() {
    let s = Selector::rebuild(history(&past())).unwrap();
    let ctx = task(16, true, false);
    let best = Objective::MaxAccuracy {
        max_latency_us: None,
        max_usd_per_1k: None,
    };
    let before = s.recommend(&ctx, &best, &[], 0, 1);
    let first = top_student(&before);
    assert_eq!(first.class, StudentClass::Cnn);
    // On this task the CNN turns out poor at a quarter budget, and the MLP strong.
    let probe = |arm: &StudentSpec, acc: f64| Experience {
        task: "new".into(),
        context: ctx.clone(),
        arm: arm.clone(),
        budget: Budget {
            data_fraction: 0.25,
            epoch_fraction: 0.25,
        },
        outcome: Outcome {
            accuracy: acc,
            latency_us: 300.0,
            usd_per_1k: 4e-6,
            train_secs: 1.0,
        },
        evaluated: 400,
    };
    let mlp: StudentSpec = "mlp/small".parse().unwrap();
    let probes = [probe(&first, 0.30), probe(&mlp, 0.95)];
    let after = s.recommend(&ctx, &best, &probes, 0, 1);
    assert_eq!(top_student(&after), mlp, "{:#?}", after.ranked);
    let probed = after
        .ranked
        .iter()
        .find(|r| r.arm.student() == Some(&first))
        .unwrap();
    assert!(probed.probed && probed.accuracy.mean < 0.6, "{probed:?}");
}

#[test]
fn a_selector_restored_from_its_state_ranks_the_same_and_a_foreign_state_is_refused() {
    let mut s = Selector::rebuild(history(&past()[..4])).unwrap();
    let extra = history(&[(20, true, false)]);
    for e in extra {
        s.record(e).unwrap();
    }
    s.retrain().unwrap();
    let state = s.state();
    let json = serde_json::to_string(&state).unwrap();
    let back = Selector::from_state(serde_json::from_str(&json).unwrap()).unwrap();
    let ctx = task(21, true, false);
    let o = Objective::default();
    assert_eq!(
        s.recommend(&ctx, &o, &[], 16, 5),
        back.recommend(&ctx, &o, &[], 16, 5)
    );
    let mut foreign = state.clone();
    foreign.version = 999;
    assert!(Selector::from_state(foreign).is_err());
    // Bad results are refused, not learned.
    let mut bad = history(&[(22, true, false)]).remove(0);
    bad.outcome.accuracy = 1.5;
    assert!(s.record(bad).is_err());
    let mut wrong_kind = history(&[(23, true, false)]).remove(0);
    wrong_kind.arm = "seq2seq/tiny".parse().unwrap();
    assert!(s.record(wrong_kind).is_err());
}

#[test]
fn with_no_history_screening_spans_the_classes() {
    let s = Selector::new().unwrap();
    let r = s.recommend(&task(30, true, false), &Objective::default(), &[], 8, 1);
    let first: Vec<StudentClass> = r
        .students()
        .take(3)
        .map(|x| x.arm.student().unwrap().class)
        .collect();
    let mut distinct = first.clone();
    distinct.dedup();
    assert_eq!(first.len(), distinct.len(), "{first:?}");
    assert_eq!(r.experiences, 0);
}
