//! cxgate-model: the one request model every stage reads, and the stage contract.
//!
//! - [`model`]: consumers (scopes, limits) and routes (match, platform, cost, scopes);
//! - [`exchange`]: one request as every stage sees it, read from the proxy once;
//! - [`stage`]: the small host traits and hooks a stage is written against;
//! - [`flow`]: the pipeline that runs a list of stages over one request (pure);
//! - [`document`]: the config document every cxgate module reads;
//! - [`authz`]: the authorization stage (scopes);
//! - `runner` (feature `proxy`): the one proxy-wasm shell for a list of stages.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod authz;
pub mod body;
pub mod document;
pub mod exchange;
pub mod fakes;
pub mod flow;
pub mod model;
pub mod stage;
pub mod stream_host;

#[cfg(feature = "proxy")]
pub mod runner;

pub use exchange::Exchange;
pub use flow::{Pipeline, Request, Step};
pub use model::{Consumer, Limit, Model, PlatformSource, Route};
pub use stage::{Build, CallAnswer, Flow, Io, RootIo, Stage, StageKind, StageStream, StreamHost};
