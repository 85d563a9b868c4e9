//! The small traits a filter core sees instead of the proxy. [`crate::proxy`] implements them
//! over the proxy-wasm ABI; [`crate::fakes`] implements them in memory for tests.

use crate::error::HostError;

/// Wall-clock time as the host reports it (virtual in the ABI test host).
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The time read once for a whole hook: one host call, however many stages need the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now(pub u64);

impl Clock for Now {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// Random bytes (trace ids, lease holder ids, jitter).
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), HostError>;

    fn next_u64(&mut self) -> Result<u64, HostError> {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

/// The compare-and-swap token of a shared-data value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cas(pub u32);

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist yet (atomic insert).
    Absent,
    /// The key must still hold the value read with this CAS.
    Cas(Cas),
}

/// A value read from shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub cas: Cas,
}

/// Shared data across every worker of the proxy. There is deliberately no unconditional
/// write: every write states what it expects, so a racing worker gets `CasMismatch`.
pub trait SharedStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, HostError>;
    fn set(&mut self, key: &str, value: &[u8], expect: Expect) -> Result<(), HostError>;
}

/// One header map (request or response headers of the current stream).
pub trait Headers {
    fn get(&self, name: &str) -> Result<Option<String>, HostError>;
    /// Sets the header, replacing every existing value.
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    fn remove(&mut self, name: &str) -> Result<(), HostError>;
}

/// An outbound call through the proxy (`dispatch_http_call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout<'a> {
    /// Envoy: a cluster name. Kong: `host:port`. Taken from config as is.
    pub upstream: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u32,
}

pub trait HttpCallout {
    /// Dispatches the call; the answer arrives later on the same context with this token.
    fn dispatch(&mut self, call: &Callout<'_>) -> Result<u32, HostError>;
}

/// Counters, gauges and histograms, defined by name once and then updated by id.
pub trait Metrics {
    fn counter(&mut self, name: &str) -> Result<u32, HostError>;
    fn gauge(&mut self, name: &str) -> Result<u32, HostError>;
    /// A distribution (Envoy keeps quantiles of what `record` sends).
    fn histogram(&mut self, name: &str) -> Result<u32, HostError>;
    fn increment(&mut self, id: u32, by: i64) -> Result<(), HostError>;
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError>;
}

/// How a host interprets the CAS argument of `proxy_set_shared_data`. The two hosts differ,
/// and an atomic insert needs a different argument in each:
///
/// | host  | key absent          | key present                        |
/// |-------|---------------------|------------------------------------|
/// | Envoy | any cas inserts     | cas 0 overwrites; else must match  |
/// | Kong  | only cas 0 inserts  | cas must match (0 never does)      |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasDialect {
    Envoy,
    Kong,
}

/// The CAS argument Envoy gets for "insert only if absent": non-zero, so an existing key
/// mismatches, and never handed out by Envoy's counter in practice (it counts up from 1).
const ENVOY_INSERT_CAS: u32 = u32::MAX;

impl CasDialect {
    /// The raw `cas` argument that expresses `expect` on this host.
    pub fn raw_cas(self, expect: Expect) -> u32 {
        match (self, expect) {
            (_, Expect::Cas(Cas(cas))) => cas,
            (CasDialect::Envoy, Expect::Absent) => ENVOY_INSERT_CAS,
            (CasDialect::Kong, Expect::Absent) => 0,
        }
    }
}
