//! Idempotency: a fingerprint per (verified consumer, method, route, canonical body, key), the
//! first response kept in shared data for a while, duplicates answered from it. An entry is
//! claimed (`in_flight`) by CAS before anything is forwarded, so concurrent duplicates on any
//! worker never both reach the platform. Entries are bounded in count and bytes by an index.

use cxgate_kit::host::{Expect, SharedStore};
use cxgate_kit::shared::{Update, UpdateError, update};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const INDEX: &str = "cxgate/idem/index";
const ATTEMPTS: u32 = 8;
/// An in-flight claim older than this is abandoned (its worker died) and may be taken over.
pub const IN_FLIGHT_MS: u64 = 60_000;

/// sha256 over the parts, length-prefixed so no two different inputs can collide by shifting
/// bytes between fields. `body` is canonical JSON (serde_json sorts object keys).
pub fn fingerprint(
    consumer: &str,
    method: &str,
    route: &str,
    body: &Value,
    key: Option<&str>,
) -> String {
    let canonical = body.to_string();
    let mut h = Sha256::new();
    for part in [
        consumer,
        method,
        route,
        canonical.as_str(),
        key.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn key(consumer: &str, fingerprint: &str) -> String {
    format!("cxgate/idem/{consumer}/{fingerprint}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Entry {
    InFlight { since_ms: u64 },
    Done { stored_ms: u64, stored: Stored },
}

/// A response as the consumer got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Ours: forward, then `finish` or `abandon`.
    Claimed,
    /// A duplicate of a finished request: answer this.
    Replay(Stored),
    /// A duplicate of a request still in flight.
    InFlight,
}

fn decode(bytes: Option<&[u8]>) -> Option<Entry> {
    bytes
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice(b).ok())
}

/// Claims `key` unless a live entry holds it.
pub fn begin<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    now: u64,
    ttl_ms: u64,
) -> Result<Begin, UpdateError> {
    update(store, key, ATTEMPTS, |current| {
        match decode(current) {
            Some(Entry::Done { stored_ms, stored }) if now < stored_ms.saturating_add(ttl_ms) => {
                return Update::Keep(Begin::Replay(stored));
            }
            Some(Entry::InFlight { since_ms }) if now < since_ms.saturating_add(IN_FLIGHT_MS) => {
                return Update::Keep(Begin::InFlight);
            }
            _ => {}
        }
        let claim = serde_json::to_vec(&Entry::InFlight { since_ms: now }).unwrap_or_default();
        Update::Write(claim, Begin::Claimed)
    })
}

/// Stores the response of a claimed request, and evicts what the bounds require.
#[allow(clippy::too_many_arguments)]
pub fn finish<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    stored: Stored,
    now: u64,
    ttl_ms: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<(), UpdateError> {
    let value = serde_json::to_vec(&Entry::Done {
        stored_ms: now,
        stored,
    })
    .unwrap_or_default();
    let size = value.len();
    update(store, key, ATTEMPTS, |_| Update::Write(value.clone(), ()))?;
    // The index: (key, bytes, stored_ms), oldest first.
    let evicted = update(store, INDEX, ATTEMPTS, |current| {
        let mut index: Vec<(String, usize, u64)> = current
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        index.retain(|(k, _, _)| k != key);
        index.push((key.to_string(), size, now));
        let mut evicted = Vec::new();
        let mut bytes: usize = index.iter().map(|e| e.1).sum();
        while let Some(first) = index.first() {
            let expired = now >= first.2.saturating_add(ttl_ms);
            if !(expired || index.len() > max_entries || bytes > max_bytes) || index.len() == 1 {
                break;
            }
            bytes -= first.1;
            evicted.push(index.remove(0).0);
        }
        Update::Write(serde_json::to_vec(&index).unwrap_or_default(), evicted)
    })?;
    for k in evicted {
        clear(store, &k)?;
    }
    Ok(())
}

/// Gives a claim up (the platform failed, or the stream died): a retry may go through.
pub fn abandon<S: SharedStore + ?Sized>(store: &mut S, key: &str) -> Result<(), UpdateError> {
    update(store, key, ATTEMPTS, |current| match decode(current) {
        Some(Entry::InFlight { .. }) => Update::Write(Vec::new(), ()),
        _ => Update::Keep(()),
    })
}

/// Proxy-Wasm has no delete: an empty value reads as absent.
fn clear<S: SharedStore + ?Sized>(store: &mut S, key: &str) -> Result<(), UpdateError> {
    if let Some(v) = store.get(key)? {
        let _ = store.set(key, &[], Expect::Cas(v.cas));
    }
    Ok(())
}
