//! The transform filter's config: named JSON Schemas, mapping profiles (data, not code) and
//! the route table, all compiled once at configure time.

use crate::template::Template;
use cxgate_kit::ConfigError;
use cxgate_kit::config::{from_value, pointer_token};
use cxgate_model::Model;
use cxgate_model::model::Match;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

mod raw;

use raw::*;

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
    /// What `response` yields from a body with none of its fields (its literals, computed
    /// once): a 2xx that maps to just this is not the object the profile reads.
    pub response_literals: Option<Value>,
    pub metadata: Vec<String>,
    pub paging: Option<Paging>,
    pub merge: Option<Merge>,
    /// The mapped request goes out as a call from the filter (see `RawProfile::call`).
    pub call: Option<Call>,
}

impl Profile {
    /// Where the filter's own calls for this profile go: a merge's, or a direct call's.
    pub fn direct(&self) -> Option<&Call> {
        self.merge.as_ref().map(|m| &m.call).or(self.call.as_ref())
    }
}

/// See `RawMerge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    pub call: Call,
    pub version: String,
}

/// See `RawCall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub upstream: String,
    pub authority: String,
    pub scheme: String,
    pub timeout_ms: u32,
    pub credential: Option<cxgate_kit::credential::Credential>,
}

fn call_of(c: RawCall, at: &str) -> Result<Call, ConfigError> {
    let credential = match c.credential {
        None => None,
        Some(r) => Some(
            cxgate_kit::credential::Credential::new(
                &r.platform,
                r.header.as_deref(),
                r.scheme.as_deref(),
            )
            .map_err(|e| ConfigError::at(format!("{at}/credential/platform"), e))?,
        ),
    };
    Ok(Call {
        upstream: c.upstream,
        authority: c.authority,
        scheme: c.scheme,
        timeout_ms: c.timeout_ms.clamp(1, 60_000),
        credential,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPiece {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The model route's id.
    pub name: String,
    /// The model route's one method.
    pub method: String,
    /// Index into the model's routes.
    pub model_route: usize,
    pub request_schema: Option<Schema>,
    /// Platform id → profile index.
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

impl Idempotency {
    /// Hash buckets for the entries: twice the entries, so chains stay short. With the ring's
    /// slots and record, shared data holds at most `3 × max_entries + 1` idempotency keys.
    pub fn buckets(&self) -> u64 {
        (self.max_entries as u64).saturating_mul(2).max(1)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub metadata_header: String,
    pub cursor_key_env: String,
    pub cursor_ttl_ms: u64,
    pub idempotency: Idempotency,
    pub profiles: Vec<Profile>,
    pub routes: Vec<Route>,
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
        return Err(ConfigError::at(
            field,
            format!("no schema named {name:?} in /transform/schemas"),
        ));
    };
    let validator = jsonschema::validator_for(doc).map_err(|e| {
        ConfigError::at(
            format!("/transform/schemas/{name}"),
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
    Template::compile(v).map_err(|(at, m)| ConfigError::at(format!("{field}{at}"), m))
}

fn split_path(path: &str, field: &str) -> Result<Vec<PathPiece>, ConfigError> {
    if !path.starts_with('/') {
        return Err(ConfigError::at(field, "must start with '/'"));
    }
    let mut pieces = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| ConfigError::at(field, "unclosed '{'"))?;
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

/// One mapping profile: its path and parameters, schema, defaults, paging, and the calls it
/// makes (a merge update's own, or one `call`).
fn compile_profile(
    name: String,
    p: RawProfile,
    schemas: &BTreeMap<String, Value>,
    compiled: &mut BTreeMap<String, Schema>,
) -> Result<Profile, ConfigError> {
    let at = format!("/transform/profiles/{}", pointer_token(&name));
    let path = split_path(&p.path, &format!("{at}/path"))?;
    let params = path_params(&path, &p.params, &at)?;
    let platform_schema = p
        .platform_schema
        .as_deref()
        .map(|s| compile_schema(s, schemas, compiled, &format!("{at}/platform_schema")))
        .transpose()?;
    if let Some(pointer) = p.defaults.keys().find(|k| !k.starts_with('/')) {
        return Err(ConfigError::at(
            format!("{at}/defaults"),
            format!("{pointer:?} is not a JSON pointer"),
        ));
    }
    let paging = p.paging.map(Paging::from);
    let merge = merge_of(p.merge, paging.is_some(), &p.method, &at)?;
    let call = match p.call {
        Some(_) if merge.is_some() => {
            return Err(ConfigError::at(
                format!("{at}/call"),
                "a merge update makes its own calls (merge.upstream): leave call out",
            ));
        }
        Some(c) => Some(call_of(c, &format!("{at}/call"))?),
        None => None,
    };
    let response = p
        .response
        .as_ref()
        .map(|b| template(b, &format!("{at}/response")))
        .transpose()?;
    let response_literals = response.as_ref().and_then(Template::literals);
    Ok(Profile {
        body: p
            .body
            .as_ref()
            .map(|b| template(b, &format!("{at}/body")))
            .transpose()?,
        response,
        response_literals,
        name,
        platform: p.platform.trim_matches('/').to_string(),
        method: p.method.to_ascii_uppercase(),
        path,
        params,
        defaults: p.defaults.into_iter().collect(),
        platform_schema,
        metadata: p.metadata,
        paging,
        merge,
        call,
    })
}

/// A template for each `{param}` of the path, in the path's order.
fn path_params(
    path: &[PathPiece],
    templates: &BTreeMap<String, Value>,
    at: &str,
) -> Result<Vec<(String, Template)>, ConfigError> {
    let mut params = Vec::new();
    for piece in path {
        if let PathPiece::Param(param) = piece {
            let t = templates.get(param).ok_or_else(|| {
                ConfigError::at(
                    format!("{at}/params"),
                    format!("no template for {{{param}}}"),
                )
            })?;
            params.push((param.clone(), template(t, &format!("{at}/params/{param}"))?));
        }
    }
    Ok(params)
}

impl From<RawPaging> for Paging {
    fn from(pg: RawPaging) -> Paging {
        match pg {
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
        }
    }
}

/// A merge update: only a PUT without paging, its version a JSON pointer.
fn merge_of(
    merge: Option<RawMerge>,
    paged: bool,
    method: &str,
    at: &str,
) -> Result<Option<Merge>, ConfigError> {
    match merge {
        Some(m) if !m.version.starts_with('/') => Err(ConfigError::at(
            format!("{at}/merge/version"),
            format!("{:?} is not a JSON pointer", m.version),
        )),
        Some(_) if paged || !method.eq_ignore_ascii_case("PUT") => Err(ConfigError::at(
            format!("{at}/merge"),
            "only a PUT without paging can be a merge update",
        )),
        Some(m) => {
            let call = RawCall {
                upstream: m.upstream,
                authority: m.authority,
                scheme: m.scheme,
                timeout_ms: m.timeout_ms,
                credential: m.credential,
            };
            Ok(Some(Merge {
                call: call_of(call, &format!("{at}/merge"))?,
                version: m.version,
            }))
        }
        None => Ok(None),
    }
}

/// One transformed route: a model route with an exact path and one method, and a profile
/// for each platform it can reach.
fn compile_route(
    id: String,
    r: RawRoute,
    model: &Model,
    index: &BTreeMap<String, usize>,
    (schemas, compiled): (&BTreeMap<String, Value>, &mut BTreeMap<String, Schema>),
) -> Result<Route, ConfigError> {
    let at = format!("/transform/routes/{}", pointer_token(&id));
    let Some((model_route, m)) = model.route_by_id(&id) else {
        return Err(ConfigError::at(
            at,
            format!("no route {id:?} in /model/routes"),
        ));
    };
    let method = match (&m.matcher, m.methods.as_slice()) {
        (Match::Exact(_), [one]) => one.clone(),
        _ => {
            return Err(ConfigError::at(
                at,
                format!(
                    "model route {id:?} must match an exact path and one method to be transformed"
                ),
            ));
        }
    };
    let request_schema = r
        .request_schema
        .as_deref()
        .map(|s| compile_schema(s, schemas, compiled, &format!("{at}/request_schema")))
        .transpose()?;
    let mut platforms = BTreeMap::new();
    for (platform, profile) in &r.platforms {
        let field = format!("{at}/platforms/{platform}");
        if !model.route_platforms(m).contains(&platform.as_str()) {
            return Err(ConfigError::at(
                field,
                format!("{platform:?} is not a platform model route {id:?} can reach"),
            ));
        }
        let p = index
            .get(profile)
            .ok_or_else(|| ConfigError::at(field, format!("no profile named {profile:?}")))?;
        platforms.insert(platform.clone(), *p);
    }
    if platforms.is_empty() {
        return Err(ConfigError::at(
            format!("{at}/platforms"),
            "at least one platform",
        ));
    }
    Ok(Route {
        name: id,
        method,
        model_route,
        request_schema,
        platforms,
        idempotent: r.idempotent,
        timeout_ms: r.timeout_ms,
        retry: r.retry_policy.map(|p| (p.retry_on, p.num_retries)),
    })
}

impl Config {
    /// `section` is the document's `transform` object; its routes name the model's.
    pub fn compile(section: Value, model: &Model) -> Result<Config, ConfigError> {
        let raw: RawConfig = from_value(section, "/transform")?;
        let mut compiled = BTreeMap::new();
        let mut profiles = Vec::with_capacity(raw.profiles.len());
        let mut index = BTreeMap::new();
        for (name, p) in raw.profiles {
            index.insert(name.clone(), profiles.len());
            profiles.push(compile_profile(name, p, &raw.schemas, &mut compiled)?);
        }
        if raw.routes.is_empty() {
            return Err(ConfigError::at(
                "/transform/routes",
                "at least one route is required",
            ));
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (id, r) in raw.routes {
            let schemas = (&raw.schemas, &mut compiled);
            routes.push(compile_route(id, r, model, &index, schemas)?);
        }
        Ok(Config {
            metadata_header: raw.metadata_header.to_ascii_lowercase(),
            cursor_key_env: raw.cursor_key_env,
            cursor_ttl_ms: raw.cursor_ttl_s.clamp(1, 86_400).saturating_mul(1000),
            idempotency: Idempotency {
                ttl_ms: raw.idempotency.ttl_s.saturating_mul(1000),
                max_entries: raw.idempotency.max_entries.max(1),
                max_bytes: raw.idempotency.max_bytes.max(1024),
                max_response_bytes: raw.idempotency.max_response_bytes.max(256),
            },
            profiles,
            routes,
        })
    }

    /// The transform route of a model route, if it is transformed.
    pub fn route_for(&self, model_route: usize) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.model_route == model_route)
    }
}
