//! The platform request's path and the Envoy hints a route adds to it.

use crate::config::{PathPiece, Profile, Route};

/// Builds the platform path from a profile's pieces and resolved parameters.
pub(crate) fn platform_path(p: &Profile, params: &[(String, String)]) -> String {
    let mut out = format!("/{}", p.platform);
    for piece in &p.path {
        match piece {
            PathPiece::Text(t) => out.push_str(t),
            PathPiece::Param(name) => {
                let v = params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default();
                out.push_str(&encode_segment(v));
            }
        }
    }
    out
}

fn encode_segment(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn route_headers(r: &Route) -> Vec<(String, String)> {
    let mut h = Vec::new();
    if let Some(ms) = r.timeout_ms {
        h.push(("x-envoy-upstream-rq-timeout-ms".into(), ms.to_string()));
    }
    if let Some((on, n)) = &r.retry {
        h.push(("x-envoy-retry-on".into(), on.clone()));
        h.push(("x-envoy-max-retries".into(), n.to_string()));
    }
    h
}
