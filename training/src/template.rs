//! Prompt templates: students learn from the input, not the constant instruction around it.
//!
//! A distillation job renders each input into a prompt with a template (`{input}` where the text
//! goes) and asks the teacher; the student is trained on, and later served, the same rendered
//! prompts. On short-input tasks the template is many times the input (a 90-byte instruction around
//! a 7-byte word): it adds nothing a student can learn from and multiplies the work of byte-level
//! students. The artefact records its template ([`crate::ArtefactMetadata::template`]); training and
//! every prediction go through [`strip`] first.

/// The placeholder a template puts the input in.
pub const PLACEHOLDER: &str = "{input}";

/// The input `text` was rendered from with `template` (every `{input}` replaced by the same
/// input), or the whole `text` when it was not rendered from it (or the template has no
/// placeholder).
pub fn strip<'a>(template: &str, text: &'a str) -> &'a str {
    let parts: Vec<&str> = template.split(PLACEHOLDER).collect();
    let holes = parts.len() - 1;
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return text;
    };
    if holes == 0 {
        return text;
    }
    let fixed: usize = parts.iter().map(|p| p.len()).sum();
    let Some(rest) = text.len().checked_sub(fixed) else {
        return text;
    };
    if !rest.is_multiple_of(holes) || !text.starts_with(first) || !text.ends_with(last) {
        return text;
    }
    let len = rest / holes;
    let Some(input) = text.get(first.len()..first.len() + len) else {
        return text;
    };
    if holes > 1 {
        // Every other hole must hold the same input, with the template's text between them.
        let mut at = first.len();
        for part in &parts[1..holes] {
            at += len;
            if text.get(at..at + part.len()) != Some(part) {
                return text;
            }
            at += part.len();
            if text.get(at..at + len) != Some(input) {
                return text;
            }
        }
    }
    input
}

/// Inference needs at least this many texts...
const INFER_MIN_TEXTS: usize = 20;
/// ...sharing at least this many bytes of constant prefix and suffix together.
const INFER_MIN_BYTES: usize = 16;

/// The template every one of `texts` was rendered from, when a caller does not say: their longest
/// common prefix and suffix around `{input}`, if there are enough texts ([`INFER_MIN_TEXTS`]) and
/// the constant part is long enough ([`INFER_MIN_BYTES`]) to be an instruction rather than chance.
/// Each text keeps at least one character of its own.
pub fn infer<'a>(texts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut iter = texts.into_iter();
    let first = iter.next()?;
    let (mut prefix, mut suffix, mut shortest, mut n) = (first.len(), first.len(), first.len(), 1);
    for text in iter {
        n += 1;
        shortest = shortest.min(text.len());
        prefix = common_prefix(&first[..prefix], text);
        suffix = common_suffix(&first[first.len() - suffix..], text);
    }
    // Leave the shortest text at least one character between prefix and suffix.
    let room = shortest.saturating_sub(1);
    prefix = floor_boundary(first, prefix.min(room));
    let suffix_len = suffix.min(room - prefix);
    let mut start = first.len() - suffix_len;
    while !first.is_char_boundary(start) {
        start += 1;
    }
    let suffix = &first[start..];
    let prefix = &first[..prefix];
    (n >= INFER_MIN_TEXTS && prefix.len() + suffix.len() >= INFER_MIN_BYTES)
        .then(|| format!("{prefix}{PLACEHOLDER}{suffix}"))
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

fn common_suffix(a: &str, b: &str) -> usize {
    a.bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// [`strip`] under an optional template.
pub fn strip_opt<'a>(template: Option<&str>, text: &'a str) -> &'a str {
    template.map_or(text, |t| strip(t, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_what_the_template_rendered() {
        let t = "What part of speech is this word?\n\n{input}";
        assert_eq!(
            strip(t, "What part of speech is this word?\n\nrunning"),
            "running"
        );
        // Not rendered from it: the whole text.
        assert_eq!(strip(t, "running"), "running");
        assert_eq!(
            strip(t, "What part of speech is it?\n\nrunning"),
            "What part of speech is it?\n\nrunning"
        );
        // An empty input is an empty input.
        assert_eq!(strip(t, "What part of speech is this word?\n\n"), "");
        // Prefix and suffix.
        let t = "Classify: <{input}> Answer:";
        assert_eq!(strip(t, "Classify: <free money> Answer:"), "free money");
        assert_eq!(strip(t, "Classify: <free money>"), "Classify: <free money>");
        // No placeholder: nothing to strip.
        assert_eq!(strip("no hole", "no hole at all"), "no hole at all");
        // Two holes: the same input twice, or nothing is stripped.
        let t = "A {input} B {input} C";
        assert_eq!(strip(t, "A xy B xy C"), "xy");
        assert_eq!(strip(t, "A xy B xz C"), "A xy B xz C");
        assert_eq!(strip(t, "A xyz B xy C"), "A xyz B xy C");
        // Multi-byte text never splits a character.
        let t = "é{input}é";
        assert_eq!(strip(t, "éñé"), "ñ");
        assert_eq!(strip("{input}ab", "ñab"), "ñ");
        assert_eq!(strip_opt(None, "x"), "x");
    }

    #[test]
    fn infers_the_constant_text_around_the_inputs() {
        let t = "Classify this word.\n\n{input}\nAnswer:";
        let words = [
            "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
            "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
        ];
        let rendered: Vec<String> = words.iter().map(|w| t.replace(PLACEHOLDER, w)).collect();
        assert_eq!(
            infer(rendered.iter().map(String::as_str)).as_deref(),
            Some(t)
        );
        // Too few texts, or too little in common: no template.
        assert_eq!(infer(rendered[..5].iter().map(String::as_str)), None);
        assert_eq!(infer(words.iter().copied()), None);
        // The same text twenty times: the template leaves it a character of its own.
        let same = vec!["a long repeated instruction"; 20];
        let inferred = infer(same.iter().copied()).unwrap();
        assert_eq!(strip(&inferred, same[0]).len(), 1);
        // Multi-byte characters at the edges are never split.
        let accents: Vec<String> = words
            .iter()
            .map(|w| format!("ééééééééé {w} ñññññññ"))
            .collect();
        let inferred = infer(accents.iter().map(String::as_str)).unwrap();
        assert_eq!(strip(&inferred, &accents[0]), "alpha");
    }
}
