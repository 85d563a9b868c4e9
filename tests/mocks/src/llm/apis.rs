//! The mock LLM's other APIs, in the vendors' shapes (the vendors' API references):
//! OpenAI's Responses API (typed SSE events with sequence numbers, no `[DONE]`), legacy
//! completions, embeddings, and Anthropic's Messages API (`x-api-key` and `anthropic-version`
//! required, its own error shape, `message_start` … `message_stop` events). Answers are
//! steered as in [`super`].

use super::{Knobs, Llm, S, answer_text, authorized, count_tokens, error, sse_response, text_of};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const CREATED: u64 = 1_767_225_600;

/// An OpenAI-style request: the key checked, then the body parsed.
fn openai_request(l: &Llm, headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    if !authorized(l, headers) {
        let m = "Incorrect API key provided";
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            m,
        )));
    }
    serde_json::from_slice::<Value>(body).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "We could not parse the JSON body of your request.",
        ))
    })
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The Responses API's input as chat-like messages (for the chain's answers) and its last
/// user text.
fn responses_input(req: &Value) -> (Vec<Value>, String) {
    let mut messages = Vec::new();
    if let Some(i) = req["instructions"].as_str() {
        messages.push(json!({"role": "system", "content": i}));
    }
    match &req["input"] {
        Value::String(s) => messages.push(json!({"role": "user", "content": s})),
        Value::Array(items) => {
            for it in items {
                if let Some(role) = it["role"].as_str() {
                    messages.push(json!({"role": role, "content": text_of(&it["content"])}));
                } else if it["type"] == "function_call_output" {
                    messages.push(json!({"role": "tool", "content": text_of(&it["output"])}));
                }
            }
        }
        _ => {}
    }
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    (messages, last)
}

pub async fn responses(State(l): S, headers: HeaderMap, body: Bytes) -> Response {
    let req = match openai_request(&l, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (messages, last) = responses_input(&req);
    if messages.is_empty() {
        let m = "Missing required parameter: 'input'.";
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    }
    let model = req["model"].as_str().unwrap_or("mock-gpt").to_string();
    let text = answer_text(&l, &headers, &messages, &last);
    let input_tokens: u64 = messages
        .iter()
        .map(|m| count_tokens(m["content"].as_str().unwrap_or("")))
        .sum();
    let output_tokens = count_tokens(&text);
    let id = l.mock.next_id("resp_");
    let item_id = format!("msg_{id}");
    let response = |status: &str, content: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": CREATED, "status": status,
            "model": model, "output": [{"id": item_id, "type": "message", "role": "assistant",
            "status": status, "content": content}], "usage": usage})
    };
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens});
    let part = json!({"type": "output_text", "text": text, "annotations": []});
    if req["stream"] != true {
        return Json(response("completed", json!([part]), usage)).into_response();
    }
    let knobs = Knobs::of(&headers);
    let mut data = vec![
        json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"id": item_id,
            "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
        json!({"type": "response.content_part.added", "item_id": item_id, "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
    ];
    for piece in knobs.pieces(&text) {
        data.push(
            json!({"type": "response.output_text.delta", "item_id": item_id,
            "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        );
    }
    data.push(
        json!({"type": "response.output_text.done", "item_id": item_id,
        "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
    );
    data.push(
        json!({"type": "response.content_part.done", "item_id": item_id,
        "output_index": 0, "content_index": 0, "part": part}),
    );
    data.push(
        json!({"type": "response.output_item.done", "output_index": 0,
        "item": {"id": item_id, "type": "message", "role": "assistant", "status": "completed",
        "content": [part]}}),
    );
    data.push(json!({"type": "response.completed",
        "response": response("completed", json!([part]), usage)}));
    let events = data
        .into_iter()
        .enumerate()
        .map(|(n, mut v)| {
            v["sequence_number"] = json!(n);
            let name = v["type"].as_str().unwrap_or("").to_string();
            event(&name, &v)
        })
        .collect();
    sse_response(events, knobs, false)
}

/// `prompt` (a string or a list of strings) as the chain and the echo read it.
fn prompts(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

pub async fn completions(State(l): S, headers: HeaderMap, body: Bytes) -> Response {
    let req = match openai_request(&l, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let prompt = prompts(&req["prompt"]).join("\n");
    let model = req["model"].as_str().unwrap_or("mock-gpt").to_string();
    let messages = [json!({"role": "user", "content": prompt})];
    let text = answer_text(&l, &headers, &messages, &prompt);
    let (pt, ct) = (count_tokens(&prompt), count_tokens(&text));
    let usage = json!({"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct});
    let id = l.mock.next_id("cmpl-");
    let chunk = |text: &str, finish: Value| {
        json!({"id": id, "object": "text_completion", "created": CREATED, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}]})
    };
    if req["stream"] != true {
        let mut v = chunk(&text, json!("stop"));
        v["usage"] = usage;
        return Json(v).into_response();
    }
    let knobs = Knobs::of(&headers);
    let mut data: Vec<Value> = knobs
        .pieces(&text)
        .iter()
        .map(|p| chunk(p, Value::Null))
        .collect();
    data.push(chunk("", json!("stop")));
    if req["stream_options"]["include_usage"] == true {
        data.push(
            json!({"id": id, "object": "text_completion", "created": CREATED,
            "model": model, "choices": [], "usage": usage}),
        );
    }
    let events = data.iter().map(|v| format!("data: {v}\n\n")).collect();
    sse_response(events, knobs, true)
}

pub async fn embeddings(State(l): S, headers: HeaderMap, body: Bytes) -> Response {
    let req = match openai_request(&l, &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let inputs = prompts(&req["input"]);
    if inputs.is_empty() {
        let m = "'input' must be a string or a list of strings";
        return error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    }
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // A deterministic vector: the text's length and bytes, scaled.
            let sum: u64 = s.bytes().map(u64::from).sum();
            let v: Vec<f64> = (0..8u64)
                .map(|k| ((sum + k * 31) % 997) as f64 / 997.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|s| count_tokens(s)).sum();
    Json(
        json!({"object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response()
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    (status, Json(body)).into_response()
}

pub async fn messages(State(l): S, headers: HeaderMap, body: Bytes) -> Response {
    if !authorized(&l, &headers) {
        return anthropic_error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if headers.get("anthropic-version").is_none() {
        let m = "anthropic-version: header is required";
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        let m = "The request body is not valid JSON.";
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    };
    if !req["max_tokens"].is_u64() {
        let m = "max_tokens: Field required";
        return anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", m);
    }
    let mut msgs: Vec<Value> = Vec::new();
    if !req["system"].is_null() {
        msgs.push(json!({"role": "system", "content": text_of(&req["system"])}));
    }
    for m in req["messages"].as_array().into_iter().flatten() {
        msgs.push(json!({"role": m["role"], "content": text_of(&m["content"])}));
    }
    let last = msgs
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    let text = answer_text(&l, &headers, &msgs, &last);
    let input: u64 = msgs
        .iter()
        .map(|m| count_tokens(m["content"].as_str().unwrap_or("")))
        .sum();
    let output = count_tokens(&text);
    let id = l.mock.next_id("msg_");
    let model = req["model"].as_str().unwrap_or("mock-claude").to_string();
    let message = |content: Value, stop: Value, out: u64| {
        json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": out}})
    };
    if req["stream"] != true {
        let content = json!([{"type": "text", "text": text}]);
        return Json(message(content, json!("end_turn"), output)).into_response();
    }
    let knobs = Knobs::of(&headers);
    let mut events = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
        ),
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    for piece in knobs.pieces(&text) {
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta",
            "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": output}}),
    ));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    sse_response(events, knobs, false)
}
