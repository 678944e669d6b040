//! A strict JSON cursor for the hot path of stream decoding: it walks one chunk field by field,
//! borrows every string without escapes from the input, and checks the grammar of everything it
//! passes over, skipped values included. It answers only what it is sure of: `None` from any
//! method means "not for the fast path" (an escaped key, a nesting deeper than [`MAX_DEPTH`], a
//! type the caller did not expect, malformed JSON), and the caller then hands the whole chunk to
//! serde, whose answer — a value or an error naming the problem — is the one that counts. So
//! whatever the cursor accepts, serde accepts with the same meaning, and the tests compare the two.
use std::borrow::Cow;

use serde::de::{Deserialize, IgnoredAny};

/// Nesting the cursor walks through before it leaves a chunk to serde.
const MAX_DEPTH: u32 = 32;

pub(crate) struct Cursor<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, i: 0 }
    }

    /// Resumes at `position`, which an earlier walk over the same bytes reached: the walk is a
    /// function of the bytes it has read, so it goes on from there exactly as it would have.
    pub(crate) fn resume(s: &'a str, position: usize) -> Self {
        Cursor { s, i: position }
    }

    /// Where the cursor is: bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.i
    }

    /// The next byte that is not JSON whitespace, not consumed.
    pub(crate) fn peek(&mut self) -> Option<u8> {
        let b = self.s.as_bytes();
        while let Some(&c) = b.get(self.i) {
            match c {
                b' ' | b'\n' | b'\r' | b'\t' => self.i += 1,
                _ => return Some(c),
            }
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.s.as_bytes()[self.i..]
            .starts_with(word.as_bytes())
            .then(|| self.i += word.len())
    }

    /// At a string's opening quote: consumes it and returns its contents' span and whether it has
    /// escapes. Control characters, which JSON forbids inside strings, are not for the fast path.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let b = self.s.as_bytes();
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            j = plain_run(b, j);
            match *b.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                _ => return None,
            }
        }
        self.i = j + 1;
        Some((start, j, escaped))
    }

    /// A key and its colon. Keys with escapes are not for the fast path.
    fn key(&mut self) -> Option<&'a str> {
        if self.peek()? != b'"' {
            return None;
        }
        let (start, end, escaped) = self.string()?;
        if escaped {
            return None;
        }
        self.eat(b':')?;
        Some(&self.s[start..end])
    }

    /// Enters an object: its first key, or `Some(None)` for `{}`. `None` if the next value is not
    /// an object.
    pub(crate) fn object(&mut self) -> Option<Option<&'a str>> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(None);
        }
        self.key().map(Some)
    }

    /// After a member's value: the next key, or `Some(None)` at the object's end.
    pub(crate) fn next_key(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.key().map(Some)
            }
            b'}' => {
                self.i += 1;
                Some(None)
            }
            _ => None,
        }
    }

    /// Enters an array: whether an element follows (`false` for `[]`).
    pub(crate) fn array(&mut self) -> Option<bool> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(false);
        }
        Some(true)
    }

    /// After an element: whether another follows.
    pub(crate) fn next_element(&mut self) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Some(true)
            }
            b']' => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Consumes `null` if it is next: whether it was.
    pub(crate) fn null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(true);
        }
        Some(false)
    }

    /// A string or `null`: borrowed from the input when it has no escapes, decoded by serde when
    /// it has.
    pub(crate) fn text(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.null()? {
            return Some(None);
        }
        if self.peek()? != b'"' {
            return None;
        }
        let (start, end, escaped) = self.string()?;
        if !escaped {
            return Some(Some(Cow::Borrowed(&self.s[start..end])));
        }
        serde_json::from_str::<String>(&self.s[start - 1..end + 1])
            .ok()
            .map(|s| Some(Cow::Owned(s)))
    }

    /// A non-negative integer that fits a `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.peek()?;
        let (start, end) = self.number()?;
        self.s.as_bytes()[start..end]
            .iter()
            .try_fold(0u32, |n, &d| {
                if !d.is_ascii_digit() {
                    return None;
                }
                n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
            })
    }

    /// The next value, `null` or else deserialised by serde from its own text: for the parts of a
    /// chunk that are rare or intricate (usage, tool calls, errors), where exactness matters more
    /// than speed.
    pub(crate) fn value<T: Deserialize<'a>>(&mut self) -> Option<Option<T>> {
        if self.null()? {
            return Some(None);
        }
        let start = self.i;
        self.skip(0)?;
        serde_json::from_str(&self.s[start..self.i]).ok().map(Some)
    }

    /// Passes over the next value, checking its grammar.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        self.skip(0)
    }

    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => {
                let (start, end, escaped) = self.string()?;
                if escaped {
                    serde_json::from_str::<IgnoredAny>(&self.s[start - 1..end + 1]).ok()?;
                }
            }
            b'{' => {
                let mut key = self.object()?;
                while key.is_some() {
                    self.skip(depth + 1)?;
                    key = self.next_key()?;
                }
            }
            b'[' => {
                let mut more = self.array()?;
                while more {
                    self.skip(depth + 1)?;
                    more = self.next_element()?;
                }
            }
            b't' => self.literal("true")?,
            b'f' => self.literal("false")?,
            b'n' => self.literal("null")?,
            _ => {
                self.number()?;
            }
        }
        Some(())
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<(usize, usize)> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut j = start;
        let digits = |j: &mut usize| {
            let from = *j;
            while b.get(*j).is_some_and(u8::is_ascii_digit) {
                *j += 1;
            }
            *j > from
        };
        if b.get(j) == Some(&b'-') {
            j += 1;
        }
        match b.get(j)? {
            b'0' => j += 1,
            b'1'..=b'9' => {
                digits(&mut j);
            }
            _ => return None,
        }
        if b.get(j) == Some(&b'.') {
            j += 1;
            if !digits(&mut j) {
                return None;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            j += 1;
            if matches!(b.get(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if !digits(&mut j) {
                return None;
            }
        }
        self.i = j;
        Some((start, j))
    }

    /// At the end of the input: only whitespace is left.
    pub(crate) fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }
}

/// The index of the first byte at or after `j` that ends a run of plain string content — a quote,
/// a backslash or a control character — or `b.len()`. Eight bytes at a time: a byte equal to
/// `c` is a zero byte of `x ^ c`, and `(v - 0x01…) & !v & 0x80…` flags the zero bytes of `v` (and
/// `(x - 0x20…) & !x & 0x80…` the bytes below 0x20), exactly from the lowest one up.
fn plain_run(b: &[u8], mut j: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = b.get(j..j + 8) {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let hit = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hit = hit & HIGH;
        if hit != 0 {
            return j + (hit.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while b
        .get(j)
        .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
    {
        j += 1;
    }
    j
}
