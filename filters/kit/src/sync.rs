//! The state-sync client: pulls the sidecar's state into shared data for every worker.
//!
//! Run from each worker's root `on_tick`. A lease in shared data elects one worker; only it
//! long-polls the sidecar (`GET /v1/state?since=V`), renewing the lease while the poll is
//! open, so a dead holder's lease lapses within one lease period and another worker takes
//! over. Answers are written as stamped entries under `cxgate/token/*` and `cxgate/map/*`;
//! every worker reads them from shared data with [`read_token`] and [`read_map`]. If the
//! sidecar is down, the last state stays in place and [`SyncStatus`] shows it is stale.

use crate::error::HostError;
use crate::host::{Callout, Clock, HttpCallout, SharedStore};
use crate::shared::{Lease, LeaseState, Stamped, Update, UpdateError, update};
use cxgate_state::{IdMap, Snapshot, SyncStatus, TokenState, keys};
use serde::Deserialize;

/// The header every call to the sidecar carries its key in.
pub const KEY_HEADER: &str = "x-cxgate-sidecar-key";

/// Sync settings, part of a filter's config (`sync` object).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Envoy: the sidecar's cluster name; Kong: its `host:port`.
    pub upstream: String,
    /// `:authority` of the calls (default: the upstream).
    #[serde(default)]
    pub authority: Option<String>,
    /// The shared key, read from this environment variable of the VM (Envoy:
    /// `vm_config.environment_variables.host_env_keys`), never from the config itself.
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// How long the sidecar may hold a poll open.
    #[serde(default = "default_poll_ms")]
    pub poll_wait_ms: u64,
    /// Lease lifetime: the takeover bound when the holder dies.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Synced state older than this is reported stale.
    #[serde(default = "default_stale_ms")]
    pub stale_after_ms: u64,
}

fn default_key_env() -> String {
    "CXGATE_SIDECAR_KEY".into()
}
fn default_poll_ms() -> u64 {
    20_000
}
fn default_lease_ms() -> u64 {
    5_000
}
fn default_stale_ms() -> u64 {
    30_000
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// Another worker holds the lease.
    Follower,
    /// We hold the lease and a poll is open.
    Polling,
    /// We hold the lease and just sent a poll (callout token).
    Sent(u32),
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// New state written (snapshot version).
    Updated(u64),
    /// The sidecar had nothing newer (304).
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncError {
    /// No answer, a timeout, or an error status: the last state stays, now counted as failing.
    Unreachable(String),
    /// The answer was not a snapshot we can read.
    Malformed(String),
    Host(HostError),
    Contention,
}

impl From<UpdateError> for SyncError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Host(h) => SyncError::Host(h),
            UpdateError::Contention { .. } => SyncError::Contention,
        }
    }
}

impl From<HostError> for SyncError {
    fn from(e: HostError) -> Self {
        SyncError::Host(e)
    }
}

/// One worker's sync client (lives in its root context).
pub struct SyncClient {
    config: SyncConfig,
    key: String,
    lease: Lease,
    /// The open poll: (callout token, sent at).
    in_flight: Option<(u32, u64)>,
}

impl SyncClient {
    /// `holder` must differ between workers (a random id); `key` is the sidecar's shared key.
    pub fn new(config: SyncConfig, key: String, holder: u64) -> Self {
        let lease = Lease::new(keys::SYNC_LEASE, holder, config.lease_ms);
        SyncClient {
            config,
            key,
            lease,
            in_flight: None,
        }
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Is this callout token our poll?
    pub fn owns(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|(t, _)| t == token)
    }

    /// Call on every tick.
    pub fn on_tick<S, C, H>(
        &mut self,
        store: &mut S,
        clock: &C,
        callout: &mut H,
    ) -> Result<Tick, SyncError>
    where
        S: SharedStore + ?Sized,
        C: Clock + ?Sized,
        H: HttpCallout + ?Sized,
    {
        let now = clock.now_ms();
        if let LeaseState::Busy { .. } = self.lease.acquire(store, clock)? {
            // Lost the lease (we stalled past its expiry): our open poll, if any, is orphaned.
            self.in_flight = None;
            return Ok(Tick::Follower);
        }
        if let Some((_, sent)) = self.in_flight {
            // The host times the call out at poll_wait + grace; this only guards a host that
            // never answers.
            if now.saturating_sub(sent) < self.call_timeout_ms() + 1_000 {
                return Ok(Tick::Polling);
            }
            self.in_flight = None;
        }
        let since = read_status(store)?.version;
        let path = format!(
            "/v1/state?since={since}&wait_ms={}",
            self.config.poll_wait_ms
        );
        let authority = self
            .config
            .authority
            .clone()
            .unwrap_or_else(|| self.config.upstream.clone());
        let call = Callout {
            upstream: &self.config.upstream,
            method: "GET",
            path: &path,
            authority: &authority,
            scheme: "http",
            headers: vec![
                (KEY_HEADER, self.key.as_str()),
                ("accept", "application/json"),
            ],
            body: None,
            timeout_ms: u32::try_from(self.call_timeout_ms()).unwrap_or(u32::MAX),
        };
        match callout.dispatch(&call) {
            Ok(token) => {
                self.in_flight = Some((token, now));
                Ok(Tick::Sent(token))
            }
            Err(e) => {
                record_failure(store)?;
                Err(SyncError::Unreachable(format!("dispatch failed: {e}")))
            }
        }
    }

    fn call_timeout_ms(&self) -> u64 {
        self.config.poll_wait_ms + 5_000
    }

    /// Call with the answer to our poll: `status` is `None` when the call failed or timed out.
    pub fn on_response<S, C>(
        &mut self,
        store: &mut S,
        clock: &C,
        status: Option<u16>,
        body: &[u8],
    ) -> Result<Applied, SyncError>
    where
        S: SharedStore + ?Sized,
        C: Clock + ?Sized,
    {
        self.in_flight = None;
        let now = clock.now_ms();
        match status {
            Some(304) => {
                mark_synced(store, now, None)?;
                Ok(Applied::Unchanged)
            }
            Some(200) => {
                let snapshot: Snapshot = match serde_json::from_slice(body) {
                    Ok(s) => s,
                    Err(e) => {
                        record_failure(store)?;
                        return Err(SyncError::Malformed(e.to_string()));
                    }
                };
                apply(store, now, &snapshot)?;
                Ok(Applied::Updated(snapshot.version))
            }
            other => {
                record_failure(store)?;
                let why = other.map_or_else(
                    || "no answer (timeout or connection failure)".to_string(),
                    |s| format!("HTTP {s}"),
                );
                Err(SyncError::Unreachable(why))
            }
        }
    }
}

const ATTEMPTS: u32 = crate::shared::CAS_BUDGET;

/// Writes a snapshot's tokens and maps (each only if it changed), then the sync status.
pub fn apply<S: SharedStore + ?Sized>(
    store: &mut S,
    now: u64,
    snapshot: &Snapshot,
) -> Result<(), SyncError> {
    for (platform, token) in &snapshot.tokens {
        write_token(store, platform, token, snapshot.version, now)?;
    }
    for (name, map) in &snapshot.maps {
        let payload = serde_json::to_vec(map).map_err(|e| SyncError::Malformed(e.to_string()))?;
        write_if_changed(store, &keys::map(name), payload, snapshot.version, now)?;
    }
    if let Some(roster) = &snapshot.roster {
        let payload =
            serde_json::to_vec(roster).map_err(|e| SyncError::Malformed(e.to_string()))?;
        write_if_changed(store, keys::ROSTER, payload, snapshot.version, now)?;
    }
    mark_synced(store, now, Some(snapshot.version))
}

/// Writes a stamped entry unless it already holds this payload (readers cache by CAS, so an
/// unchanged entry is never decoded again).
fn write_if_changed<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    payload: Vec<u8>,
    version: u64,
    now: u64,
) -> Result<(), SyncError> {
    update(store, key, ATTEMPTS, |current| {
        let same = current
            .and_then(Stamped::decode)
            .is_some_and(|s| s.payload == payload);
        if same {
            Update::Keep(())
        } else {
            Update::Write(
                Stamped {
                    version,
                    written_ms: now,
                    payload: payload.clone(),
                }
                .encode(),
                (),
            )
        }
    })?;
    Ok(())
}

/// Writes a platform's token unless shared data already holds the same or a newer generation.
/// True when it was written.
pub fn write_token<S: SharedStore + ?Sized>(
    store: &mut S,
    platform: &str,
    token: &TokenState,
    version: u64,
    now: u64,
) -> Result<bool, SyncError> {
    let payload = serde_json::to_vec(token).map_err(|e| SyncError::Malformed(e.to_string()))?;
    let written = update(store, &keys::token(platform), ATTEMPTS, |current| {
        let newer = current
            .and_then(Stamped::decode)
            .and_then(|s| serde_json::from_slice::<TokenState>(&s.payload).ok())
            .is_none_or(|old| token.generation > old.generation);
        if newer {
            Update::Write(
                Stamped {
                    version,
                    written_ms: now,
                    payload: payload.clone(),
                }
                .encode(),
                true,
            )
        } else {
            Update::Keep(false)
        }
    })?;
    Ok(written)
}

/// The platform answered 401 to `generation`: replace that token with its rejected marker so
/// no worker serves it again. True only for the one caller that made the change (the others
/// found it already rejected or replaced by a newer generation).
pub fn reject_token<S: SharedStore + ?Sized>(
    store: &mut S,
    platform: &str,
    generation: u64,
    now: u64,
) -> Result<bool, SyncError> {
    let rejected = update(store, &keys::token(platform), ATTEMPTS, |current| {
        let stamped = current.and_then(Stamped::decode);
        let token = stamped
            .as_ref()
            .and_then(|s| serde_json::from_slice::<TokenState>(&s.payload).ok());
        match (stamped, token) {
            (Some(stamped), Some(t)) if t.generation == generation && !t.rejected => {
                let marker = serde_json::to_vec(&t.rejected_marker()).unwrap_or_default();
                Update::Write(
                    Stamped {
                        version: stamped.version,
                        written_ms: now,
                        payload: marker,
                    }
                    .encode(),
                    true,
                )
            }
            _ => Update::Keep(false),
        }
    })?;
    Ok(rejected)
}

fn write_status<S, F>(store: &mut S, change: F) -> Result<(), SyncError>
where
    S: SharedStore + ?Sized,
    F: Fn(&mut SyncStatus),
{
    update(store, keys::SYNC, ATTEMPTS, |current| {
        let mut status: SyncStatus = current
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        change(&mut status);
        Update::Write(serde_json::to_vec(&status).unwrap_or_default(), ())
    })?;
    Ok(())
}

fn mark_synced<S: SharedStore + ?Sized>(
    store: &mut S,
    now: u64,
    version: Option<u64>,
) -> Result<(), SyncError> {
    write_status(store, |s| {
        if let Some(v) = version {
            s.version = v;
        }
        s.synced_ms = now;
        s.failures = 0;
    })
}

fn record_failure<S: SharedStore + ?Sized>(store: &mut S) -> Result<(), SyncError> {
    write_status(store, |s| s.failures = s.failures.saturating_add(1))
}

/// The sync status every worker sees (default when nothing was synced yet).
pub fn read_status<S: SharedStore + ?Sized>(store: &S) -> Result<SyncStatus, HostError> {
    Ok(store
        .get(keys::SYNC)?
        .and_then(|v| serde_json::from_slice(&v.value).ok())
        .unwrap_or_default())
}

/// Is the synced state stale (never synced, or the last success is too old)?
pub fn is_stale(status: &SyncStatus, now: u64, stale_after_ms: u64) -> bool {
    status.synced_ms == 0 || now.saturating_sub(status.synced_ms) > stale_after_ms
}

/// A platform's token as synced, with the stamp it was written with.
pub fn read_token<S: SharedStore + ?Sized>(
    store: &S,
    platform: &str,
) -> Result<Option<(TokenState, Stamped)>, HostError> {
    let Some(v) = store.get(&keys::token(platform))? else {
        return Ok(None);
    };
    let Some(stamped) = Stamped::decode(&v.value) else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<TokenState>(&stamped.payload)
        .ok()
        .map(|t| (t, stamped)))
}

/// An ID map as synced.
pub fn read_map<S: SharedStore + ?Sized>(
    store: &S,
    name: &str,
) -> Result<Option<IdMap>, HostError> {
    let Some(v) = store.get(&keys::map(name))? else {
        return Ok(None);
    };
    Ok(Stamped::decode(&v.value).and_then(|s| serde_json::from_slice(&s.payload).ok()))
}
