//! cxgate-kit: what every cxgate filter shares.
//!
//! The pure parts (everything but [`proxy`]) have no proxy-wasm dependency: a filter's core is
//! written against the traits in [`host`], tested natively and under wasmtime with [`fakes`],
//! and run in Envoy or Kong through [`proxy`], which implements the traits once over the
//! proxy-wasm ABI.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod config;
pub mod credential;
pub mod error;
pub mod fakes;
pub mod fields;
pub mod host;
pub mod ids;
pub mod log;
pub mod problem;
pub mod shared;
pub mod sync;
pub mod time;
pub mod wire;

#[cfg(feature = "proxy")]
pub mod property;
#[cfg(feature = "proxy")]
pub mod proxy;

pub use error::{ConfigError, HostError};
pub use host::{Clock, Entropy, Headers, HttpCallout, Metrics, SharedStore};
