//! cxgate trace filter. Every request leaves the gateway with an `X-Gateway-Trace-Id` and a
//! W3C `traceparent`: a consumer's valid values are kept, missing or invalid ones are made.
//! [`core`] is the pure logic, [`stage`] puts it behind the stage contract, and `shell`
//! (feature `standalone`) is the module's entry point: the runner with this stage.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod core;
pub mod stage;

#[cfg(feature = "standalone")]
mod shell;
