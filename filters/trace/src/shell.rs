//! The trace filter as its own module: the runner with this stage (and authz).

use cxgate_model::runner;

/// The stages this module hosts.
pub const STAGES: [cxgate_model::StageKind; 2] = [crate::stage::KIND, cxgate_model::authz::KIND];

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| runner::root(&STAGES, &["trace"], "cxgate-trace"));
}}
