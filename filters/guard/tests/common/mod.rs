//! What the guard's layer-1 test files share: the shipped document's guard section in an
//! authz + guard pipeline, on an in-memory host.
#![allow(dead_code, clippy::unwrap_used)]

use cxgate_kit::host::CasDialect;
use cxgate_model::authz;
use cxgate_model::fakes::TestHost;
use cxgate_model::{Pipeline, StageKind};
use serde_json::{Value, json};

pub const SHIPPED: &str = include_str!("../../../../envoy/cxgate.json");
pub const KINDS: [StageKind; 2] = [authz::KIND, cxgate_guard::stage::KIND];

pub fn host() -> TestHost {
    TestHost::new(CasDialect::Envoy, 1_800_000_000_000)
}

/// authz + guard with the shipped model and guard section, after `patch` on the section.
pub fn pipeline(h: &mut TestHost, patch: impl FnOnce(&mut Value)) -> Pipeline {
    let s: Value = serde_json::from_str(SHIPPED).unwrap();
    let mut guard = s["guard"].clone();
    patch(&mut guard);
    let doc =
        json!({"version": 2, "stages": ["authz", "guard"], "model": s["model"], "guard": guard});
    h.pipeline(&doc.to_string(), &KINDS).unwrap()
}
