//! Metadata sync: name → id maps (Genesys queues and skills, CXone skills), fetched with full
//! pagination on an interval. A map is swapped whole, only after a complete fetch; a failed
//! sync keeps the previous entries and marks the map stale (its age shows in /metrics).

use crate::hub::{Hub, now_ms};
use crate::metrics::{MapLabel, Metrics};
use crate::tokens::TokenManager;
use cxgate_state::IdMap;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// Genesys page-based listing: `pageNumber`/`pageSize`, entities `{name, id}`.
    GenesysPaged { path: &'static str },
    /// CXone `skip`/`top` listing under the discovered API base: `path`, the array under
    /// `list`, and each item's `name` and `id` fields (skills: `skillName`, `skillId`).
    CxoneSkipTop {
        path: &'static str,
        list: &'static str,
        name: &'static str,
        id: &'static str,
    },
}

pub struct MapSync {
    pub name: &'static str,
    pub source: Source,
    /// Genesys API base; CXone's comes from discovery through the token manager.
    pub api_base: Option<String>,
    pub tokens: Arc<TokenManager>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    pub interval: Duration,
    pub page_size: u32,
}

/// A GET on a platform API with its current token; a 401 asks the token manager for a new one.
pub async fn platform_get(
    http: &reqwest::Client,
    hub: &Hub,
    tokens: &TokenManager,
    url: &str,
) -> Result<Value, String> {
    let token = hub
        .token(tokens.platform)
        .filter(|t| t.expires_ms > now_ms())
        .ok_or("no valid token yet")?;
    let resp = http
        .get(url)
        .bearer_auth(&token.access_token)
        .send()
        .await
        .map_err(|e| format!("GET {}: {e}", strip_query(url)))?;
    let status = resp.status();
    if status.as_u16() == 401 {
        let _ = tokens.invalidate(Some(token.generation));
    }
    if !status.is_success() {
        return Err(format!(
            "GET {}: HTTP {}",
            strip_query(url),
            status.as_u16()
        ));
    }
    resp.json()
        .await
        .map_err(|e| format!("GET {}: {e}", strip_query(url)))
}

/// Waits for the platform's first token rather than failing without one.
pub async fn first_token(hub: &Hub, platform: &str) {
    while hub.token(platform).is_none() {
        let _ = hub.wait_newer(hub.version(), Duration::from_secs(1)).await;
    }
}

impl MapSync {
    async fn get(&self, url: &str) -> Result<Value, String> {
        platform_get(&self.http, &self.hub, &self.tokens, url).await
    }

    /// One complete fetch.
    async fn fetch(&self) -> Result<BTreeMap<String, String>, String> {
        let mut entries = BTreeMap::new();
        match self.source {
            Source::GenesysPaged { path } => {
                let base = self.api_base.clone().ok_or("no Genesys API base")?;
                let mut page = 1u32;
                loop {
                    let v = self
                        .get(&format!(
                            "{base}{path}?pageSize={}&pageNumber={page}",
                            self.page_size
                        ))
                        .await?;
                    for e in v["entities"].as_array().ok_or("listing without entities")? {
                        if let (Some(name), Some(id)) = (e["name"].as_str(), e["id"].as_str()) {
                            entries.insert(name.to_string(), id.to_string());
                        }
                    }
                    let page_count = v["pageCount"].as_u64().unwrap_or(1);
                    if u64::from(page) >= page_count || v.get("nextUri").is_none_or(Value::is_null)
                    {
                        let total = v["total"].as_u64().unwrap_or(entries.len() as u64);
                        if (entries.len() as u64) < total {
                            return Err(format!(
                                "incomplete listing: {} of {total}",
                                entries.len()
                            ));
                        }
                        return Ok(entries);
                    }
                    page += 1;
                }
            }
            Source::CxoneSkipTop {
                path,
                list,
                name: name_field,
                id: id_field,
            } => {
                let base = self
                    .tokens
                    .grantor
                    .api_endpoint()
                    .ok_or("CXone API endpoint not discovered yet")?;
                let mut skip = 0usize;
                loop {
                    let v = self
                        .get(&format!("{base}{path}?skip={skip}&top={}", self.page_size))
                        .await?;
                    let page = v[list]
                        .as_array()
                        .ok_or_else(|| format!("listing without {list}"))?;
                    for s in page {
                        let id = s[id_field]
                            .as_i64()
                            .map(|i| i.to_string())
                            .or_else(|| s[id_field].as_str().map(str::to_string));
                        if let (Some(name), Some(id)) = (s[name_field].as_str(), id) {
                            entries.insert(name.to_string(), id);
                        }
                    }
                    skip += page.len();
                    let total = v["totalRecords"].as_u64().unwrap_or(0) as usize;
                    if page.is_empty() || skip >= total {
                        if skip < total {
                            return Err(format!("incomplete listing: {skip} of {total}"));
                        }
                        return Ok(entries);
                    }
                }
            }
        }
    }

    pub async fn run(self) {
        let label = MapLabel {
            map: self.name.to_string(),
        };
        first_token(&self.hub, self.tokens.platform).await;
        loop {
            let wait = match self.fetch().await {
                Ok(entries) => {
                    tracing::info!(
                        event = "ID_MAP_SYNCED",
                        map = self.name,
                        entries = entries.len()
                    );
                    self.hub.set_map(
                        self.name,
                        IdMap {
                            entries,
                            fetched_ms: now_ms(),
                            stale: false,
                            last_error: None,
                        },
                    );
                    self.interval
                }
                Err(error) => {
                    tracing::warn!(event = "ID_MAP_SYNC_FAILED", map = self.name, error = %error);
                    self.metrics.sync_failures.get_or_create(&label).inc();
                    self.hub.map_failed(self.name, &error);
                    // Retry sooner than the interval, but do not hammer a failing platform.
                    self.interval.min(Duration::from_secs(5))
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
