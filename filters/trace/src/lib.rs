//! cxgate trace filter. Every request leaves the gateway with an `X-Gateway-Trace-Id` and a
//! W3C `traceparent`: a consumer's valid values are kept, missing or invalid ones are made.
//! [`core`] is the pure logic; [`shell`] (feature `proxy`) binds it to proxy-wasm.

pub mod core;

#[cfg(feature = "proxy")]
pub mod shell;
