//! The rate-limit filter's pure core: config, admission (consumer bucket, then platform
//! bucket, each one CAS update), upstream feedback, response headers, and the distributed
//! mode's allotments.

use crate::bucket::{Bucket, Limit, Take, retry_after_s};
use cxgate_kit::host::SharedStore;
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::{Update, UpdateError, update};
use cxgate_kit::{ConfigError, config};
use cxgate_state::AllotItem;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u64>,
    #[serde(default = "d_consumer_header")]
    consumer_header: String,
    #[serde(default = "d_consumer")]
    consumer: RawLimit,
    #[serde(default)]
    consumers: BTreeMap<String, RawLimit>,
    #[serde(default)]
    platforms: BTreeMap<String, RawLimit>,
    routes: Vec<RawRoute>,
    #[serde(default)]
    legacy_headers: bool,
    #[serde(default)]
    fail_mode: FailMode,
    #[serde(default = "d_nearly_spent")]
    nearly_spent: f64,
    #[serde(default)]
    distributed: Option<RawDistributed>,
    #[serde(default = "d_trace")]
    trace_header: String,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    capacity: u64,
    #[serde(default)]
    per_minute: Option<u64>,
    #[serde(default)]
    per_second: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    platform: Option<String>,
    #[serde(default = "d_cost")]
    cost: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistributed {
    upstream: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "d_key_env")]
    key_env: String,
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

fn d_consumer_header() -> String {
    "x-cxgate-consumer".into()
}
fn d_consumer() -> RawLimit {
    RawLimit {
        capacity: 300,
        per_minute: Some(300),
        per_second: None,
    }
}
fn d_nearly_spent() -> f64 {
    0.9
}
fn d_trace() -> String {
    "x-gateway-trace-id".into()
}
fn d_cost() -> u64 {
    1
}
fn d_key_env() -> String {
    "CXGATE_SIDECAR_KEY".into()
}
fn d_sync() -> u32 {
    200
}
fn d_timeout() -> u32 {
    1_000
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    /// Uppercase; empty: any method.
    pub methods: Vec<String>,
    pub platform: Option<String>,
    pub cost: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distributed {
    pub upstream: String,
    pub authority: String,
    pub key_env: String,
    pub sync_ms: u64,
    pub instances: u64,
    pub timeout_ms: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub consumer_header: String,
    pub consumer: Limit,
    pub consumers: BTreeMap<String, Limit>,
    pub platforms: BTreeMap<String, Limit>,
    /// Most specific first: longer prefix, then method-specific before any-method.
    pub routes: Vec<Route>,
    pub legacy_headers: bool,
    pub fail_mode: FailMode,
    pub nearly_spent: f64,
    pub distributed: Option<Distributed>,
    pub trace_header: String,
    /// The largest route cost (a distributed allotment always covers one request).
    pub max_cost: u64,
}

fn limit(raw: RawLimit, field: &str) -> Result<Limit, ConfigError> {
    let (rate, period_ms) = match (raw.per_minute, raw.per_second) {
        (Some(r), None) => (r, 60_000),
        (None, Some(r)) => (r, 1_000),
        _ => {
            return Err(ConfigError::new(
                field,
                "give exactly one of per_minute or per_second",
            ));
        }
    };
    if raw.capacity == 0 || rate == 0 || raw.capacity > 1_000_000_000 || rate > 1_000_000_000 {
        return Err(ConfigError::new(
            field,
            "capacity and rate must be within 1..=1e9",
        ));
    }
    Ok(Limit {
        capacity: raw.capacity,
        rate,
        period_ms,
    })
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::parse(bytes)?;
        let consumer = limit(raw.consumer, "/consumer")?;
        let mut consumers = BTreeMap::new();
        for (id, l) in raw.consumers {
            let l = limit(l, &format!("/consumers/{id}"))?;
            consumers.insert(id, l);
        }
        let mut platforms = BTreeMap::new();
        for (p, l) in raw.platforms {
            let l = limit(l, &format!("/platforms/{p}"))?;
            platforms.insert(p, l);
        }
        config::check_route_prefixes(raw.routes.iter().map(|r| r.prefix.as_str()))?;
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            if r.cost == 0 {
                return Err(ConfigError::new(
                    format!("/routes/{i}/cost"),
                    "must be at least 1",
                ));
            }
            routes.push(Route {
                prefix: r.prefix,
                methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                platform: r.platform,
                cost: r.cost,
            });
        }
        routes.sort_by_key(|r| (std::cmp::Reverse(r.prefix.len()), r.methods.is_empty()));
        if !(raw.nearly_spent > 0.0 && raw.nearly_spent <= 1.0) {
            return Err(ConfigError::new("/nearly_spent", "must be within (0, 1]"));
        }
        let distributed = match raw.distributed {
            None => None,
            Some(d) if d.instances == 0 => {
                return Err(ConfigError::new(
                    "/distributed/instances",
                    "must be at least 1",
                ));
            }
            Some(d) if d.sync_ms == 0 => {
                return Err(ConfigError::new("/distributed/sync_ms", "must be > 0"));
            }
            Some(d) => Some(Distributed {
                authority: d.authority.unwrap_or_else(|| d.upstream.clone()),
                upstream: d.upstream,
                key_env: d.key_env,
                sync_ms: u64::from(d.sync_ms),
                instances: d.instances,
                timeout_ms: d.timeout_ms,
            }),
        };
        let max_cost = routes.iter().map(|r| r.cost).max().unwrap_or(1);
        Ok(Config {
            consumer_header: raw.consumer_header.to_ascii_lowercase(),
            consumer,
            consumers,
            platforms,
            routes,
            legacy_headers: raw.legacy_headers,
            fail_mode: raw.fail_mode,
            nearly_spent: raw.nearly_spent,
            distributed,
            trace_header: raw.trace_header.to_ascii_lowercase(),
            max_cost,
        })
    }

    pub fn route_index(&self, method: &str, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            path.starts_with(&r.prefix)
                && (r.methods.is_empty() || r.methods.iter().any(|m| m == method))
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

pub mod keys {
    pub fn consumer(id: &str) -> String {
        format!("cxgate/rl/{id}/default")
    }
    pub fn platform(p: &str) -> String {
        format!("cxgate/rl/platform/{p}")
    }
    /// Newline-separated distributed bucket keys (what the sync tops up).
    pub const INDEX: &str = "cxgate/rl/index";
    /// `distributed` or `fallback`, written by the syncing worker, read by every worker's tick.
    pub const MODE: &str = "cxgate/rl/mode";
    pub const SYNC_LEASE: &str = "cxgate/lease/rl-sync";
}

/// How buckets behave right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One instance: buckets refill locally.
    Local,
    /// Buckets hold allotments from the shared budget and do not refill locally.
    Distributed,
    /// The shared budget is unreachable: refill locally at budget / instances.
    Fallback,
}

impl Mode {
    pub fn read<S: SharedStore + ?Sized>(cfg: &Config, store: &S) -> Mode {
        if cfg.distributed.is_none() {
            return Mode::Local;
        }
        match store.get(keys::MODE) {
            Ok(Some(v)) if v.value == b"fallback" => Mode::Fallback,
            _ => Mode::Distributed,
        }
    }

    fn effective(self, cfg: &Config, l: Limit) -> (Limit, bool) {
        match self {
            Mode::Local => (l, true),
            Mode::Distributed => (l, false),
            Mode::Fallback => (
                l.share(cfg.distributed.as_ref().map_or(1, |d| d.instances)),
                true,
            ),
        }
    }
}

/// The rate-limit headers for the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

impl Quota {
    pub fn headers(&self, legacy: bool) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(6);
        for prefix in ["ratelimit", "x-ratelimit"]
            .into_iter()
            .take(if legacy { 2 } else { 1 })
        {
            out.push((format!("{prefix}-limit"), self.limit.to_string()));
            out.push((format!("{prefix}-remaining"), self.remaining.to_string()));
            out.push((format!("{prefix}-reset"), self.reset_s.to_string()));
        }
        out
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admitted(Quota),
    Limited(Limited, LocalReply),
    /// Distributed mode, a bucket this instance has not held yet: ask the sidecar for its
    /// first allotment, then decide again.
    Allot(Vec<AllotItem>),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Consumer,
    Platform,
    /// The cost is above the budget's capacity.
    NeverFits,
}

/// Who is asking, for what.
pub struct Ask<'a> {
    pub route: &'a Route,
    pub consumer: &'a str,
    pub trace_id: Option<&'a str>,
    pub now_ms: u64,
    pub mode: Mode,
    /// False once an allotment was asked for this request (never loop).
    pub may_allot: bool,
}

const ATTEMPTS: u32 = 8;

enum Step {
    Taken(Bucket),
    Missing,
    Denied(u64),
    Never,
}

/// One CAS update of bucket `key`.
fn take_from<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    l: &Limit,
    refills: bool,
    cost: u64,
    now: u64,
    create: bool,
) -> Result<Step, UpdateError> {
    update(store, key, ATTEMPTS, |current| {
        let existing = current.and_then(Bucket::decode);
        let mut b = match existing {
            Some(b) => b,
            None if !create => return Update::Keep(Step::Missing),
            None if refills => Bucket::full(l, now),
            None => Bucket {
                at_ms: now,
                ..Bucket::default()
            },
        };
        match b.take(l, now, cost, refills) {
            Take::Admitted { .. } => {
                b.at_ms = b.at_ms.max(now);
                Update::Write(b.encode(), Step::Taken(b))
            }
            Take::Denied { wait_ms } if existing.is_none() => {
                Update::Write(b.encode(), Step::Denied(wait_ms))
            }
            Take::Denied { wait_ms } => Update::Keep(Step::Denied(wait_ms)),
            Take::Never => Update::Keep(Step::Never),
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn limited(
    why: Limited,
    status_slug: &str,
    title: &str,
    detail: String,
    retry_after: Option<u64>,
    quota: Option<Quota>,
    cfg: &Config,
    trace_id: Option<&str>,
) -> Verdict {
    let mut p = Problem::new(429, status_slug, title, detail).with_trace_id(trace_id);
    if let Some(s) = retry_after {
        p = p.with_header("retry-after", s.to_string());
    }
    for (k, v) in quota
        .map(|q| q.headers(cfg.legacy_headers))
        .unwrap_or_default()
    {
        p = p.with_header(&k, v);
    }
    Verdict::Limited(why, p.into_reply())
}

/// Admission: the consumer's bucket, then the platform's (refunding the consumer if the
/// platform says no). Nothing is forwarded for a limited request.
pub fn admit<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    ask: &Ask<'_>,
) -> Result<Verdict, UpdateError> {
    let Ask {
        route,
        consumer,
        trace_id,
        now_ms: now,
        mode,
        may_allot,
    } = *ask;
    let cost = route.cost;
    let declared = cfg.consumer_limit(consumer);
    let (l, refills) = mode.effective(cfg, declared);
    let key = keys::consumer(consumer);
    let distributed = mode == Mode::Distributed;
    let quota = |b: &Bucket| Quota {
        limit: declared.capacity,
        remaining: b.remaining(&l),
        reset_s: b.reset_s(&l),
    };
    // A distributed bucket this instance has not held yet is created by its first allotment.
    let create = !distributed || !may_allot;
    let taken = match take_from(store, &key, &l, refills, cost, now, create)? {
        Step::Missing => {
            return Ok(Verdict::Allot(allot_items(cfg, store, &[key])?));
        }
        Step::Never => {
            return Ok(limited(
                Limited::NeverFits,
                "cost-exceeds-capacity",
                "Request can never fit the budget",
                format!(
                    "This request costs {cost} units but {consumer}'s budget holds at most {}: it can never be admitted. Ask for a larger budget or split the request.",
                    declared.capacity
                ),
                None,
                None,
                cfg,
                trace_id,
            ));
        }
        Step::Denied(wait_ms) => {
            let wait_ms = if distributed {
                // The next allotment arrives within a sync period at worst.
                wait_ms.min(cfg.distributed.as_ref().map_or(1000, |d| d.sync_ms * 2))
            } else {
                wait_ms
            };
            let s = retry_after_s(wait_ms);
            return Ok(limited(
                Limited::Consumer,
                "rate-limited",
                "Rate limit exceeded",
                format!(
                    "{consumer}'s budget of {} units per {} s is spent; this request costs {cost}. Retry in {s} s.",
                    declared.capacity,
                    declared.period_ms / 1000
                ),
                Some(s),
                Some(Quota {
                    limit: declared.capacity,
                    remaining: 0,
                    reset_s: s,
                }),
                cfg,
                trace_id,
            ));
        }
        Step::Taken(b) => b,
    };
    if let Some(platform) = &route.platform {
        let pkey = keys::platform(platform);
        let refused = match cfg.platforms.get(platform) {
            Some(pl) => {
                let (pl, refills) = mode.effective(cfg, *pl);
                // The platform counts requests, not our weighted units.
                match take_from(store, &pkey, &pl, refills, 1, now, create)? {
                    Step::Taken(_) => None,
                    Step::Missing => {
                        refund(store, &key, &l, cost)?;
                        return Ok(Verdict::Allot(allot_items(cfg, store, &[pkey])?));
                    }
                    Step::Denied(w) => Some(w),
                    Step::Never => Some(u64::MAX),
                }
            }
            // No platform budget: only the platform's own "stop" (feedback) applies.
            None => store
                .get(&pkey)?
                .and_then(|v| Bucket::decode(&v.value))
                .filter(|b| b.blocked_until_ms > now)
                .map(|b| b.blocked_until_ms - now),
        };
        if let Some(wait_ms) = refused {
            refund(store, &key, &l, cost)?;
            let s = retry_after_s(wait_ms.min(3_600_000));
            return Ok(limited(
                Limited::Platform,
                "platform-rate-limited",
                "Platform rate limit",
                format!(
                    "The gateway is holding {platform} traffic under its rate limit; retry in {s} s."
                ),
                Some(s),
                Some(quota(&refunded(taken, &l, cost))),
                cfg,
                trace_id,
            ));
        }
    }
    Ok(Verdict::Admitted(quota(&taken)))
}

fn refunded(mut b: Bucket, l: &Limit, cost: u64) -> Bucket {
    b.refund(l, cost);
    b
}

fn refund<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    l: &Limit,
    cost: u64,
) -> Result<(), UpdateError> {
    update(store, key, ATTEMPTS, |current| {
        match current.and_then(Bucket::decode) {
            Some(mut b) => {
                b.refund(l, cost);
                Update::Write(b.encode(), ())
            }
            None => Update::Keep(()),
        }
    })
}

/// The platform's answer, fed back into its bucket: a 429 stops that platform's traffic for
/// its `Retry-After`; `inin-ratelimit-*` near the limit drains the bucket to what is left.
pub struct Feedback<'a> {
    pub status: u16,
    pub retry_after: Option<&'a str>,
    /// `inin-ratelimit-count`, `-allowed`, `-reset` (Genesys).
    pub inin: Option<(u64, u64, u64)>,
}

pub fn on_response<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    platform: &str,
    fb: &Feedback<'_>,
    now: u64,
) -> Result<Option<Event>, UpdateError> {
    let block_s = if fb.status == 429 {
        Some(
            fb.retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .or(fb.inin.map(|(_, _, reset)| reset))
                .unwrap_or(1)
                .clamp(1, 3600),
        )
    } else {
        fb.inin
            .filter(|(count, allowed, _)| *allowed > 0 && count >= allowed)
            .map(|(_, _, reset)| reset.clamp(1, 3600))
    };
    let drain_to = fb.inin.and_then(|(count, allowed, _)| {
        (allowed > 0 && count as f64 >= allowed as f64 * cfg.nearly_spent)
            .then(|| allowed.saturating_sub(count))
    });
    if block_s.is_none() && drain_to.is_none() {
        return Ok(None);
    }
    let pl = cfg.platforms.get(platform).copied();
    update(store, &keys::platform(platform), ATTEMPTS, |current| {
        let mut b = current
            .and_then(Bucket::decode)
            .unwrap_or_else(|| match pl {
                Some(l) => Bucket::full(&l, now),
                None => Bucket::default(),
            });
        if let Some(l) = &pl {
            b.refill(l, now);
            if let Some(left) = drain_to {
                b.level = b.level.min(l.scaled(left));
            }
        }
        let mut event = None;
        if let Some(s) = block_s {
            let until = now.saturating_add(s * 1000);
            if until > b.blocked_until_ms {
                b.blocked_until_ms = until;
                event = Some(
                    Event::new("PLATFORM_RATE_LIMITED")
                        .str("platform", platform)
                        .num("status", u64::from(fb.status))
                        .num("hold_s", s),
                );
            }
        }
        Update::Write(b.encode(), event)
    })
}

/// The allotment requests for `keys` (their wanted top-up), registering new ones in the index
/// so the periodic sync keeps them topped up.
pub fn allot_items<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    keys_wanted: &[String],
) -> Result<Vec<AllotItem>, UpdateError> {
    update(store, keys::INDEX, ATTEMPTS, |current| {
        let text = current
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        let missing: Vec<&String> = keys_wanted
            .iter()
            .filter(|k| !text.lines().any(|l| l == k.as_str()))
            .collect();
        if missing.is_empty() || text.lines().count() >= 10_000 {
            return Update::Keep(());
        }
        let mut next = text.to_string();
        for k in missing {
            next.push_str(k);
            next.push('\n');
        }
        Update::Write(next.into_bytes(), ())
    })?;
    let mut items = Vec::with_capacity(keys_wanted.len());
    for key in keys_wanted {
        if let Some(item) = allot_item(cfg, store, key)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// The limit a bucket key stands for.
fn limit_of(cfg: &Config, key: &str) -> Option<Limit> {
    if let Some(p) = key.strip_prefix("cxgate/rl/platform/") {
        return cfg.platforms.get(p).copied();
    }
    let consumer = key.strip_prefix("cxgate/rl/")?.strip_suffix("/default")?;
    Some(cfg.consumer_limit(consumer))
}

fn allot_item<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &S,
    key: &str,
) -> Result<Option<AllotItem>, UpdateError> {
    let Some(l) = limit_of(cfg, key) else {
        return Ok(None);
    };
    let level = store
        .get(key)?
        .and_then(|v| Bucket::decode(&v.value))
        .map_or(0, |b| b.level);
    let want = cfg.allotment(&l).saturating_sub(level);
    Ok((want > 0).then(|| AllotItem {
        key: key.to_string(),
        capacity: l.capacity,
        rate: l.rate,
        period_ms: l.period_ms,
        want,
    }))
}

/// The periodic sync's request: every registered bucket below its allotment.
pub fn plan_sync<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &S,
) -> Result<Vec<AllotItem>, UpdateError> {
    let index = store
        .get(keys::INDEX)?
        .map(|v| String::from_utf8_lossy(&v.value).into_owned())
        .unwrap_or_default();
    let mut items = Vec::new();
    for key in index.lines().filter(|l| !l.is_empty()) {
        if let Some(item) = allot_item(cfg, store, key)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// Adds granted units to the local buckets (creating them if needed).
pub fn apply_grants<S: SharedStore + ?Sized>(
    store: &mut S,
    items: &[AllotItem],
    grants: &[u64],
    now: u64,
) -> Result<u64, UpdateError> {
    let mut total = 0;
    for (item, grant) in items.iter().zip(grants) {
        let grant = (*grant).min(item.want);
        if grant == 0 {
            continue;
        }
        update(store, &item.key, ATTEMPTS, |current| {
            let mut b = current.and_then(Bucket::decode).unwrap_or(Bucket {
                at_ms: now,
                ..Bucket::default()
            });
            b.level = b.level.saturating_add(grant);
            Update::Write(b.encode(), ())
        })?;
        total += grant;
    }
    Ok(total)
}
