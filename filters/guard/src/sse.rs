//! An OpenAI chat-completion SSE stream, guarded as it passes: events are parsed across any
//! chunk boundary, each choice's `delta.content` goes through its own [`Holdback`], the
//! safety check sees every released piece, and the usage chunk is read (and dropped when the
//! consumer did not ask for it). Held text is flushed on `finish_reason`, `[DONE]` or the end.

use crate::chat::{chunk_event, field, quoted};
use crate::hold::Holdback;
use crate::meter::Usage;
use crate::pii::{Kind, Scanner};
use crate::safety::Safety;
use serde_json::Value;

/// What the guard applies to the stream.
pub struct Policy<'a> {
    pub scanner: &'a Scanner,
    pub safety: &'a Safety,
    pub fallback_text: &'a str,
    /// Drop the usage chunk: the gateway asked for it, the consumer did not.
    pub strip_usage: bool,
}

#[derive(Default)]
struct Choice {
    hold: Holdback,
    tail: String,
}

#[derive(Default)]
pub struct SseGuard {
    pending: Vec<u8>,
    /// By choice index, in order of arrival (usually one).
    choices: Vec<(u64, Choice)>,
    /// `"id":..,"created":..,"model":..` of the first chunk, for the events the guard adds.
    header: Option<String>,
    pub usage: Option<Usage>,
    /// Characters of content released, for the estimator.
    pub released_chars: u64,
    pub redacted: Vec<Kind>,
    /// The safety keyword that ended the stream with the fallback.
    pub unsafe_hit: Option<String>,
    /// Content was released at least once (time to first token).
    pub first_content: bool,
    /// `[DONE]` was seen or sent; later bytes are dropped.
    pub done: bool,
}

impl SseGuard {
    /// A piece of the body; returns the bytes to send instead.
    pub fn push(&mut self, p: &Policy<'_>, chunk: &[u8]) -> Vec<u8> {
        if self.done {
            return Vec::new();
        }
        self.pending.extend(chunk.iter().filter(|b| **b != b'\r'));
        let mut out = Vec::new();
        while let Some(at) = find(&self.pending, b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..at + 2).collect();
            self.event(p, &event, &mut out);
            if self.done {
                self.pending.clear();
                break;
            }
        }
        out
    }

    /// The body ended (with or without `[DONE]`): releases whatever is held.
    pub fn finish(&mut self, p: &Policy<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            let mut event = rest;
            event.extend_from_slice(b"\n\n");
            self.event(p, &event, &mut out);
        }
        if !self.done {
            self.flush_all(p, &mut out);
        }
        out
    }

    fn event(&mut self, p: &Policy<'_>, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            out.extend_from_slice(raw);
            return;
        }
        let data = data.join("\n");
        if data.trim() == "[DONE]" {
            self.flush_all(p, out);
            if !self.done {
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            out.extend_from_slice(raw);
            return;
        };
        // The first chunk names the stream; later ones repeat it.
        if self.header.is_none() {
            self.header = Some(format!(
                r#""id":{},"created":{},"model":{}"#,
                field(&v, &["id"]),
                field(&v, &["created"]),
                field(&v, &["model"])
            ));
        }
        if let Some(u) = Usage::from_json(field(&v, &["usage"])) {
            self.usage = Some(u);
            let empty = field(&v, &["choices"]).as_array().is_none_or(Vec::is_empty);
            if p.strip_usage && empty {
                return;
            }
            if p.strip_usage
                && let Some(o) = v.as_object_mut()
            {
                o.remove("usage");
            }
        }
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices.iter_mut() {
                let index = field(c, &["index"]).as_u64().unwrap_or(0);
                let piece = field(c, &["delta", "content"]).as_str().map(str::to_string);
                let finishing = !field(c, &["finish_reason"]).is_null();
                let mut released = match (&piece, self.choice(index)) {
                    (Some(t), Some(c)) => c.hold.push(p.scanner, t),
                    _ => Default::default(),
                };
                if finishing && let Some(c) = self.choice(index) {
                    let rest = c.hold.finish(p.scanner);
                    released.text.push_str(&rest.text);
                    released.redacted.extend(rest.redacted);
                }
                if let Some(kw) = self.check(p, index, &released.text) {
                    self.unsafe_hit = Some(kw);
                    self.fallback(p, index, out);
                    return;
                }
                self.account(&released.text, released.redacted);
                if piece.is_some() || !released.text.is_empty() {
                    set_content(c, released.text);
                }
            }
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(v.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    /// The choice's state, made on first sight (so never `None` in practice).
    fn choice(&mut self, index: u64) -> Option<&mut Choice> {
        if !self.choices.iter().any(|(i, _)| *i == index) {
            self.choices.push((index, Choice::default()));
        }
        self.choices
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| c)
    }

    fn check(&mut self, p: &Policy<'_>, index: u64, text: &str) -> Option<String> {
        let c = self.choice(index)?;
        p.safety.check_piece(&mut c.tail, text).map(str::to_string)
    }

    fn account(&mut self, text: &str, redacted: Vec<Kind>) {
        if !text.is_empty() {
            self.first_content = true;
            self.released_chars += text.chars().count() as u64;
        }
        self.redacted.extend(redacted);
    }

    /// Releases every choice's held text in one added event.
    fn flush_all(&mut self, p: &Policy<'_>, out: &mut Vec<u8>) {
        let mut pieces = Vec::new();
        for (index, c) in self.choices.iter_mut() {
            let r = c.hold.finish(p.scanner);
            if !r.text.is_empty() || !r.redacted.is_empty() {
                pieces.push((*index, r));
            }
        }
        for (index, r) in pieces {
            if let Some(kw) = self.check(p, index, &r.text) {
                self.unsafe_hit = Some(kw);
                self.fallback(p, index, out);
                return;
            }
            self.account(&r.text, r.redacted);
            let delta = format!(r#"{{"content":{}}}"#, quoted(&r.text));
            out.extend_from_slice(self.added(index, &delta, "null", "").as_bytes());
        }
    }

    /// Ends the stream with the fallback text in place of what was not sent.
    fn fallback(&mut self, p: &Policy<'_>, index: u64, out: &mut Vec<u8>) {
        let delta = format!(r#"{{"content":{}}}"#, quoted(p.fallback_text));
        let tail = r#","source":"fallback","reason":"unsafe_output""#;
        let event = self.added(index, &delta, r#""content_filter""#, tail);
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    fn added(&self, index: u64, delta: &str, finish: &str, tail: &str) -> String {
        let head = self
            .header
            .as_deref()
            .unwrap_or(r#""id":null,"created":null,"model":null"#);
        chunk_event(head, index, delta, finish, tail)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sets `choice.delta.content` without ever indexing into a non-object (which would panic).
fn set_content(choice: &mut Value, text: String) {
    let Some(c) = choice.as_object_mut() else {
        return;
    };
    let delta = c
        .entry("delta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(d) = delta.as_object_mut() {
        d.insert("content".into(), Value::String(text));
    }
}
