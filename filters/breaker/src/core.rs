//! The breaker filter's pure core: config, and the three shared-data operations a request
//! makes (admit on the way in, record or answer a probe on the way out).

use crate::window::{Breaker, Phase, Rules, Trip};
use cxgate_kit::ConfigError;
use cxgate_kit::config::from_value;
use cxgate_kit::host::SharedStore;
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::{Update, UpdateError, update};
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

fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
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
            return Err(bad(
                format!("/breaker/fallbacks/{p}"),
                format!("{p:?} is not a platform of /model/platforms"),
            ));
        }
        let mut routes = Vec::with_capacity(model.platforms.len());
        for platform in &model.platforms {
            let i = platform;
            let fallback = match raw.fallbacks.remove(platform).unwrap_or_default() {
                RawFallback::Problem => Fallback::Problem,
                RawFallback::Static {
                    status,
                    headers,
                    body,
                } => {
                    if !(200..=599).contains(&status) {
                        return Err(bad(
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
                        return Err(bad(
                            format!("/breaker/fallbacks/{i}/header"),
                            "a reroute needs a header name and a value",
                        ));
                    }
                    Fallback::Reroute { header, value }
                }
            };
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
            return Err(bad(
                "/breaker/bucket_s",
                "must be > 0 and divide window_s evenly",
            ));
        }
        let buckets = raw.window_s / raw.bucket_s;
        if buckets > 600 {
            return Err(bad("/breaker/window_s", "at most 600 buckets per window"));
        }
        if !(raw.failure_ratio > 0.0 && raw.failure_ratio < 1.0) {
            return Err(bad("/breaker/failure_ratio", "must be within (0, 1)"));
        }
        let mut failure_statuses = Vec::new();
        for (i, s) in raw.failure_statuses.iter().enumerate() {
            match status_range(s) {
                Some(r) => failure_statuses.push(r),
                None => {
                    return Err(bad(
                        format!("/breaker/failure_statuses/{i}"),
                        "expected a class like \"5xx\", a status or a range like \"500-504\"",
                    ));
                }
            }
        }
        if raw.probe_interval_s == 0 {
            return Err(bad("/breaker/probe_interval_s", "must be > 0"));
        }
        if raw.probe_timeout_ms == 0 {
            return Err(bad("/breaker/probe_timeout_ms", "must be > 0"));
        }
        let slow_ms = match raw.latency {
            Some(l) if l.p95_ms == 0 => return Err(bad("/breaker/latency/p95_ms", "must be > 0")),
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

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// The one request let through while open; its answer decides.
    Probe,
    Fallback {
        retry_after_s: u64,
    },
}

/// A state change, reported once: by the request whose CAS write made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Opened(Trip),
    ProbeStarted,
    Closed {
        open_for_ms: u64,
    },
    Reopened,
    /// A probe's stream ended without an answer: the next request probes.
    ProbeAbandoned,
}

impl Transition {
    pub fn event(&self, platform: &str, window_ms: u64) -> Event {
        let e = |name: &str| Event::new(name).str("platform", platform);
        match *self {
            Transition::Opened(Trip::FailureRatio { failed, total }) => e("BREAKER_OPENED")
                .str("reason", "failure-ratio")
                .num("failed", failed)
                .num("total", total)
                .num("window_ms", window_ms),
            Transition::Opened(Trip::Latency { slow, total }) => e("BREAKER_OPENED")
                .str("reason", "latency-p95")
                .num("slow", slow)
                .num("total", total)
                .num("window_ms", window_ms),
            Transition::ProbeStarted => e("BREAKER_PROBE"),
            Transition::Closed { open_for_ms } => e("BREAKER_CLOSED")
                .str("reason", "probe-succeeded")
                .num("open_for_ms", open_for_ms),
            Transition::Reopened => e("BREAKER_REOPENED").str("reason", "probe-failed"),
            Transition::ProbeAbandoned => e("BREAKER_PROBE_ABANDONED"),
        }
    }
}

const ATTEMPTS: u32 = cxgate_kit::shared::CAS_BUDGET;

fn seconds_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

fn load(cfg: &Config, current: Option<&[u8]>) -> Breaker {
    current
        .and_then(Breaker::decode)
        .filter(|b| b.ring.len() == cfg.rules.buckets)
        .unwrap_or_else(|| Breaker::closed(cfg.rules.buckets))
}

/// The shared-data key of a platform's breaker.
pub fn key(platform: &str) -> String {
    format!("cxgate/cb/{platform}")
}

/// Is the platform's breaker open or probing (the platform is down)? For other stages: the
/// coexistence decision sends calls away from a cloud that is down. One shared-data read.
pub fn is_open<S: SharedStore + ?Sized>(store: &S, platform: &str) -> bool {
    store
        .get(&key(platform))
        .ok()
        .flatten()
        .and_then(|v| Breaker::decode_phase(&v.value))
        .is_some_and(|p| p != Phase::Closed)
}

/// The request path: one read while closed; a CAS write only to take the probe.
pub fn admit<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<(Admit, Option<Transition>), UpdateError> {
    let phase = store
        .get(&route.key)?
        .and_then(|v| Breaker::decode_phase(&v.value))
        .unwrap_or(Phase::Closed);
    if phase.clamped(&cfg.rules, now_ms).is_some() {
        return clamp(cfg, route, store, now_ms);
    }
    match phase {
        Phase::Closed => return Ok((Admit::Pass, None)),
        Phase::Open { next_probe_ms } if now_ms < next_probe_ms => {
            return Ok((
                Admit::Fallback {
                    retry_after_s: seconds_until(now_ms, next_probe_ms),
                },
                None,
            ));
        }
        Phase::HalfOpen { probe_until_ms } if now_ms < probe_until_ms => {
            return Ok((
                Admit::Fallback {
                    retry_after_s: probe_wait(cfg),
                },
                None,
            ));
        }
        _ => {}
    }
    // A probe is due: the one request whose CAS write lands takes it.
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        let due = match b.phase {
            Phase::Closed => return Update::Keep((Admit::Pass, None)),
            Phase::Open { next_probe_ms } => now_ms >= next_probe_ms,
            Phase::HalfOpen { probe_until_ms } => now_ms >= probe_until_ms,
        };
        if !due {
            return Update::Keep((
                Admit::Fallback {
                    retry_after_s: probe_wait(cfg),
                },
                None,
            ));
        }
        b.phase = Phase::HalfOpen {
            probe_until_ms: now_ms.saturating_add(cfg.rules.probe_timeout_ms),
        };
        Update::Write(b.encode(), (Admit::Probe, Some(Transition::ProbeStarted)))
    })
}

/// Writes the phase back with its time clamped (the wall clock stepped back), then admits.
fn clamp<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<(Admit, Option<Transition>), UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        match b.phase.clamped(&cfg.rules, now_ms) {
            Some(p) => {
                b.phase = p;
                Update::Write(b.encode(), ())
            }
            None => Update::Keep(()),
        }
    })?;
    admit(cfg, route, store, now_ms)
}

/// While a probe is out, a consumer may retry after one probe interval at the latest.
fn probe_wait(cfg: &Config) -> u64 {
    cfg.rules.probe_interval_ms.div_ceil(1000).max(1)
}

/// One worker's outcomes for one platform since its last flush, by time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// (time in the bucket, ok, failed, slow).
    pub buckets: Vec<(u64, u32, u32, u32)>,
}

impl Pending {
    pub fn add(&mut self, rules: &crate::window::Rules, now_ms: u64, failed: bool, slow: bool) {
        let epoch = now_ms / rules.bucket_ms.max(1);
        let at = |t: &u64| *t / rules.bucket_ms.max(1) == epoch;
        let (ok, bad, sl) = (u32::from(!failed), u32::from(failed), u32::from(slow));
        match self.buckets.iter_mut().find(|(t, ..)| at(t)) {
            Some((_, o, f, s)) => {
                *o = o.saturating_add(ok);
                *f = f.saturating_add(bad);
                *s = s.saturating_add(sl);
            }
            None => self.buckets.push((now_ms, ok, bad, sl)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Counts a batch of outcomes (one CAS update however many requests it holds), and opens the
/// breaker if the window trips. Outcomes that arrive while not closed are dropped (only the
/// probe decides then).
pub fn record_batch<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    pending: &Pending,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if b.phase != Phase::Closed {
            return Update::Keep(None);
        }
        for (at, ok, failed, slow) in &pending.buckets {
            b.add_counts(&cfg.rules, *at, *ok, *failed, *slow);
        }
        match b.trip(&cfg.rules, now_ms) {
            Some(trip) => {
                b.open(&cfg.rules, now_ms);
                b.opened_ms = now_ms;
                Update::Write(b.encode(), Some(Transition::Opened(trip)))
            }
            None => Update::Write(b.encode(), None),
        }
    })
}

/// One outcome at once (what a flush of one request does).
pub fn record<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    failed: bool,
    slow: bool,
) -> Result<Option<Transition>, UpdateError> {
    let mut pending = Pending::default();
    pending.add(&cfg.rules, now_ms, failed, slow);
    record_batch(cfg, route, store, now_ms, &pending)
}

/// The probe's answer: success closes the breaker, failure re-opens it for another interval.
pub fn probe_answered<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    failed: bool,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if !matches!(b.phase, Phase::HalfOpen { .. }) {
            return Update::Keep(None);
        }
        if failed {
            b.open(&cfg.rules, now_ms);
            Update::Write(b.encode(), Some(Transition::Reopened))
        } else {
            let open_for_ms = now_ms.saturating_sub(b.opened_ms);
            b.close();
            Update::Write(b.encode(), Some(Transition::Closed { open_for_ms }))
        }
    })
}

/// The probe's stream ended without a response: let the next request probe at once.
pub fn probe_abandoned<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if !matches!(b.phase, Phase::HalfOpen { .. }) {
            return Update::Keep(None);
        }
        b.phase = Phase::Open {
            next_probe_ms: now_ms,
        };
        Update::Write(b.encode(), Some(Transition::ProbeAbandoned))
    })
}

/// What the consumer gets while the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    Reply(LocalReply),
    /// Forward with this header set (the route config sends it to the fallback upstream).
    Reroute {
        header: String,
        value: String,
    },
}

pub fn fallback(route: &Route, retry_after_s: u64, trace_id: Option<&str>) -> Served {
    let marker = ("x-cxgate-breaker".to_string(), "open".to_string());
    match &route.fallback {
        Fallback::Problem => {
            let mut reply = Problem::new(
                503,
                "breaker-open",
                "Platform temporarily unavailable",
                format!(
                    "{} is failing; the gateway is not forwarding to it. Retry after {retry_after_s} s.",
                    route.platform
                ),
            )
            .with_trace_id(trace_id)
            .with_header("retry-after", retry_after_s.to_string())
            .into_reply();
            reply.headers.push(marker);
            Served::Reply(reply)
        }
        Fallback::Static {
            status,
            headers,
            body,
        } => {
            let mut headers = headers.clone();
            if !headers.iter().any(|(k, _)| k == "retry-after") {
                headers.push(("retry-after".into(), retry_after_s.to_string()));
            }
            headers.push(marker);
            Served::Reply(LocalReply {
                status: u32::from(*status),
                headers,
                body: body.clone(),
            })
        }
        Fallback::Reroute { header, value } => Served::Reroute {
            header: header.clone(),
            value: value.clone(),
        },
    }
}
