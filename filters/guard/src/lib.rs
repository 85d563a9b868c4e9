//! cxgate guard stage: the LLM stage of the pipeline.
//!
//! On a proxied LLM route: [`screen`] finds deny phrases in the prompt (after [`fold`]),
//! [`pii`] and [`hold`] redact entities in the answer (also when it streams, across any chunk
//! boundary, see [`sse`]), [`safety`] checks the assembled text, [`meter`] counts usage and
//! cost; [`chat`] holds the request and response cores and [`proxied`] the stream.
//!
//! On a route the guard answers itself: [`chain`] (extraction → specialist) and [`bot`] (CXone
//! webhooks) are the config and shapes, [`run`] makes the calls, [`completion`] reads what
//! the model said, [`extract`] takes JSON out of its text and [`retry`] decides the retries.
//! [`stage`] puts it all behind the stage contract.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod answer;
pub mod api;
pub mod bot;
pub mod chain;
pub mod chat;
pub mod completion;
pub mod config;
pub mod detect;
pub mod endpoint;
pub mod extract;
pub mod fold;
pub mod hold;
pub mod meter;
pub mod pii;
pub mod placeholder;
pub mod prompt;
pub(crate) mod proxied;
pub mod retry;
pub mod run;
pub mod safety;
pub mod screen;
pub mod slots;
pub mod sse;
pub mod stage;
pub mod verdict;
pub(crate) mod worker;
