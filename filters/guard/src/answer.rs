//! The answer side of a proxied LLM call when it comes whole: every text field of the
//! operation's answer redacted and safety-checked, its usage read; and the fallback answer
//! in each operation's own shape, whole or streamed.

use crate::api::Api;
use crate::chat::{field, quoted};
use crate::config::Config;
use crate::meter::Usage;
use crate::pii::Kind;
use crate::placeholder::Placeholders;
use crate::slots;
use serde_json::{Value, json};

/// A whole answer, guarded.
#[derive(Debug, Default, PartialEq)]
pub struct Guarded {
    pub body: Option<Vec<u8>>,
    pub usage: Option<Usage>,
    pub redacted: Vec<Kind>,
    pub unsafe_hit: Option<String>,
    pub completion_chars: u64,
}

/// The usage of a whole answer of `api`: OpenAI's `prompt_tokens`, the Responses and
/// Messages APIs' `input_tokens`; embeddings count only the input.
pub fn usage(api: Api, v: &Value) -> Option<Usage> {
    let u = field(v, &["usage"]);
    if api == Api::Embeddings {
        return Some(Usage {
            prompt: u.get("prompt_tokens")?.as_u64()?,
            completion: 0,
            estimated: false,
        });
    }
    Usage::from_json(u)
}

/// Redacts every text field of the answer and runs the safety check on it, then puts the
/// prompt's placeholders back. Bodies that are not JSON pass unchanged (errors from the LLM
/// are its own shape).
pub fn guard(cfg: &Config, api: Api, body: &[u8], restore: &Placeholders) -> Guarded {
    let mut out = Guarded::default();
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    out.usage = usage(api, &v);
    let mut changed = false;
    for text in slots::answer(api, &mut v) {
        let Some(s) = text.as_str() else {
            continue;
        };
        let (clean, kinds) = cfg.scanner.redact(s);
        out.completion_chars += clean.chars().count() as u64;
        if out.unsafe_hit.is_none() {
            out.unsafe_hit = cfg.safety.check(&clean).map(str::to_string);
        }
        let restored = restore.restore(&clean).into_owned();
        if !kinds.is_empty() || restored != s {
            out.redacted.extend(kinds);
            *text = Value::String(restored);
            changed = true;
        }
    }
    if changed {
        out.body = Some(v.to_string().into_bytes());
    }
    out
}

/// Who the fallback answers, and why.
pub struct Fallback<'a> {
    pub api: Api,
    pub model: &'a str,
    pub text: &'a str,
    pub reason: &'a str,
    pub id: &'a str,
    pub now_s: u64,
}

impl Fallback<'_> {
    /// The fallback answer in the operation's shape, marked `source: fallback` with its
    /// reason; `None` for embeddings, which have no text to fall back on.
    pub fn body(&self, stream: bool) -> Option<(&'static str, Vec<u8>)> {
        let body = match (self.api, stream) {
            (Api::Embeddings, _) => return None,
            (Api::Chat, false) => {
                crate::chat::fallback_json(self.model, self.text, self.reason, self.id, self.now_s)
            }
            (Api::Chat, true) => {
                crate::chat::fallback_sse(self.model, self.text, self.reason, self.id, self.now_s)
            }
            (Api::Completions, false) => self.completion().to_string().into_bytes(),
            (Api::Completions, true) => self.completion_sse(),
            (Api::Responses, false) => self.response("completed").to_string().into_bytes(),
            (Api::Responses, true) => self.response_sse(),
            (Api::Messages, false) => self.message().to_string().into_bytes(),
            (Api::Messages, true) => self.message_sse(),
        };
        let ct = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        Some((ct, body))
    }

    fn completion(&self) -> Value {
        json!({"id": self.id, "object": "text_completion", "created": self.now_s,
            "model": self.model,
            "choices": [{"index": 0, "text": self.text, "finish_reason": "stop", "logprobs": null}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "source": "fallback", "reason": self.reason})
    }

    fn completion_sse(&self) -> Vec<u8> {
        let head = format!(
            r#""id":{},"created":{},"model":{}"#,
            quoted(self.id),
            self.now_s,
            quoted(self.model)
        );
        let tail = format!(r#","source":"fallback","reason":{}"#, quoted(self.reason));
        let choice = format!(
            r#"{{"index":0,"text":{},"finish_reason":"stop","logprobs":null}}"#,
            quoted(self.text)
        );
        let mut out = format!(
            "data: {{{head},\"object\":\"text_completion\",\"choices\":[{choice}]{tail}}}\n\n"
        );
        out.push_str("data: [DONE]\n\n");
        out.into_bytes()
    }

    fn response(&self, status: &str) -> Value {
        let text = if status == "completed" { self.text } else { "" };
        let item_status = if status == "completed" {
            "completed"
        } else {
            "in_progress"
        };
        let content = if status == "completed" {
            json!([{"type": "output_text", "text": text, "annotations": []}])
        } else {
            json!([])
        };
        json!({"id": self.id, "object": "response", "created_at": self.now_s,
            "status": status, "model": self.model,
            "output": [{"id": format!("msg_{}", self.id), "type": "message", "role": "assistant",
                "status": item_status, "content": content}],
            "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
            "source": "fallback", "reason": self.reason})
    }

    fn response_sse(&self) -> Vec<u8> {
        let item = format!("msg_{}", self.id);
        let mut out = Vec::new();
        let events = [
            json!({"type": "response.created", "response": self.response("in_progress")}),
            json!({"type": "response.output_text.delta", "item_id": item, "output_index": 0,
                "content_index": 0, "delta": self.text, "logprobs": []}),
            json!({"type": "response.output_text.done", "item_id": item, "output_index": 0,
                "content_index": 0, "text": self.text, "logprobs": []}),
            json!({"type": "response.completed", "response": self.response("completed")}),
        ];
        for (n, mut e) in events.into_iter().enumerate() {
            let name = field(&e, &["type"]).as_str().unwrap_or("").to_string();
            if let Some(o) = e.as_object_mut() {
                o.insert("sequence_number".into(), json!(n));
            }
            crate::sse::emit(&mut out, Some(&name), &e);
        }
        out
    }

    fn message(&self) -> Value {
        json!({"id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
            "source": "fallback", "reason": self.reason})
    }

    fn message_sse(&self) -> Vec<u8> {
        let mut start = self.message();
        if let Some(o) = start.as_object_mut() {
            o.insert("content".into(), json!([]));
            o.insert("stop_reason".into(), Value::Null);
        }
        let events = [
            json!({"type": "message_start", "message": start}),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": self.text}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                "stop_sequence": null}, "usage": {"output_tokens": 0},
                "source": "fallback", "reason": self.reason}),
            json!({"type": "message_stop"}),
        ];
        let mut out = Vec::new();
        for e in events {
            let name = field(&e, &["type"]).as_str().unwrap_or("").to_string();
            crate::sse::emit(&mut out, Some(&name), &e);
        }
        out
    }
}
