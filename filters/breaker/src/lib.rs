//! cxgate circuit-breaker stage. One breaker per platform, kept in shared data so every
//! worker sees the same one: outcomes go into a sliding window of time buckets (CAS-updated);
//! past the failure ratio (or the latency bound) with enough volume the breaker opens, the
//! platform's traffic gets the route's fallback, and every probe interval exactly one request
//! across all workers goes through as a probe, which closes or re-opens it.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod config;
pub mod core;
pub mod stage;
pub mod window;

#[cfg(feature = "standalone")]
mod shell;
