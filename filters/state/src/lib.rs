//! The state the sidecar publishes and the filters read, and where it lives in shared data.
//!
//! Both sides depend on this crate, so the format cannot drift. The sidecar serves a
//! [`Snapshot`]; the filters' sync client (`cxgate_kit::sync`) splits it into one shared-data
//! entry per token and per ID map, each stamped with the snapshot version and write time.

// Runs inside a proxy: no panics, no unchecked indexing (tests may; clippy.toml).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod roster;
pub use roster::{Agent, CloudAgent, LegacyAgent, Migration, Roster, Site, Suspension};

/// Bumped when the snapshot format changes incompatibly.
pub const FORMAT: u32 = 1;

/// Platforms the gateway knows (the sidecar can issue a credential for each).
pub const PLATFORMS: [&str; 4] = ["genesys", "cxone", "llm", "anthropic"];

/// The model's platforms when a document names none (Anthropic is opted into).
pub const DEFAULT_PLATFORMS: [&str; 3] = ["genesys", "cxone", "llm"];

/// Shared-data keys (contract: `cxgate/<area>/<name>`).
pub mod keys {
    /// The current token of a platform: a stamped [`super::TokenState`].
    pub fn token(platform: &str) -> String {
        format!("cxgate/token/{platform}")
    }
    /// An ID map, e.g. `genesys/queues`: a stamped [`super::IdMap`].
    pub fn map(name: &str) -> String {
        format!("cxgate/map/{name}")
    }
    /// The coexistence roster: a stamped [`super::Roster`].
    pub const ROSTER: &str = "cxgate/coexistence/roster";
    /// Sync bookkeeping: a stamped [`super::SyncStatus`].
    pub const SYNC: &str = "cxgate/sync/status";
    /// The lease that elects the one worker that long-polls the sidecar.
    pub const SYNC_LEASE: &str = "cxgate/lease/sync";
}

/// A platform access token. Secret: it lives only in shared data and the headers it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    pub access_token: String,
    pub token_type: String,
    /// When the platform issued it (sidecar clock, ms since epoch).
    pub issued_ms: u64,
    /// Hard expiry: `issued_ms + expires_in`. Never served after this.
    pub expires_ms: u64,
    /// Soft expiry at 95 % of the lifetime: still served, but stale (a refresh is due).
    pub stale_ms: u64,
    /// Counts grants for this platform, so a reader can tell a new token from an old one.
    pub generation: u64,
    /// The platform answered 401 to this generation: never serve it, ask the sidecar for a
    /// newer one. Only the filters set this (see [`TokenState::rejected_marker`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub rejected: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl TokenState {
    pub fn new(
        access_token: String,
        token_type: String,
        issued_ms: u64,
        expires_in_s: u64,
        generation: u64,
    ) -> Self {
        let life = expires_in_s.saturating_mul(1000);
        TokenState {
            access_token,
            token_type,
            issued_ms,
            expires_ms: issued_ms.saturating_add(life),
            stale_ms: issued_ms.saturating_add(life / 20 * 19),
            generation,
            rejected: false,
        }
    }

    /// What replaces a token the platform rejected: same generation (so the sync never
    /// restores it), no secret, already expired.
    pub fn rejected_marker(&self) -> Self {
        TokenState {
            access_token: String::new(),
            token_type: self.token_type.clone(),
            issued_ms: self.issued_ms,
            expires_ms: 0,
            stale_ms: 0,
            generation: self.generation,
            rejected: true,
        }
    }

    pub fn freshness(&self, now_ms: u64) -> Freshness {
        if now_ms >= self.expires_ms {
            Freshness::Expired
        } else if now_ms >= self.stale_ms {
            Freshness::Stale
        } else {
            Freshness::Fresh
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    /// Past 95 % of its life: serve it while the sidecar refreshes.
    Stale,
    Expired,
}

/// A name → id map from the platform's metadata (queues, skills), swapped whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IdMap {
    pub entries: BTreeMap<String, String>,
    /// When the last complete fetch finished (0: never).
    pub fetched_ms: u64,
    /// The last sync failed; `entries` are from `fetched_ms`.
    pub stale: bool,
    /// Why the last sync failed (no secrets, no tokens).
    pub last_error: Option<String>,
}

/// Health of one platform as the sidecar sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PlatformHealth {
    pub token_ok: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub grants: u64,
}

/// What `GET /v1/state` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub format: u32,
    /// Bumped on every change; the long poll waits for a version above `since`.
    pub version: u64,
    pub generated_ms: u64,
    pub tokens: BTreeMap<String, TokenState>,
    pub maps: BTreeMap<String, IdMap>,
    pub health: BTreeMap<String, PlatformHealth>,
    /// The coexistence roster, when the sidecar syncs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roster: Option<Roster>,
}

/// What the sync client records after each attempt, for every worker to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SyncStatus {
    /// Snapshot version last applied.
    pub version: u64,
    /// Last successful sync (ms since epoch, proxy clock).
    pub synced_ms: u64,
    /// Consecutive failed polls since then.
    pub failures: u32,
}

/// `POST /v1/ratelimit/allot` (filters → sidecar): top up this instance's local buckets from
/// the budget all instances share (kept in Redis by the sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllotRequest {
    pub buckets: Vec<AllotItem>,
}

/// One bucket's limit and the allotment wanted, in scaled units (1 unit = `period_ms` scaled
/// units, so a millisecond refills `rate` of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllotItem {
    pub key: String,
    pub capacity: u64,
    pub rate: u64,
    pub period_ms: u64,
    pub want: u64,
}

/// The sidecar's answer: what each bucket was granted (same order), scaled units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AllotAnswer {
    pub grants: Vec<u64>,
}
