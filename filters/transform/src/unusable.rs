//! A 2xx from a platform that the consumer could not use (truncated, not JSON, or not the
//! object the profile reads) is the platform's failure: a 502 problem, never a "success".
//! Problems about a platform's answer are built here.

use crate::outcome::{Forward, Normalized, Returned, problem, set};
use cxgate_kit::log::Event;
use serde_json::{Value, json};

/// A 2xx the consumer cannot use: a 502 problem, and an event for the operator.
pub(crate) fn invalid(fwd: &Forward, ret: &Returned<'_>, what: &str) -> Normalized {
    let applied = if fwd.method == "GET" {
        String::new()
    } else {
        format!(" The {} may or may not have been applied.", fwd.method)
    };
    let detail = format!(
        "{} answered {} with {what}.{applied}",
        fwd.platform, ret.status
    );
    let event = Event::new("PLATFORM_INVALID_RESPONSE")
        .str("platform", &fwd.platform)
        .num("status", u64::from(ret.status))
        .str("why", what)
        .str("trace_id", ret.trace_id.unwrap_or_default());
    let mut n = about_platform(
        fwd,
        ret,
        (502, "platform-invalid-response"),
        "Platform answered with an unusable response",
        detail,
    );
    n.event = Some(event);
    n
}

/// A problem about the platform's answer, naming the platform, its status and correlation id.
pub(crate) fn about_platform(
    fwd: &Forward,
    ret: &Returned<'_>,
    (status, kind): (u16, &str),
    title: &str,
    detail: String,
) -> Normalized {
    let reply = problem(status, kind, title, detail, ret.trace_id).into_reply();
    let mut doc: Value = serde_json::from_slice(&reply.body).unwrap_or_else(|_| json!({}));
    set(&mut doc, "platform", json!(fwd.platform));
    set(&mut doc, "platform_status", json!(ret.status));
    if let Some(c) = ret.correlation_id {
        set(&mut doc, "correlation_id", json!(c));
    }
    Normalized {
        status,
        content_type: cxgate_kit::problem::CONTENT_TYPE.into(),
        body: doc.to_string().into_bytes(),
        event: None,
    }
}
