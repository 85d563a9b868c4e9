//! cxgate transform stage: one normalized consumer API in front of platforms with different
//! data models. Each transformed model route maps to a platform
//! request through a declarative mapping profile: the body is validated against the route's
//! JSON Schema (every failing field reported), mapped, completed with the platform's explicit
//! defaults, and checked against the platform schema before anything is sent. Idempotent routes
//! answer duplicates from shared data; responses are normalized back, platform errors become
//! problem+json, and listings page through an opaque signed cursor.

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
pub mod idem;
mod listing;
pub mod merge;
pub mod outcome;
pub mod page;
mod paths;
pub mod stage;
pub mod template;
mod unusable;

#[cfg(feature = "standalone")]
mod shell;
