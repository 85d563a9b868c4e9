//! The sidecar's HTTP API (loopback only, every call carries the shared key).
//!
//! - `GET /v1/state[?since=V&wait_ms=N]`: the snapshot; with `since`, waits (bounded) until a
//!   newer version exists, answering 304 if none came.
//! - `GET /v1/tokens/{platform}?after=G&wait_ms=N`: that platform's token once its generation
//!   is above G (the filters' bounded wait on a cold start).
//! - `POST /v1/tokens/{platform}/invalidate[?wait_ms=N]` (`{"generation": G}`): a platform
//!   rejected G. Refreshes once however many callers report G; with `wait_ms`, answers like
//!   the token wait above with `after=G` (the filters' replay after a 401).
//! - `POST /v1/coexistence/reconcile`: fetch the roster and look for zombie agents now (after
//!   an administrator resolved one, say), and answer with the suspended list.
//! - `POST /v1/models`, `GET /v1/models/{id}[/snapshot]`: model provisioning
//!   ([`crate::models::admin`]).
//! - `GET /health`, `GET /metrics` (Prometheus).

use crate::hub::{Hub, now_ms};
use crate::metrics::{MapLabel, Metrics};
use crate::tokens::TokenManager;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub const KEY_HEADER: &str = "x-cxgate-sidecar-key";

pub struct Api {
    /// The shared rate-limit budget (when Redis is configured).
    pub budget: Option<Arc<crate::budget::Budget>>,
    pub key: String,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub managers: HashMap<&'static str, Arc<TokenManager>>,
    pub long_poll_max: Duration,
    /// The coexistence roster sync, when configured.
    pub roster: Option<Arc<crate::roster::Trigger>>,
    /// Model provisioning, when configured.
    pub models: Option<Arc<crate::models::admin::Registry>>,
    /// Background probes for `/health`.
    pub llm_probe: Option<crate::health::Shared>,
    pub redis_probe: Option<crate::health::Shared>,
    /// A map older than this is stale in `/health`.
    pub sync_bound_ms: u64,
    /// The CXone API host the gateway was rendered for (config `cxone.gateway_api_endpoint`).
    pub cxone_rendered: Option<String>,
}

type S = State<Arc<Api>>;

pub use crate::problem::problem;

pub fn router(api: Arc<Api>) -> Router {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/state", get(state))
        .route("/v1/tokens/{platform}", get(token))
        .route("/v1/tokens/{platform}/invalidate", post(invalidate))
        .route("/v1/ratelimit/allot", post(allot))
        .route("/v1/coexistence/reconcile", post(reconcile))
        .route("/cxgate/delay", get(delay))
        .with_state(api.clone());
    let models = match &api.models {
        Some(reg) => crate::models::admin::router(reg.clone()),
        None => crate::models::admin::unconfigured(),
    };
    app.merge(models)
        .layer(middleware::from_fn_with_state(api, require_key))
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(api): S, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(KEY_HEADER)
        .is_some_and(|v| same(v.as_bytes(), api.key.as_bytes()));
    if !ok {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
            &format!("the {KEY_HEADER} header is missing or wrong"),
        );
    }
    next.run(req).await
}

fn wait_of(q: &HashMap<String, String>, max: Duration) -> Duration {
    q.get("wait_ms")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(max)
        .min(max)
}

/// The longest wait `/cxgate/delay` holds a call for.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// `GET /cxgate/delay?ms=N`: answers 204 after N ms (at most a minute). A proxy-wasm filter has
/// no sleep; a filter that must wait (the guard's retries) makes a call that answers late. In
/// Envoy an internal listener's fault filter does this; Kong has none, so it calls here.
async fn delay(Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(ms) = q.get("ms").and_then(|v| v.parse::<u64>().ok()) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            "Bad parameter",
            "ms must be a whole number of milliseconds",
        );
    };
    tokio::time::sleep(Duration::from_millis(ms).min(MAX_DELAY)).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn state(State(api): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(since) = q.get("since") else {
        return Json(api.hub.snapshot()).into_response();
    };
    let Ok(since) = since.parse::<u64>() else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-parameter",
            "Bad parameter",
            "since must be a version number",
        );
    };
    // A client ahead of us saw a previous sidecar run with a clock ahead of ours: jump past it
    // (tokens get newer generations too) and answer at once.
    if since > api.hub.version() {
        api.hub.raise_floor(since);
        return Json(api.hub.snapshot()).into_response();
    }
    match api
        .hub
        .wait_newer(since, wait_of(&q, api.long_poll_max))
        .await
    {
        Some(snapshot) => Json(snapshot).into_response(),
        None => StatusCode::NOT_MODIFIED.into_response(),
    }
}

async fn token(
    State(api): S,
    Path(platform): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !api.managers.contains_key(platform.as_str()) {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-platform",
            "Unknown platform",
            &format!("no token manager for {platform:?}"),
        );
    }
    let after: u64 = q.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
    wait_for_token(&api, &platform, after, wait_of(&q, api.long_poll_max)).await
}

/// The platform's token once its generation is above `after`, or a 503 problem after `wait`.
async fn wait_for_token(api: &Api, platform: &str, after: u64, wait: Duration) -> Response {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(t) = api
            .hub
            .token(platform)
            .filter(|t| t.generation > after && t.expires_ms > now_ms())
        {
            return Json(t).into_response();
        }
        let since = api.hub.version();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() || api.hub.wait_newer(since, left).await.is_none() {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "token-unavailable",
                "No token yet",
                &format!("no valid {platform} token arrived in time"),
            );
        }
    }
}

async fn invalidate(
    State(api): S,
    Path(platform): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let Some(manager) = api.managers.get(platform.as_str()) else {
        return problem(
            StatusCode::NOT_FOUND,
            "unknown-platform",
            "Unknown platform",
            &format!("no token manager for {platform:?}"),
        );
    };
    let generation = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["generation"].as_u64());
    let wait_above = match manager.invalidate(generation) {
        Ok(g) => g,
        Err(g) => {
            return problem(
                StatusCode::CONFLICT,
                "unknown-generation",
                "Unknown token generation",
                &format!("this sidecar never issued {platform} token generation {g}"),
            );
        }
    };
    if q.contains_key("wait_ms") {
        // Wait for a token newer than the one reported, which may already exist.
        let after = generation.unwrap_or(wait_above);
        return wait_for_token(&api, &platform, after, wait_of(&q, api.long_poll_max)).await;
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"platform": platform, "wait_for_generation_above": wait_above})),
    )
        .into_response()
}

/// Draws allotments from the shared budget; 503 when Redis cannot be reached, so the filters
/// fall back to their local share.
async fn allot(State(api): S, body: Bytes) -> Response {
    let Some(budget) = api.budget.as_ref() else {
        return problem(
            StatusCode::NOT_FOUND,
            "no-shared-budget",
            "No shared budget",
            "this sidecar has no redis configured",
        );
    };
    let Ok(req) = serde_json::from_slice::<cxgate_state::AllotRequest>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad-allot-request",
            "Malformed allotment request",
            "expected {\"buckets\": [{key, capacity, rate, period_ms, want}]}",
        );
    };
    match budget.allot(&req).await {
        Ok(answer) => {
            api.metrics.allotments.inc();
            Json(answer).into_response()
        }
        Err(e) => {
            api.metrics.budget_errors.inc();
            tracing::warn!(event = "SHARED_BUDGET_UNAVAILABLE", error = %e);
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "shared-budget-unavailable",
                "Shared budget unavailable",
                &e,
            )
        }
    }
}

async fn reconcile(State(api): S) -> Response {
    let Some(trigger) = &api.roster else {
        return problem(
            StatusCode::NOT_FOUND,
            "not-configured",
            "Not configured",
            "The sidecar has no coexistence section.",
        );
    };
    let mut done = trigger.done.subscribe();
    let before = *done.borrow_and_update();
    trigger.now.notify_one();
    let finished =
        tokio::time::timeout(Duration::from_secs(20), done.wait_for(|n| *n > before)).await;
    if !matches!(finished, Ok(Ok(_))) {
        return problem(
            StatusCode::GATEWAY_TIMEOUT,
            "roster-timeout",
            "Roster fetch timed out",
            "The roster fetch did not finish within 20 s.",
        );
    }
    let roster = api.hub.snapshot().roster.unwrap_or_default();
    Json(json!({"suspended": roster.suspended, "fetched_ms": roster.fetched_ms, "stale": roster.stale,
                "last_error": roster.last_error, "agents": roster.agents.len()}))
    .into_response()
}

async fn health(State(api): S) -> Response {
    let snap = api.hub.snapshot();
    let now = now_ms();
    let platforms: Vec<&str> = api.managers.keys().copied().collect();
    let checks = crate::health::checks(
        &snap,
        &platforms,
        api.sync_bound_ms,
        api.llm_probe.as_ref(),
        api.redis_probe.as_ref(),
        now,
    );
    let mut checks = checks;
    if let Some(rendered) = &api.cxone_rendered {
        let discovered = api
            .managers
            .get("cxone")
            .and_then(|m| m.grantor.api_endpoint());
        checks.push(crate::health::rendered_endpoint(
            rendered,
            discovered.as_deref(),
        ));
    }
    let status = crate::health::verdict(&checks);
    let maps: serde_json::Map<String, serde_json::Value> = snap
        .maps
        .iter()
        .map(|(k, m)| (k.clone(), json!({"entries": m.entries.len(), "age_s": now.saturating_sub(m.fetched_ms) / 1000, "stale": m.stale})))
        .collect();
    let roster = snap.roster.as_ref().map(|r| json!({"agents": r.agents.len(), "suspended": r.suspended.len(),
        "age_s": now.saturating_sub(r.fetched_ms) / 1000, "stale": r.stale, "last_error": r.last_error}));
    let code = if status == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({"status": status, "checks": crate::health::render(&checks), "version": snap.version,
        "platforms": snap.health, "maps": maps, "roster": roster});
    (code, Json(body)).into_response()
}

async fn metrics(State(api): S) -> Response {
    let snap = api.hub.snapshot();
    let now = now_ms();
    for (name, map) in &snap.maps {
        if map.fetched_ms > 0 {
            let age = now.saturating_sub(map.fetched_ms) as f64 / 1000.0;
            api.metrics
                .sync_age_seconds
                .get_or_create(&MapLabel { map: name.clone() })
                .set(age);
        }
    }
    api.metrics.state_version.set(snap.version as i64);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &api.metrics.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
