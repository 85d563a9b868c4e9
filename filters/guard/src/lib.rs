//! cxgate guard stage (seeds 003 and 004): guard rails between consumers and an
//! OpenAI-compatible LLM, inside the proxy. [`screen`] finds deny phrases in the prompt (after
//! [`fold`]), [`pii`] and [`hold`] redact entities in the answer (also when it streams, across
//! any chunk boundary, see [`sse`]), [`safety`] checks the assembled text, [`meter`] counts usage and
//! cost, [`chat`] holds the request and response cores, and [`stage`] puts them behind the
//! stage contract.

pub mod chat;
pub mod config;
pub mod fold;
pub mod hold;
pub mod meter;
pub mod pii;
pub mod safety;
pub mod screen;
pub mod sse;
pub mod stage;
