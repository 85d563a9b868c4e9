//! Layer 3 harness: real Envoy 1.40, the sidecar and the mock platforms on loopback.
//!
//! The stack itself is the `cxgate-stack` crate (the demo runs it too) and the rendering is
//! `cxgate-deploy`; this crate re-exports both under the names the tests use, and adds what
//! only tests need (`pki`: a CA and certificates made at test time).

pub mod pki;

pub use cxgate_deploy::deployment as deploy;
pub use cxgate_deploy::{compose, keystore, kong, openapi, render, validate};
pub use cxgate_stack::*;
