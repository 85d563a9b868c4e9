//! Read-modify-write on shared data: bounded CAS loops, stamped values, and leases.

use crate::error::HostError;
use crate::host::{Clock, Expect, SharedStore};

/// What an update closure decides after seeing the current value.
pub enum Update<T> {
    /// Write this value (CAS-protected) and return `T`.
    Write(Vec<u8>, T),
    /// Leave the key alone and return `T`.
    Keep(T),
}

/// Why an update gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt lost the race to another worker.
    Contention {
        attempts: u32,
    },
    Host(HostError),
}

impl From<HostError> for UpdateError {
    fn from(e: HostError) -> Self {
        UpdateError::Host(e)
    }
}

/// CAS rounds a request may lose before it gives up. A round is lost only when another worker
/// wrote the key between our read and our write, so losing this many in a row is contention
/// (count it, refuse the request), never a store failure: only a host error means the store is
/// down. Proxy-Wasm callbacks cannot sleep, so a retry is an immediate re-read.
pub const CAS_BUDGET: u32 = 64;

/// Reads `key`, lets `decide` compute the new value from the current one, and writes it with
/// CAS; on a mismatch it re-reads and decides again, at most `max_attempts` times.
pub fn update<S, T, F>(
    store: &mut S,
    key: &str,
    max_attempts: u32,
    mut decide: F,
) -> Result<T, UpdateError>
where
    S: SharedStore + ?Sized,
    F: FnMut(Option<&[u8]>) -> Update<T>,
{
    for _ in 0..max_attempts {
        let current = store.get(key)?;
        let expect = match &current {
            Some(v) => Expect::Cas(v.cas),
            None => Expect::Absent,
        };
        match decide(current.as_ref().map(|v| v.value.as_slice())) {
            Update::Keep(out) => return Ok(out),
            Update::Write(value, out) => match store.set(key, &value, expect) {
                Ok(()) => return Ok(out),
                Err(HostError::CasMismatch) => continue,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(UpdateError::Contention {
        attempts: max_attempts,
    })
}

/// A value with the version and time it was written, so readers can tell stale from fresh.
/// Layout: version (u64 LE), written_ms (u64 LE), payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub version: u64,
    pub written_ms: u64,
    pub payload: Vec<u8>,
}

const STAMP_LEN: usize = 16;

impl Stamped {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STAMP_LEN + self.payload.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.written_ms.to_le_bytes());
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Stamped> {
        let version = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
        let written_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        let payload = bytes.get(STAMP_LEN..)?.to_vec();
        Some(Stamped {
            version,
            written_ms,
            payload,
        })
    }

    pub fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.written_ms)
    }
}

/// A lease in shared data, taken by CAS with an expiry: whoever holds an unexpired lease does
/// the once-only work (a sync, a probe); a dead holder's lease lapses after `ttl_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub holder: u64,
    pub ttl_ms: u64,
}

/// The outcome of [`Lease::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// We hold it until `expires_ms` (taken now or renewed).
    Held { expires_ms: u64 },
    /// Another holder has it until `expires_ms`.
    Busy { holder: u64, expires_ms: u64 },
}

impl Lease {
    pub fn new(key: impl Into<String>, holder: u64, ttl_ms: u64) -> Self {
        Lease {
            key: key.into(),
            holder,
            ttl_ms,
        }
    }

    /// Takes the lease if it is free or expired, renews it if we hold it.
    pub fn acquire<S, C>(&self, store: &mut S, clock: &C) -> Result<LeaseState, UpdateError>
    where
        S: SharedStore + ?Sized,
        C: Clock + ?Sized,
    {
        let now = clock.now_ms();
        // A lease never runs longer than its ttl from now: one ending further ahead was
        // stamped before the wall clock stepped back, and would otherwise lock everyone out
        // for as long as the step.
        let latest = now.saturating_add(self.ttl_ms);
        update(store, &self.key, 4, |current| {
            if let Some((holder, expires_ms)) = current.and_then(decode_lease)
                && holder != self.holder
                && expires_ms > now
                && expires_ms <= latest
            {
                return Update::Keep(LeaseState::Busy { holder, expires_ms });
            }
            let expires_ms = now.saturating_add(self.ttl_ms);
            Update::Write(
                encode_lease(self.holder, expires_ms),
                LeaseState::Held { expires_ms },
            )
        })
    }

    /// Gives the lease up early (only if we still hold it).
    pub fn release<S: SharedStore + ?Sized>(&self, store: &mut S) -> Result<(), UpdateError> {
        update(store, &self.key, 4, |current| {
            match current.and_then(decode_lease) {
                Some((holder, _)) if holder == self.holder => Update::Write(encode_lease(0, 0), ()),
                _ => Update::Keep(()),
            }
        })
    }
}

fn encode_lease(holder: u64, expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&holder.to_le_bytes());
    out.extend_from_slice(&expires_ms.to_le_bytes());
    out
}

fn decode_lease(bytes: &[u8]) -> Option<(u64, u64)> {
    let holder = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let expires_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((holder, expires_ms))
}
