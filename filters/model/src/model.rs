//! The request model: the consumers (scopes, limits) and the routes (match, platform, cost,
//! required scopes). It is compiled once at configure time; the runner resolves each request
//! against it once, and every stage reads that resolution, so no stage keeps a route table.

use cxgate_kit::ConfigError;
use cxgate_kit::config::{from_value, pointer_token};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `capacity` units, refilled at `rate` units per `period_ms` (a consumer's or platform's budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub capacity: u64,
    pub rate: u64,
    pub period_ms: u64,
}

impl Limit {
    pub fn full(&self) -> u64 {
        self.capacity.saturating_mul(self.period_ms)
    }

    pub fn scaled(&self, units: u64) -> u64 {
        units.saturating_mul(self.period_ms)
    }

    /// Milliseconds until `deficit` scaled units have refilled.
    pub fn wait_ms(&self, deficit: u64) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        deficit.div_ceil(self.rate)
    }

    /// This limit split evenly over `n` instances (the distributed mode's fallback).
    pub fn share(&self, n: u64) -> Limit {
        let n = n.max(1);
        Limit {
            capacity: (self.capacity / n).max(1),
            rate: (self.rate / n).max(1),
            period_ms: self.period_ms,
        }
    }
}

/// A limit as configs write it: `{capacity, per_minute | per_second}`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub capacity: u64,
    #[serde(default)]
    pub per_minute: Option<u64>,
    #[serde(default)]
    pub per_second: Option<u64>,
}

impl RawLimit {
    pub fn compile(self, field: &str) -> Result<Limit, ConfigError> {
        let (rate, period_ms) = match (self.per_minute, self.per_second) {
            (Some(r), None) => (r, 60_000),
            (None, Some(r)) => (r, 1_000),
            _ => {
                return Err(ConfigError::at(
                    field,
                    "give exactly one of per_minute or per_second",
                ));
            }
        };
        let ok = |n: u64| (1..=1_000_000_000).contains(&n);
        if !ok(self.capacity) || !ok(rate) {
            return Err(ConfigError::at(
                field,
                "capacity and rate must be within 1..=1e9",
            ));
        }
        Ok(Limit {
            capacity: self.capacity,
            rate,
            period_ms,
        })
    }
}

/// A verified consumer (the id comes from the proxy's authentication, never from the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub id: String,
    /// Sorted, deduplicated.
    pub scopes: Vec<String>,
    pub limit: Limit,
}

impl Consumer {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .binary_search_by(|s| s.as_str().cmp(scope))
            .is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The path without its query, exactly.
    Exact(String),
    Prefix(String),
}

/// Where a route's platform comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSource {
    /// The route reaches no platform (e.g. `/gateway/v1/whoami`).
    None,
    Fixed(String),
    /// A JSON pointer into the request body (`/target_platform`): known in the body phase.
    Body(String),
    /// A query parameter (`platform`): known at request headers.
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    pub matcher: Match,
    /// Uppercase; empty: any method.
    pub methods: Vec<String>,
    pub platform: PlatformSource,
    /// Rate-limit units one request costs the consumer.
    pub cost: u64,
    /// Every one of these is required.
    pub scopes: Vec<String>,
}

impl Route {
    fn path_matches(&self, path: &str) -> bool {
        match &self.matcher {
            Match::Exact(p) => path == p,
            Match::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
    fn method_matches(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }
}

/// What happens to a request no route matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// 404 problem (`no-route`), nothing forwarded: the default.
    #[default]
    Deny,
    /// Leave the request to the rest of the proxy's chain, untouched by every stage.
    Pass,
}

/// The outcome of matching a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Route(usize),
    /// A route has this path, but not this method.
    MethodNotAllowed(Vec<String>),
    NoRoute,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Lowercase header the proxy's authentication sets to the verified consumer id.
    pub consumer_header: String,
    /// Lowercase header carrying the gateway trace id.
    pub trace_header: String,
    pub max_body_bytes: usize,
    pub unmatched: Unmatched,
    /// Platforms a body or query may name (lowercase ids).
    pub platforms: Vec<String>,
    /// What a consumer id that is not listed gets (the id `anonymous` when none was sent).
    pub default_consumer: Consumer,
    pub consumers: BTreeMap<String, Consumer>,
    /// Most specific first: exact paths, then longer prefixes; method-specific before any.
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    #[serde(default = "d_consumer_header")]
    consumer_header: String,
    #[serde(default = "d_trace_header")]
    trace_header: String,
    #[serde(default = "d_max_body")]
    max_body_bytes: usize,
    #[serde(default)]
    unmatched: Unmatched,
    #[serde(default = "d_platforms")]
    platforms: Vec<String>,
    #[serde(default)]
    default_consumer: Option<RawConsumer>,
    #[serde(default)]
    consumers: BTreeMap<String, RawConsumer>,
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    limit: Option<RawLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    id: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    platform: Option<RawPlatform>,
    #[serde(default = "d_cost")]
    cost: u64,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawPlatform {
    Fixed(String),
    From(RawPlatformFrom),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatformFrom {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    query: Option<String>,
}

fn d_consumer_header() -> String {
    "x-cxgate-consumer".into()
}
fn d_trace_header() -> String {
    "x-gateway-trace-id".into()
}
fn d_max_body() -> usize {
    64 << 10
}
fn d_platforms() -> Vec<String> {
    cxgate_state::DEFAULT_PLATFORMS
        .iter()
        .map(|p| p.to_string())
        .collect()
}
fn d_cost() -> u64 {
    1
}

/// The default consumer budget: 300 units a minute.
pub const DEFAULT_LIMIT: Limit = Limit {
    capacity: 300,
    rate: 300,
    period_ms: 60_000,
};

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

fn is_name(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

fn is_header(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn scopes(raw: Vec<String>, field: &str) -> Result<Vec<String>, ConfigError> {
    for (i, s) in raw.iter().enumerate() {
        if !is_name(s, b":._-") {
            return Err(ConfigError::at(
                format!("{field}/{i}"),
                format!("{s:?} is not a scope name ([a-z0-9:._-]+)"),
            ));
        }
    }
    let mut out = raw;
    out.sort();
    out.dedup();
    Ok(out)
}

fn consumer(
    id: &str,
    raw: Option<RawConsumer>,
    fallback: Limit,
    field: &str,
) -> Result<Consumer, ConfigError> {
    let raw = raw.unwrap_or(RawConsumer {
        scopes: Vec::new(),
        limit: None,
    });
    Ok(Consumer {
        id: id.to_string(),
        scopes: scopes(raw.scopes, &format!("{field}/scopes"))?,
        limit: match raw.limit {
            Some(l) => l.compile(&format!("{field}/limit"))?,
            None => fallback,
        },
    })
}

/// One route; `earlier` are the routes before it (an id is used once).
fn compile_route(r: RawRoute, at: &str, earlier: &[Route]) -> Result<Route, ConfigError> {
    if !is_name(&r.id, b":._-") {
        return Err(ConfigError::at(
            format!("{at}/id"),
            format!("{:?} is not a route id ([a-z0-9:._-]+)", r.id),
        ));
    }
    if earlier.iter().any(|o| o.id == r.id) {
        return Err(ConfigError::at(
            format!("{at}/id"),
            format!("{:?} is used twice", r.id),
        ));
    }
    let matcher = match (r.path, r.prefix) {
        (Some(p), None) if p.starts_with('/') => Match::Exact(p),
        (None, Some(p)) if p.starts_with('/') => Match::Prefix(p),
        (Some(_), None) => {
            return Err(ConfigError::at(format!("{at}/path"), "must start with '/'"));
        }
        (None, Some(_)) => {
            return Err(ConfigError::at(
                format!("{at}/prefix"),
                "must start with '/'",
            ));
        }
        _ => return Err(ConfigError::at(at, "give exactly one of path or prefix")),
    };
    let mut methods = Vec::with_capacity(r.methods.len());
    for (j, m) in r.methods.iter().enumerate() {
        let m = m.to_ascii_uppercase();
        if !METHODS.contains(&m.as_str()) {
            return Err(ConfigError::at(
                format!("{at}/methods/{j}"),
                format!("{m:?} is not an HTTP method"),
            ));
        }
        methods.push(m);
    }
    let platform = platform_source(r.platform, at)?;
    if let PlatformSource::Body(_) = platform
        && !methods
            .iter()
            .all(|m| matches!(m.as_str(), "POST" | "PUT" | "PATCH"))
    {
        return Err(ConfigError::at(
            format!("{at}/methods"),
            "a platform taken from the body needs methods with a body (POST, PUT, PATCH)",
        ));
    }
    if r.cost == 0 || r.cost > 1_000_000 {
        return Err(ConfigError::at(
            format!("{at}/cost"),
            "must be within 1..=1000000",
        ));
    }
    Ok(Route {
        id: r.id,
        matcher,
        methods,
        platform,
        cost: r.cost,
        scopes: scopes(r.scopes, &format!("{at}/scopes"))?,
    })
}

/// Where a route's platform comes from: none, a fixed id, a body pointer or a query parameter.
fn platform_source(raw: Option<RawPlatform>, at: &str) -> Result<PlatformSource, ConfigError> {
    Ok(match raw {
        None => PlatformSource::None,
        Some(RawPlatform::Fixed(p)) if is_name(&p, b"-") => PlatformSource::Fixed(p),
        Some(RawPlatform::Fixed(_)) => {
            return Err(ConfigError::at(
                format!("{at}/platform"),
                "a platform id is lowercase [a-z0-9-]+",
            ));
        }
        Some(RawPlatform::From(f)) => match (f.body, f.query) {
            (Some(p), None) if p.starts_with('/') => PlatformSource::Body(p),
            (None, Some(q)) if !q.is_empty() => PlatformSource::Query(q),
            _ => {
                return Err(ConfigError::at(
                    format!("{at}/platform"),
                    "a platform id, {\"body\": \"/json/pointer\"} or {\"query\": \"param\"}",
                ));
            }
        },
    })
}

impl Model {
    /// Compiles the document's `model` object; errors point below `/model`.
    pub fn compile(value: Value) -> Result<Model, ConfigError> {
        let raw: RawModel = from_value(value, "/model")?;
        let consumer_header = raw.consumer_header.trim().to_ascii_lowercase();
        if !is_header(&consumer_header) {
            return Err(ConfigError::at(
                "/model/consumer_header",
                "not a usable header name",
            ));
        }
        let trace_header = raw.trace_header.trim().to_ascii_lowercase();
        if !is_header(&trace_header) || trace_header == "traceparent" {
            return Err(ConfigError::at(
                "/model/trace_header",
                "not a usable header name",
            ));
        }
        if raw.max_body_bytes == 0 || raw.max_body_bytes > 16 << 20 {
            return Err(ConfigError::at(
                "/model/max_body_bytes",
                "must be within 1..=16 MiB",
            ));
        }
        for (i, p) in raw.platforms.iter().enumerate() {
            if !is_name(p, b"-") {
                return Err(ConfigError::at(
                    format!("/model/platforms/{i}"),
                    "a platform id is lowercase [a-z0-9-]+",
                ));
            }
        }
        let default_consumer = consumer(
            "anonymous",
            raw.default_consumer,
            DEFAULT_LIMIT,
            "/model/default_consumer",
        )?;
        let mut consumers = BTreeMap::new();
        for (id, c) in raw.consumers {
            let field = format!("/model/consumers/{}", pointer_token(&id));
            if id.is_empty() {
                return Err(ConfigError::at(field, "a consumer id cannot be empty"));
            }
            let c = consumer(&id, Some(c), default_consumer.limit, &field)?;
            consumers.insert(id, c);
        }
        if raw.routes.is_empty() {
            return Err(ConfigError::at(
                "/model/routes",
                "at least one route is required",
            ));
        }
        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let route = compile_route(r, &format!("/model/routes/{i}"), &routes)?;
            routes.push(route);
        }
        routes.sort_by_key(|r| {
            let (exact, len) = match &r.matcher {
                Match::Exact(p) => (0, p.len()),
                Match::Prefix(p) => (1, p.len()),
            };
            (exact, std::cmp::Reverse(len), r.methods.is_empty())
        });
        Ok(Model {
            consumer_header,
            trace_header,
            max_body_bytes: raw.max_body_bytes,
            unmatched: raw.unmatched,
            platforms: raw.platforms,
            default_consumer,
            consumers,
            routes,
        })
    }

    /// Matches a request (the path's query is ignored).
    pub fn resolve(&self, method: &str, path: &str) -> Resolved {
        let path = path.split('?').next().unwrap_or_default();
        let mut allowed: Vec<String> = Vec::new();
        for (i, r) in self.routes.iter().enumerate() {
            if !r.path_matches(path) {
                continue;
            }
            if r.method_matches(method) {
                return Resolved::Route(i);
            }
            for m in &r.methods {
                if !allowed.contains(m) {
                    allowed.push(m.clone());
                }
            }
        }
        if allowed.is_empty() {
            Resolved::NoRoute
        } else {
            Resolved::MethodNotAllowed(allowed)
        }
    }

    pub fn route(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn route_by_id(&self, id: &str) -> Option<(usize, &Route)> {
        self.routes.iter().enumerate().find(|(_, r)| r.id == id)
    }

    /// The consumer a verified id stands for (listed, or the default consumer's rights).
    pub fn consumer(&self, id: &str) -> &Consumer {
        self.consumers.get(id).unwrap_or(&self.default_consumer)
    }

    /// A platform a body or query names, as its lowercase id, if the model knows it.
    pub fn known_platform(&self, said: &str) -> Option<&str> {
        self.platforms
            .iter()
            .find(|p| p.eq_ignore_ascii_case(said.trim()))
            .map(String::as_str)
    }

    /// Every platform a route may reach (its fixed one, or all the model knows).
    pub fn route_platforms<'a>(&'a self, route: &'a Route) -> Vec<&'a str> {
        match &route.platform {
            PlatformSource::None => Vec::new(),
            PlatformSource::Fixed(p) => vec![p.as_str()],
            _ => self.platforms.iter().map(String::as_str).collect(),
        }
    }
}

/// The value of query parameter `name` in `path`, if present.
pub fn query_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    path.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
