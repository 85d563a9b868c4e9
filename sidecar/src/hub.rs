//! The versioned state the sidecar publishes; waiters wake when the version moves.

use cxgate_state::{FORMAT, IdMap, PlatformHealth, Roster, Snapshot, TokenState};
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
}

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

    pub fn set_token(&self, platform: &str, token: TokenState) {
        self.update(|s| {
            s.tokens.insert(platform.to_string(), token);
            let h = s.health.entry(platform.to_string()).or_default();
            h.token_ok = true;
            h.consecutive_failures = 0;
            h.last_error = None;
            h.grants += 1;
        });
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
