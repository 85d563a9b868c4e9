//! RFC 9457 `application/problem+json` local replies: the one way every filter answers an
//! error to the consumer.

use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// Set on every reply a cxgate filter generates (value: the problem slug), so filters further
/// out can tell the gateway's own answers from the platform's (the breaker does not count a
/// gateway 503 as a platform failure).
pub const MARKER_HEADER: &str = "x-cxgate-problem";

/// One failing field of a request, for validation problems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// A JSON pointer into the consumer's body (or a header name for header problems).
    pub pointer: String,
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// RFC 9457 extension members (e.g. `missing_scopes`), next to the standard ones.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Extra response headers (e.g. `Retry-After`); not part of the body.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
}

impl Problem {
    /// `slug` names the problem type: `urn:cxgate:problem:<slug>`.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: format!("urn:cxgate:problem:{slug}"),
            title: title.to_string(),
            status,
            detail: detail.into(),
            trace_id: None,
            errors: Vec::new(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_trace_id(mut self, trace_id: Option<&str>) -> Self {
        self.trace_id = trace_id.map(str::to_string);
        self
    }

    pub fn with_error(mut self, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            pointer: pointer.into(),
            message: message.into(),
        });
        self
    }

    pub fn with_extra(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The local reply to send: status, headers (content type first) and body.
    pub fn into_reply(self) -> LocalReply {
        // Serializing plain strings and integers cannot fail; keep a static fallback anyway
        // rather than a panic path.
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| {
            br#"{"type":"about:blank","title":"Internal error","status":500}"#.to_vec()
        });
        let slug = self
            .type_uri
            .strip_prefix("urn:cxgate:problem:")
            .unwrap_or("other")
            .to_string();
        let mut headers = vec![("content-type".to_string(), CONTENT_TYPE.to_string())];
        headers.extend(self.headers);
        headers.push((MARKER_HEADER.to_string(), slug));
        LocalReply {
            status: u32::from(self.status),
            headers,
            body,
        }
    }
}

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}
