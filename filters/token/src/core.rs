//! The token filter's pure core.

use cxgate_kit::host::{Clock, Headers, SharedStore};
use cxgate_kit::ids::{is_valid_gateway_trace_id, random_hex};
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::sync::{SyncConfig, read_status, read_token, write_token};
use cxgate_kit::{ConfigError, Entropy, HostError, config};
use cxgate_state::{Freshness, TokenState};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u64>,
    routes: Vec<RawRoute>,
    sync: SyncConfig,
    #[serde(default = "default_wait")]
    wait_ms: u32,
    #[serde(default = "default_retry_after")]
    retry_after_s: u32,
    #[serde(default = "default_tick")]
    tick_ms: u32,
    #[serde(default = "default_trace_header")]
    trace_header: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    platform: String,
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_scheme")]
    scheme: String,
}

fn default_wait() -> u32 {
    2_000
}
fn default_retry_after() -> u32 {
    1
}
fn default_tick() -> u32 {
    1_000
}
fn default_header() -> String {
    "authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}
fn default_trace_header() -> String {
    "x-gateway-trace-id".into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub platform: String,
    /// Lowercase header the credential goes in.
    pub header: String,
    /// `Bearer` → `Authorization: Bearer <token>`; empty → the raw token (API-key headers).
    pub scheme: String,
}

/// The compiled config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Longest prefix first, so the most specific route wins.
    pub routes: Vec<Route>,
    pub sync: SyncConfig,
    pub wait_ms: u32,
    pub retry_after_s: u32,
    pub tick_ms: u32,
    pub trace_header: String,
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::parse(bytes)?;
        if raw.routes.is_empty() {
            return Err(ConfigError::new(
                "/routes",
                "at least one route is required",
            ));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            if !r.prefix.starts_with('/') {
                return Err(ConfigError::new(
                    format!("/routes/{i}/prefix"),
                    "must start with '/'",
                ));
            }
            if !cxgate_state::PLATFORMS.contains(&r.platform.as_str()) {
                return Err(ConfigError::new(
                    format!("/routes/{i}/platform"),
                    format!(
                        "unknown platform {:?}; one of {:?}",
                        r.platform,
                        cxgate_state::PLATFORMS
                    ),
                ));
            }
            let header = r.header.trim().to_ascii_lowercase();
            if header.is_empty() || header.starts_with(':') || header.contains(' ') {
                return Err(ConfigError::new(
                    format!("/routes/{i}/header"),
                    "not a usable header name",
                ));
            }
            routes.push(Route {
                prefix: r.prefix,
                platform: r.platform,
                header,
                scheme: r.scheme.trim().to_string(),
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        if raw.wait_ms == 0 || raw.wait_ms > 30_000 {
            return Err(ConfigError::new("/wait_ms", "must be within 1..=30000"));
        }
        if raw.tick_ms == 0 {
            return Err(ConfigError::new("/tick_ms", "must be > 0"));
        }
        Ok(Config {
            routes,
            sync: raw.sync,
            wait_ms: raw.wait_ms,
            retry_after_s: raw.retry_after_s.max(1),
            tick_ms: raw.tick_ms,
            trace_header: raw.trace_header.to_ascii_lowercase(),
        })
    }

    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| path.starts_with(&r.prefix))
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No route: leave the request alone.
    Pass,
    /// The credential was set; `stale` when it is past its soft expiry.
    Injected { platform: String, stale: bool },
    /// No valid token: wait (bounded) for one newer than `after`.
    Wait { platform: String, after: u64 },
}

/// Request headers: strip the consumer's credential, then inject or ask to wait.
pub fn on_request<H, S, C, E>(
    cfg: &Config,
    headers: &mut H,
    store: &S,
    clock: &C,
    entropy: &mut E,
) -> Result<Decision, HostError>
where
    H: Headers + ?Sized,
    S: SharedStore + ?Sized,
    C: Clock + ?Sized,
    E: Entropy + ?Sized,
{
    let path = headers.get(":path")?.unwrap_or_default();
    let Some(route) = cfg.route_for(&path) else {
        return Ok(Decision::Pass);
    };
    // Whatever the consumer sent in the credential header never leaves the gateway.
    headers.remove(&route.header)?;
    if route.header != "authorization" {
        headers.remove("authorization")?;
    }
    ensure_trace_id(cfg, headers, entropy)?;
    if has_body(headers)? && headers.get("content-type")?.is_none() {
        headers.set("content-type", "application/json")?;
    }
    let token = read_token(store, &route.platform)?.map(|(t, _)| t);
    match token.as_ref().map(|t| (t, t.freshness(clock.now_ms()))) {
        Some((t, Freshness::Fresh)) => {
            inject(route, headers, t)?;
            Ok(Decision::Injected {
                platform: route.platform.clone(),
                stale: false,
            })
        }
        Some((t, Freshness::Stale)) => {
            inject(route, headers, t)?;
            Ok(Decision::Injected {
                platform: route.platform.clone(),
                stale: true,
            })
        }
        Some((t, Freshness::Expired)) => Ok(Decision::Wait {
            platform: route.platform.clone(),
            after: t.generation,
        }),
        None => Ok(Decision::Wait {
            platform: route.platform.clone(),
            after: 0,
        }),
    }
}

fn ensure_trace_id<H: Headers + ?Sized, E: Entropy + ?Sized>(
    cfg: &Config,
    headers: &mut H,
    entropy: &mut E,
) -> Result<(), HostError> {
    let valid = headers
        .get(&cfg.trace_header)?
        .is_some_and(|v| is_valid_gateway_trace_id(&v));
    if !valid {
        headers.set(&cfg.trace_header, &random_hex(entropy, 16)?)?;
    }
    Ok(())
}

/// Header callbacks cannot rely on end_of_stream (Kong always says false): judge by headers.
fn has_body<H: Headers + ?Sized>(headers: &H) -> Result<bool, HostError> {
    let length = headers
        .get("content-length")?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(length > 0 || headers.get("transfer-encoding")?.is_some())
}

fn inject<H: Headers + ?Sized>(
    route: &Route,
    headers: &mut H,
    token: &TokenState,
) -> Result<(), HostError> {
    let value = if route.scheme.is_empty() {
        token.access_token.clone()
    } else {
        format!("{} {}", route.scheme, token.access_token)
    };
    headers.set(&route.header, &value)
}

/// The sidecar call for a bounded wait: a token of `platform` newer than `after`.
pub fn wait_path(cfg: &Config, platform: &str, after: u64) -> String {
    format!(
        "/v1/tokens/{platform}?after={after}&wait_ms={}",
        cfg.wait_ms
    )
}

/// The answer to the wait call: inject (and share the token with every worker), or the 503
/// problem to answer the consumer with. `status` is `None` when the call failed or timed out.
pub fn on_wait_answer<H, S, C>(
    cfg: &Config,
    platform: &str,
    headers: &mut H,
    store: &mut S,
    clock: &C,
    status: Option<u16>,
    body: &[u8],
) -> Result<Result<(), LocalReply>, HostError>
where
    H: Headers + ?Sized,
    S: SharedStore + ?Sized,
    C: Clock + ?Sized,
{
    let now = clock.now_ms();
    let token = (status == Some(200))
        .then(|| serde_json::from_slice::<TokenState>(body).ok())
        .flatten()
        .filter(|t| t.freshness(now) != Freshness::Expired);
    let route = cfg.routes.iter().find(|r| r.platform == platform);
    match (token, route) {
        (Some(t), Some(route)) => {
            let version = read_status(store)?.version;
            // Another worker may have stored it already; losing that race is fine.
            let _ = write_token(store, platform, &t, version, now);
            inject(route, headers, &t)?;
            Ok(Ok(()))
        }
        _ => {
            let trace_id = headers.get(&cfg.trace_header)?;
            let problem = Problem::new(
                503,
                "token-unavailable",
                "Platform credential unavailable",
                format!(
                    "No valid {platform} token within {} ms; the request was not forwarded.",
                    cfg.wait_ms
                ),
            )
            .with_trace_id(trace_id.as_deref())
            .with_header("retry-after", cfg.retry_after_s.to_string());
            Ok(Err(problem.into_reply()))
        }
    }
}
