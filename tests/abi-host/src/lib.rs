//! A proxy-wasm host for tests, built on wasmtime.
//!
//! It loads a filter's `.wasm` into N worker VMs that share one shared-data store (with the
//! exact CAS rules of the chosen proxy), drives the stream callbacks, runs a virtual clock with
//! per-worker ticks, and answers `dispatch_http_call` from the test (by hand, by a scripted
//! responder, or by timeout). It records local replies, headers, logs and metrics.
//!
//! The `Kong` profile refuses what Kong's ngx_wasm_module lacks (gRPC, `proxy_get_log_level`,
//! `proxy_done`, trailers, metadata properties, pausing in response headers, `on_queue_ready`,
//! foreign functions, setting `:authority`) and behaves as it was measured to (local replies,
//! header case, ticks, CAS, failed dispatches; README "kong profile"): a filter that relies on
//! Envoy's behaviour fails its test under that profile.

// Test infrastructure: `abi::link` and its siblings register the ABI's host functions one
// after another, a table rather than steps, and stay whole.
#![allow(clippy::too_many_lines)]

mod abi;
pub mod fixtures;
mod guest;
mod host;
mod memory;
mod state;
mod types;

pub use host::Host;
pub use host::HostBuilder;
pub use state::SharedHandle;
pub use types::{Action, CallInfo, CallReply, LocalReply, LogRecord, Profile, Stream};

/// The path of a filter built by `./cxgate build` (`target/wasm32-wasip1/release/<name>.wasm`).
pub fn filter_wasm(crate_name: &str) -> std::path::PathBuf {
    let file = format!("{}.wasm", crate_name.replace('-', "_"));
    let dir = std::env::var_os("CXGATE_WASM_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/wasm32-wasip1/release")
        });
    dir.join(file)
}
