//! The versioned state the sidecar publishes; waiters wake when the version moves.

use cxgate_state::{FORMAT, IdMap, PlatformHealth, Roster, Snapshot, TokenState};
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub struct Hub {
    state: RwLock<Snapshot>,
    version: watch::Sender<u64>,
    /// The last token generations issued per platform, to refuse a forged invalidate.
    issued: RwLock<HashMap<String, VecDeque<u64>>>,
}

/// How many recent generations per platform an invalidate may name.
const ISSUED_KEPT: usize = 16;

impl Default for Hub {
    fn default() -> Self {
        // Versions start at the clock, so a restarted sidecar never goes backwards.
        let start = now_ms();
        Hub {
            state: RwLock::new(Snapshot {
                format: FORMAT,
                version: start,
                ..Snapshot::default()
            }),
            version: watch::channel(start).0,
            issued: RwLock::new(HashMap::new()),
        }
    }
}

impl Hub {
    pub fn snapshot(&self) -> Snapshot {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Applies a change and bumps the version.
    pub fn update(&self, change: impl FnOnce(&mut Snapshot)) {
        let version = {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            change(&mut s);
            s.version += 1;
            s.generated_ms = now_ms();
            s.version
        };
        self.version.send_replace(version);
    }

    pub fn token(&self, platform: &str) -> Option<TokenState> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .get(platform)
            .cloned()
    }

    /// Publishes a platform's token; returns the generation it was given. A generation is the
    /// version of the snapshot that first carries the token, so generations live in the
    /// version space, which readers report back (see [`Hub::raise_floor`]).
    pub fn set_token(&self, platform: &str, mut token: TokenState) -> u64 {
        let mut generation = 0;
        self.update(|s| {
            generation = s.version + 1;
            token.generation = generation;
            s.tokens.insert(platform.to_string(), token);
            let h = s.health.entry(platform.to_string()).or_default();
            h.token_ok = true;
            h.consecutive_failures = 0;
            h.last_error = None;
            h.grants += 1;
        });
        self.record_issued(platform, generation);
        generation
    }

    fn record_issued(&self, platform: &str, generation: u64) {
        let mut issued = self.issued.write().unwrap_or_else(|e| e.into_inner());
        let kept = issued.entry(platform.to_string()).or_default();
        kept.push_back(generation);
        while kept.len() > ISSUED_KEPT {
            kept.pop_front();
        }
    }

    /// True if this sidecar issued `generation` for `platform` (recently).
    pub fn issued(&self, platform: &str, generation: u64) -> bool {
        self.issued
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(platform)
            .is_some_and(|kept| kept.contains(&generation))
    }

    /// A reader holds version `seen`, above ours: it saw an earlier run of the sidecar whose
    /// clock was ahead (ours stepped back, or we restarted on a host behind). Jump past it and
    /// give the current tokens new generations past it, so the readers take them instead of
    /// keeping tokens that expire (versions and generations never go backwards for them).
    pub fn raise_floor(&self, seen: u64) {
        if seen < self.version() {
            return;
        }
        let mut restamped = Vec::new();
        self.update(|s| {
            s.version = s.version.max(seen);
            let next = s.version + 1;
            for (platform, t) in s.tokens.iter_mut() {
                t.generation = next;
                restamped.push((platform.clone(), next));
            }
        });
        for (p, g) in restamped {
            self.record_issued(&p, g);
        }
    }

    pub fn drop_token(&self, platform: &str) {
        self.update(|s| {
            s.tokens.remove(platform);
            s.health.entry(platform.to_string()).or_default().token_ok = false;
        });
    }

    pub fn grant_failed(&self, platform: &str, error: &str) {
        self.update(|s| {
            let h: &mut PlatformHealth = s.health.entry(platform.to_string()).or_default();
            h.consecutive_failures += 1;
            h.last_error = Some(error.to_string());
            h.token_ok = s
                .tokens
                .get(platform)
                .is_some_and(|t| t.expires_ms > now_ms());
        });
    }

    pub fn set_roster(&self, roster: Roster) {
        self.update(|s| s.roster = Some(roster));
    }

    pub fn set_map(&self, name: &str, map: IdMap) {
        self.update(|s| {
            s.maps.insert(name.to_string(), map);
        });
    }

    /// Keeps the previous entries and marks the map stale.
    pub fn map_failed(&self, name: &str, error: &str) {
        self.update(|s| {
            let m = s.maps.entry(name.to_string()).or_default();
            m.stale = true;
            m.last_error = Some(error.to_string());
        });
    }

    /// Waits until the version is above `since` (at most `wait`); the snapshot, or `None` when
    /// nothing changed in time.
    pub async fn wait_newer(&self, since: u64, wait: Duration) -> Option<Snapshot> {
        let mut rx = self.version.subscribe();
        let changed = tokio::time::timeout(wait, rx.wait_for(|v| *v > since)).await;
        match changed {
            Ok(Ok(_)) => Some(self.snapshot()),
            _ => None,
        }
    }
}
