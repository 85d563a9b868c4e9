//! The token filter's pure core.

use cxgate_kit::config::from_value;
use cxgate_kit::host::{Cas, Clock, Headers, SharedStore};
use cxgate_kit::ids::{is_valid_gateway_trace_id, random_hex};
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::Stamped;
use cxgate_kit::sync::{SyncConfig, read_status, reject_token, write_token};
use cxgate_kit::{ConfigError, Entropy, HostError};
use cxgate_model::Model;
use cxgate_state::{Freshness, TokenState};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Per platform: where its credential goes (default `Authorization: Bearer <token>`).
    #[serde(default)]
    platforms: BTreeMap<String, RawPlatform>,
    #[serde(default = "default_wait")]
    wait_ms: u32,
    #[serde(default = "default_retry_after")]
    retry_after_s: u32,
    #[serde(default)]
    on_unauthorized: OnUnauthorized,
    /// Envoy retries: a longer wait than this (Retry-After, s) is not waited out by a retry.
    #[serde(default)]
    retry_wait_max_s: Option<u32>,
}

/// What to do when the platform answers 401 to a request that carried our token.
/// Either way the token is marked rejected in shared data first, so no worker serves it again
/// and the next request asks the sidecar for a fresh one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnauthorized {
    /// The proxy replays the request once (Envoy: this filter as an upstream HTTP filter of
    /// the platform's cluster, and a route retry policy on 401 with `num_retries: 1`). The
    /// replay runs this filter again and so carries the fresh token; a second 401 goes back
    /// to the consumer as it is.
    Replay,
    /// The host cannot replay (Kong: no pausing in response headers): answer 503 with
    /// `Retry-After` instead of leaking the platform's 401.
    #[default]
    RetryLater,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    #[serde(default = "default_header")]
    header: String,
    #[serde(default = "default_scheme")]
    scheme: String,
    /// Headers the platform requires beside the credential, set when the request lacks
    /// them (Anthropic's `anthropic-version`).
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_wait() -> u32 {
    2_000
}
fn default_retry_after() -> u32 {
    1
}
fn default_header() -> String {
    "authorization".into()
}
fn default_scheme() -> String {
    "Bearer".into()
}

/// One platform's credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub platform: String,
    /// Lowercase header the credential goes in.
    pub header: String,
    /// `Bearer` → `Authorization: Bearer <token>`; empty → the raw token (API-key headers).
    pub scheme: String,
    /// Set when the request lacks them (lowercase names).
    pub headers: Vec<(String, String)>,
}

/// The compiled config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// One per platform the sidecar issues tokens for and the model knows.
    pub routes: Vec<Route>,
    pub sync: SyncConfig,
    pub wait_ms: u32,
    pub retry_after_s: u32,
    pub trace_header: String,
    pub on_unauthorized: OnUnauthorized,
    /// When set: an answer whose `Retry-After` asks for a longer wait goes to the consumer at
    /// once, never retried by the proxy (see [`waits_too_long`]).
    pub retry_wait_max_s: Option<u32>,
}

impl Config {
    /// `section` is the document's `token` object; `sync` its `sync` (the sidecar).
    pub fn compile(
        section: Value,
        model: &Model,
        sync: Option<&SyncConfig>,
    ) -> Result<Config, ConfigError> {
        let section = if section.is_null() {
            json!({})
        } else {
            section
        };
        let mut raw: RawConfig = from_value(section, "/token")?;
        let Some(sync) = sync else {
            return Err(ConfigError::at(
                "/sync",
                "the token stage asks the sidecar for tokens: the document needs /sync",
            ));
        };
        let mut routes = Vec::new();
        for platform in &model.platforms {
            if !cxgate_state::PLATFORMS.contains(&platform.as_str()) {
                continue;
            }
            let p = raw.platforms.remove(platform).unwrap_or(RawPlatform {
                header: default_header(),
                scheme: default_scheme(),
                headers: BTreeMap::new(),
            });
            let header = p.header.trim().to_ascii_lowercase();
            if header.is_empty() || header.starts_with(':') || header.contains(' ') {
                return Err(ConfigError::at(
                    format!("/token/platforms/{platform}/header"),
                    "not a usable header name",
                ));
            }
            let mut headers = Vec::with_capacity(p.headers.len());
            for (name, value) in p.headers {
                let name = name.trim().to_ascii_lowercase();
                if name.is_empty() || name.starts_with(':') || name.contains(' ') || name == header
                {
                    return Err(ConfigError::at(
                        format!("/token/platforms/{platform}/headers/{name}"),
                        "not a usable header name (nor the credential's own)",
                    ));
                }
                headers.push((name, value));
            }
            routes.push(Route {
                platform: platform.clone(),
                header,
                scheme: p.scheme.trim().to_string(),
                headers,
            });
        }
        if let Some(p) = raw.platforms.keys().next() {
            return Err(ConfigError::at(
                format!("/token/platforms/{p}"),
                format!(
                    "the sidecar issues no token for {p:?}; one of {:?} in /model/platforms",
                    cxgate_state::PLATFORMS
                ),
            ));
        }
        if raw.wait_ms == 0 || raw.wait_ms > 30_000 {
            return Err(ConfigError::at(
                "/token/wait_ms",
                "must be within 1..=30000",
            ));
        }
        Ok(Config {
            routes,
            sync: sync.clone(),
            wait_ms: raw.wait_ms,
            retry_after_s: raw.retry_after_s.max(1),
            trace_header: model.trace_header.clone(),
            on_unauthorized: raw.on_unauthorized,
            retry_wait_max_s: raw.retry_wait_max_s,
        })
    }

    /// The credential route of a platform.
    pub fn route_index(&self, platform: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.platform == platform)
    }
}

/// Whether a platform's `Retry-After` asks for a longer wait than `max_s`. Envoy's retry
/// waits out a Retry-After up to its route's bound, but one past the bound it ignores and
/// retries after its own short backoff: against the platform's word. Such an answer is marked
/// (`x-envoy-ratelimited`, which no retry condition of ours retries) and reaches the consumer
/// with the platform's Retry-After. An HTTP-date counts as too long: nothing here measures it.
pub fn waits_too_long(retry_after: Option<&str>, max_s: u32) -> bool {
    match retry_after.map(str::trim) {
        None | Some("") => false,
        Some(v) => v
            .parse::<u64>()
            .map_or(true, |secs| secs > u64::from(max_s)),
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The credential was set; `stale` when it is past its soft expiry.
    Injected {
        /// Index into [`Config::routes`].
        route: usize,
        stale: bool,
        generation: u64,
    },
    /// No valid token: wait (bounded) for one newer than `after`; `rejected` when the platform
    /// answered 401 to generation `after`, so the sidecar must be told.
    Wait {
        route: usize,
        after: u64,
        rejected: bool,
    },
}

/// What a routed request's response handling needs from its request: in Envoy's upstream
/// filter position the request headers are gone by the time the response arrives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub path: String,
    pub trace_id: String,
}

/// Request headers: strip the consumer's credential, then inject `token` or ask to wait.
/// `token` is the platform's synced token (see [`TokenCache`]).
#[allow(clippy::too_many_arguments)]
pub fn on_request<H, E>(
    cfg: &Config,
    index: usize,
    headers: &mut H,
    token: Option<&TokenState>,
    now_ms: u64,
    entropy: &mut E,
    info: &mut RequestInfo,
) -> Result<Decision, HostError>
where
    H: Headers + ?Sized,
    E: Entropy + ?Sized,
{
    let Some(route) = cfg.routes.get(index) else {
        return Err(HostError::BadArgument);
    };
    // Whatever the consumer sent in the credential header never leaves the gateway.
    headers.remove(&route.header)?;
    if route.header != "authorization" {
        headers.remove("authorization")?;
    }
    info.trace_id = ensure_trace_id(cfg, headers, entropy)?;
    info.path = headers.get(":path")?.unwrap_or_default();
    if has_body(headers)? && headers.get("content-type")?.is_none() {
        headers.set("content-type", "application/json")?;
    }
    match token.map(|t| (t, t.freshness(now_ms))) {
        Some((t, f @ (Freshness::Fresh | Freshness::Stale))) if !t.rejected => {
            inject(route, headers, t)?;
            Ok(Decision::Injected {
                route: index,
                stale: f == Freshness::Stale,
                generation: t.generation,
            })
        }
        Some((t, _)) => Ok(Decision::Wait {
            route: index,
            after: t.generation,
            rejected: t.rejected,
        }),
        None => Ok(Decision::Wait {
            route: index,
            after: 0,
            rejected: false,
        }),
    }
}

/// Each worker's copy of the synced tokens, decoded once per shared-data version (CAS): a
/// request reads the entry (one host call) but decodes it only when it changed.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Vec<(String, Cas, Option<TokenState>)>,
}

impl TokenCache {
    pub fn read<S: SharedStore + ?Sized>(
        &mut self,
        store: &S,
        platform: &str,
    ) -> Result<Option<TokenState>, HostError> {
        let Some(v) = store.get(&cxgate_state::keys::token(platform))? else {
            return Ok(None);
        };
        if let Some((_, _, t)) = self
            .entries
            .iter()
            .find(|(p, cas, _)| p == platform && *cas == v.cas)
        {
            return Ok(t.clone());
        }
        let token = Stamped::decode(&v.value)
            .and_then(|s| serde_json::from_slice::<TokenState>(&s.payload).ok());
        self.entries.retain(|(p, _, _)| p != platform);
        self.entries
            .push((platform.to_string(), v.cas, token.clone()));
        Ok(token)
    }
}

fn ensure_trace_id<H: Headers + ?Sized, E: Entropy + ?Sized>(
    cfg: &Config,
    headers: &mut H,
    entropy: &mut E,
) -> Result<String, HostError> {
    match headers.get(&cfg.trace_header)? {
        Some(v) if is_valid_gateway_trace_id(&v) => Ok(v),
        _ => {
            let id = random_hex(entropy, 16)?;
            headers.set(&cfg.trace_header, &id)?;
            Ok(id)
        }
    }
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
    for (name, v) in &route.headers {
        if headers.get(name)?.is_none() {
            headers.set(name, v)?;
        }
    }
    headers.set(&route.header, &value)
}

/// The sidecar call for a bounded wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitCall {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

/// A token of `platform` newer than `after`. When the platform rejected `after`, the call is
/// the sidecar's invalidate (which refreshes once however many requests report it) and waits
/// for the fresh token in the same round trip.
pub fn wait_call(cfg: &Config, platform: &str, after: u64, rejected: bool) -> WaitCall {
    if rejected {
        WaitCall {
            method: "POST",
            path: format!("/v1/tokens/{platform}/invalidate?wait_ms={}", cfg.wait_ms),
            body: Some(format!("{{\"generation\":{after}}}").into_bytes()),
        }
    } else {
        WaitCall {
            method: "GET",
            path: format!(
                "/v1/tokens/{platform}?after={after}&wait_ms={}",
                cfg.wait_ms
            ),
            body: None,
        }
    }
}

/// The answer to the wait call: inject (and share the token with every worker) and return its
/// generation, or the 503 problem to answer the consumer with. `status` is `None` when the
/// call failed or timed out.
pub fn on_wait_answer<H, S, C>(
    cfg: &Config,
    route: usize,
    headers: &mut H,
    store: &mut S,
    clock: &C,
    status: Option<u16>,
    body: &[u8],
) -> Result<Result<u64, LocalReply>, HostError>
where
    H: Headers + ?Sized,
    S: SharedStore + ?Sized,
    C: Clock + ?Sized,
{
    let now = clock.now_ms();
    let token = (status == Some(200))
        .then(|| serde_json::from_slice::<TokenState>(body).ok())
        .flatten()
        .filter(|t| !t.rejected && t.freshness(now) != Freshness::Expired);
    let Some(route) = cfg.routes.get(route) else {
        return Err(HostError::BadArgument);
    };
    let platform = route.platform.as_str();
    match token {
        Some(t) => {
            let version = read_status(store)?.version;
            // Another worker may have stored it already; losing that race is fine.
            let _ = write_token(store, platform, &t, version, now);
            inject(route, headers, &t)?;
            Ok(Ok(t.generation))
        }
        None => {
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

/// A request that went upstream with our token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Index into [`Config::routes`].
    pub route: usize,
    pub generation: u64,
    /// 1 for the original request; Envoy numbers replays from 2 (`x-envoy-attempt-count`).
    pub attempt: u32,
}

/// What the platform's answer means for the token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Not a 401: nothing to do.
    Accepted,
    /// A 401 (drift): the token is marked rejected and the proxy replays the request.
    /// `invalidated` is true for the one request that marked it.
    Replay { invalidated: bool, event: Event },
    /// A 401 to the replay itself: it goes back to the consumer as it is.
    ReplayFailed { event: Event },
    /// A 401 where no replay is possible: marked rejected, and the consumer gets this 503.
    RetryLater {
        invalidated: bool,
        event: Event,
        reply: LocalReply,
    },
}

/// The platform's response status to a request we sent with `sent`'s token.
/// `path` and `trace_id` only go into the log event (never the token).
pub fn on_response<S: SharedStore + ?Sized>(
    cfg: &Config,
    sent: &Sent,
    status: u16,
    path: &str,
    trace_id: Option<&str>,
    store: &mut S,
    now: u64,
) -> Answer {
    let Some(route) = cfg.routes.get(sent.route).filter(|_| status == 401) else {
        return Answer::Accepted;
    };
    let platform = route.platform.as_str();
    let path = path.split('?').next().unwrap_or_default();
    let event = |name: &str| {
        Event::new(name)
            .str("platform", platform)
            .str("path", path)
            .str("trace_id", trace_id.unwrap_or_default())
            .num("generation", sent.generation)
            .num("attempt", u64::from(sent.attempt))
    };
    if cfg.on_unauthorized == OnUnauthorized::Replay && sent.attempt > 1 {
        // The fresh token was refused too: not drift. Keep it, and let the 401 through.
        return Answer::ReplayFailed {
            event: event("TOKEN_REPLAY_FAILED"),
        };
    }
    // Losing the race (another request already marked it) or a store error both leave the
    // next request to find the marker or ask the sidecar; neither may block this answer.
    let invalidated = reject_token(store, platform, sent.generation, now).unwrap_or(false);
    match cfg.on_unauthorized {
        OnUnauthorized::Replay => Answer::Replay {
            invalidated,
            event: event("TOKEN_DRIFT_RECOVERY")
                .str("action", "replay")
                .flag("invalidated", invalidated),
        },
        OnUnauthorized::RetryLater => {
            let reply = Problem::new(
                503,
                "token-rejected",
                "Platform credential rejected",
                format!(
                    "{platform} rejected the gateway's credential; a fresh one is being fetched. Retry shortly."
                ),
            )
            .with_trace_id(trace_id)
            .with_header("retry-after", cfg.retry_after_s.to_string())
            .into_reply();
            Answer::RetryLater {
                invalidated,
                event: event("TOKEN_DRIFT_RECOVERY")
                    .str("action", "retry-later")
                    .flag("invalidated", invalidated),
                reply,
            }
        }
    }
}
