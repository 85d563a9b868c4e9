//! cxgate rate-limit stage. Requests are not equal: each route has a cost, and each consumer
//! (and optionally each platform, for all consumers together) has a token bucket in shared
//! data, updated by CAS so two workers never spend the same units. A rejected request gets a
//! 429 problem with the exact `Retry-After` and is not forwarded; the platform's own 429s and
//! rate-limit headers drain its bucket. With `distributed`, instances share one budget kept
//! in Redis by the sidecar: local buckets hold allotments topped up every `sync_ms`.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod bucket;
pub mod config;
pub mod core;
pub mod distributed;
pub mod keys;
pub mod stage;

#[cfg(feature = "standalone")]
mod shell;
