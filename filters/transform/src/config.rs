//! The transform filter's config: named JSON Schemas, mapping profiles (data, not code) and
//! the route table, all compiled once at configure time.

use crate::template::Template;
use cxgate_kit::sync::SyncConfig;
use cxgate_kit::{ConfigError, config};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    #[allow(dead_code)]
    version: Option<u64>,
    #[serde(default = "d_consumer_header")]
    consumer_header: String,
    #[serde(default = "d_max_body")]
    max_body_bytes: usize,
    #[serde(default = "d_metadata_header")]
    metadata_header: String,
    #[serde(default = "d_trace")]
    trace_header: String,
    /// Hosts the state sync (ID maps) when no other cxgate filter in the VM does.
    #[serde(default)]
    sync: Option<SyncConfig>,
    /// VM environment variable holding the key that signs pagination cursors.
    #[serde(default = "d_cursor_key_env")]
    cursor_key_env: String,
    #[serde(default)]
    idempotency: RawIdempotency,
    #[serde(default)]
    schemas: BTreeMap<String, Value>,
    profiles: BTreeMap<String, RawProfile>,
    routes: Vec<RawRoute>,
    #[serde(default = "d_tick")]
    tick_ms: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdempotency {
    ttl_s: u64,
    max_entries: usize,
    max_bytes: usize,
    max_response_bytes: usize,
}

impl Default for RawIdempotency {
    fn default() -> Self {
        RawIdempotency {
            ttl_s: 900,
            max_entries: 10_000,
            max_bytes: 8 << 20,
            max_response_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    /// The gateway's route prefix of the platform (`genesys` → `/genesys/...`).
    platform: String,
    method: String,
    path: String,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    defaults: BTreeMap<String, Value>,
    #[serde(default)]
    platform_schema: Option<String>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    metadata: Vec<String>,
    #[serde(default)]
    paging: Option<RawPaging>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, tag = "style", rename_all = "snake_case")]
enum RawPaging {
    /// Genesys: `pageNumber`/`pageSize`, `{entities, total, pageCount}`.
    PageNumber {
        items: String,
        total: String,
        #[serde(default = "d_page_param")]
        page_param: String,
        #[serde(default = "d_size_param")]
        size_param: String,
        #[serde(default = "d_page_size")]
        default_size: u32,
        #[serde(default = "d_max_size")]
        max_size: u32,
    },
    /// CXone: `skip`/`top`, `{<list>, totalRecords}`.
    SkipTop {
        items: String,
        total: String,
        #[serde(default = "d_skip_param")]
        skip_param: String,
        #[serde(default = "d_top_param")]
        top_param: String,
        #[serde(default = "d_page_size")]
        default_size: u32,
        #[serde(default = "d_max_size")]
        max_size: u32,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    method: String,
    path: String,
    #[serde(default)]
    request_schema: Option<String>,
    /// Where the target platform comes from: a JSON pointer into the body (`/target_platform`),
    /// `query:<param>`, or a fixed platform name.
    platform_from: String,
    /// Platform name (as the consumer says it) → profile.
    platforms: BTreeMap<String, String>,
    #[serde(default)]
    idempotent: bool,
    /// Informational: the rate limiter's config holds the costs it enforces.
    #[serde(default)]
    #[allow(dead_code)]
    rate_limit_cost: Option<u64>,
    /// Envoy: sent as `x-envoy-upstream-rq-timeout-ms`.
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// Envoy: sent as `x-envoy-retry-on` / `x-envoy-max-retries`.
    #[serde(default)]
    retry_policy: Option<RawRetry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    retry_on: String,
    num_retries: u32,
}

fn d_consumer_header() -> String {
    "x-cxgate-consumer".into()
}
fn d_max_body() -> usize {
    64 << 10
}
fn d_metadata_header() -> String {
    "x-cxgate-platform-metadata".into()
}
fn d_trace() -> String {
    "x-gateway-trace-id".into()
}
fn d_cursor_key_env() -> String {
    "CXGATE_SIDECAR_KEY".into()
}
fn d_tick() -> u32 {
    1_000
}
fn d_page_param() -> String {
    "pageNumber".into()
}
fn d_size_param() -> String {
    "pageSize".into()
}
fn d_skip_param() -> String {
    "skip".into()
}
fn d_top_param() -> String {
    "top".into()
}
fn d_page_size() -> u32 {
    25
}
fn d_max_size() -> u32 {
    100
}

/// Shipped configs name schema files (`"schemas": {"queue-update": "schemas/consumer/..."}`)
/// so each schema lives once, in `schemas/`; this inlines them (the proxy config must be one
/// self-contained document). `read` maps a repository path to its text.
pub fn inline_schema_files(
    doc: &mut Value,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(), String> {
    let Some(schemas) = doc.get_mut("schemas").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    for (name, v) in schemas.iter_mut() {
        if let Some(path) = v.as_str() {
            let text = read(path)?;
            *v = serde_json::from_str(&text).map_err(|e| format!("schema {name} ({path}): {e}"))?;
        }
    }
    Ok(())
}

/// A compiled JSON Schema.
#[derive(Clone)]
pub struct Schema {
    pub name: String,
    pub validator: Arc<jsonschema::Validator>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Schema({})", self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Paging {
    PageNumber {
        items: String,
        total: String,
        page_param: String,
        size_param: String,
        default_size: u32,
        max_size: u32,
    },
    SkipTop {
        items: String,
        total: String,
        skip_param: String,
        top_param: String,
        default_size: u32,
        max_size: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub platform: String,
    pub method: String,
    /// Split at `{param}`: literal and parameter pieces.
    pub path: Vec<PathPiece>,
    pub params: Vec<(String, Template)>,
    pub body: Option<Template>,
    pub defaults: Vec<(String, Value)>,
    pub platform_schema: Option<Schema>,
    pub response: Option<Template>,
    pub metadata: Vec<String>,
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPiece {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformFrom {
    Body(String),
    Query(String),
    Fixed(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub method: String,
    pub path: String,
    pub request_schema: Option<Schema>,
    pub platform_from: PlatformFrom,
    /// Upper-cased consumer platform name → profile index.
    pub platforms: BTreeMap<String, usize>,
    pub idempotent: bool,
    pub timeout_ms: Option<u64>,
    pub retry: Option<(String, u32)>,
}

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub ttl_ms: u64,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub consumer_header: String,
    pub max_body_bytes: usize,
    pub metadata_header: String,
    pub trace_header: String,
    pub sync: Option<SyncConfig>,
    pub cursor_key_env: String,
    pub idempotency: Idempotency,
    pub profiles: Vec<Profile>,
    pub routes: Vec<Route>,
    pub tick_ms: u32,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

fn compile_schema(
    name: &str,
    schemas: &BTreeMap<String, Value>,
    compiled: &mut BTreeMap<String, Schema>,
    field: &str,
) -> Result<Schema, ConfigError> {
    if let Some(s) = compiled.get(name) {
        return Ok(s.clone());
    }
    let Some(doc) = schemas.get(name) else {
        return Err(err(field, format!("no schema named {name:?} in /schemas")));
    };
    let validator = jsonschema::validator_for(doc).map_err(|e| {
        err(
            format!("/schemas/{name}"),
            format!("not a usable JSON Schema: {e}"),
        )
    })?;
    let s = Schema {
        name: name.to_string(),
        validator: Arc::new(validator),
    };
    compiled.insert(name.to_string(), s.clone());
    Ok(s)
}

fn template(v: &Value, field: &str) -> Result<Template, ConfigError> {
    Template::compile(v).map_err(|(at, m)| err(format!("{field}{at}"), m))
}

fn split_path(path: &str, field: &str) -> Result<Vec<PathPiece>, ConfigError> {
    if !path.starts_with('/') {
        return Err(err(field, "must start with '/'"));
    }
    let mut pieces = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| err(field, "unclosed '{'"))?;
        if open > 0 {
            pieces.push(PathPiece::Text(rest[..open].to_string()));
        }
        pieces.push(PathPiece::Param(rest[open + 1..close].to_string()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(PathPiece::Text(rest.to_string()));
    }
    Ok(pieces)
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        let raw: RawConfig = config::parse(bytes)?;
        let mut compiled = BTreeMap::new();
        let mut profiles = Vec::with_capacity(raw.profiles.len());
        let mut index = BTreeMap::new();
        for (name, p) in raw.profiles {
            let at = format!("/profiles/{name}");
            let path = split_path(&p.path, &format!("{at}/path"))?;
            let mut params = Vec::new();
            for piece in &path {
                if let PathPiece::Param(param) = piece {
                    let t = p.params.get(param).ok_or_else(|| {
                        err(
                            format!("{at}/params"),
                            format!("no template for {{{param}}}"),
                        )
                    })?;
                    params.push((param.clone(), template(t, &format!("{at}/params/{param}"))?));
                }
            }
            let platform_schema = match &p.platform_schema {
                Some(s) => Some(compile_schema(
                    s,
                    &raw.schemas,
                    &mut compiled,
                    &format!("{at}/platform_schema"),
                )?),
                None => None,
            };
            for pointer in p.defaults.keys() {
                if !pointer.starts_with('/') {
                    return Err(err(
                        format!("{at}/defaults"),
                        format!("{pointer:?} is not a JSON pointer"),
                    ));
                }
            }
            let paging = p.paging.map(|pg| match pg {
                RawPaging::PageNumber {
                    items,
                    total,
                    page_param,
                    size_param,
                    default_size,
                    max_size,
                } => Paging::PageNumber {
                    items,
                    total,
                    page_param,
                    size_param,
                    default_size,
                    max_size,
                },
                RawPaging::SkipTop {
                    items,
                    total,
                    skip_param,
                    top_param,
                    default_size,
                    max_size,
                } => Paging::SkipTop {
                    items,
                    total,
                    skip_param,
                    top_param,
                    default_size,
                    max_size,
                },
            });
            index.insert(name.clone(), profiles.len());
            profiles.push(Profile {
                body: p
                    .body
                    .as_ref()
                    .map(|b| template(b, &format!("{at}/body")))
                    .transpose()?,
                response: p
                    .response
                    .as_ref()
                    .map(|b| template(b, &format!("{at}/response")))
                    .transpose()?,
                name,
                platform: p.platform.trim_matches('/').to_string(),
                method: p.method.to_ascii_uppercase(),
                path,
                params,
                defaults: p.defaults.into_iter().collect(),
                platform_schema,
                metadata: p.metadata,
                paging,
            });
        }
        if raw.routes.is_empty() {
            return Err(err("/routes", "at least one route is required"));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let at = format!("/routes/{i}");
            if !r.path.starts_with('/') {
                return Err(err(format!("{at}/path"), "must start with '/'"));
            }
            let request_schema = match &r.request_schema {
                Some(s) => Some(compile_schema(
                    s,
                    &raw.schemas,
                    &mut compiled,
                    &format!("{at}/request_schema"),
                )?),
                None => None,
            };
            let platform_from = if let Some(q) = r.platform_from.strip_prefix("query:") {
                PlatformFrom::Query(q.to_string())
            } else if r.platform_from.starts_with('/') {
                PlatformFrom::Body(r.platform_from.clone())
            } else {
                PlatformFrom::Fixed(r.platform_from.to_ascii_uppercase())
            };
            let mut platforms = BTreeMap::new();
            for (platform, profile) in &r.platforms {
                let p = index.get(profile).ok_or_else(|| {
                    err(
                        format!("{at}/platforms/{platform}"),
                        format!("no profile named {profile:?}"),
                    )
                })?;
                platforms.insert(platform.to_ascii_uppercase(), *p);
            }
            if platforms.is_empty() {
                return Err(err(format!("{at}/platforms"), "at least one platform"));
            }
            if let PlatformFrom::Fixed(p) = &platform_from
                && !platforms.contains_key(p)
            {
                return Err(err(
                    format!("{at}/platform_from"),
                    format!("{p} is not one of the route's platforms"),
                ));
            }
            routes.push(Route {
                name: r.name,
                method: r.method.to_ascii_uppercase(),
                path: r.path,
                request_schema,
                platform_from,
                platforms,
                idempotent: r.idempotent,
                timeout_ms: r.timeout_ms,
                retry: r.retry_policy.map(|p| (p.retry_on, p.num_retries)),
            });
        }
        if raw.max_body_bytes == 0 {
            return Err(err("/max_body_bytes", "must be > 0"));
        }
        Ok(Config {
            consumer_header: raw.consumer_header.to_ascii_lowercase(),
            max_body_bytes: raw.max_body_bytes,
            metadata_header: raw.metadata_header.to_ascii_lowercase(),
            trace_header: raw.trace_header.to_ascii_lowercase(),
            sync: raw.sync,
            cursor_key_env: raw.cursor_key_env,
            idempotency: Idempotency {
                ttl_ms: raw.idempotency.ttl_s.saturating_mul(1000),
                max_entries: raw.idempotency.max_entries.max(1),
                max_bytes: raw.idempotency.max_bytes.max(1024),
                max_response_bytes: raw.idempotency.max_response_bytes.max(256),
            },
            profiles,
            routes,
            tick_ms: raw.tick_ms.max(1),
        })
    }

    /// The route for a consumer request (exact method and path, query ignored).
    pub fn route_index(&self, method: &str, path: &str) -> Option<usize> {
        let path = path.split('?').next().unwrap_or_default();
        self.routes
            .iter()
            .position(|r| r.method == method && r.path == path)
    }
}
