//! cxgate token stage. The consumer never sees a platform credential: per platform, the stage
//! sets the platform's bearer token from shared data (synced from the sidecar), overwriting
//! whatever the consumer sent. A token past 95 % of its life is still served while the sidecar
//! refreshes; past hard expiry it is never served, and the request waits (bounded) for a fresh
//! one, or gets a 503 problem with `Retry-After` and is not forwarded.

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
