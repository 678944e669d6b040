//! The fast path for decoding a `chat.completion.chunk`: a walk over the chunk with
//! [`Cursor`](crate::provider::scan::Cursor) into the same [`OaChunk`] serde would give, in about a
//! third of serde's instructions, skipping the chunk's head altogether when it repeats the previous
//! chunk's. OpenAI, vLLM, DeepSeek and the simulator repeat `id`, `object`, `created`, `model`,
//! `service_tier` and `system_fingerprint` byte for byte in every chunk before `choices`, and that head
//! is two thirds of a token's chunk (Azure sorts its keys, so its head is `{"choices":` and nothing is
//! skipped). The walk returns `None` for anything outside what it reads with certainty, and the caller
//! then decodes the chunk with serde, so a chunk means the same whichever path read it (the tests
//! check this on mutated chunks).
use std::borrow::Cow;

use super::{OaChunk, OaChunkChoice, OaDelta};
use crate::provider::{common::Text, scan::Cursor};

/// What the walk knew on reaching the `choices` value of the last chunk whose head it read, to
/// resume there in the next chunk that starts with the same bytes.
#[derive(Debug, Default, Clone)]
pub(super) struct Head {
    /// The chunk's bytes up to and including `"choices":`; empty before the first chunk.
    bytes: Vec<u8>,
    /// Where `id` and `model` (unescaped, so borrowed) lie in those bytes.
    id: Option<(usize, usize)>,
    model: Option<(usize, usize)>,
    /// The fields seen before `choices` (see [`Seen`]).
    seen: u8,
}

/// The known fields of one object seen so far, one bit each: serde rejects a duplicate, so the fast
/// path leaves a chunk with one to serde.
struct Seen(u8);

impl Seen {
    fn first(&mut self, bit: u8) -> Option<()> {
        (self.0 & bit == 0).then(|| self.0 |= bit)
    }
}

const ID: u8 = 1;
const MODEL: u8 = 2;
const CHOICES: u8 = 4;
const USAGE: u8 = 8;
const ERROR: u8 = 16;

/// Decodes one chunk, or `None` to leave it to serde. `head` carries the previous chunk's head from
/// one call to the next within a stream.
pub(super) fn decode<'a>(data: &'a str, head: &mut Head) -> Option<OaChunk<'a>> {
    let mut chunk = OaChunk {
        id: None,
        model: None,
        choices: None,
        usage: None,
        error: None,
    };
    let resumed = !head.bytes.is_empty() && data.as_bytes().starts_with(&head.bytes);
    let mut seen = Seen(0);
    let (mut c, mut key) = if resumed {
        let text =
            |span: Option<(usize, usize)>| span.map(|(a, b)| Text(Cow::Borrowed(&data[a..b])));
        chunk.id = text(head.id);
        chunk.model = text(head.model);
        seen.0 = head.seen;
        (Cursor::resume(data, head.bytes.len()), Some("choices"))
    } else {
        let mut c = Cursor::new(data);
        let key = c.object()?;
        (c, key)
    };
    let mut new_head = None;
    while let Some(k) = key {
        match k {
            "id" => {
                seen.first(ID)?;
                chunk.id = text(&mut c)?;
            }
            "model" => {
                seen.first(MODEL)?;
                chunk.model = text(&mut c)?;
            }
            "choices" => {
                if !resumed && seen.0 & !(ID | MODEL) == 0 {
                    // A head whose id or model had escapes is not kept: they would have to be
                    // decoded again.
                    if let (Some(id), Some(model)) =
                        (span(data, &chunk.id), span(data, &chunk.model))
                    {
                        new_head = Some((id, model, seen.0, c.position()));
                    }
                }
                seen.first(CHOICES)?;
                chunk.choices = if c.null()? {
                    None
                } else {
                    let mut choices = Vec::with_capacity(1);
                    let mut more = c.array()?;
                    while more {
                        choices.push(choice(&mut c)?);
                        more = c.next_element()?;
                    }
                    Some(choices)
                };
            }
            "usage" => {
                seen.first(USAGE)?;
                chunk.usage = c.value()?;
            }
            "error" => {
                seen.first(ERROR)?;
                chunk.error = c.value()?;
            }
            _ => c.skip_value()?,
        }
        key = c.next_key()?;
    }
    c.end()?;
    if let Some((id, model, seen, end)) = new_head {
        head.bytes.clear();
        head.bytes.extend_from_slice(&data.as_bytes()[..end]);
        (head.id, head.model, head.seen) = (id, model, seen);
    }
    Some(chunk)
}

fn text<'a>(c: &mut Cursor<'a>) -> Option<Option<Text<'a>>> {
    c.text().map(|t| t.map(Text))
}

/// Where a borrowed text lies in `data`: `Some(None)` for no text, `None` for a decoded one.
fn span(data: &str, text: &Option<Text<'_>>) -> Option<Option<(usize, usize)>> {
    match text {
        None => Some(None),
        Some(Text(Cow::Borrowed(s))) => {
            let start = s.as_ptr().addr() - data.as_ptr().addr();
            Some(Some((start, start + s.len())))
        }
        Some(Text(Cow::Owned(_))) => None,
    }
}

fn choice<'a>(c: &mut Cursor<'a>) -> Option<OaChunkChoice<'a>> {
    let mut choice = OaChunkChoice {
        index: 0,
        delta: None,
        finish_reason: None,
    };
    let mut seen = Seen(0);
    let mut key = c.object()?;
    while let Some(k) = key {
        match k {
            "index" => {
                seen.first(1)?;
                choice.index = c.u32()?;
            }
            "delta" => {
                seen.first(2)?;
                choice.delta = if c.null()? { None } else { Some(delta(c)?) };
            }
            "finish_reason" => {
                seen.first(4)?;
                choice.finish_reason = text(c)?;
            }
            _ => c.skip_value()?,
        }
        key = c.next_key()?;
    }
    Some(choice)
}

fn delta<'a>(c: &mut Cursor<'a>) -> Option<OaDelta<'a>> {
    let mut delta = OaDelta::default();
    let mut seen = Seen(0);
    let mut key = c.object()?;
    while let Some(k) = key {
        let text_field = match k {
            "content" => Some((1, &mut delta.content)),
            "reasoning_content" => Some((2, &mut delta.reasoning_content)),
            "reasoning" => Some((4, &mut delta.reasoning)),
            "refusal" => Some((8, &mut delta.refusal)),
            _ => None,
        };
        match (text_field, k) {
            (Some((bit, field)), _) => {
                seen.first(bit)?;
                *field = text(c)?;
            }
            (None, "tool_calls") => {
                seen.first(16)?;
                delta.tool_calls = c.value()?;
            }
            (None, _) => c.skip_value()?,
        }
        key = c.next_key()?;
    }
    Some(delta)
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
