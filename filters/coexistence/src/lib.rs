//! cxgate coexistence stage: during a migration from a legacy PBX to the cloud, a
//! SIP proxy asks `POST /coexistence/v1/decision` where each inbound call goes. The stage
//! answers as a local reply from the roster the sidecar syncs into shared data: no callout,
//! no platform call per call. [`config`] is its section, [`decide`] the pure decision (loop
//! guard, suspended agents, migration status, DNIS rules, default; stale and missing state),
//! and [`stage`] puts it behind the stage contract.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod config;
pub mod decide;
pub mod stage;
