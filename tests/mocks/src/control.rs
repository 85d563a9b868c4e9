//! What every mock shares: request recording, fault injection, tokens, and `/__mock/*`.

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Who connected, as the recorder sees it (over TLS: `crate::tls` fills it in).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The server name the client asked for (None: it sent no SNI).
    pub sni: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub body_json: Option<Value>,
    pub at_ms: u128,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Over HTTPS: the server name the client asked for (None without TLS or without SNI).
    pub sni: Option<String>,
    /// The request's authority: HTTP/2's `:authority`, else the `Host` header.
    pub authority: Option<String>,
}

/// A fault, as posted to `/__mock/faults`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Status to answer instead of the real response (omit for latency only).
    pub status: Option<u16>,
    /// Share of matching requests that get the fault (deterministic spread), default 1.
    #[serde(default = "one")]
    pub ratio: f64,
    #[serde(default)]
    pub latency_ms: u64,
    /// Number of faults to inject before the fault clears itself (default: unlimited).
    pub count: Option<u64>,
    /// `Retry-After` seconds on faulted responses.
    pub retry_after: Option<u64>,
    /// Extra headers on faulted responses (a platform, or something in front of it, sending
    /// what it should not).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A raw body to answer instead of the platform-shaped error (garbage: truncated JSON, an
    /// HTML page, an error envelope sent with a 200); the status defaults to 200.
    pub body: Option<String>,
    /// The `content-type` of `body` (default `application/json`).
    pub content_type: Option<String>,
    /// Only requests whose path starts with this.
    pub path_prefix: Option<String>,
    /// Only requests with this method (`PUT`).
    pub method: Option<String>,
    /// Only requests whose body contains this (one step of a chain of calls, say).
    pub body_contains: Option<String>,
    /// "api" (default), "token" (token endpoints) or "all".
    #[serde(default = "api")]
    pub scope: String,
}

fn one() -> f64 {
    1.0
}
fn api() -> String {
    "api".into()
}

pub struct Token {
    pub expires: Instant,
    pub revoked: bool,
    pub window_start: Instant,
    pub window_count: u64,
}

pub struct Mock {
    pub role: &'static str,
    started: Instant,
    requests: Mutex<Vec<Recorded>>,
    fault: Mutex<Option<(Fault, f64)>>,
    pub tokens: Mutex<HashMap<String, Token>>,
    pub grants: AtomicU64,
    seq: AtomicU64,
    /// TLS handshakes that failed (the client refused the certificate, say).
    tls_refused: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mock {
    pub fn new(role: &'static str) -> Self {
        Mock {
            role,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            grants: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            tls_refused: AtomicU64::new(0),
        }
    }

    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut r = [0u8; 6];
        let _ = getrandom::fill(&mut r);
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        format!("{prefix}{n:06}{hex}")
    }

    /// Issues a token valid for `ttl`.
    pub fn issue_token(&self, ttl: u64) -> String {
        let token = self.next_id(&format!("{}-tok-", self.role));
        let now = Instant::now();
        lock(&self.tokens).insert(
            token.clone(),
            Token {
                expires: now + Duration::from_secs(ttl),
                revoked: false,
                window_start: now,
                window_count: 0,
            },
        );
        self.grants.fetch_add(1, Ordering::Relaxed);
        token
    }

    /// Checks a bearer token; `Err` is why it is refused.
    pub fn check_bearer(&self, headers: &HeaderMap) -> Result<String, &'static str> {
        let value = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or("missing bearer token")?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or("authorization is not a bearer token")?;
        let tokens = lock(&self.tokens);
        let t = tokens.get(token).ok_or("unknown token")?;
        if t.revoked {
            return Err("token revoked");
        }
        if Instant::now() >= t.expires {
            return Err("token expired");
        }
        Ok(token.to_string())
    }

    /// Counts a request against the token's per-minute budget: (count, allowed, reset_s, over).
    pub fn rate(&self, token: &str, per_min: u64) -> (u64, u64, u64, bool) {
        let mut tokens = lock(&self.tokens);
        let Some(t) = tokens.get_mut(token) else {
            return (0, per_min, 60, false);
        };
        let now = Instant::now();
        if now.duration_since(t.window_start) >= Duration::from_secs(60) {
            t.window_start = now;
            t.window_count = 0;
        }
        t.window_count += 1;
        let reset = 60u64
            .saturating_sub(now.duration_since(t.window_start).as_secs())
            .max(1);
        (
            t.window_count,
            per_min,
            reset,
            per_min > 0 && t.window_count > per_min,
        )
    }

    fn record(&self, r: Recorded) {
        lock(&self.requests).push(r);
    }

    /// Decides whether this request gets the active fault.
    fn take_fault(&self, method: &str, path: &str, is_token: bool, body: &str) -> Option<Fault> {
        let mut slot = lock(&self.fault);
        let (fault, acc) = slot.as_mut()?;
        let in_scope = match fault.scope.as_str() {
            "all" => true,
            "token" => is_token,
            _ => !is_token,
        };
        if !in_scope
            || !fault
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            || !fault
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            || !fault
                .body_contains
                .as_deref()
                .is_none_or(|b| body.contains(b))
        {
            return None;
        }
        *acc += fault.ratio;
        if *acc < 1.0 {
            return None;
        }
        *acc -= 1.0;
        let out = fault.clone();
        if let Some(count) = fault.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                *slot = None;
            }
        }
        Some(out)
    }

    pub fn tls_refused(&self) {
        self.tls_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }
}

fn is_token_path(path: &str) -> bool {
    path.ends_with("/token") || path.starts_with("/.well-known")
}

/// Platform-shaped error body for an injected status.
fn fault_body(role: &str, path: &str, status: u16, ctx: &str) -> Value {
    match role {
        "llm" if path.ends_with("/v1/messages") => {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                401 => "authentication_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": format!("Injected fault {status}")}})
        }
        "genesys" => {
            json!({"message": format!("Injected fault {status}"), "code": "mock.fault", "status": status, "contextId": ctx, "details": [], "errors": []})
        }
        "llm" => {
            json!({"error": {"message": format!("Injected fault {status}"), "type": "server_error", "code": status}})
        }
        _ => {
            json!({"error": "mock_fault", "error_description": format!("Injected fault {status}")})
        }
    }
}

async fn recorder(State(mock): State<Arc<Mock>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/__mock/") {
        return next.run(req).await;
    }
    let sni = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.sni.clone());
    let (parts, body) = req.into_parts();
    let bytes: Bytes = to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let method = parts.method.to_string();
    mock.record(Recorded {
        method: method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_json: serde_json::from_slice(&bytes).ok(),
        body: text.clone(),
        at_ms: mock.elapsed_ms(),
        version: format!("{:?}", parts.version),
        sni,
        authority: parts.uri.authority().map(|a| a.to_string()).or_else(|| {
            parts
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        }),
    });
    let fault = mock.take_fault(&method, &path, is_token_path(&path), &text);
    if let Some(fault) = fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if let Some(raw) = &fault.body {
            let code = StatusCode::from_u16(fault.status.unwrap_or(200))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let ct = fault.content_type.as_deref().unwrap_or("application/json");
            let mut resp = (code, raw.clone()).into_response();
            if let Ok(v) = HeaderValue::from_str(ct) {
                resp.headers_mut().insert("content-type", v);
            }
            return resp;
        }
        if let Some(status) = fault.status {
            let ctx = mock.next_id("ctx-");
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (code, Json(fault_body(mock.role, &path, status, &ctx))).into_response();
            if let Some(ra) = fault.retry_after {
                resp.headers_mut()
                    .insert("retry-after", HeaderValue::from(ra));
            }
            for (k, v) in &fault.headers {
                if let (Ok(k), Ok(v)) = (
                    axum::http::HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    resp.headers_mut().insert(k, v);
                }
            }
            if mock.role == "genesys"
                && let Ok(v) = HeaderValue::from_str(&ctx)
            {
                resp.headers_mut().insert("inin-correlation-id", v);
            }
            return resp;
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

async fn list_requests(State(mock): State<Arc<Mock>>) -> Json<Vec<Recorded>> {
    Json(lock(&mock.requests).clone())
}

async fn clear_requests(State(mock): State<Arc<Mock>>) -> StatusCode {
    lock(&mock.requests).clear();
    StatusCode::NO_CONTENT
}

async fn set_fault(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) if !(0.0..=1.0).contains(&f.ratio) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "ratio must be within 0..1"})),
        )
            .into_response(),
        Ok(f) => {
            *lock(&mock.fault) = Some((f.clone(), 0.0));
            (StatusCode::CREATED, Json(f)).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn clear_fault(State(mock): State<Arc<Mock>>) -> StatusCode {
    *lock(&mock.fault) = None;
    StatusCode::NO_CONTENT
}

/// Revokes every token issued so far (a body `{"token": "..."}` revokes just that one).
async fn revoke(State(mock): State<Arc<Mock>>, body: Bytes) -> Json<Value> {
    let only: Option<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string));
    let mut tokens = lock(&mock.tokens);
    let mut n = 0;
    for (k, t) in tokens.iter_mut() {
        if only.as_deref().is_none_or(|o| o == k) && !t.revoked {
            t.revoked = true;
            n += 1;
        }
    }
    Json(json!({"revoked": n}))
}

async fn stats(State(mock): State<Arc<Mock>>) -> Json<Value> {
    let requests = lock(&mock.requests).len();
    Json(
        json!({"role": mock.role, "grants": mock.grants.load(Ordering::Relaxed), "requests": requests,
               "tls_handshakes_refused": mock.tls_refused.load(Ordering::Relaxed)}),
    )
}

/// Adds the control API and the recorder around a role's router.
pub fn wrap(app: Router, mock: Arc<Mock>) -> Router {
    let control = Router::new()
        .route("/__mock/health", get(|| async { "ok" }))
        .route(
            "/__mock/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/__mock/faults", post(set_fault).delete(clear_fault))
        .route("/__mock/tokens/revoke", post(revoke))
        .route("/__mock/stats", get(stats))
        .with_state(mock.clone());
    app.merge(control)
        .layer(middleware::from_fn_with_state(mock, recorder))
}

/// Reads HTTP Basic credentials.
pub fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn form(body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((decode(k), decode(v)))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `name` query filter with Genesys-style `*` wildcards (case-insensitive).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == n;
    }
    let mut rest = n.as_str();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(pos) if i > 0 || pos == 0 => rest = &rest[pos + part.len()..],
            _ => return false,
        }
    }
    parts.last().is_some_and(|l| l.is_empty()) || rest.is_empty()
}
