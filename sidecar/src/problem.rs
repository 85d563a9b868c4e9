//! The sidecar's RFC 9457 problem replies, one builder for both of its routers (the state API
//! and the model admin API).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A `application/problem+json` reply.
pub fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = json!({"type": format!("urn:cxgate:problem:{slug}"), "title": title, "status": status.as_u16(), "detail": detail});
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}
