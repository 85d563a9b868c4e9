//! Chat-completion requests the gateway makes itself, and their answers: the request body,
//! the answer's text (never `choices[0]` blindly), its usage (OpenAI's and the seed's names),
//! and a streamed answer reassembled from its SSE events.

use crate::chat::{field, quoted};
use crate::meter::Usage;
use serde_json::Value;

/// One model's settings for a call.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCall {
    pub model: String,
    pub temperature: f64,
    pub max_tokens: u64,
}

/// A chat message the gateway sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Message {
    pub fn new(role: &'static str, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// The OpenAI request body. A stream asks for the usage chunk (the meter needs it).
pub fn request_body(call: &ModelCall, messages: &[Message], stream: bool) -> Vec<u8> {
    let msgs: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                r#"{{"role":{},"content":{}}}"#,
                quoted(m.role),
                quoted(&m.content)
            )
        })
        .collect();
    let stream_part = if stream {
        r#","stream":true,"stream_options":{"include_usage":true}"#
    } else {
        ""
    };
    format!(
        r#"{{"model":{},"messages":[{}],"temperature":{},"max_tokens":{}{}}}"#,
        quoted(&call.model),
        msgs.join(","),
        Value::from(call.temperature),
        call.max_tokens,
        stream_part
    )
    .into_bytes()
}

/// Characters of every message, for the estimator.
pub fn prompt_chars(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| m.content.chars().count() as u64)
        .sum()
}

/// The usage of an answer: OpenAI's `prompt_tokens`, or the seed gateway's `promptTokens`.
pub fn usage_of(v: &Value) -> Option<Usage> {
    let u = field(v, &["usage"]);
    Usage::from_json(u).or_else(|| {
        Some(Usage {
            prompt: u.get("promptTokens")?.as_u64()?,
            completion: u.get("completionTokens")?.as_u64()?,
            estimated: false,
        })
    })
}

/// The choice the answer is about: the one with `index` 0, else the first one there is.
fn first_choice(v: &Value) -> Option<&Value> {
    let choices = v.get("choices")?.as_array()?;
    choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .or_else(|| choices.first())
}

/// A message's text: `content` as a string, or its text parts joined.
fn text_of(content: &Value) -> Option<String> {
    if let Some(s) = content.as_str() {
        return Some(s.to_string());
    }
    let parts = content.as_array()?;
    let texts: Vec<&str> = parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    (!texts.is_empty()).then(|| texts.concat())
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Answer {
    pub text: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
}

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    NotJson,
    /// JSON without a choice holding text (an error body, an empty `choices`).
    NoText,
}

/// Reads a chat completion; never indexes into what is not there.
pub fn read_answer(body: &[u8]) -> Result<Answer, Unreadable> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Unreadable::NotJson)?;
    let choice = first_choice(&v).ok_or(Unreadable::NoText)?;
    let text = text_of(field(choice, &["message", "content"])).ok_or(Unreadable::NoText)?;
    Ok(Answer {
        text,
        usage: usage_of(&v),
        finish_reason: field(choice, &["finish_reason"])
            .as_str()
            .map(str::to_string),
    })
}

/// A streamed answer put back together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assembled {
    pub text: String,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    /// `[DONE]` arrived: the stream was not cut short.
    pub done: bool,
}

/// Reassembles an SSE chat stream (the whole body of a callout): the `delta.content` of
/// choice 0 in order, the usage chunk, and whether it ended properly.
pub fn assemble_sse(body: &[u8]) -> Assembled {
    let mut out = Assembled::default();
    let text = String::from_utf8_lossy(body).replace('\r', "");
    for event in text.split("\n\n") {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        if data.trim() == "[DONE]" {
            out.done = true;
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if let Some(u) = usage_of(&v) {
            out.usage = Some(u);
        }
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            continue;
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            if let Some(t) = field(c, &["delta", "content"]).as_str() {
                out.text.push_str(t);
            }
            if let Some(r) = field(c, &["finish_reason"]).as_str() {
                out.finish_reason = Some(r.to_string());
            }
        }
    }
    out
}
