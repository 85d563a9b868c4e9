//! Mock LLM platform admin API (model endpoints, served by the LLM platform since
//! Genesys Cloud has none): `POST /api/v2/ai/models` answers 202 with `PROVISIONING`, and
//! `GET /api/v2/ai/models/{id}` turns `ACTIVE` once the provisioning delay has passed.
//!
//! Like a real platform it checks the provider's model only while provisioning: a `modelId`
//! outside [`CATALOGUE`] ends `FAILED` with an `errorReason`. `x-mock-provision-ms: N` sets
//! the delay of one create (default `--llm-provision-ms`).
//!
//! 429 with `Retry-After` and 503 come from the shared fault injection (`path_prefix`
//! `/api/v2/ai/models`). The definition's API key must arrive (the platform calls the
//! provider with it) and is never answered back.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the mock's providers offer.
pub const CATALOGUE: [(&str, &str); 5] = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("openai", "mock-gpt"),
    ("azure", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4"),
];

struct Model {
    definition: Value,
    ready_at: Instant,
    fail: Option<String>,
}

#[derive(Default)]
pub struct Models {
    next: Mutex<u64>,
    all: Mutex<HashMap<String, Model>>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "status": status.as_u16()})),
    )
        .into_response()
}

/// The definition as the platform shows it: everything but the credentials' secret.
fn public(id: &str, m: &Model, now: Instant) -> Value {
    let mut d = m.definition.clone();
    if let Some(c) = d.get_mut("credentials").and_then(Value::as_object_mut) {
        c.remove("apiKey");
    }
    let (status, reason) = match (&m.fail, now >= m.ready_at) {
        (_, false) => ("PROVISIONING", None),
        (Some(r), true) => ("FAILED", Some(r.clone())),
        (None, true) => ("ACTIVE", None),
    };
    if let Some(o) = d.as_object_mut() {
        o.insert("id".into(), json!(id));
        o.insert("status".into(), json!(status));
        if let Some(r) = reason {
            o.insert("errorReason".into(), json!(r));
        }
    }
    d
}

impl Models {
    pub fn create(&self, headers: &HeaderMap, body: &Bytes, default_ms: u64) -> Response {
        let Ok(def) = serde_json::from_slice::<Value>(body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad.request",
                "the body is not JSON",
            );
        };
        for field in ["name", "provider", "modelId"] {
            if !def[field].is_string() {
                let msg = format!("{field} is required");
                return error(StatusCode::BAD_REQUEST, "invalid.property", &msg);
            }
        }
        let key_ok = def["credentials"]["apiKey"]
            .as_str()
            .is_some_and(|k| k.len() >= 10);
        if !key_ok {
            let msg = "credentials.apiKey is required (at least 10 characters)";
            return error(StatusCode::BAD_REQUEST, "invalid.property", msg);
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let delay = header("x-mock-provision-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_ms);
        let provider = def["provider"].as_str().unwrap_or("");
        let model = def["modelId"].as_str().unwrap_or("");
        let offered = CATALOGUE.iter().any(|(p, m)| *p == provider && *m == model);
        let fail = (!offered)
            .then(|| format!("modelId {model} is not available from provider {provider}"));
        let id = {
            let mut n = self.next.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            format!("mdl-{:06}", *n)
        };
        let model = Model {
            definition: def,
            ready_at: Instant::now() + Duration::from_millis(delay),
            fail,
        };
        let shown = public(&id, &model, Instant::now());
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, model);
        (StatusCode::ACCEPTED, Json(shown)).into_response()
    }

    pub fn get(&self, id: &str) -> Response {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(id) {
            Some(m) => Json(public(id, m, Instant::now())).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                "not.found",
                &format!("model {id} not found"),
            ),
        }
    }
}

pub async fn create(
    State(l): State<std::sync::Arc<super::Llm>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !super::authorized(&l, &headers) {
        return error(StatusCode::UNAUTHORIZED, "bad.credentials", "invalid key");
    }
    l.models.create(&headers, &body, l.provision_ms)
}

pub async fn get(
    State(l): State<std::sync::Arc<super::Llm>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !super::authorized(&l, &headers) {
        return error(StatusCode::UNAUTHORIZED, "bad.credentials", "invalid key");
    }
    l.models.get(&id)
}
