//! The coexistence roster: which platform each agent works on during a migration, as the
//! sidecar merges it from the cloud directory (Genesys users) and the legacy PBX's roster.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where an agent is in the migration plan (the legacy roster's `migration_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Migration {
    #[default]
    Legacy,
    Cloud,
    /// Moving this week: routed to the cloud only while on queue there (see the stage).
    Transitioning,
}

/// The agent as the cloud directory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CloudAgent {
    /// The platform's user id.
    pub id: String,
    /// `state: active` in the directory.
    pub active: bool,
    /// Genesys routing status (`IDLE`, `INTERACTING`, `OFF_QUEUE`, ...), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_status: Option<String>,
    /// Queues the agent is a member of (ids), when the sidecar fetches memberships.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
}

/// The agent as the legacy PBX's roster shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LegacyAgent {
    pub extension: String,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The legacy PBX's emergency address (ERL) id for this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e911_id: Option<String>,
}

/// One agent, keyed by the directory user id both platforms share (lower-case email).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Agent {
    pub migration: Migration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudAgent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<LegacyAgent>,
}

impl Agent {
    /// Active on both platforms at once: a zombie.
    pub fn active_on_both(&self) -> bool {
        self.cloud.as_ref().is_some_and(|c| c.active)
            && self.legacy.as_ref().is_some_and(|l| l.active)
    }
}

/// A site's emergency address ids, one per platform: an id means nothing to the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Site {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_e911_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_e911_id: Option<String>,
}

/// An agent whose routing is suspended until an administrator resolves the conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Suspension {
    /// When the reconciliation found it (ms since epoch, sidecar clock).
    pub since_ms: u64,
    pub reason: String,
}

/// What the sidecar publishes for the coexistence stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Roster {
    pub agents: BTreeMap<String, Agent>,
    #[serde(default)]
    pub sites: BTreeMap<String, Site>,
    /// Zombie agents (active on both sides) found by the last reconciliation.
    #[serde(default)]
    pub suspended: BTreeMap<String, Suspension>,
    /// The older of the two sources' last complete fetches (0: never): the roster's age.
    pub fetched_ms: u64,
    /// The last fetch of either source failed; the entries are from `fetched_ms`.
    pub stale: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
