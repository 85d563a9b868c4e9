//! What goes into the transform's core and what comes out: the consumer's request, what to
//! send the platform (or the reply), the platform's answer and the normalized response; and the
//! helpers that build a reply. The core and its listing and unusable-answer parts all use
//! these, so they live apart from each of them.

use crate::page::Cursor;
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use serde_json::Value;

/// The consumer's request, as far as the core needs it (the body already parsed and the
/// platform already resolved by the request model).
pub struct Incoming<'a> {
    /// Index into `Config::routes`.
    pub route: usize,
    /// The path with its query.
    pub path: &'a str,
    /// `Null` for a route without a body.
    pub body: &'a Value,
    /// The platform id the model resolved (`genesys`, `cxone`).
    pub platform: &'a str,
    pub consumer: &'a str,
    pub trace_id: Option<&'a str>,
    /// The cursor signing key.
    pub cursor_key: &'a [u8],
    /// The `Idempotency-Key` request header.
    pub idempotency_key: Option<&'a str>,
    pub now_ms: u64,
}

/// What to send the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    pub method: String,
    /// The gateway path of the platform route, e.g. `/genesys/api/v2/routing/queues/q-1`.
    pub path: String,
    pub body: Option<Vec<u8>>,
    /// Extra request headers (Envoy timeout / retry hints).
    pub headers: Vec<(String, String)>,
    pub profile: usize,
    /// The consumer's platform name (GENESYS, CXONE).
    pub platform: String,
    /// For listings: the page being fetched.
    pub cursor: Option<Cursor>,
    /// A keyed request on an idempotent route: what the shell claims before forwarding.
    pub idempotency: Option<crate::idem::Keyed>,
    /// A merge profile's update: the stage reads, merges and writes by callouts instead.
    pub merge: Option<MergeCall>,
}

/// A read-modify-write: the object at `path` is read, `patch` merged into it, and written back.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeCall {
    /// The platform's own path (no gateway prefix): the callouts go straight to its upstream.
    pub path: String,
    /// The consumer's mapped fields alone; defaults fill only what the object lacks.
    pub patch: Value,
}

#[derive(Debug, Clone, PartialEq)]
// One per request, returned once: boxing the larger variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    Forward(Forward),
    Reply(LocalReply),
}

/// The platform's answer.
pub struct Returned<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// The platform's `content-type`, if it sent one.
    pub content_type: Option<&'a str>,
    /// `ININ-Correlation-Id` or the like.
    pub correlation_id: Option<&'a str>,
    /// The consumer asked for platform metadata (the documented header).
    pub include_metadata: bool,
    pub trace_id: Option<&'a str>,
    pub cursor_key: &'a [u8],
    pub now_ms: u64,
}

/// The normalized response for the consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    pub event: Option<Event>,
}

pub(crate) fn problem(
    status: u16,
    slug: &str,
    title: &str,
    detail: impl Into<String>,
    trace: Option<&str>,
) -> Problem {
    Problem::new(status, slug, title, detail).with_trace_id(trace)
}

pub(crate) fn reply(p: Problem) -> Outcome {
    Outcome::Reply(p.into_reply())
}

pub(crate) fn set(doc: &mut Value, key: &str, v: Value) {
    if let Some(o) = doc.as_object_mut() {
        o.insert(key.to_string(), v);
    }
}
