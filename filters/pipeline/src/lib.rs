//! The pipeline module: every cxgate stage in one module, run in one HTTP context per request
//! (Envoy: one V8 VM per worker for the whole chain, and one filter instance per request).
//! The config document's `stages` chooses which stages run and in what order; the same
//! module serves as the upstream token filter with `"stages": ["token"]`.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_model::StageKind;

/// Every stage, in the order the shipped configs run them.
pub const STAGES: [StageKind; 8] = [
    cxgate_trace::stage::KIND,
    cxgate_model::authz::KIND,
    cxgate_ratelimit::stage::KIND,
    cxgate_transform::stage::KIND,
    cxgate_guard::stage::KIND,
    cxgate_breaker::stage::KIND,
    cxgate_coexistence::stage::KIND,
    cxgate_token::stage::KIND,
];

/// What a document that lists no stages runs.
pub const DEFAULT: [&str; 5] = ["trace", "authz", "ratelimit", "transform", "breaker"];

#[cfg(feature = "standalone")]
proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| cxgate_model::runner::root(&STAGES, &DEFAULT, "cxgate-pipeline"));
}}
