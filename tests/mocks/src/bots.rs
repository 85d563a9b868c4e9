//! Mock CXone bot session history, the shape the example bot reads before it asks the LLM:
//! `GET /api/v2/bot/bots/{botId}/sessions/{sessionId}/messages?pageSize=&pageNumber=` answers
//! `{entities: [{id, from, text, timestamp}], pageSize, pageNumber, total, pageCount}`, oldest
//! first, behind the CXone bearer token.
//!
//! Every session has a default conversation (a customer charged twice, with a card number in
//! it for the redaction tests); `PUT /__mock/bot/sessions/{sessionId}` with
//! `{"messages": [{"from", "text"}]}` sets one, and a session id starting `missing` is a 404.

use crate::control::Mock;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Bots {
    mock: Arc<Mock>,
    sessions: Mutex<HashMap<String, Vec<Value>>>,
}

type S = State<Arc<Bots>>;

fn default_conversation() -> Vec<Value> {
    [
        ("customer", "Hi, I was charged twice for my order 12345."),
        ("bot", "I'm sorry to hear that. Which card was charged?"),
        ("customer", "My card 4111 1111 1111 1111, please help me."),
    ]
    .iter()
    .map(|(from, text)| json!({"from": from, "text": text}))
    .collect()
}

pub fn router(mock: Arc<Mock>) -> Router {
    let state = Arc::new(Bots {
        mock,
        sessions: Mutex::new(HashMap::new()),
    });
    let api = Router::new()
        .route(
            "/api/v2/bot/bots/{bot}/sessions/{session}/messages",
            get(messages),
        )
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state.clone());
    Router::new()
        .route("/__mock/bot/sessions/{session}", put(set_session))
        .with_state(state)
        .merge(api)
}

async fn guard(State(b): S, req: Request, next: Next) -> Response {
    match b.mock.check_bearer(req.headers()) {
        Ok(_) => next.run(req).await,
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token", "error_description": why})),
        )
            .into_response(),
    }
}

async fn messages(
    State(b): S,
    Path((_bot, session)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if session.starts_with("missing") {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "error_description": "no such bot session"})),
        )
            .into_response();
    }
    let all = b
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&session)
        .cloned()
        .unwrap_or_else(default_conversation);
    let num = |k: &str, d: usize| {
        q.get(k)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(d)
    };
    let (size, page) = (num("pageSize", 25).min(100), num("pageNumber", 1));
    let entities: Vec<Value> = all
        .iter()
        .enumerate()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|(i, m)| {
            json!({"id": format!("msg-{i:04}"), "from": m["from"], "text": m["text"],
                   "timestamp": format!("2026-12-01T10:{:02}:00Z", i % 60)})
        })
        .collect();
    let total = all.len();
    Json(
        json!({"entities": entities, "pageSize": size, "pageNumber": page,
                "total": total, "pageCount": total.div_ceil(size)}),
    )
    .into_response()
}

async fn set_session(State(b): S, Path(session): Path<String>, body: Bytes) -> Response {
    let Some(messages) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["messages"].as_array().cloned())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "give {\"messages\": [{\"from\", \"text\"}]}"})),
        )
            .into_response();
    };
    b.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(session, messages);
    StatusCode::NO_CONTENT.into_response()
}
