//! What the sidecar reads from the platforms' identity endpoints. Pure functions of a response
//! body, kept out of the sidecar's async code so the fuzz target `sidecar_wire` can run them.
//!
//! Every error here may be logged, so none quotes the body: a token endpoint that answers
//! with the wrong shape must not put a token in the sidecar's log.

use serde::Deserialize;

/// A grant the sidecar can publish: a token that fits an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// Longest lifetime believed: a later refresh is harmless, an overflowing deadline is not.
pub const MAX_LIFETIME_S: u64 = 7 * 24 * 3600;

/// Longest platform text (an OAuth error's code and description) kept for a log line.
pub const MAX_ERROR_TEXT: usize = 200;

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
}

/// An OAuth 2.0 token response (RFC 6749 §5.1).
pub fn token_response(body: &[u8]) -> Result<Grant, String> {
    let b: TokenBody =
        serde_json::from_slice(body).map_err(|e| unreadable("token response", &e))?;
    let token = b
        .access_token
        .as_ref()
        .and_then(|v| v.as_str())
        .filter(|t| b64token(t))
        .ok_or("malformed token response: no usable access_token")?;
    let expires_in = b
        .expires_in
        .as_ref()
        .and_then(lifetime)
        .ok_or("malformed token response: no positive expires_in")?;
    let token_type = match b.token_type.as_ref() {
        None | Some(serde_json::Value::Null) => "Bearer",
        Some(v) => v
            .as_str()
            .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
            .ok_or("malformed token response: token_type is not a scheme name")?,
    };
    Ok(Grant {
        access_token: token.to_string(),
        token_type: token_type.to_string(),
        expires_in: expires_in.min(MAX_LIFETIME_S),
    })
}

/// `expires_in` as seconds: a positive integer, or one written as a string (some servers do).
fn lifetime(v: &serde_json::Value) -> Option<u64> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.filter(|n| *n > 0)
}

/// RFC 6750's b64token: what can follow `Bearer ` in a header, and nothing that could end it.
fn b64token(t: &str) -> bool {
    let body = t.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}

#[derive(Deserialize, Default)]
struct OAuthError {
    error: Option<serde_json::Value>,
    error_description: Option<serde_json::Value>,
}

/// A failed token call for the log: the status and the OAuth error (RFC 6749 §5.2), printable
/// and bounded, since the platform wrote it.
pub fn token_failure(status: u16, body: &[u8]) -> String {
    let e: OAuthError = serde_json::from_slice(body).unwrap_or_default();
    let text = |v: Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str()).map(printable);
    let (code, desc) = (text(e.error), text(e.error_description));
    format!(
        "HTTP {status} {} {}",
        code.unwrap_or_default(),
        desc.unwrap_or_default()
    )
    .trim()
    .to_string()
}

fn printable(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > MAX_ERROR_TEXT {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// The token endpoint named by an OpenID discovery document.
pub fn oidc_token_endpoint(body: &[u8]) -> Result<String, String> {
    endpoint(body, "token_endpoint", "discovery")
}

/// The tenant's API base named by CXone's configuration document, without a trailing slash.
pub fn cxone_api_endpoint(body: &[u8]) -> Result<String, String> {
    endpoint(body, "api_endpoint", "CXone configuration")
        .map(|u| u.trim_end_matches('/').to_string())
}

fn endpoint(body: &[u8], field: &str, what: &str) -> Result<String, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| unreadable(what, &e))?;
    let raw = doc
        .get(field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{what}: no {field}"))?;
    let url = url::Url::parse(raw).map_err(|e| format!("{what}: {field} is not a URL ({e})"))?;
    let fits = matches!(url.scheme(), "https" | "http")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none();
    if !fits {
        return Err(format!(
            "{what}: {field} is not an http(s) URL without credentials"
        ));
    }
    Ok(url.to_string())
}

/// What was wrong with a body, and where, never what it said.
fn unreadable(what: &str, e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "not an object",
        serde_json::error::Category::Eof => "truncated",
    };
    format!(
        "malformed {what}: {kind} at line {} column {}",
        e.line(),
        e.column()
    )
}
