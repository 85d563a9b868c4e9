//! OpenAI chat-completion shapes the guard writes itself (the fallback replies and stream
//! chunks), and the JSON helpers every shape uses.

use serde_json::Value;

/// `v` at the path of object keys, `Null` where any is missing (never panics, unlike `v["k"]`).
pub fn field<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    path.iter().try_fold(v, |at, k| at.get(k)).unwrap_or(&NULL)
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
