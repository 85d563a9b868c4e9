//! Idempotency, as Stripe and the IETF `Idempotency-Key` draft have it: only a request that
//! carries a key is deduplicated (no key, no dedup: two equal bodies may be two intended
//! changes). A fingerprint per (verified consumer, method, route, key) holds the first
//! response for a while, and duplicates are answered from it; the entry also keeps a digest of
//! the body, so a key reused for a different request is refused (422) instead of replayed. An
//! entry is claimed (`in_flight`) by CAS before anything is forwarded, so concurrent duplicates
//! on any worker never both reach the platform. Entries live in a fixed set of hash buckets and
//! are bounded in count and bytes by a ring of slots, so the number of shared-data keys is
//! bounded by the config, not by the traffic (Proxy-Wasm cannot delete a key).

use cxgate_kit::host::SharedStore;
use cxgate_kit::shared::{Update, UpdateError, update};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub const RING: &str = "cxgate/idem/ring";
const ATTEMPTS: u32 = cxgate_kit::shared::CAS_BUDGET;
/// An in-flight claim older than this is abandoned (its worker died) and may be taken over.
pub const IN_FLIGHT_MS: u64 = 60_000;

/// sha256 over the parts, length-prefixed so no two different inputs can collide by shifting
/// bytes between fields.
fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    cxgate_kit::ids::hex(&h.finalize())
}

/// Where a keyed request's entry lives: one per consumer, method, route and key.
pub fn fingerprint(consumer: &str, method: &str, route: &str, key: &str) -> String {
    digest(&[consumer, method, route, key])
}

/// The request a key was first used for: canonical JSON (serde_json sorts object keys).
pub fn body_digest(body: &Value) -> String {
    digest(&[&body.to_string()])
}

/// A keyed request: its entry's fingerprint and its body's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub fingerprint: String,
    pub body: String,
}

/// Why a request's idempotency key is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The `Idempotency-Key` header and the body's `idempotency_key` differ.
    Conflict,
    /// The header is empty, longer than [`MAX_KEY`], or not visible ASCII.
    Invalid,
}

/// Longest key accepted, in bytes (the consumer schema allows 128 in the body).
pub const MAX_KEY: usize = 255;

/// The request's key: the `Idempotency-Key` header (a bare token or a quoted string, as the
/// IETF draft's structured field), else the body's `idempotency_key`; `None` when neither.
pub fn request_key<'a>(
    header: Option<&'a str>,
    body: &'a Value,
) -> Result<Option<&'a str>, KeyError> {
    let from_body = body.get("idempotency_key").and_then(Value::as_str);
    let Some(h) = header else {
        return Ok(from_body);
    };
    let h = h.trim();
    let h = h
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(h);
    let visible = h.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if h.is_empty() || h.len() > MAX_KEY || !visible {
        return Err(KeyError::Invalid);
    }
    match from_body {
        Some(b) if b != h => Err(KeyError::Conflict),
        _ => Ok(Some(h)),
    }
}

/// Where a fingerprint's entry lives: one of `buckets` hash buckets (`cxgate/idem/h/<i>`), as
/// the record `<consumer>/<fingerprint>` in it. Proxy-Wasm cannot delete a key, so a key per
/// fingerprint would grow shared data for ever; buckets bound the number of keys by config.
/// (A key without `#` is a bucket of its own, which tests use.)
pub fn key(consumer: &str, fingerprint: &str, buckets: u64) -> String {
    let hash = fingerprint
        .get(..15)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    format!(
        "cxgate/idem/h/{}#{consumer}/{fingerprint}",
        hash % buckets.max(1)
    )
}

/// The bucket key and the record id of an entry key.
fn split(key: &str) -> (&str, &str) {
    key.split_once('#').unwrap_or((key, key))
}

/// A bucket's records by id.
type Records = BTreeMap<String, Entry>;

fn records(bytes: Option<&[u8]>) -> Records {
    bytes
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// An empty bucket is written empty, which reads as absent.
fn encode(r: &Records) -> Vec<u8> {
    if r.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(r).unwrap_or_default()
    }
}

/// Drops the bucket's dead records: claims abandoned by a dead worker, answers past the TTL.
fn prune(r: &mut Records, now: u64, ttl_ms: u64) -> bool {
    let before = r.len();
    r.retain(|_, e| match e {
        Entry::InFlight { since_ms, .. } => now < since_ms.saturating_add(IN_FLIGHT_MS),
        Entry::Done { stored_ms, .. } => now < stored_ms.saturating_add(ttl_ms),
    });
    r.len() != before
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Entry {
    InFlight {
        since_ms: u64,
        /// The body digest of the request that holds the key (empty in older entries).
        #[serde(default)]
        body: String,
    },
    Done {
        stored_ms: u64,
        #[serde(default)]
        body: String,
        stored: Stored,
    },
}

/// A response as the consumer got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Entry {
    /// The entry with a future stamp pulled back to `now`; `None` if its stamp is not ahead.
    fn clamped(&self, now: u64) -> Option<Entry> {
        let mut e = self.clone();
        let at = match &mut e {
            Entry::InFlight { since_ms, .. } => since_ms,
            Entry::Done { stored_ms, .. } => stored_ms,
        };
        if *at <= now {
            return None;
        }
        *at = now;
        Some(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Ours: forward, then `finish` or `abandon`.
    Claimed,
    /// A duplicate of a finished request: answer this.
    Replay(Stored),
    /// A duplicate of a request still in flight.
    InFlight,
    /// The key is held by a different request (another body): refuse, never replay.
    Reused,
}

/// Claims `key` for the request whose body digest is `body`, unless a live entry holds it.
pub fn begin<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    body: &str,
    now: u64,
    ttl_ms: u64,
) -> Result<Begin, UpdateError> {
    let other = |held: &str| !held.is_empty() && held != body;
    let (bucket, id) = split(key);
    update(store, bucket, ATTEMPTS, |current| {
        let mut recs = records(current);
        // A stamp from the future was written before the wall clock stepped back: pull it to
        // now and write it back, so the entry lives its own span, not the step's as well.
        let clamped = recs.get(id).and_then(|e| e.clamped(now));
        if let Some(e) = clamped {
            let answer = match &e {
                Entry::InFlight { body: held, .. } | Entry::Done { body: held, .. }
                    if other(held) =>
                {
                    Begin::Reused
                }
                Entry::InFlight { .. } => Begin::InFlight,
                Entry::Done { stored, .. } => Begin::Replay(stored.clone()),
            };
            recs.insert(id.to_string(), e);
            return Update::Write(encode(&recs), answer);
        }
        let pruned = prune(&mut recs, now, ttl_ms);
        let held = recs.get(id).cloned();
        let keep_or_write = |recs: &Records, answer| {
            if pruned {
                Update::Write(encode(recs), answer)
            } else {
                Update::Keep(answer)
            }
        };
        match held {
            Some(Entry::Done {
                stored_ms,
                body: held,
                stored,
            }) if now < stored_ms.saturating_add(ttl_ms) => {
                let answer = if other(&held) {
                    Begin::Reused
                } else {
                    Begin::Replay(stored)
                };
                return keep_or_write(&recs, answer);
            }
            Some(Entry::InFlight {
                since_ms,
                body: held,
            }) if now < since_ms.saturating_add(IN_FLIGHT_MS) => {
                let answer = if other(&held) {
                    Begin::Reused
                } else {
                    Begin::InFlight
                };
                return keep_or_write(&recs, answer);
            }
            _ => {}
        }
        let claim = Entry::InFlight {
            since_ms: now,
            body: body.to_string(),
        };
        recs.insert(id.to_string(), claim);
        Update::Write(encode(&recs), Begin::Claimed)
    })
}

/// What the store holds after a write: entries and bytes (the operator's gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub entries: u64,
    pub bytes: u64,
}

/// Stores the response of a claimed request, and evicts what the bounds require.
///
/// Bounds without an index to rewrite: a ring of `max_entries` slots. A CAS record
/// (`cxgate/idem/ring`: next, tail, bytes held) numbers every stored entry; entry `n` lives in
/// slot `n % max_entries`. Past the count or byte bound the oldest entries (at the tail) are
/// evicted. Every step is O(1) in shared data.
#[allow(clippy::too_many_arguments)]
pub fn finish<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    body: &str,
    stored: Stored,
    now: u64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Held, UpdateError> {
    let done = Entry::Done {
        stored_ms: now,
        body: body.to_string(),
        stored,
    };
    let size = serde_json::to_vec(&done).map_or(0, |v| v.len() as u64);
    let (bucket, id) = split(key);
    update(store, bucket, ATTEMPTS, |current| {
        let mut recs = records(current);
        recs.insert(id.to_string(), done.clone());
        Update::Write(encode(&recs), ())
    })?;
    let slots = max_entries.max(1) as u64;
    let n = update(store, RING, ATTEMPTS, |current| {
        let r = Ring::decode(current);
        Update::Write(
            Ring {
                next: r.next + 1,
                bytes: r.bytes + size,
                ..r
            }
            .encode(),
            r.next,
        )
    })?;
    if let Some((old_size, old_key)) = put_slot(store, n % slots, Some((size, key)))? {
        clear(store, &old_key)?;
        release(store, old_size)?;
    }
    // Evict from the tail while over a bound (a few per call; later calls continue).
    let mut held = Held::default();
    for _ in 0..8 {
        let evict = update(store, RING, ATTEMPTS, |current| {
            let r = Ring::decode(current);
            let live = r.next.saturating_sub(r.tail);
            held = Held {
                entries: live,
                bytes: r.bytes,
            };
            if live > slots || (r.bytes > max_bytes as u64 && live > 1) {
                Update::Write(
                    Ring {
                        tail: r.tail + 1,
                        ..r
                    }
                    .encode(),
                    Some(r.tail),
                )
            } else {
                Update::Keep(None)
            }
        })?;
        let Some(t) = evict else {
            break;
        };
        if t % slots == n % slots {
            continue;
        }
        if let Some((old_size, old_key)) = put_slot(store, t % slots, None)? {
            clear(store, &old_key)?;
            release(store, old_size)?;
        }
    }
    Ok(held)
}

#[derive(Debug, Clone, Copy, Default)]
struct Ring {
    next: u64,
    tail: u64,
    bytes: u64,
}

impl Ring {
    fn decode(bytes: Option<&[u8]>) -> Ring {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes?.get(i..i + 8)?.try_into().ok()?))
        };
        Ring {
            next: word(0).unwrap_or(0),
            tail: word(8).unwrap_or(0),
            bytes: word(16).unwrap_or(0),
        }
    }

    fn encode(self) -> Vec<u8> {
        let mut out = self.next.to_le_bytes().to_vec();
        out.extend_from_slice(&self.tail.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        out
    }
}

fn slot_key(i: u64) -> String {
    format!("cxgate/idem/slot/{i}")
}

/// Puts `entry` (size, key) in a slot (or empties it); returns what the slot held.
fn put_slot<S: SharedStore + ?Sized>(
    store: &mut S,
    slot: u64,
    entry: Option<(u64, &str)>,
) -> Result<Option<(u64, String)>, UpdateError> {
    let value = entry
        .map(|(size, key)| format!("{size}\n{key}").into_bytes())
        .unwrap_or_default();
    update(store, &slot_key(slot), ATTEMPTS, |current| {
        let held = current
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|t| t.split_once('\n'))
            .and_then(|(n, k)| Some((n.parse::<u64>().ok()?, k.to_string())));
        Update::Write(value.clone(), held)
    })
}

/// Takes `size` off the bytes held.
fn release<S: SharedStore + ?Sized>(store: &mut S, size: u64) -> Result<(), UpdateError> {
    update(store, RING, ATTEMPTS, |current| {
        let r = Ring::decode(current);
        Update::Write(
            Ring {
                bytes: r.bytes.saturating_sub(size),
                ..r
            }
            .encode(),
            (),
        )
    })
}

/// Gives a claim up (the platform failed, or the stream died): a retry may go through.
pub fn abandon<S: SharedStore + ?Sized>(store: &mut S, key: &str) -> Result<(), UpdateError> {
    let (bucket, id) = split(key);
    update(store, bucket, ATTEMPTS, |current| {
        let mut recs = records(current);
        match recs.get(id) {
            Some(Entry::InFlight { .. }) => {
                recs.remove(id);
                Update::Write(encode(&recs), ())
            }
            _ => Update::Keep(()),
        }
    })
}

/// Removes an evicted entry from its bucket.
fn clear<S: SharedStore + ?Sized>(store: &mut S, key: &str) -> Result<(), UpdateError> {
    let (bucket, id) = split(key);
    update(store, bucket, ATTEMPTS, |current| {
        let mut recs = records(current);
        if recs.remove(id).is_some() {
            Update::Write(encode(&recs), ())
        } else {
            Update::Keep(())
        }
    })
}
