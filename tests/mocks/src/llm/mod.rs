//! Mock LLM: OpenAI's `/v1/chat/completions` (plain and SSE streaming, with
//! `stream_options.include_usage`), `/v1/models`, and (in [`apis`]) the Responses
//! API, legacy completions, embeddings and Anthropic's `/v1/messages`, behind an API key
//! (`Authorization: Bearer`, `api-key`, or Anthropic's `x-api-key`).
//!
//! What it answers is steerable per request, so tests can put PII or unsafe words in an
//! answer and break a stream where they like:
//! - `x-mock-say: <text>` answers with that text verbatim (a prompt may arrive redacted, so
//!   the answer's own PII comes this way);
//! - a user message containing `say:` is answered with the text after it, verbatim;
//! - `x-mock-delta-chars: N` streams the answer in deltas of N characters (default: words);
//! - `x-mock-split-bytes: N` writes each SSE event in pieces of N bytes, 1 ms apart;
//! - `x-mock-abort-after: N` resets the stream after N content deltas (no usage, no `[DONE]`);
//! - the chain's extraction and specialist prompts get deterministic JSON, shaped as asked by
//!   `x-mock-format` or the `/__mock/llm/script` queue (see [`crate::llm_chain`]).
//!
//! Latency, 429 with `Retry-After` and 5xx come from the shared fault injection. The platform's
//! admin API for model endpoints is in [`models`].

mod apis;
pub mod models;

use crate::Args;
use crate::control::Mock;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub struct Llm {
    pub(crate) mock: Arc<Mock>,
    /// Answer formats for the next chat calls, one each (`/__mock/llm/script`).
    pub(crate) script: std::sync::Mutex<std::collections::VecDeque<String>>,
    api_key: String,
    pub models: models::Models,
    pub provision_ms: u64,
}

pub type S = State<Arc<Llm>>;

pub fn router(mock: Arc<Mock>, args: &Args) -> Router {
    let state = Arc::new(Llm {
        mock,
        script: Default::default(),
        api_key: args.llm_api_key.clone(),
        models: Default::default(),
        provision_ms: args.llm_provision_ms,
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(apis::responses))
        .route("/v1/completions", post(apis::completions))
        .route("/v1/embeddings", post(apis::embeddings))
        .route("/v1/messages", post(apis::messages))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/api/v2/ai/models", post(models::create))
        .route("/api/v2/ai/models/{id}", get(models::get))
        .route("/__mock/llm/script", post(set_script).delete(clear_script))
        .with_state(state)
}

pub fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": Value::Null}})),
    )
        .into_response()
}

/// Accepts `Authorization: Bearer <key>`, `api-key: <key>` or `x-api-key: <key>`.
pub fn authorized(llm: &Llm, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = headers
        .get("api-key")
        .or_else(|| headers.get("x-api-key"))
        .and_then(|v| v.to_str().ok());
    bearer.or(api_key) == Some(llm.api_key.as_str())
}

async fn model(
    State(l): S,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    if !authorized(&l, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided",
        );
    }
    if id != "mock-gpt" {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "The model does not exist",
        );
    }
    Json(json!({"id": "mock-gpt", "object": "model", "owned_by": "cxgate-mocks"})).into_response()
}

async fn models(State(l): S, headers: HeaderMap) -> Response {
    if !authorized(&l, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided",
        );
    }
    Json(json!({"object": "list", "data": [{"id": "mock-gpt", "object": "model", "owned_by": "cxgate-mocks"}]})).into_response()
}

/// `{"formats": ["fenced", "json", ...]}`: the formats of the next chat answers, in order.
async fn set_script(State(l): S, body: Bytes) -> Response {
    let formats: Option<Vec<String>> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| serde_json::from_value(v["formats"].clone()).ok());
    let Some(formats) = formats else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "give {\"formats\": [\"json\"|\"fenced\"|\"prose\"|\"broken\"|\"none\"]}",
        );
    };
    let mut script = l.script.lock().unwrap_or_else(|e| e.into_inner());
    script.extend(formats);
    Json(json!({"queued": script.len()})).into_response()
}

async fn clear_script(State(l): S) -> StatusCode {
    l.script.lock().unwrap_or_else(|e| e.into_inner()).clear();
    StatusCode::NO_CONTENT
}

/// Word-ish token count, good enough for usage figures.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// How a test steers the answer: `x-mock-delta-chars`, `x-mock-split-bytes`,
/// `x-mock-abort-after`.
#[derive(Clone, Copy, Default)]
pub struct Knobs {
    pub delta_chars: Option<usize>,
    pub split_bytes: Option<usize>,
    pub abort_after: Option<usize>,
}

impl Knobs {
    pub fn of(headers: &HeaderMap) -> Knobs {
        let knob = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|n| *n > 0)
        };
        Knobs {
            delta_chars: knob("x-mock-delta-chars"),
            split_bytes: knob("x-mock-split-bytes"),
            abort_after: knob("x-mock-abort-after"),
        }
    }

    /// The answer in deltas: N characters each, or words.
    pub fn pieces(&self, content: &str) -> Vec<String> {
        match self.delta_chars {
            Some(n) => {
                let chars: Vec<char> = content.chars().collect();
                chars.chunks(n).map(|c| c.iter().collect()).collect()
            }
            None => content
                .split(' ')
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 {
                        w.to_string()
                    } else {
                        format!(" {w}")
                    }
                })
                .collect(),
        }
    }
}

/// What the model answers: `x-mock-say`, a chain prompt's JSON, the text after `say:` in the
/// last user text, or an echo of it.
pub fn answer_text(l: &Llm, headers: &HeaderMap, messages: &[Value], last_user: &str) -> String {
    if let Some(said) = headers.get("x-mock-say").and_then(|v| v.to_str().ok()) {
        return said.to_string();
    }
    let scripted = l
        .script
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    let format = headers
        .get("x-mock-format")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(scripted)
        .unwrap_or_else(|| "json".into());
    match (
        crate::llm_chain::answer(messages),
        last_user.split_once("say:"),
    ) {
        (Some(json), _) => crate::llm_chain::shape(&format, &json),
        (None, Some((_, said))) => said.trim_start().to_string(),
        (None, None) => format!("Mock reply to: {last_user}"),
    }
}

/// An SSE response of `events` (each a whole event, blank line included), written as the
/// knobs say: in pieces, or cut off after N events.
pub fn sse_response(events: Vec<String>, knobs: Knobs, done: bool) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for (i, e) in events.iter().enumerate() {
            if knobs.abort_after.is_some_and(|n| i > n) {
                let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock abort");
                let _ = tx.send(Err(reset)).await;
                return;
            }
            let bytes = e.as_bytes();
            let step = knobs.split_bytes.unwrap_or(bytes.len()).max(1);
            for piece in bytes.chunks(step) {
                if tx.send(Ok(Bytes::copy_from_slice(piece))).await.is_err() {
                    return;
                }
                if knobs.split_bytes.is_some() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if done {
            let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n"))).await;
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A message's text: `content` as a string, or its text parts joined.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

async fn chat(State(l): S, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&l, &headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Incorrect API key provided",
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
        );
    };
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "'messages' must be a non-empty array",
        );
    };
    let model = req["model"].as_str().unwrap_or("mock-gpt").to_string();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .unwrap_or_default();
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| count_tokens(&text_of(&m["content"])))
        .sum();
    let content = answer_text(&l, &headers, messages, &last_user);
    let knobs = Knobs::of(&headers);
    let completion_tokens = count_tokens(&content);
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = l.mock.next_id("chatcmpl-");
    let created = 1_767_225_600u64;
    if req["stream"] != true {
        return Json(json!({"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": usage}))
        .into_response();
    }
    let include_usage = req["stream_options"]["include_usage"] == true;
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in knobs.pieces(&content) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": usage}));
    }
    let events = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    sse_response(events, knobs, true)
}
