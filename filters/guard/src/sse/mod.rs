//! A streamed LLM answer, guarded as it passes, for every streaming API the guard knows:
//! events are parsed across any chunk boundary, each text (a choice, a content part, a
//! content block) goes through its own [`Holdback`], the safety check sees every released
//! piece, and the usage is read. Held text is released when its text ends, at the stream's
//! terminal event, or when the body ends.
//!
//! The dialects ([`dialects`]) say where the text and usage are in each API's events;
//! this file holds the framing and the per-text state they share.

mod dialects;

use crate::api::Api;
use crate::hold::Holdback;
use crate::meter::Usage;
use crate::pii::{Kind, Scanner};
use crate::placeholder::{Placeholders, Restorer};
use crate::safety::Safety;
use serde_json::Value;

/// What the guard applies to the stream.
pub struct Policy<'a> {
    pub scanner: &'a Scanner,
    pub safety: &'a Safety,
    pub fallback_text: &'a str,
    /// Drop the usage chunk: the gateway asked for it, the consumer did not (chat and
    /// completions only: the other APIs always send usage).
    pub strip_usage: bool,
    /// The prompt's placeholders, put back in what is released.
    pub placeholders: Option<&'a Placeholders>,
}

/// One text of the answer as it streams.
#[derive(Default)]
pub(crate) struct Text {
    pub(crate) hold: Holdback,
    /// The safety check's tail.
    tail: String,
    /// Everything released so far (kept where a later event repeats the whole text).
    pub(crate) sent: String,
    /// The Responses API's item id.
    pub(crate) item: Option<String>,
    /// Puts placeholders back across piece boundaries.
    restorer: Restorer,
}

/// The safety check found this keyword in what was about to be released.
pub(crate) struct Unsafe(pub(crate) String);

pub struct SseGuard {
    pub(crate) api: Api,
    pending: Vec<u8>,
    /// By key (choice index, output/content index, block index), in order of arrival.
    pub(crate) texts: Vec<(u64, Text)>,
    /// Chat and completions: `"id":..,"created":..,"model":..` of the first chunk.
    pub(crate) header: Option<String>,
    /// Responses: the response object of `response.created`, for the events the guard adds.
    pub(crate) template: Option<Value>,
    /// Responses: events the guard added so far (later sequence numbers move by this), and
    /// the last sequence number sent.
    pub(crate) seq_shift: u64,
    pub(crate) last_seq: u64,
    /// Messages: the input tokens `message_start` reported.
    pub(crate) input_tokens: Option<u64>,
    pub usage: Option<Usage>,
    /// Characters of content released, for the estimator.
    pub released_chars: u64,
    pub redacted: Vec<Kind>,
    /// The safety keyword that ended the stream with the fallback.
    pub unsafe_hit: Option<String>,
    /// Content was released at least once (time to first token).
    pub first_content: bool,
    /// The stream's end was seen or sent; later bytes are dropped.
    pub done: bool,
}

impl Default for SseGuard {
    /// A chat-completions stream.
    fn default() -> Self {
        SseGuard::new(Api::Chat)
    }
}

/// One parsed event's `event:` name (its data is parsed by the caller).
pub(crate) struct Event {
    pub(crate) name: Option<String>,
}

impl SseGuard {
    pub fn new(api: Api) -> SseGuard {
        SseGuard {
            api,
            pending: Vec::new(),
            texts: Vec::new(),
            header: None,
            template: None,
            seq_shift: 0,
            last_seq: 0,
            input_tokens: None,
            usage: None,
            released_chars: 0,
            redacted: Vec::new(),
            unsafe_hit: None,
            first_content: false,
            done: false,
        }
    }

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

    /// The body ended (with or without its terminal event): releases whatever is held.
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
            let _ = self.flush_all(p, &mut out);
        }
        out
    }

    fn event(&mut self, p: &Policy<'_>, raw: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(raw);
        let mut name = None;
        let mut data: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d));
            } else if let Some(n) = line.strip_prefix("event:") {
                name = Some(n.trim().to_string());
            }
        }
        if data.is_empty() {
            out.extend_from_slice(raw);
            return;
        }
        let data = data.join("\n");
        if data.trim() == "[DONE]" {
            let _ = self.flush_all(p, out);
            if !self.done {
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            out.extend_from_slice(raw);
            return;
        };
        let e = Event { name };
        let handled = match self.api {
            Api::Chat | Api::Completions => self.choices_event(p, v, &e, out),
            Api::Responses => self.responses_event(p, v, &e, out),
            Api::Messages => self.messages_event(p, v, &e, out),
            Api::Embeddings => Ok(()),
        };
        if let Err(Unsafe(kw)) = handled {
            self.unsafe_hit = Some(kw);
        }
    }

    /// The text's state, made on first sight (so never `None` in practice).
    pub(crate) fn text(&mut self, key: u64) -> Option<&mut Text> {
        if !self.texts.iter().any(|(k, _)| *k == key) {
            self.texts.push((key, Text::default()));
        }
        self.texts
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
    }

    /// Adds `piece` to the text at `key` (and releases all of it when `finishing`); returns
    /// what may be sent, or, when the safety check refuses it, ends the stream with the
    /// fallback (written to `out`) and returns the keyword.
    pub(crate) fn piece(
        &mut self,
        p: &Policy<'_>,
        key: u64,
        piece: &str,
        finishing: bool,
        out: &mut Vec<u8>,
    ) -> Result<String, Unsafe> {
        let released = self.release(p, key, piece, finishing);
        if released.is_err() {
            self.fallback(p, key, out);
        }
        released
    }

    fn release(
        &mut self,
        p: &Policy<'_>,
        key: u64,
        piece: &str,
        finishing: bool,
    ) -> Result<String, Unsafe> {
        let keep = self.api == Api::Responses;
        let Some(t) = self.text(key) else {
            return Ok(String::new());
        };
        let mut r = t.hold.push(p.scanner, piece);
        if finishing {
            let rest = t.hold.finish(p.scanner);
            r.text.push_str(&rest.text);
            r.redacted.extend(rest.redacted);
        }
        if let Some(kw) = p.safety.check_piece(&mut t.tail, &r.text) {
            return Err(Unsafe(kw.to_string()));
        }
        if let Some(ph) = p.placeholders {
            let mut text = t.restorer.push(ph, &r.text);
            if finishing {
                text.push_str(&t.restorer.finish(ph));
            }
            r.text = text;
        }
        if keep {
            t.sent.push_str(&r.text);
        }
        if !r.text.is_empty() {
            self.first_content = true;
            self.released_chars += r.text.chars().count() as u64;
        }
        self.redacted.extend(r.redacted);
        Ok(r.text)
    }

    /// Releases what every text holds, each in an event the dialect adds; on an unsafe
    /// piece, ends the stream with the fallback instead.
    pub(crate) fn flush_all(&mut self, p: &Policy<'_>, out: &mut Vec<u8>) -> Result<(), Unsafe> {
        let keys: Vec<u64> = self.texts.iter().map(|(k, _)| *k).collect();
        for key in keys {
            let text = self.piece(p, key, "", true, out)?;
            if !text.is_empty() {
                self.added_text(key, &text, out);
            }
        }
        Ok(())
    }

    /// An event the guard adds, carrying `text` for the text at `key`.
    pub(crate) fn added_text(&mut self, key: u64, text: &str, out: &mut Vec<u8>) {
        match self.api {
            Api::Chat | Api::Completions => {
                let e = self.added_choice(key, text, "null", "");
                out.extend_from_slice(e.as_bytes());
            }
            Api::Responses => self.added_delta(key, text, out),
            Api::Messages => dialects::block_delta(key, text, out),
            Api::Embeddings => {}
        }
    }

    /// Ends the stream with the fallback text in place of what was not sent.
    pub(crate) fn fallback(&mut self, p: &Policy<'_>, key: u64, out: &mut Vec<u8>) {
        match self.api {
            Api::Chat | Api::Completions => {
                let tail = r#","source":"fallback","reason":"unsafe_output""#;
                let e = self.added_choice(key, p.fallback_text, r#""content_filter""#, tail);
                out.extend_from_slice(e.as_bytes());
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            Api::Responses => self.responses_fallback(p, key, out),
            Api::Messages => dialects::messages_fallback(p, key, out),
            Api::Embeddings => {}
        }
        self.done = true;
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One SSE event: `event: name` (when given) and its data.
pub(crate) fn emit(out: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}
