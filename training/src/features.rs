//! Featurisers: text → token ids, built only from the text itself (nothing is downloaded or learnt).
//!
//! - [`Featuriser::NgramBag`]: hashed word unigrams and bigrams, and optionally each word's character
//!   n-grams (fastText-style, the word wrapped in `<`…`>` so prefixes and suffixes are their own
//!   n-grams), deduplicated (a binary bag), for the linear and MLP students. Character n-grams make
//!   short inputs work: a single unseen word still shares its suffix with the words seen in training.
//! - [`Featuriser::WordSequence`]: hashed word unigrams in order, for the transformer encoder.
//! - [`Featuriser::Bytes`]: raw UTF-8 bytes, for the byte CNN.
//!
//! Id 0 is padding in every featuriser; real ids start at 1. Words are lower-cased runs of
//! alphanumeric characters with every digit mapped to `0`; any other non-space character is a word of
//! its own (so `!!!` and `$` count). Hashing is FNV-1a (64-bit), identical on every platform, so a
//! saved artefact featurises exactly as it did in training.

use burn::prelude::*;
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// How a student's input is turned into token ids. Saved in the artefact's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Featuriser {
    /// Distinct hashed word unigrams and bigrams (and each word's character n-grams when `chars`
    /// is set), in order of first appearance, all hashed into one id space.
    NgramBag {
        /// Hash buckets, including the padding id 0.
        buckets: usize,
        /// At most this many distinct n-grams per text (the first ones).
        max_features: usize,
        /// Character n-gram lengths per word; `None` (artefacts written before them) for words only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chars: Option<CharNgrams>,
    },
    /// Hashed word unigrams in order.
    WordSequence {
        /// Hash buckets, including the padding id 0.
        buckets: usize,
        /// At most this many words per text (the first ones).
        max_len: usize,
    },
    /// UTF-8 bytes, each shifted by one (ids 1..=256).
    Bytes {
        /// At most this many bytes per text (the first ones).
        max_len: usize,
    },
}

/// Character n-gram lengths, inclusive (e.g. 2 to 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CharNgrams {
    /// Shortest n-gram, in characters (≥ 1).
    pub min: usize,
    /// Longest n-gram, in characters (≥ `min`).
    pub max: usize,
}

impl CharNgrams {
    /// 2- to 4-grams: what the linear and MLP students' named sizes use.
    pub const DEFAULT: CharNgrams = CharNgrams { min: 2, max: 4 };
}

const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
/// Mixed into bigram hashes so a bigram never systematically collides with a unigram.
const BIGRAM_SALT: u64 = 0x9E37_79B9_7F4A_7C15;
/// The offset basis of character n-gram hashes, so a character n-gram never systematically collides
/// with the word of the same spelling.
const CHAR_SALT: u64 = 0xD6E8_FEB8_6659_FD93;
/// The token an empty text becomes, so that no input is ever all padding.
const EMPTY_TOKEN: &str = "\u{0}empty";

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// Splits `text` into normalised words (see the module docs) and calls `f` with each word.
fn for_each_word(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_numeric() {
                word.push('0');
            } else {
                word.extend(c.to_lowercase());
            }
        } else {
            if !word.is_empty() {
                f(&word);
                word.clear();
            }
            if !c.is_whitespace() {
                let mut buf = [0u8; 4];
                f(c.encode_utf8(&mut buf));
            }
        }
    }
    if !word.is_empty() {
        f(&word);
    }
}

/// Calls `f` with the hash of every character n-gram of `<word>` whose length is in `range`.
fn for_each_char_ngram(word: &str, range: CharNgrams, mut f: impl FnMut(u64)) {
    let mut chars: Vec<char> = Vec::with_capacity(word.len() + 2);
    chars.push('<');
    chars.extend(word.chars());
    chars.push('>');
    let mut buf = [0u8; 4];
    for start in 0..chars.len() {
        let mut h = CHAR_SALT;
        for (n, c) in chars[start..].iter().take(range.max).enumerate() {
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(FNV_PRIME);
            }
            if n + 1 >= range.min {
                f(h);
            }
        }
    }
}

fn bucket(hash: u64, buckets: usize) -> u32 {
    // Ids 1..buckets; 0 is padding.
    (1 + hash % (buckets as u64 - 1)) as u32
}

impl Featuriser {
    /// Checks the sizes are usable.
    pub fn validate(&self) -> Result<()> {
        let ok = match self {
            Self::NgramBag {
                buckets,
                max_features,
                chars,
            } => {
                *buckets >= 2
                    && *max_features >= 1
                    && chars.is_none_or(|c| c.min >= 1 && c.max >= c.min && c.max <= 16)
            }
            Self::WordSequence { buckets, max_len } => *buckets >= 2 && *max_len >= 1,
            Self::Bytes { max_len } => *max_len >= 1,
        };
        if ok {
            Ok(())
        } else {
            Err(TrainingError::Config(format!(
                "featuriser sizes out of range: {self:?}"
            )))
        }
    }

    /// Size of the id space, padding included (the student's embedding table has this many rows).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::NgramBag { buckets, .. } | Self::WordSequence { buckets, .. } => *buckets,
            Self::Bytes { .. } => 257,
        }
    }

    /// The longest sequence [`Featuriser::encode`] returns.
    pub fn max_len(&self) -> usize {
        match self {
            Self::NgramBag { max_features, .. } => *max_features,
            Self::WordSequence { max_len, .. } | Self::Bytes { max_len } => *max_len,
        }
    }

    /// Token ids of `text`: never empty, never longer than [`Featuriser::max_len`], no padding ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        match self {
            Self::NgramBag {
                buckets,
                max_features,
                chars,
            } => {
                let (buckets, max) = (*buckets, *max_features);
                let mut seen = std::collections::HashSet::new();
                let mut push = |ids: &mut Vec<u32>, h: u64| {
                    let id = bucket(h, buckets);
                    if ids.len() < max && seen.insert(id) {
                        ids.push(id);
                    }
                };
                let mut prev: Option<u64> = None;
                for_each_word(text, |word| {
                    if ids.len() >= max {
                        return;
                    }
                    let h = fnv1a(word.as_bytes());
                    push(&mut ids, h);
                    if let Some(p) = prev {
                        push(
                            &mut ids,
                            (p.wrapping_mul(FNV_PRIME) ^ h).wrapping_add(BIGRAM_SALT),
                        );
                    }
                    prev = Some(h);
                    if let Some(range) = chars {
                        for_each_char_ngram(word, *range, |g| push(&mut ids, g));
                    }
                });
                if ids.is_empty() {
                    ids.push(bucket(fnv1a(EMPTY_TOKEN.as_bytes()), buckets));
                }
            }
            Self::WordSequence { buckets, max_len } => {
                for_each_word(text, |w| {
                    if ids.len() < *max_len {
                        ids.push(bucket(fnv1a(w.as_bytes()), *buckets));
                    }
                });
                if ids.is_empty() {
                    ids.push(bucket(fnv1a(EMPTY_TOKEN.as_bytes()), *buckets));
                }
            }
            Self::Bytes { max_len } => {
                ids.extend(text.bytes().take(*max_len).map(|b| u32::from(b) + 1));
                if ids.is_empty() {
                    ids.push(1);
                }
            }
        }
        ids
    }
}

/// A padded batch of token ids on a device: what every student's `forward` takes.
#[derive(Clone, Debug)]
pub struct Inputs<B: Backend> {
    /// `[batch, seq]` token ids, 0 where padded.
    pub tokens: Tensor<B, 2, Int>,
    /// `[batch, seq]` 1.0 for real tokens, 0.0 for padding.
    pub mask: Tensor<B, 2>,
}

impl<B: Backend> Inputs<B> {
    /// Pads `sequences` to the longest one (at least `min_len`) and moves them to `device`.
    pub fn from_ids(sequences: &[Vec<u32>], min_len: usize, device: &B::Device) -> Self {
        let batch = sequences.len();
        let len = sequences
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(min_len)
            .max(1);
        let mut tokens = vec![0i32; batch * len];
        let mut mask = vec![0f32; batch * len];
        for (row, seq) in sequences.iter().enumerate() {
            for (col, &id) in seq.iter().take(len).enumerate() {
                tokens[row * len + col] = id as i32;
                mask[row * len + col] = 1.0;
            }
        }
        Self {
            tokens: Tensor::from_data(TensorData::new(tokens, [batch, len]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, len]), device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngram_bag_is_deduplicated_and_in_range() {
        let f = Featuriser::NgramBag {
            buckets: 1 << 10,
            max_features: 100,
            chars: None,
        };
        let ids = f.encode("Free FREE free money 123 456!");
        assert!(ids.iter().all(|&i| i >= 1 && (i as usize) < 1 << 10));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        // "123" and "456" normalise to the same word.
        assert_eq!(f.encode("call 123"), f.encode("call 456"));
        assert_eq!(f.encode(""), f.encode("   "));
        assert!(!f.encode("").is_empty());
    }

    #[test]
    fn char_ngrams_share_suffixes() {
        let f = Featuriser::NgramBag {
            buckets: 1 << 20,
            max_features: 1000,
            chars: Some(CharNgrams::DEFAULT),
        };
        let words = Featuriser::NgramBag {
            buckets: 1 << 20,
            max_features: 1000,
            chars: None,
        };
        // <running>: the word, 8 bigrams, 7 trigrams, 6 four-grams (all distinct here).
        assert_eq!(f.encode("running").len(), 1 + 8 + 7 + 6);
        assert_eq!(words.encode("running").len(), 1);
        // Two words with the same suffix share its n-grams ("ng>", "ing>", ...), nothing else does.
        let (a, b) = (f.encode("running"), f.encode("jumping"));
        let shared = a.iter().filter(|id| b.contains(id)).count();
        assert!(shared >= 3, "{shared}");
        assert!(words.encode("running") != words.encode("jumping"));
        // A one-character word still has n-grams, and the cap holds.
        assert_eq!(f.encode("a").len(), 1 + 2 + 1);
        let capped = Featuriser::NgramBag {
            buckets: 1 << 20,
            max_features: 5,
            chars: Some(CharNgrams::DEFAULT),
        };
        assert_eq!(capped.encode("internationalisation is long").len(), 5);
        // Old metadata (no `chars` key) reads as words only.
        let old: Featuriser =
            serde_json::from_str(r#"{"kind":"ngram_bag","buckets":16,"max_features":4}"#).unwrap();
        assert_eq!(
            old,
            Featuriser::NgramBag {
                buckets: 16,
                max_features: 4,
                chars: None
            }
        );
    }

    #[test]
    fn bytes_truncate() {
        let f = Featuriser::Bytes { max_len: 3 };
        assert_eq!(f.encode("abcd"), vec![98, 99, 100]);
        assert_eq!(f.encode(""), vec![1]);
    }
}
