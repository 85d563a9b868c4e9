//! The streaming dialects: where each API puts its text and usage in its events, and the
//! events the guard adds (held text released, the fallback) in each API's own shape.
//! - chat and completions: `choices[].delta.content` / `choices[].text`, a usage chunk,
//!   `data: [DONE]`;
//! - Responses: `response.output_text.delta`, whose whole text `…done` events repeat (they
//!   get what was sent), sequence numbers (moved past the events the guard adds), and a
//!   terminal `response.completed` carrying the usage;
//! - Anthropic Messages: `content_block_delta` with `text_delta`, usage in `message_start`
//!   and `message_delta`, and `message_stop`.

use super::{Event, Policy, SseGuard, Unsafe, emit};
use crate::api::Api;
use crate::chat::{chunk_event, field, quoted};
use crate::meter::Usage;
use serde_json::{Value, json};

/// A Responses API text's key: its output item and content part.
fn response_key(v: &Value) -> u64 {
    let o = field(v, &["output_index"]).as_u64().unwrap_or(0);
    let c = field(v, &["content_index"]).as_u64().unwrap_or(0);
    (o << 32) | (c & 0xFFFF_FFFF)
}

fn set(v: &mut Value, key: &str, text: String) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.into(), Value::String(text));
    }
}

impl SseGuard {
    /// Chat completions and legacy completions.
    pub(crate) fn choices_event(
        &mut self,
        p: &Policy<'_>,
        mut v: Value,
        e: &Event,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsafe> {
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
                return Ok(());
            }
            if p.strip_usage
                && let Some(o) = v.as_object_mut()
            {
                o.remove("usage");
            }
        }
        let chat = self.api == Api::Chat;
        if let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) {
            for c in choices.iter_mut() {
                let index = field(c, &["index"]).as_u64().unwrap_or(0);
                let at: &[&str] = if chat {
                    &["delta", "content"]
                } else {
                    &["text"]
                };
                let piece = field(c, at).as_str().map(str::to_string);
                let finishing = !field(c, &["finish_reason"]).is_null();
                if piece.is_none() && !finishing {
                    continue;
                }
                let text = piece.as_deref().unwrap_or("");
                let released = self.piece(p, index, text, finishing, out)?;
                if piece.is_some() || !released.is_empty() {
                    set_choice_text(c, chat, released);
                }
            }
        }
        emit(out, e.name.as_deref(), &v);
        Ok(())
    }

    /// One chunk the guard adds to a chat or completions stream.
    pub(crate) fn added_choice(&self, index: u64, text: &str, finish: &str, tail: &str) -> String {
        let head = self
            .header
            .as_deref()
            .unwrap_or(r#""id":null,"created":null,"model":null"#);
        if self.api == Api::Chat {
            let delta = format!(r#"{{"content":{}}}"#, quoted(text));
            return chunk_event(head, index, &delta, finish, tail);
        }
        format!(
            concat!(
                r#"data: {{{},"object":"text_completion","choices":[{{"index":{},"text":{},"#,
                r#""finish_reason":{},"logprobs":null}}]{}}}"#,
                "\n\n"
            ),
            head,
            index,
            quoted(text),
            finish,
            tail
        )
    }

    /// The Responses API.
    pub(crate) fn responses_event(
        &mut self,
        p: &Policy<'_>,
        mut v: Value,
        e: &Event,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsafe> {
        let kind = field(&v, &["type"]).as_str().unwrap_or("").to_string();
        let mut terminal = false;
        match kind.as_str() {
            "response.created" | "response.in_progress" if self.template.is_none() => {
                self.template = v.get("response").cloned();
            }
            "response.output_text.delta" => {
                let key = response_key(&v);
                let item = field(&v, &["item_id"]).as_str().map(str::to_string);
                if let (Some(t), Some(id)) = (self.text(key), item) {
                    t.item = Some(id);
                }
                let piece = field(&v, &["delta"]).as_str().unwrap_or("").to_string();
                let released = self.piece(p, key, &piece, false, out)?;
                set(&mut v, "delta", released);
            }
            "response.output_text.done" => {
                let sent = self.settle(p, response_key(&v), field(&v, &["text"]), out)?;
                set(&mut v, "text", sent);
            }
            "response.content_part.done" => {
                let key = response_key(&v);
                if let Some(part) = v.get_mut("part") {
                    self.settle_part(p, key, part, out)?;
                }
            }
            "response.output_item.done" => {
                let o = field(&v, &["output_index"]).as_u64().unwrap_or(0);
                if let Some(item) = v.get_mut("item") {
                    self.settle_item(p, o, item, out)?;
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.flush_all(p, out)?;
                if let Some(r) = v.get_mut("response") {
                    self.usage = Usage::from_json(field(r, &["usage"])).or(self.usage);
                    let items = r.get_mut("output").and_then(Value::as_array_mut);
                    for (o, item) in items.into_iter().flatten().enumerate() {
                        self.settle_item(p, o as u64, item, out)?;
                    }
                }
                terminal = true;
            }
            _ => {}
        }
        self.renumber(&mut v);
        emit(out, e.name.as_deref(), &v);
        self.done |= terminal;
        Ok(())
    }

    /// Every text part of an output item gets what was sent for it.
    fn settle_item(
        &mut self,
        p: &Policy<'_>,
        o: u64,
        item: &mut Value,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsafe> {
        let parts = item.get_mut("content").and_then(Value::as_array_mut);
        for (c, part) in parts.into_iter().flatten().enumerate() {
            self.settle_part(p, (o << 32) | c as u64, part, out)?;
        }
        Ok(())
    }

    fn settle_part(
        &mut self,
        p: &Policy<'_>,
        key: u64,
        part: &mut Value,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsafe> {
        if let Some(text) = part.get("text").filter(|t| t.is_string()) {
            let sent = self.settle(p, key, text, out)?;
            set(part, "text", sent);
        }
        Ok(())
    }

    /// The whole text at `key` as the consumer got it: what was streamed (anything still
    /// held released first), or, for a text that never streamed, `whole` redacted and
    /// checked here.
    fn settle(
        &mut self,
        p: &Policy<'_>,
        key: u64,
        whole: &Value,
        out: &mut Vec<u8>,
    ) -> Result<String, Unsafe> {
        if !self.texts.iter().any(|(k, _)| *k == key) {
            let (clean, kinds) = p.scanner.redact(whole.as_str().unwrap_or(""));
            if let Some(kw) = p.safety.check(&clean) {
                self.fallback(p, key, out);
                return Err(Unsafe(kw.to_string()));
            }
            self.redacted.extend(kinds);
            return Ok(match p.placeholders {
                Some(ph) => ph.restore(&clean).into_owned(),
                None => clean,
            });
        }
        let rest = self.piece(p, key, "", true, out)?;
        if !rest.is_empty() {
            self.added_delta(key, &rest, out);
        }
        Ok(self.text(key).map(|t| t.sent.clone()).unwrap_or_default())
    }

    /// Moves the event's sequence number past the events added so far.
    fn renumber(&mut self, v: &mut Value) {
        let Some(n) = field(v, &["sequence_number"]).as_u64() else {
            return;
        };
        let n = n + self.seq_shift;
        self.last_seq = self.last_seq.max(n);
        if self.seq_shift > 0
            && let Some(o) = v.as_object_mut()
        {
            o.insert("sequence_number".into(), json!(n));
        }
    }

    /// A `response.output_text.delta` the guard adds.
    pub(crate) fn added_delta(&mut self, key: u64, text: &str, out: &mut Vec<u8>) {
        let item = self.text(key).and_then(|t| t.item.clone());
        self.seq_shift += 1;
        self.last_seq += 1;
        let v = json!({"type": "response.output_text.delta", "sequence_number": self.last_seq,
            "item_id": item, "output_index": key >> 32, "content_index": key & 0xFFFF_FFFF,
            "delta": text, "logprobs": []});
        emit(out, Some("response.output_text.delta"), &v);
    }

    /// The fallback text, then `response.incomplete` (reason `content_filter`) carrying the
    /// response as the consumer got it.
    pub(crate) fn responses_fallback(&mut self, p: &Policy<'_>, key: u64, out: &mut Vec<u8>) {
        self.added_delta(key, p.fallback_text, out);
        let (item, sent) = self
            .text(key)
            .map(|t| (t.item.clone(), t.sent.clone()))
            .unwrap_or_default();
        let mut response = self.template.clone().unwrap_or_else(|| json!({}));
        if let Some(r) = response.as_object_mut() {
            r.insert("status".into(), json!("incomplete"));
            r.insert(
                "incomplete_details".into(),
                json!({"reason": "content_filter"}),
            );
            let text = format!("{sent}{}", p.fallback_text);
            r.insert(
                "output".into(),
                json!([{"id": item, "type": "message", "role": "assistant",
                "status": "incomplete",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}]),
            );
        }
        self.seq_shift += 1;
        self.last_seq += 1;
        let v = json!({"type": "response.incomplete", "sequence_number": self.last_seq,
            "response": response, "source": "fallback", "reason": "unsafe_output"});
        emit(out, Some("response.incomplete"), &v);
    }

    /// Anthropic Messages.
    pub(crate) fn messages_event(
        &mut self,
        p: &Policy<'_>,
        mut v: Value,
        e: &Event,
        out: &mut Vec<u8>,
    ) -> Result<(), Unsafe> {
        let kind = field(&v, &["type"]).as_str().unwrap_or("").to_string();
        let key = field(&v, &["index"]).as_u64().unwrap_or(0);
        let mut terminal = false;
        let at: Option<(&str, &str)> = match kind.as_str() {
            "content_block_start" => Some(("content_block", "text")),
            "content_block_delta" if field(&v, &["delta", "type"]) == "text_delta" => {
                Some(("delta", "text"))
            }
            _ => None,
        };
        match (kind.as_str(), at) {
            (_, Some((obj, name))) => {
                let piece = field(&v, &[obj, name]).as_str().map(str::to_string);
                if let Some(piece) = piece {
                    let released = self.piece(p, key, &piece, false, out)?;
                    if let Some(o) = v.get_mut(obj) {
                        set(o, name, released);
                    }
                }
            }
            ("message_start", _) => {
                self.input_tokens = field(&v, &["message", "usage", "input_tokens"]).as_u64();
            }
            ("content_block_stop", _) => {
                let rest = self.piece(p, key, "", true, out)?;
                if !rest.is_empty() {
                    block_delta(key, &rest, out);
                }
            }
            ("message_delta", _) => {
                let u = field(&v, &["usage"]);
                if let Some(completion) = u.get("output_tokens").and_then(Value::as_u64) {
                    let prompt = u.get("input_tokens").and_then(Value::as_u64);
                    self.usage = Some(Usage {
                        prompt: prompt.or(self.input_tokens).unwrap_or(0),
                        completion,
                        estimated: false,
                    });
                }
            }
            ("message_stop", _) => {
                self.flush_all(p, out)?;
                terminal = true;
            }
            _ => {}
        }
        emit(out, e.name.as_deref(), &v);
        self.done |= terminal;
        Ok(())
    }
}

/// Sets a chat choice's `delta.content` (or a completion choice's `text`) without ever
/// indexing into a non-object (which would panic).
fn set_choice_text(choice: &mut Value, chat: bool, text: String) {
    let Some(c) = choice.as_object_mut() else {
        return;
    };
    if !chat {
        c.insert("text".into(), Value::String(text));
        return;
    }
    let delta = c
        .entry("delta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(d) = delta.as_object_mut() {
        d.insert("content".into(), Value::String(text));
    }
}

/// A `content_block_delta` the guard adds.
pub(crate) fn block_delta(index: u64, text: &str, out: &mut Vec<u8>) {
    let v = json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": text}});
    emit(out, Some("content_block_delta"), &v);
}

/// The fallback text, then the block's end, `stop_reason: refusal`, and the message's end.
pub(crate) fn messages_fallback(p: &Policy<'_>, index: u64, out: &mut Vec<u8>) {
    block_delta(index, p.fallback_text, out);
    let stop = json!({"type": "content_block_stop", "index": index});
    emit(out, Some("content_block_stop"), &stop);
    let delta = json!({"type": "message_delta",
        "delta": {"stop_reason": "refusal", "stop_sequence": null},
        "usage": {"output_tokens": 0}, "source": "fallback", "reason": "unsafe_output"});
    emit(out, Some("message_delta"), &delta);
    emit(out, Some("message_stop"), &json!({"type": "message_stop"}));
}
