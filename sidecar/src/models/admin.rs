//! The sidecar's model admin API (key-guarded like every sidecar call):
//! - `POST /v1/models` (a definition): validate (422 with every error's pointer), create on the
//!   platform (502 when it refuses or fails), answer 202 and poll in the background;
//! - `GET /v1/models/{id}`: what is known of it (status, attempts, errorReason, definition);
//! - `GET /v1/models/{id}/snapshot`: its snapshot (credential references only).

use super::definition::Finding;
use super::provision::{HttpPlatform, Outcome, Progress};
use super::{Created, Provisioner};
use crate::problem::problem;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Entry {
    created: Created,
    status: String,
    error_reason: Option<String>,
    attempts: u32,
    warnings: Vec<Finding>,
}

pub struct Registry {
    pub provisioner: Provisioner<HttpPlatform>,
    models: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    pub fn new(provisioner: Provisioner<HttpPlatform>) -> Registry {
        Registry {
            provisioner,
            models: Mutex::default(),
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Entry)) {
        let mut all = self.models.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = all.get_mut(id) {
            f(e);
        }
    }
}

type S = State<Arc<Registry>>;

pub fn router(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/v1/models", post(create))
        .route("/v1/models/{id}", get(show))
        .route("/v1/models/{id}/snapshot", get(snapshot))
        .with_state(reg)
}

/// The same routes when no `models` section is configured: a clear 503, not a 404.
pub fn unconfigured() -> Router {
    async fn off() -> Response {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "models-not-configured",
            "Model provisioning is not configured",
            "add a models section (platform_url, admin_key) to the sidecar config",
        )
    }
    Router::new()
        .route("/v1/models", post(off))
        .route("/v1/models/{id}", get(off))
        .route("/v1/models/{id}/snapshot", get(off))
}

fn invalid(errors: &[Finding]) -> Response {
    let body = json!({"type": "urn:cxgate:problem:invalid-model", "title": "Invalid model definition",
        "status": 422, "detail": format!("{} error(s) in the definition", errors.len()), "errors": errors});
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn create(State(reg): S, body: Bytes) -> Response {
    let Ok(def) = serde_json::from_slice::<Value>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-json",
            "Invalid JSON",
            "the body must be a model definition (JSON)",
        );
    };
    let checked = match reg.provisioner.validate(&def) {
        Ok(c) => c,
        Err(errors) => return invalid(&errors),
    };
    let created = match reg.provisioner.create(&checked).await {
        Ok(c) => c,
        Err(e) => {
            return problem(
                StatusCode::BAD_GATEWAY,
                "platform-error",
                "The LLM platform did not create the model",
                &e,
            );
        }
    };
    let id = created.id.clone();
    let answer = json!({"id": id, "status": "PROVISIONING", "payloadHash": created.hash,
        "warnings": checked.warnings});
    reg.models.lock().unwrap_or_else(|e| e.into_inner()).insert(
        id.clone(),
        Entry {
            created: created.clone(),
            status: "PROVISIONING".into(),
            error_reason: None,
            attempts: 0,
            warnings: checked.warnings,
        },
    );
    let bg = reg.clone();
    tokio::spawn(async move {
        let mut progress = |p: &Progress| {
            let seen = p.seen.clone();
            bg.update(&id, |e| {
                e.attempts = p.attempt;
                e.status = seen;
            });
        };
        let outcome = bg.provisioner.settle(&created, &mut progress).await;
        let (status, reason) = match outcome {
            Ok(Outcome::Active(_)) => ("ACTIVE".to_string(), None),
            Ok(Outcome::Failed { reason, .. }) => ("FAILED".to_string(), Some(reason)),
            Ok(other) => ("UNKNOWN".to_string(), Some(format!("{other:?}"))),
            Err(e) => ("UNKNOWN".to_string(), Some(e)),
        };
        tracing::info!(event = "MODEL_SETTLED", model = %id, status = %status);
        bg.update(&id, |e| {
            e.status = status;
            e.error_reason = reason;
            // The look that settled it reports no progress.
            e.attempts += 1;
        });
    });
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

fn not_found(id: &str) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "model-not-found",
        "Model not found",
        &format!("no model {id} was created through this sidecar"),
    )
}

async fn show(State(reg): S, Path(id): Path<String>) -> Response {
    let all = reg.models.lock().unwrap_or_else(|e| e.into_inner());
    let Some(e) = all.get(&id) else {
        return not_found(&id);
    };
    Json(
        json!({"id": id, "status": e.status, "errorReason": e.error_reason, "attempts": e.attempts,
        "payloadHash": e.created.hash, "warnings": e.warnings, "definition": e.created.definition}),
    )
    .into_response()
}

async fn snapshot(State(reg): S, Path(id): Path<String>) -> Response {
    let created = {
        let all = reg.models.lock().unwrap_or_else(|e| e.into_inner());
        match all.get(&id) {
            Some(e) => e.created.clone(),
            None => return not_found(&id),
        }
    };
    match reg.provisioner.snapshot(&created) {
        Ok(s) => Json(s).into_response(),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit-failed",
            "The audit log could not be written",
            &e,
        ),
    }
}
