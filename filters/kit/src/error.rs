//! Typed errors: every proxy-wasm `Status` the hosts can return, and configuration errors that
//! name the offending field.

use std::fmt;

/// A host call failed. One variant per proxy-wasm status (ABI 0.2.1), plus the cases a host
/// may produce that the ABI does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    NotFound,
    BadArgument,
    SerializationFailure,
    ParseFailure,
    Empty,
    CasMismatch,
    InternalFailure,
    /// The host does not implement the call (e.g. Kong and gRPC).
    Unimplemented,
    /// A status code this ABI version does not define.
    Unknown(u32),
}

impl HostError {
    /// Maps a raw proxy-wasm status; `Ok(())` for status 0.
    pub fn check(status: u32) -> Result<(), HostError> {
        match status {
            0 => Ok(()),
            1 => Err(HostError::NotFound),
            2 => Err(HostError::BadArgument),
            3 => Err(HostError::SerializationFailure),
            4 => Err(HostError::ParseFailure),
            7 => Err(HostError::Empty),
            8 => Err(HostError::CasMismatch),
            10 => Err(HostError::InternalFailure),
            12 => Err(HostError::Unimplemented),
            other => Err(HostError::Unknown(other)),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Unknown(code) => write!(f, "host status {code}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for HostError {}

/// A configuration was rejected. `field` is a JSON pointer into the filter's config document
/// (empty for the document itself), so the operator sees exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// An error at `field`, a JSON pointer into the config document (`/transform/routes/0`).
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config at {}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}
