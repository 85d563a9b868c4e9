//! Everything a deployment is made of, rendered from the repository's one config document:
//! Envoy's bootstrap (`render`), a production deployment file's whole output (`deployment`:
//! Envoy, the sidecar, Kong), Kong's declarative config (`kong`), the consumer key store
//! (`keystore`), docker-compose (`compose`), the consumer API's OpenAPI document (`openapi`),
//! and the checks that run before anything loads them (`validate`).
//!
//! `xtask` (behind `./cxgate render`, `validate`, `kong-config`, `demo`) and the tests use
//! it; it depends on no test crate.

pub mod compose;
pub mod deployment;
pub mod keystore;
pub mod kong;
pub mod local;
pub mod openapi;
pub mod render;
pub mod validate;

use std::path::{Path, PathBuf};

pub use local::{CURSOR_KEY, MOCK_SECRETS, SIDECAR_KEY, demo_sidecar_config, free_port};
pub use render::{Ports, Vars, consumers, render_envoy, shipped_pipeline, unlimited};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// Where the project's binaries are: `$CXGATE_BIN_DIR` or `target/debug`.
pub fn bin(name: &str) -> PathBuf {
    std::env::var_os("CXGATE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"))
        .join(name)
}

/// Envoy from the project venv (`./cxgate setup` installs it), or `$CXGATE_ENVOY`.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("CXGATE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"))
}

/// The built filters: `$CXGATE_WASM_DIR` or `target/wasm32-wasip1/release`.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("CXGATE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release"))
}

/// An error with its causes, which is where a transport error says what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
