//! The pure request and response cores for OpenAI-shaped chat completions: screening the
//! request, guarding a whole JSON answer, and the fallback replies.

use crate::config::{Config, Mode};
use crate::meter::Usage;
use crate::pii::Kind;
use cxgate_kit::problem::Problem;
use serde_json::{Value, json};

/// `v` at the path of object keys, `Null` where any is missing (never panics, unlike `v["k"]`).
pub fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    path.iter().try_fold(v, |at, k| at.get(k)).unwrap_or(&NULL)
}

/// What screening decided about a request that goes on.
#[derive(Debug, Default, PartialEq)]
pub struct Screened {
    /// The body to forward instead, when it changed.
    pub body: Option<Vec<u8>>,
    pub model: String,
    pub stream: bool,
    /// The consumer asked for the usage chunk itself.
    pub consumer_usage: bool,
    /// Characters of every message, for the estimator.
    pub prompt_chars: u64,
    /// Rule ids filtered, one per match.
    pub filtered: Vec<String>,
}

/// A refused request: the problem and the rule (when a deny rule refused it).
pub type Refusal = (Box<Problem>, Option<String>);

fn bad(detail: impl Into<String>, pointer: &str) -> Refusal {
    let p = Problem::new(400, "invalid-request", "Invalid request", detail)
        .with_error(pointer, "invalid");
    (Box::new(p), None)
}

/// Screens a chat request body. Bodies that are not UTF-8 or not a JSON object get 400.
pub fn screen_request(cfg: &Config, body: &[u8]) -> Result<Screened, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8", ""))?;
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("the body is not JSON: {e}"), ""))?;
    if !v.is_object() {
        return Err(bad("the body must be a JSON object", ""));
    }
    let mut out = Screened {
        model: field(&v, &["model"])
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        stream: field(&v, &["stream"]) == true,
        consumer_usage: field(&v, &["stream_options", "include_usage"]) == true,
        ..Default::default()
    };
    let mut changed = false;
    if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
        for (i, m) in messages.iter_mut().enumerate() {
            let scanned = field(m, &["role"])
                .as_str()
                .is_some_and(|r| cfg.roles.iter().any(|x| x == r));
            for (ptr, part) in texts(m, i) {
                out.prompt_chars += part.as_str().map_or(0, |s| s.chars().count() as u64);
                let Some(s) = part.as_str().filter(|_| scanned) else {
                    continue;
                };
                let hits = cfg.screen.hits(s);
                let Some(first) = hits.first() else {
                    continue;
                };
                let rule = cfg.screen.rule_id(first).to_string();
                if cfg.mode == Mode::Block {
                    let p = Problem::new(
                        400,
                        "prompt-rejected",
                        "Prompt rejected",
                        format!("the prompt matches the deny rule {rule:?}"),
                    )
                    .with_error(ptr, format!("matches deny rule {rule}"))
                    .with_extra("rule", json!(rule));
                    return Err((Box::new(p), Some(rule)));
                }
                out.filtered
                    .extend(hits.iter().map(|h| cfg.screen.rule_id(h).to_string()));
                *part = Value::String(cfg.screen.filter(s, &hits));
                changed = true;
            }
        }
    }
    if out.stream
        && !out.consumer_usage
        && let Some(o) = v.as_object_mut()
    {
        let opts = o.entry("stream_options").or_insert_with(|| json!({}));
        match opts.as_object_mut() {
            Some(opts) => {
                opts.insert("include_usage".into(), json!(true));
            }
            None => return Err(bad("stream_options must be an object", "/stream_options")),
        }
        changed = true;
    }
    if changed {
        out.body = Some(v.to_string().into_bytes());
    }
    Ok(out)
}

/// A message's text values: `content` as a string, or each `text` of its content parts.
fn texts(m: &mut Value, i: usize) -> Vec<(String, &mut Value)> {
    let Some(content) = m.get_mut("content") else {
        return Vec::new();
    };
    if content.is_string() {
        return vec![(format!("/messages/{i}/content"), content)];
    }
    let Some(parts) = content.as_array_mut() else {
        return Vec::new();
    };
    parts
        .iter_mut()
        .enumerate()
        .filter_map(|(j, p)| {
            let t = p.get_mut("text")?;
            Some((format!("/messages/{i}/content/{j}/text"), t))
        })
        .collect()
}

/// A whole JSON answer, guarded.
#[derive(Debug, Default, PartialEq)]
pub struct Guarded {
    pub body: Option<Vec<u8>>,
    pub usage: Option<Usage>,
    pub redacted: Vec<Kind>,
    pub unsafe_hit: Option<String>,
    pub completion_chars: u64,
}

/// Redacts every `choices[].message.content` and runs the safety check on it. Bodies that
/// are not JSON pass unchanged (errors from the LLM are its own shape).
pub fn guard_json(cfg: &Config, body: &[u8]) -> Guarded {
    let mut out = Guarded::default();
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return out;
    };
    out.usage = Usage::from_json(field(&v, &["usage"]));
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return out;
    };
    for c in choices.iter_mut() {
        let Some(content) = c.get_mut("message").and_then(|m| m.get_mut("content")) else {
            continue;
        };
        let Some(text) = content.as_str() else {
            continue;
        };
        let (clean, kinds) = cfg.scanner.redact(text);
        out.completion_chars += clean.chars().count() as u64;
        if out.unsafe_hit.is_none() {
            out.unsafe_hit = cfg.safety.check(&clean).map(str::to_string);
        }
        if !kinds.is_empty() {
            out.redacted.extend(kinds);
            *content = Value::String(clean);
        }
    }
    if !out.redacted.is_empty() {
        out.body = Some(v.to_string().into_bytes());
    }
    out
}

/// A JSON string literal (the replies below are written as text: `json!` trees cost the module
/// several KB each).
pub fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// The fallback answer in the OpenAI shape, marked `source: fallback` with its reason.
pub fn fallback_json(model: &str, text: &str, reason: &str, id: &str, now_s: u64) -> Vec<u8> {
    format!(
        concat!(
            r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"#,
            r#""choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"#,
            r#""finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}},"#,
            r#""source":"fallback","reason":{}}}"#
        ),
        quoted(id),
        now_s,
        quoted(model),
        quoted(text),
        quoted(reason)
    )
    .into_bytes()
}

/// One `chat.completion.chunk` event; `head` is `"id":..,"created":..,"model":..` and `tail`
/// any fields after `choices` (with their leading comma).
pub fn chunk_event(head: &str, index: u64, delta: &str, finish: &str, tail: &str) -> String {
    format!(
        concat!(
            r#"data: {{{},"object":"chat.completion.chunk","#,
            r#""choices":[{{"index":{},"delta":{},"finish_reason":{}}}]{}}}"#,
            "\n\n"
        ),
        head, index, delta, finish, tail
    )
}

/// The same as a complete SSE stream, for a consumer that asked to stream.
pub fn fallback_sse(model: &str, text: &str, reason: &str, id: &str, now_s: u64) -> Vec<u8> {
    let head = format!(
        r#""id":{},"created":{now_s},"model":{}"#,
        quoted(id),
        quoted(model)
    );
    let tail = format!(r#","source":"fallback","reason":{}"#, quoted(reason));
    let first = format!(r#"{{"role":"assistant","content":{}}}"#, quoted(text));
    let mut out = chunk_event(&head, 0, &first, "null", &tail);
    out.push_str(&chunk_event(&head, 0, "{}", r#""stop""#, &tail));
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}
