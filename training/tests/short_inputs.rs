//! Short inputs: one word in, a label out, the label carried by the word's suffix. Word n-grams
//! cannot learn it (every test word is unseen), character n-grams can; and the prompt template the
//! words were rendered with is stripped, in training and in serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;

use retort_training::backend::{self, Inference, Training};
use retort_training::data::{self, Example, LabelVocab, SplitMix64};
use retort_training::model::LinearBagConfig;
use retort_training::{
    Predictor, StudentConfig, StudentSpec, TrainJob, TrainOptions, Trained, eval, train,
};

const TEMPLATE: &str =
    "What part of speech is this English word? Answer noun, verb, adjective or adverb.\n\n{input}";

/// (suffix, label): four noun suffixes, three verb, three adjective, one adverb (majority 4/11).
const SUFFIXES: [(&str, &str); 11] = [
    ("tion", "noun"),
    ("ness", "noun"),
    ("ment", "noun"),
    ("ity", "noun"),
    ("ize", "verb"),
    ("ate", "verb"),
    ("ify", "verb"),
    ("ous", "adjective"),
    ("ful", "adjective"),
    ("ive", "adjective"),
    ("ly", "adverb"),
];

/// `n` made-up words (random stems of 2–3 syllables, each used once) with a suffix that decides
/// the label.
fn words(n: usize, seed: u64) -> Vec<Example> {
    let mut rng = SplitMix64::new(seed);
    let consonants = b"bcdfghklmnprstvz";
    let vowels = b"aeiou";
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while out.len() < n {
        let syllables = 2 + (rng.next_u64() % 2) as usize;
        let mut stem = String::new();
        for _ in 0..syllables {
            stem.push(consonants[(rng.next_u64() % consonants.len() as u64) as usize] as char);
            stem.push(vowels[(rng.next_u64() % vowels.len() as u64) as usize] as char);
        }
        if !seen.insert(stem.clone()) {
            continue;
        }
        let (suffix, label) = SUFFIXES[(rng.next_u64() % SUFFIXES.len() as u64) as usize];
        out.push(Example::new(format!("{stem}{suffix}"), label));
    }
    out
}

struct Data {
    labels: LabelVocab,
    train: Vec<Example>,
    validation: Vec<Example>,
    test: Vec<Example>,
}

fn data(render: bool) -> Data {
    let mut all = words(600, 7);
    if render {
        for e in &mut all {
            e.text = TEMPLATE.replace("{input}", &e.text);
        }
    }
    let outer = data::split(&all, 0.2, 1).unwrap();
    let inner = data::split(&outer.train, 0.2, 2).unwrap();
    Data {
        labels: LabelVocab::from_examples(&all).unwrap(),
        train: inner.train,
        validation: inner.validation,
        test: outer.validation,
    }
}

fn run(config: StudentConfig, d: &Data, template: Option<&str>) -> Trained<Inference> {
    let job = TrainJob {
        config,
        labels: d.labels.clone(),
        train: &d.train,
        validation: &d.validation,
        options: TrainOptions::new()
            .with_max_epochs(10)
            .with_template(template.map(str::to_string)),
        checkpoint_dir: None,
    };
    train::<Training>(&job, &backend::device(), |_| ControlFlow::Continue(())).unwrap()
}

fn majority(examples: &[Example]) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for e in examples {
        *counts.entry(e.label.as_str()).or_insert(0usize) += 1;
    }
    *counts.values().max().unwrap() as f64 / examples.len() as f64
}

#[test]
fn character_ngrams_learn_single_words_that_word_ngrams_cannot() {
    let d = data(false);
    let majority = majority(&d.test);
    let spec: StudentSpec = "linear/small".parse().unwrap();
    let chars = run(spec.config(d.labels.len()).unwrap(), &d, None);
    let with_chars = eval::evaluate(&chars.predictor, &d.test, 3)
        .unwrap()
        .accuracy;
    let words_only = run(
        StudentConfig::Linear(LinearBagConfig::new(d.labels.len()).with_buckets(1 << 18)),
        &d,
        None,
    );
    let without = eval::evaluate(&words_only.predictor, &d.test, 3)
        .unwrap()
        .accuracy;
    eprintln!(
        "majority {majority:.3}, linear/small (word + char n-grams) {with_chars:.3}, words only {without:.3}"
    );
    assert!(
        with_chars >= 0.9 && with_chars >= majority + 0.4,
        "char n-grams: {with_chars} (majority {majority})"
    );
    // Every test word is unseen: words alone can do no better than guessing the majority.
    assert!(without <= majority + 0.05, "words only: {without}");

    // The MLP learns the same from character n-grams.
    let spec: StudentSpec = "mlp/tiny".parse().unwrap();
    let mlp = run(spec.config(d.labels.len()).unwrap(), &d, None);
    let mlp_accuracy = eval::evaluate(&mlp.predictor, &d.test, 3).unwrap().accuracy;
    eprintln!("mlp/tiny {mlp_accuracy:.3}");
    assert!(mlp_accuracy >= 0.9, "mlp/tiny: {mlp_accuracy}");
}

#[test]
fn the_template_is_stripped_in_training_and_serving() {
    let d = data(true);
    let spec: StudentSpec = "cnn/tiny".parse().unwrap();
    let trained = run(spec.config(d.labels.len()).unwrap(), &d, Some(TEMPLATE));
    assert_eq!(
        trained.predictor.metadata().template.as_deref(),
        Some(TEMPLATE)
    );
    let accuracy = eval::evaluate(&trained.predictor, &d.test, 3)
        .unwrap()
        .accuracy;
    eprintln!("cnn/tiny on rendered words, template stripped: {accuracy:.3}");
    assert!(accuracy >= 0.85, "{accuracy}");

    // The artefact keeps its template: a rendered request and the bare word get the same answer,
    // and the student reads only the word's bytes.
    let dir = tempfile::tempdir().unwrap();
    trained.predictor.save(dir.path()).unwrap();
    let served = Predictor::<Inference>::load_for_serving(dir.path()).unwrap();
    assert_eq!(served.metadata().template.as_deref(), Some(TEMPLATE));
    for e in &d.test {
        let word = e.text.rsplit('\n').next().unwrap();
        let rendered = served.classify(&e.text);
        let bare = served.classify(word);
        assert_eq!(rendered.label, bare.label, "{word}");
        assert_eq!(rendered.input_tokens, word.len());
        assert_eq!(
            served.predict(&[e.text.as_str()])[0].0,
            rendered.label,
            "{word}"
        );
    }
    // A request the template did not render is read whole.
    let other = "Is this a noun? happiness";
    assert_eq!(served.classify(other).input_tokens, other.len());

    // A caller that does not name the template (distill today) gets it inferred from the texts.
    let spec: StudentSpec = "linear/tiny".parse().unwrap();
    let inferred = run(spec.config(d.labels.len()).unwrap(), &d, None);
    let template = inferred.predictor.metadata().template.clone().unwrap();
    let word = d.test[0].text.rsplit('\n').next().unwrap();
    assert_eq!(
        retort_training::template::strip(&template, &d.test[0].text),
        word
    );
    let accuracy = eval::evaluate(&inferred.predictor, &d.test, 3)
        .unwrap()
        .accuracy;
    assert!(accuracy >= 0.85, "{accuracy}");
}
