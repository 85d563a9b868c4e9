//! The rate-limit stage's settings (`ratelimit` in the config document). Consumer budgets and
//! route costs are the request model's; this section adds the platform budgets and how the
//! limiter behaves.

use cxgate_kit::ConfigError;
use cxgate_kit::config::{from_value, pointer_token};
use cxgate_model::model::RawLimit;
use cxgate_model::{Limit, Model};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    platforms: BTreeMap<String, RawLimit>,
    #[serde(default)]
    legacy_headers: bool,
    #[serde(default)]
    fail_mode: FailMode,
    #[serde(default = "d_nearly_spent")]
    nearly_spent: f64,
    #[serde(default)]
    distributed: Option<RawDistributed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistributed {
    #[serde(default = "d_sync")]
    sync_ms: u32,
    instances: u64,
    #[serde(default = "d_timeout")]
    timeout_ms: u32,
}

/// What to do when shared data cannot be read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Forward unlimited (availability first) and count the error.
    #[default]
    Open,
    /// Answer 503 problem+json (the platform's budget first).
    Closed,
}

fn d_nearly_spent() -> f64 {
    0.9
}
fn d_sync() -> u32 {
    200
}
fn d_timeout() -> u32 {
    1_000
}

/// Several gateways share one budget, kept in Redis by the sidecar (the document's `sync`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distributed {
    pub upstream: String,
    pub authority: String,
    pub sync_ms: u64,
    pub instances: u64,
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every consumer's budget: the model's, by id, and the default for the rest.
    pub consumer: Limit,
    pub consumers: BTreeMap<String, Limit>,
    pub platforms: BTreeMap<String, Limit>,
    pub legacy_headers: bool,
    pub fail_mode: FailMode,
    pub nearly_spent: f64,
    pub distributed: Option<Distributed>,
    /// The largest route cost (a distributed allotment always covers one request).
    pub max_cost: u64,
}

impl Config {
    /// `section` is the document's `ratelimit` object; `sync` its `sync` (the sidecar), needed
    /// by the distributed mode.
    pub fn compile(
        section: Value,
        model: &Model,
        sync: Option<(&str, &str)>,
    ) -> Result<Config, ConfigError> {
        let section = if section.is_null() {
            json!({})
        } else {
            section
        };
        let raw: RawConfig = from_value(section, "/ratelimit")?;
        let mut platforms = BTreeMap::new();
        for (p, l) in raw.platforms {
            let field = format!("/ratelimit/platforms/{}", pointer_token(&p));
            if !model.platforms.contains(&p) {
                return Err(ConfigError::at(
                    field,
                    format!("{p:?} is not a platform of /model/platforms"),
                ));
            }
            platforms.insert(p, l.compile(&field)?);
        }
        if !(raw.nearly_spent > 0.0 && raw.nearly_spent <= 1.0) {
            return Err(ConfigError::at(
                "/ratelimit/nearly_spent",
                "must be within (0, 1]",
            ));
        }
        let distributed = match raw.distributed {
            None => None,
            Some(d) if d.instances == 0 => {
                return Err(ConfigError::at(
                    "/ratelimit/distributed/instances",
                    "must be at least 1",
                ));
            }
            Some(d) if d.sync_ms == 0 => {
                return Err(ConfigError::at(
                    "/ratelimit/distributed/sync_ms",
                    "must be > 0",
                ));
            }
            Some(d) => {
                let Some((upstream, authority)) = sync else {
                    return Err(ConfigError::at(
                        "/ratelimit/distributed",
                        "the distributed mode reaches the sidecar: the document needs /sync",
                    ));
                };
                Some(Distributed {
                    upstream: upstream.to_string(),
                    authority: authority.to_string(),
                    sync_ms: u64::from(d.sync_ms),
                    instances: d.instances,
                    timeout_ms: d.timeout_ms,
                })
            }
        };
        Ok(Config {
            consumer: model.default_consumer.limit,
            consumers: model
                .consumers
                .iter()
                .map(|(id, c)| (id.clone(), c.limit))
                .collect(),
            platforms,
            legacy_headers: raw.legacy_headers,
            fail_mode: raw.fail_mode,
            nearly_spent: raw.nearly_spent,
            distributed,
            max_cost: model.routes.iter().map(|r| r.cost).max().unwrap_or(1),
        })
    }

    pub fn consumer_limit(&self, consumer: &str) -> Limit {
        self.consumers
            .get(consumer)
            .copied()
            .unwrap_or(self.consumer)
    }

    /// The local allotment a distributed bucket is topped up to: two sync periods of refill,
    /// and never less than the largest request.
    pub fn allotment(&self, l: &Limit) -> u64 {
        let sync_ms = self.distributed.as_ref().map_or(0, |d| d.sync_ms);
        l.rate
            .saturating_mul(sync_ms.saturating_mul(2))
            .max(l.scaled(self.max_cost))
            .min(l.full())
    }
}
