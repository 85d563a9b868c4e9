//! cxgate sidecar (skeleton: issue 3 adds the token manager and metadata sync).
//!
//! Serves, on loopback only and behind a shared key header, the state API the filters pull
//! (`/v1/state`), `/health` and Prometheus `/metrics`.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

pub const KEY_HEADER: &str = "x-cxgate-sidecar-key";

#[derive(Parser, Debug)]
#[command(about = "cxgate sidecar: tokens, metadata sync, state API")]
struct Args {
    /// Listen address; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Shared key every caller must send in `x-cxgate-sidecar-key`.
    #[arg(long, env = "CXGATE_SIDECAR_KEY", hide_env_values = true)]
    key: Option<String>,
    /// File holding the shared key (used when --key/CXGATE_SIDECAR_KEY is not set).
    #[arg(long, env = "CXGATE_SIDECAR_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
}

struct Sidecar {
    key: String,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().json().with_target(false).init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "cxgate-sidecar: refusing to listen on non-loopback address {}",
            args.listen
        );
        std::process::exit(2);
    }
    let key = match (args.key, args.key_file) {
        (Some(k), _) => k,
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(k) => k.trim().to_string(),
            Err(e) => {
                eprintln!(
                    "cxgate-sidecar: cannot read key file {}: {e}",
                    path.display()
                );
                std::process::exit(2);
            }
        },
        (None, None) => {
            eprintln!("cxgate-sidecar: set CXGATE_SIDECAR_KEY or CXGATE_SIDECAR_KEY_FILE");
            std::process::exit(2);
        }
    };
    if key.len() < 16 {
        eprintln!("cxgate-sidecar: the shared key must be at least 16 characters");
        std::process::exit(2);
    }
    let state = Arc::new(Sidecar { key });
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/state", get(snapshot))
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cxgate-sidecar: cannot bind {}: {e}", args.listen);
            std::process::exit(2);
        }
    };
    tracing::info!(event = "SIDECAR_READY", listen = %args.listen);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("cxgate-sidecar: {e}");
        std::process::exit(1);
    }
}

/// Constant-time comparison, so the key cannot be guessed byte by byte from timings.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_key(State(s): State<Arc<Sidecar>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(KEY_HEADER)
        .is_some_and(|v| same(v.as_bytes(), s.key.as_bytes()));
    if !ok {
        let body = json!({"type": "urn:cxgate:problem:unauthenticated", "title": "Unauthenticated", "status": 401,
                          "detail": format!("the {KEY_HEADER} header is missing or wrong")});
        return (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/problem+json")],
            body.to_string(),
        )
            .into_response();
    }
    next.run(req).await
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "platforms": {}}))
}

async fn metrics() -> String {
    "# HELP cxgate_sidecar_up 1 while the sidecar serves.\n# TYPE cxgate_sidecar_up gauge\ncxgate_sidecar_up 1\n".into()
}

/// The state snapshot; empty until the token manager and metadata sync land (issue 3).
async fn snapshot() -> Json<serde_json::Value> {
    Json(json!({"version": 0, "tokens": {}, "maps": {}, "health": {"status": "ok"}}))
}
