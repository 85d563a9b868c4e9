//! The breaker's config: the window and its rules, which statuses are failures, and each
//! platform's fallback while its breaker is open.

use crate::window::Rules;
use cxgate_kit::ConfigError;
use cxgate_kit::config::from_value;
use cxgate_model::Model;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Platform id → what its requests get while its breaker is open (default: a problem).
    #[serde(default)]
    fallbacks: BTreeMap<String, RawFallback>,
    #[serde(default = "d_window")]
    window_s: u32,
    #[serde(default = "d_bucket")]
    bucket_s: u32,
    #[serde(default = "d_min")]
    min_requests: u32,
    #[serde(default = "d_ratio")]
    failure_ratio: f64,
    #[serde(default = "d_statuses")]
    failure_statuses: Vec<String>,
    #[serde(default)]
    latency: Option<RawLatency>,
    #[serde(default = "d_probe")]
    probe_interval_s: u32,
    #[serde(default = "d_probe_timeout")]
    probe_timeout_ms: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    /// Opens when the window's p95 latency exceeds this.
    p95_ms: u64,
}

/// What an open breaker answers instead of forwarding.
#[derive(Debug, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawFallback {
    /// 503 problem+json with `Retry-After` until the next probe.
    #[default]
    Problem,
    /// A configured response, e.g. a graceful-degradation document.
    Static {
        status: u16,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// A string is sent as it is; anything else as JSON.
        #[serde(default)]
        body: serde_json::Value,
    },
    /// Forward anyway, with a header the proxy's route config matches to a fallback upstream.
    Reroute { header: String, value: String },
}

fn d_window() -> u32 {
    30
}
fn d_bucket() -> u32 {
    1
}
fn d_min() -> u32 {
    20
}
fn d_ratio() -> f64 {
    0.5
}
fn d_statuses() -> Vec<String> {
    vec!["5xx".into()]
}
fn d_probe() -> u32 {
    15
}
fn d_probe_timeout() -> u32 {
    30_000
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    Problem,
    Static {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Reroute {
        header: String,
        value: String,
    },
}

/// One platform's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub platform: String,
    /// `cxgate/cb/<platform>`: one breaker per platform, whichever route reaches it.
    pub key: String,
    pub fallback: Fallback,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One per platform of the request model.
    pub routes: Vec<Route>,
    pub rules: Rules,
    /// Inclusive status ranges that count as failures.
    pub failure_statuses: Vec<(u16, u16)>,
    pub slow_ms: Option<u64>,
    pub window_ms: u64,
}

fn status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(class) = s.strip_suffix("xx") {
        let c: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((c * 100, c * 100 + 99));
    }
    let (lo, hi) = s.split_once('-').unwrap_or((s.as_str(), s.as_str()));
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    ((100..=599).contains(&lo) && (lo..=599).contains(&hi)).then_some((lo, hi))
}

/// A platform's fallback while its breaker is open: a problem reply, a static answer, or
/// the request rerouted by a header.
fn fallback_of(raw: RawFallback, i: &str) -> Result<Fallback, ConfigError> {
    Ok(match raw {
        RawFallback::Problem => Fallback::Problem,
        RawFallback::Static {
            status,
            headers,
            body,
        } => {
            if !(200..=599).contains(&status) {
                return Err(ConfigError::at(
                    format!("/breaker/fallbacks/{i}/status"),
                    "must be within 200..=599",
                ));
            }
            let body = match body {
                serde_json::Value::Null => Vec::new(),
                serde_json::Value::String(s) => s.into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let headers = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            Fallback::Static {
                status,
                headers,
                body,
            }
        }
        RawFallback::Reroute { header, value } => {
            let header = header.trim().to_ascii_lowercase();
            if header.is_empty() || header.starts_with(':') || value.is_empty() {
                return Err(ConfigError::at(
                    format!("/breaker/fallbacks/{i}/header"),
                    "a reroute needs a header name and a value",
                ));
            }
            Fallback::Reroute { header, value }
        }
    })
}

impl Config {
    /// `section` is the document's `breaker` object; every platform of the model gets a breaker.
    pub fn compile(section: Value, model: &Model) -> Result<Config, ConfigError> {
        let section = if section.is_null() {
            json!({})
        } else {
            section
        };
        let mut raw: RawConfig = from_value(section, "/breaker")?;
        if let Some(p) = raw.fallbacks.keys().find(|p| !model.platforms.contains(p)) {
            return Err(ConfigError::at(
                format!("/breaker/fallbacks/{p}"),
                format!("{p:?} is not a platform of /model/platforms"),
            ));
        }
        let mut routes = Vec::with_capacity(model.platforms.len());
        for platform in &model.platforms {
            let fallback =
                fallback_of(raw.fallbacks.remove(platform).unwrap_or_default(), platform)?;
            routes.push(Route {
                key: key(platform),
                platform: platform.clone(),
                fallback,
            });
        }
        if raw.bucket_s == 0
            || raw.window_s < raw.bucket_s
            || !raw.window_s.is_multiple_of(raw.bucket_s)
        {
            return Err(ConfigError::at(
                "/breaker/bucket_s",
                "must be > 0 and divide window_s evenly",
            ));
        }
        let buckets = raw.window_s / raw.bucket_s;
        if buckets > 600 {
            return Err(ConfigError::at(
                "/breaker/window_s",
                "at most 600 buckets per window",
            ));
        }
        if !(raw.failure_ratio > 0.0 && raw.failure_ratio < 1.0) {
            return Err(ConfigError::at(
                "/breaker/failure_ratio",
                "must be within (0, 1)",
            ));
        }
        let mut failure_statuses = Vec::new();
        for (i, s) in raw.failure_statuses.iter().enumerate() {
            match status_range(s) {
                Some(r) => failure_statuses.push(r),
                None => {
                    return Err(ConfigError::at(
                        format!("/breaker/failure_statuses/{i}"),
                        "expected a class like \"5xx\", a status or a range like \"500-504\"",
                    ));
                }
            }
        }
        if raw.probe_interval_s == 0 {
            return Err(ConfigError::at("/breaker/probe_interval_s", "must be > 0"));
        }
        if raw.probe_timeout_ms == 0 {
            return Err(ConfigError::at("/breaker/probe_timeout_ms", "must be > 0"));
        }
        let slow_ms = match raw.latency {
            Some(l) if l.p95_ms == 0 => {
                return Err(ConfigError::at("/breaker/latency/p95_ms", "must be > 0"));
            }
            other => other.map(|l| l.p95_ms),
        };
        Ok(Config {
            routes,
            rules: Rules {
                bucket_ms: u64::from(raw.bucket_s) * 1000,
                buckets: buckets as usize,
                min_requests: u64::from(raw.min_requests.max(1)),
                failure_ratio: raw.failure_ratio,
                slow_ratio: slow_ms.map(|_| 0.05),
                probe_interval_ms: u64::from(raw.probe_interval_s) * 1000,
                probe_timeout_ms: u64::from(raw.probe_timeout_ms),
            },
            failure_statuses,
            slow_ms,
            window_ms: u64::from(raw.window_s) * 1000,
        })
    }

    /// The breaker of a platform.
    pub fn route_index(&self, platform: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.platform == platform)
    }

    /// 0 (no response status, e.g. a reset) counts as a failure. The caller leaves out the
    /// gateway's own replies (marked with the kit's problem marker header).
    pub fn is_failure(&self, status: u16) -> bool {
        status == 0
            || self
                .failure_statuses
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    }

    pub fn is_slow(&self, latency_ms: u64) -> bool {
        self.slow_ms.is_some_and(|b| latency_ms > b)
    }
}

/// The shared-data key of a platform's breaker.
pub fn key(platform: &str) -> String {
    format!("cxgate/cb/{platform}")
}
