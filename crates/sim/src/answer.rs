//! What a model answers: the API-independent view of a request ([`Conversation`]), the answer
//! modes, datasets, and the token sequence the wire encoders send.

use std::{
    borrow::Cow,
    collections::HashMap,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use serde::Deserialize;

use crate::{
    SimError,
    config::{AnswerMode, ModelBehavior, WrongAnswers},
};

/// FNV-1a, 64 bit: deterministic across runs and platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(0xcbf2_9ce4_8422_2325, bytes)
}

fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The splitmix64 finalizer: spreads a hash over all 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whitespace-separated words, the simulator's token estimate.
pub(crate) fn count_words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "vitae",
    "gravida",
];

/// An answer's text, cut into tokens: token `i` is `text[ends[i-1]..ends[i]]`, and the tokens
/// concatenated are the text exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Tokens {
    text: String,
    ends: Vec<usize>,
}

impl Tokens {
    /// Cuts `s` after each run of whitespace that follows a word: "a b  c" → "a ", "b  ", "c".
    pub(crate) fn split_words(s: &str) -> Tokens {
        let mut ends = Vec::new();
        let (mut seen_word, mut in_space) = (false, false);
        for (i, c) in s.char_indices() {
            if c.is_whitespace() {
                in_space |= seen_word;
            } else {
                if in_space {
                    ends.push(i);
                    in_space = false;
                }
                seen_word = true;
            }
        }
        if !s.is_empty() {
            ends.push(s.len());
        }
        Tokens {
            text: s.to_owned(),
            ends,
        }
    }

    fn push(&mut self, token: &str) {
        self.text.push_str(token);
        self.ends.push(self.text.len());
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.text[a..b])
    }

    /// Keeps the first `n` tokens; true when something was cut.
    fn truncate(&mut self, n: usize) -> bool {
        if self.ends.len() <= n {
            return false;
        }
        self.ends.truncate(n);
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
        true
    }

    /// The tokens after the prefix `p`, when the text starts with it (a token `p` ends inside is split).
    fn strip_prefix(&self, p: &str) -> Option<Tokens> {
        let rest = self.text.strip_prefix(p)?;
        let cut = p.len();
        let ends = self
            .ends
            .iter()
            .filter(|e| **e > cut)
            .map(|e| e - cut)
            .collect();
        Some(Tokens {
            text: rest.to_owned(),
            ends,
        })
    }
}

/// How the conversation ends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tail {
    /// A user (or system) message.
    User,
    /// An assistant message with this text and no tool calls (prefill).
    Prefill(String),
    /// A tool result with this content.
    ToolResult(String),
}

/// The API-independent view of a generation request.
#[derive(Debug, Clone)]
pub(crate) struct Conversation {
    /// Estimated input tokens (words over system, messages, tool arguments and results; at least 1).
    pub input_tokens: u64,
    /// The text of the last user message.
    pub last_user: String,
    pub tail: Tail,
    /// The last message has the assistant role (with or without text).
    pub ends_with_assistant: bool,
    /// The name of the first function tool offered, if any.
    pub first_tool: Option<String>,
    pub max_tokens: Option<u64>,
}

impl Default for Conversation {
    fn default() -> Self {
        Conversation {
            input_tokens: 0,
            last_user: String::new(),
            tail: Tail::User,
            ends_with_assistant: false,
            first_tool: None,
            max_tokens: None,
        }
    }
}

impl Conversation {
    /// Adds the words of a piece of input to the estimate.
    pub(crate) fn count(&mut self, s: &str) {
        self.input_tokens += count_words(s);
    }

    /// Called once all input is counted.
    pub(crate) fn finish(mut self) -> Self {
        self.input_tokens = self.input_tokens.max(1);
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    /// A hex hash, prefixed by the encoders (`call_`, `toolu_`, `fc_`).
    pub id_hash: String,
    pub name: String,
    /// The JSON arguments, cut into tokens for streaming.
    pub arguments: Tokens,
}

#[derive(Debug, Clone)]
pub(crate) enum Output {
    Text(Tokens),
    ToolCall(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
    ToolCalls,
}

#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub output: Output,
    pub finish: Finish,
    /// Tokens of the answer (text tokens, or argument tokens of a tool call).
    pub answer_tokens: u64,
}

/// Token counts as reported in usage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    /// Estimated input tokens, cached ones included.
    pub input: u64,
    /// The part of `input` reported as cached.
    pub cached: u64,
    /// Answer tokens plus reasoning tokens (reasoning is billed as output on the real APIs).
    pub output: u64,
    pub reasoning: u64,
}

impl Usage {
    pub(crate) fn new(b: &ModelBehavior, conv: &Conversation, answer: &Answer) -> Usage {
        Usage {
            input: conv.input_tokens,
            cached: b.cached_tokens.min(conv.input_tokens),
            output: answer.answer_tokens + b.reasoning_tokens,
            reasoning: b.reasoning_tokens,
        }
    }
}

/// A dataset loaded once: exact lookups are a hash probe.
#[derive(Debug)]
pub(crate) struct Dataset {
    exact: HashMap<String, usize>,
    /// (prompt, index into `answers`) in file order.
    entries: Vec<(String, usize)>,
    /// The distinct answers, in order of first appearance.
    answers: Vec<String>,
}

#[derive(Deserialize)]
struct DatasetLine {
    prompt: String,
    answer: String,
}

impl Dataset {
    pub(crate) fn load(path: &Path) -> Result<Dataset, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Dataset::parse(&text).map_err(|(line, reason)| SimError::Dataset {
            path: path.to_path_buf(),
            line,
            reason,
        })
    }

    fn parse(text: &str) -> Result<Dataset, (usize, String)> {
        let mut ds = Dataset {
            exact: HashMap::new(),
            entries: Vec::new(),
            answers: Vec::new(),
        };
        let mut answer_index: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: DatasetLine = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
            let prompt = l.prompt.trim().to_owned();
            let idx = *answer_index.entry(l.answer.clone()).or_insert_with(|| {
                ds.answers.push(l.answer);
                ds.answers.len() - 1
            });
            ds.exact.entry(prompt.clone()).or_insert(ds.entries.len());
            ds.entries.push((prompt, idx));
        }
        Ok(ds)
    }

    /// The answer to `question`: exact match, else the first prompt the question contains, else
    /// "unknown"; matched prompts are answered wrongly at `error_rate`, deterministically per prompt,
    /// in the way `wrong` says.
    fn answer(
        &self,
        question: &str,
        seed: u64,
        error_rate: f64,
        wrong: WrongAnswers,
    ) -> Cow<'_, str> {
        match wrong {
            WrongAnswers::Other => Cow::Borrowed(self.answer_other(question, seed, error_rate)),
            WrongAnswers::Typo => {
                let Some((prompt, right)) = self.entry(question) else {
                    return Cow::Borrowed("unknown");
                };
                let right = self.answers.get(*right).map_or("unknown", String::as_str);
                let h = mix(fnv1a_from(fnv1a(&seed.to_le_bytes()), prompt.as_bytes()));
                if h % 10_000 >= (error_rate * 10_000.0).round() as u64 {
                    Cow::Borrowed(right)
                } else {
                    Cow::Owned(typo(right, mix(h)))
                }
            }
        }
    }

    fn entry(&self, question: &str) -> Option<&(String, usize)> {
        let q = question.trim();
        match self.exact.get(q) {
            Some(i) => self.entries.get(*i),
            None => self
                .entries
                .iter()
                .find(|(p, _)| !p.is_empty() && q.contains(p.as_str())),
        }
    }

    fn answer_other(&self, question: &str, seed: u64, error_rate: f64) -> &str {
        let Some((prompt, right)) = self.entry(question) else {
            return "unknown";
        };
        let h = mix(fnv1a_from(fnv1a(&seed.to_le_bytes()), prompt.as_bytes()));
        let threshold = (error_rate * 10_000.0).round() as u64;
        if h % 10_000 >= threshold {
            return self.answers.get(*right).map_or("unknown", String::as_str);
        }
        let others = self.answers.len().saturating_sub(1);
        if others == 0 {
            return "unknown";
        }
        let k = (mix(h) % others as u64) as usize;
        let wrong = if k >= *right { k + 1 } else { k };
        self.answers.get(wrong).map_or("unknown", String::as_str)
    }
}

/// A configured behaviour, ready to answer (its dataset loaded).
#[derive(Debug)]
pub(crate) struct Model {
    pub behavior: ModelBehavior,
    dataset: Option<Dataset>,
}

impl Model {
    pub(crate) fn compile(behavior: ModelBehavior) -> Result<Model, SimError> {
        let dataset = match (&behavior.mode, &behavior.dataset) {
            (AnswerMode::Dataset, Some(path)) => Some(Dataset::load(path)?),
            _ => None,
        };
        Ok(Model { behavior, dataset })
    }

    /// The answer to `conv`; `script_cursor` is the per-model position in the script.
    pub(crate) fn answer(&self, conv: &Conversation, script_cursor: &AtomicU64) -> Answer {
        let mut tokens = match &conv.tail {
            Tail::ToolResult(content) => Tokens::split_words(&format!("tool said: {content}")),
            _ => {
                if let (true, Some(name)) = (self.behavior.tool_calls, &conv.first_tool) {
                    return tool_call(conv, name);
                }
                let full = self.full_answer(&conv.last_user, script_cursor);
                match &conv.tail {
                    Tail::Prefill(p) => full.strip_prefix(p).unwrap_or(full),
                    _ => full,
                }
            }
        };
        let cut = conv
            .max_tokens
            .is_some_and(|n| tokens.truncate(usize::try_from(n).unwrap_or(usize::MAX)));
        Answer {
            answer_tokens: tokens.len() as u64,
            output: Output::Text(tokens),
            finish: if cut { Finish::Length } else { Finish::Stop },
        }
    }

    fn full_answer(&self, last_user: &str, script_cursor: &AtomicU64) -> Tokens {
        let b = &self.behavior;
        match b.mode {
            AnswerMode::Lorem => lorem(last_user, b.answer_tokens),
            AnswerMode::Echo => Tokens::split_words(last_user.trim()),
            AnswerMode::Script => {
                let n = script_cursor.fetch_add(1, Ordering::Relaxed);
                let len = b.script.len().max(1) as u64;
                let entry = usize::try_from(n % len).ok().and_then(|i| b.script.get(i));
                Tokens::split_words(entry.map_or("", String::as_str))
            }
            AnswerMode::Dataset => {
                let a = self.dataset.as_ref().map_or(Cow::Borrowed("unknown"), |d| {
                    d.answer(last_user, b.seed, b.error_rate, b.wrong_answers)
                });
                Tokens::split_words(&a)
            }
        }
    }
}

/// `right` with one character replaced, dropped or doubled, chosen by `h` (never `right` itself).
fn typo(right: &str, h: u64) -> String {
    let chars: Vec<char> = right.chars().collect();
    let i = (h % chars.len().max(1) as u64) as usize;
    let mut out: Vec<char> = chars.clone();
    match (h >> 32) % 3 {
        0 if chars.len() > 1 => {
            out.remove(i);
        }
        1 => out.insert(i, chars.get(i).copied().unwrap_or('x')),
        _ => {
            let c = chars.get(i).copied().unwrap_or(' ');
            let replacement = if c.is_ascii_digit() {
                char::from(b'0' + ((c as u8 - b'0' + 1 + (h >> 40) as u8 % 9) % 10))
            } else if c == 'x' {
                'y'
            } else {
                'x'
            };
            if out.is_empty() {
                out.push(replacement);
            } else {
                out[i] = replacement;
            }
        }
    }
    out.into_iter().collect()
}

/// `n` words from the lorem list, chosen by a hash of the prompt: "w1 ", "w2 ", ..., "wn".
pub(crate) fn lorem(prompt: &str, n: u32) -> Tokens {
    let mut t = Tokens {
        text: String::with_capacity(n as usize * 8),
        ends: Vec::with_capacity(n as usize),
    };
    let mut state = fnv1a(prompt.as_bytes());
    for i in 0..n {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let word = LOREM[(mix(state) % LOREM.len() as u64) as usize];
        if i + 1 < n {
            t.text.push_str(word);
            t.push(" ");
        } else {
            t.push(word);
        }
    }
    t
}

fn tool_call(conv: &Conversation, name: &str) -> Answer {
    let h1 = mix(fnv1a_from(
        fnv1a(conv.last_user.as_bytes()),
        name.as_bytes(),
    ));
    let id_hash = format!("{:016x}{:08x}", h1, mix(h1) as u32);
    let args = serde_json::json!({ "query": conv.last_user }).to_string();
    let arguments = Tokens::split_words(&args);
    Answer {
        answer_tokens: arguments.len() as u64,
        output: Output::ToolCall(ToolCall {
            id_hash,
            name: name.to_owned(),
            arguments,
        }),
        finish: Finish::ToolCalls,
    }
}

/// A JSON value that satisfies `schema` (the subset structured outputs use: `type`, `properties`,
/// `required`, `items`, `enum`, `const`, `anyOf`), deterministic; `words` fills strings.
pub(crate) fn instance_of(schema: &serde_json::Value, words: &str) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    if let Some(first) = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        return instance_of(first, words);
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // `["string", "null"]`: the first type.
        Some(Value::Array(ts)) => ts.first().and_then(Value::as_str).unwrap_or("object"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, sub) in props {
                    out.insert(name.clone(), instance_of(sub, words));
                }
            }
            Value::Object(out)
        }
        "array" => json!([instance_of(
            schema.get("items").unwrap_or(&Value::Null),
            words
        )]),
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => Value::from(words),
    }
}

/// The answer to a structured-output request: `text` (JSON), whole, cut into tokens at its spaces.
pub(crate) fn structured_answer(text: &str) -> Answer {
    let tokens = Tokens::split_words(text);
    Answer {
        answer_tokens: tokens.len() as u64,
        output: Output::Text(tokens),
        finish: Finish::Stop,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn texts(t: &Tokens) -> Vec<&str> {
        t.iter().collect()
    }

    #[test]
    fn splits_words_losslessly() {
        let t = Tokens::split_words("  a b  c\n");
        assert_eq!(texts(&t), vec!["  a ", "b  ", "c\n"]);
        assert_eq!(t.iter().collect::<String>(), "  a b  c\n");
        assert_eq!(Tokens::split_words("").len(), 0);
    }

    #[test]
    fn lorem_is_deterministic() {
        let a = lorem("hello", 5);
        assert_eq!(a, lorem("hello", 5));
        assert_ne!(a, lorem("goodbye", 5));
        assert_eq!(a.len(), 5);
        assert!(!a.text().ends_with(' '));
        assert_eq!(a.text().split(' ').count(), 5);
    }

    #[test]
    fn prefix_and_truncate() {
        let t = Tokens::split_words("one two three");
        let r = t.strip_prefix("one tw").unwrap();
        assert_eq!(texts(&r), vec!["o ", "three"]);
        assert!(t.strip_prefix("two").is_none());
        let mut t2 = t.clone();
        assert!(t2.truncate(2));
        assert_eq!(t2.text(), "one two ");
        assert!(!t2.truncate(2));
    }

    #[test]
    fn dataset_lookup() {
        let ds = Dataset::parse(
            "{\"prompt\":\"2+2\",\"answer\":\"4\"}\n\n{\"prompt\":\"capital of France\",\"answer\":\"Paris\"}\n",
        )
        .unwrap();
        let o = WrongAnswers::Other;
        assert_eq!(ds.answer(" 2+2 ", 0, 0.0, o), "4");
        assert_eq!(
            ds.answer("what is the capital of France?", 0, 0.0, o),
            "Paris"
        );
        assert_eq!(ds.answer("nothing", 0, 0.0, o), "unknown");
        assert_eq!(ds.answer("2+2", 0, 1.0, o), "Paris");
        assert!(Dataset::parse("{\"prompt\":1}").is_err());
    }

    #[test]
    fn typos_corrupt_generation_answers_at_the_error_rate() {
        let lines: String = (0..1000)
            .map(|i| {
                format!(
                    "{{\"prompt\":\"date {i}\",\"answer\":\"2024-03-{:02}\"}}\n",
                    i % 28 + 1
                )
            })
            .collect();
        let ds = Dataset::parse(&lines).unwrap();
        let t = WrongAnswers::Typo;
        let mut wrong = 0;
        for i in 0..1000 {
            let right = format!("2024-03-{:02}", i % 28 + 1);
            let a = ds.answer(&format!("date {i}"), 7, 0.1, t);
            assert_eq!(
                a,
                ds.answer(&format!("date {i}"), 7, 0.1, t),
                "deterministic"
            );
            assert_eq!(ds.answer(&format!("date {i}"), 7, 0.0, t), right);
            if a != right {
                wrong += 1;
                // One character off: a small edit, not another item's answer.
                let (a, r): (Vec<char>, Vec<char>) = (a.chars().collect(), right.chars().collect());
                assert!(a.len().abs_diff(r.len()) <= 1, "{a:?} vs {r:?}");
            }
        }
        assert!((70..=130).contains(&wrong), "{wrong} of 1000 wrong at 10%");
    }
}
