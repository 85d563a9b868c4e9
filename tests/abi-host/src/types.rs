//! The values tests exchange with the host: profiles, actions, streams, replies, calls.

use wasmtime::{Result, format_err as anyhow};

/// Which proxy the host imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Envoy 1.40: `dispatch_http_call` names a cluster; Envoy's CAS rules.
    Envoy,
    /// Kong 3.9 (ngx_wasm_module): `host:port` upstreams, Kong's CAS rules, and no gRPC,
    /// `on_queue_ready`, `proxy_get_log_level`, `proxy_done`, trailers, metadata properties or
    /// pausing in response headers.
    Kong,
}

/// What a header or body callback returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    Other(i32),
}

impl Action {
    pub(crate) fn from_raw(raw: i32) -> Action {
        match raw {
            0 => Action::Continue,
            1 => Action::Pause,
            other => Action::Other(other),
        }
    }
}

/// A stream (HTTP context) on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub worker: usize,
    pub id: u32,
}

/// A local reply a filter sent instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The body as an RFC 9457 problem; fails unless the reply is `application/problem+json`.
    pub fn problem(&self) -> Result<serde_json::Value> {
        if self.header("content-type") != Some("application/problem+json") {
            return Err(anyhow!("not a problem reply: {:?}", self.headers));
        }
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub worker: usize,
    pub level: u32,
    pub message: String,
}

/// An outbound call a filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub token: u32,
    pub worker: usize,
    pub context_id: u32,
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub dispatched_ns: u64,
}

impl CallInfo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }
}

/// How a call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReply {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The call timed out or the upstream failed: the filter is called with no headers.
    Failure,
}

impl CallReply {
    pub fn json(status: u16, body: &str) -> CallReply {
        CallReply::Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}
