//! What a stage does to the current stream besides reading it: the one host trait the
//! request (and so [`crate::exchange`]) writes through.

use cxgate_kit::HostError;

/// What a stage does to the current stream besides reading it.
pub trait StreamHost {
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError>;
    fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError>;
    /// Replaces the whole buffered request body.
    fn replace_request_body(&mut self, body: &[u8]) -> Result<(), HostError>;
    /// Envoy re-selects the route after `:path` changed only when asked; false where the host
    /// cannot (the stage then relies on the proxy's own route).
    fn clear_route_cache(&mut self) -> bool;
}
