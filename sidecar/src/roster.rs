//! The coexistence roster: Genesys users (with routing status) and the legacy PBX's roster,
//! merged per agent and published through the hub; every `reconcile_s` the agents active on
//! both sides (zombies) are suspended, and released once resolved.

use crate::config::{Coexistence, RosterSource};
use crate::hub::{Hub, now_ms};
use crate::metrics::Metrics;
use crate::sync::{first_token, platform_get};
use crate::tokens::TokenManager;
use cxgate_state::{Agent, CloudAgent, LegacyAgent, Migration, Roster, Suspension};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// One row of the legacy roster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyRow {
    pub user_id: String,
    pub extension: String,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub e911_id: Option<String>,
    /// `legacy` (default), `cloud` or `transitioning`.
    #[serde(default)]
    pub migration_status: Option<String>,
}

/// An agent as the cloud directory lists it, keyed like the legacy roster (lower-case email).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudRow {
    pub key: String,
    pub agent: CloudAgent,
}

fn blank_is_none(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Parses the legacy roster; errors name the row and the field.
pub fn parse_legacy(text: &str, json: bool) -> Result<Vec<LegacyRow>, String> {
    let rows: Vec<LegacyRow> = if json {
        serde_json::from_str(text).map_err(|e| format!("legacy roster (JSON): {e}"))?
    } else {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .comment(Some(b'#'))
            .from_reader(text.as_bytes());
        reader
            .deserialize()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| format!("legacy roster (CSV) record {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in rows.iter().enumerate() {
        let row = i + 1;
        if r.user_id.trim().is_empty() {
            return Err(format!("legacy roster record {row}: user_id is empty"));
        }
        if !seen.insert(r.user_id.trim().to_ascii_lowercase()) {
            return Err(format!(
                "legacy roster record {row}: user_id {} twice",
                r.user_id
            ));
        }
        if !matches!(
            r.status.to_ascii_uppercase().as_str(),
            "ACTIVE" | "INACTIVE"
        ) {
            return Err(format!(
                "legacy roster record {row}: status {:?} is not ACTIVE or INACTIVE",
                r.status
            ));
        }
        migration(r.migration_status.as_deref())
            .map_err(|e| format!("legacy roster record {row}: {e}"))?;
    }
    Ok(rows)
}

fn migration(s: Option<&str>) -> Result<Migration, String> {
    match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("legacy") => Ok(Migration::Legacy),
        Some("cloud") => Ok(Migration::Cloud),
        Some("transitioning") => Ok(Migration::Transitioning),
        Some(other) => Err(format!(
            "migration_status {other:?} is not legacy, cloud or transitioning"
        )),
    }
}

/// Genesys users (`expand=routingStatus`) as cloud rows; users without an email are skipped.
pub fn cloud_rows(entities: &[Value]) -> Vec<CloudRow> {
    entities
        .iter()
        .filter_map(|u| {
            let key = u["email"].as_str().or(u["username"].as_str())?;
            Some(CloudRow {
                key: key.trim().to_ascii_lowercase(),
                agent: CloudAgent {
                    id: u["id"].as_str().unwrap_or_default().to_string(),
                    active: u["state"].as_str() == Some("active"),
                    routing_status: u["routingStatus"]["status"].as_str().map(str::to_string),
                    queues: Vec::new(),
                },
            })
        })
        .collect()
}

/// One agent per user: the legacy roster says where it is in the migration; an agent only
/// the cloud knows has moved already.
pub fn merge(cloud: &[CloudRow], legacy: &[LegacyRow]) -> BTreeMap<String, Agent> {
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    for r in legacy {
        agents.insert(
            r.user_id.trim().to_ascii_lowercase(),
            Agent {
                migration: migration(r.migration_status.as_deref()).unwrap_or_default(),
                cloud: None,
                legacy: Some(LegacyAgent {
                    extension: r.extension.clone(),
                    active: r.status.eq_ignore_ascii_case("ACTIVE"),
                    site: blank_is_none(r.site.clone()),
                    e911_id: blank_is_none(r.e911_id.clone()),
                }),
            },
        );
    }
    for c in cloud {
        agents
            .entry(c.key.clone())
            .or_insert_with(|| Agent {
                migration: Migration::Cloud,
                ..Agent::default()
            })
            .cloud = Some(c.agent.clone());
    }
    agents
}

/// What one reconciliation found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub suspended: BTreeMap<String, Suspension>,
    pub newly: Vec<String>,
    pub released: Vec<String>,
}

/// Suspends every agent active on both sides; keeps the first `since_ms` of one already
/// suspended, and releases those no longer active on both.
pub fn reconcile(
    before: &BTreeMap<String, Suspension>,
    agents: &BTreeMap<String, Agent>,
    now: u64,
) -> Reconciled {
    let mut out = Reconciled::default();
    for (user, agent) in agents {
        if !agent.active_on_both() {
            continue;
        }
        let s = before.get(user).cloned().unwrap_or_else(|| {
            out.newly.push(user.clone());
            Suspension {
                since_ms: now,
                reason: "active on both platforms".into(),
            }
        });
        out.suspended.insert(user.clone(), s);
    }
    out.released = before
        .keys()
        .filter(|u| !out.suspended.contains_key(*u))
        .cloned()
        .collect();
    out
}

/// Lets the state API run a fetch and reconciliation now, and wait for it.
#[derive(Default)]
pub struct Trigger {
    pub now: Notify,
    /// Counts completed reconciliations.
    pub done: watch::Sender<u64>,
}

pub struct RosterSync {
    pub config: Coexistence,
    pub api_base: String,
    pub page_size: u32,
    pub tokens: Arc<TokenManager>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub trigger: Arc<Trigger>,
}

/// The last good fetch of each source.
#[derive(Default)]
struct Last {
    cloud: Option<(Vec<CloudRow>, u64)>,
    legacy: Option<(Vec<LegacyRow>, u64)>,
    suspended: BTreeMap<String, Suspension>,
}

impl RosterSync {
    async fn fetch_cloud(&self) -> Result<Vec<CloudRow>, String> {
        let mut rows = Vec::new();
        let mut page = 1u32;
        loop {
            let url = format!(
                "{}/api/v2/users?pageSize={}&pageNumber={page}&expand=routingStatus",
                self.api_base, self.page_size
            );
            let v = platform_get(&self.http, &self.hub, &self.tokens, &url).await?;
            let entities = v["entities"]
                .as_array()
                .ok_or("users listing without entities")?;
            rows.extend(cloud_rows(entities));
            if u64::from(page) >= v["pageCount"].as_u64().unwrap_or(1)
                || v.get("nextUri").is_none_or(Value::is_null)
            {
                return Ok(rows);
            }
            page += 1;
        }
    }

    async fn fetch_legacy(&self) -> Result<Vec<LegacyRow>, String> {
        match &self.config.legacy_roster {
            RosterSource::File(path) => {
                // A small file: a blocking read is shorter than the poll it serves.
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("legacy roster {}: {e}", path.display()))?;
                let json = path.extension().is_some_and(|e| e == "json");
                parse_legacy(&text, json)
            }
            RosterSource::Url(url) => {
                let resp = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("legacy roster GET: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "legacy roster GET: HTTP {}",
                        resp.status().as_u16()
                    ));
                }
                let json = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|c| c.contains("json"));
                let text = resp
                    .text()
                    .await
                    .map_err(|e| format!("legacy roster GET: {e}"))?;
                parse_legacy(&text, json)
            }
        }
    }

    /// One round: fetch both, merge, reconcile if asked, publish.
    async fn round(&self, last: &mut Last, reconcile_now: bool) {
        let mut errors = Vec::new();
        let now = now_ms();
        match self.fetch_cloud().await {
            Ok(rows) => last.cloud = Some((rows, now)),
            Err(e) => errors.push(format!("cloud: {e}")),
        }
        match self.fetch_legacy().await {
            Ok(rows) => last.legacy = Some((rows, now)),
            Err(e) => errors.push(format!("legacy: {e}")),
        }
        let (cloud, legacy) = match (&last.cloud, &last.legacy) {
            (Some(c), Some(l)) => (c, l),
            _ => {
                // Without both sources the roster says nothing safe: publish none yet.
                self.report(&errors);
                return;
            }
        };
        let agents = merge(&cloud.0, &legacy.0);
        if reconcile_now {
            let r = reconcile(&last.suspended, &agents, now);
            for user in &r.newly {
                let a = agents.get(user);
                let c = a.and_then(|a| a.cloud.as_ref());
                let l = a.and_then(|a| a.legacy.as_ref());
                tracing::warn!(
                    event = "ZOMBIE_AGENT_SUSPENDED",
                    user = %user,
                    cloud_user_id = c.map(|c| c.id.as_str()),
                    cloud_state = "active",
                    cloud_routing_status = c.and_then(|c| c.routing_status.as_deref()),
                    legacy_extension = l.map(|l| l.extension.as_str()),
                    legacy_status = "ACTIVE",
                    legacy_site = l.and_then(|l| l.site.as_deref()),
                    "routing suspended for an agent active on both platforms"
                );
            }
            for user in &r.released {
                let since = last.suspended.get(user).map_or(0, |s| s.since_ms);
                tracing::info!(
                    event = "ZOMBIE_AGENT_RELEASED",
                    user = %user,
                    suspended_s = now.saturating_sub(since) / 1000,
                    "the agent is active on one platform again"
                );
            }
            last.suspended = r.suspended;
            self.metrics
                .coexistence_zombies
                .set(i64::try_from(last.suspended.len()).unwrap_or(i64::MAX));
        }
        self.report(&errors);
        let roster = Roster {
            agents,
            sites: self.config.sites.clone(),
            suspended: last.suspended.clone(),
            fetched_ms: cloud.1.min(legacy.1),
            stale: !errors.is_empty(),
            last_error: (!errors.is_empty()).then(|| errors.join("; ")),
        };
        self.hub.set_roster(roster);
    }

    fn report(&self, errors: &[String]) {
        for e in errors {
            tracing::warn!(event = "ROSTER_SYNC_FAILED", error = %e);
            self.metrics.roster_failures.inc();
        }
        if errors.is_empty() {
            tracing::debug!(event = "ROSTER_SYNCED");
        }
    }

    pub async fn run(self) {
        first_token(&self.hub, self.tokens.platform).await;
        let mut last = Last::default();
        let poll = Duration::from_secs(self.config.poll_s);
        let every = Duration::from_secs(self.config.reconcile_s);
        // The first round reconciles: a zombie is suspended from the start.
        let mut reconciled_at: Option<Instant> = None;
        let mut forced = false;
        loop {
            let due = forced || reconciled_at.is_none_or(|t| t.elapsed() >= every);
            self.round(&mut last, due).await;
            if due && last.cloud.is_some() && last.legacy.is_some() {
                reconciled_at = Some(Instant::now());
            }
            if forced || due {
                self.trigger.done.send_modify(|n| *n += 1);
            }
            forced = tokio::select! {
                _ = tokio::time::sleep(poll) => false,
                _ = self.trigger.now.notified() => true,
            };
        }
    }
}

#[cfg(test)]
#[path = "roster_test.rs"]
mod tests;
