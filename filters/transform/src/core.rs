//! The transform filter's pure core: a consumer request in, the platform request (or the
//! problem to answer) out; the platform response in, the normalized response out.

use crate::config::{Config, Paging, Profile, Route, Schema};
use crate::idem;
pub use crate::outcome::{Forward, Incoming, MergeCall, Normalized, Outcome, Returned};
use crate::outcome::{problem, reply, set};
use crate::page;
use crate::paths::{platform_path, route_headers};
use crate::template::{ApplyError, Found, Lookup, fill_default};
use cxgate_kit::log::Event;
use cxgate_kit::problem::Problem;
use serde_json::{Map, Value, json};

/// Runs a schema; every failing field becomes one `{pointer, message}`.
pub fn schema_errors(schema: &Schema, doc: &Value) -> Vec<(String, String)> {
    schema
        .validator
        .iter_errors(doc)
        .map(|e| (e.instance_path().as_str().to_string(), e.to_string()))
        .collect()
}

struct NoMaps;
impl Lookup for NoMaps {
    fn lookup(&self, _: &str, _: &str) -> Found {
        Found::NoMap
    }
}

fn apply_error(e: ApplyError, trace: Option<&str>) -> Outcome {
    match e {
        ApplyError::UnknownName { map, name } => {
            let what = map
                .rsplit('/')
                .next()
                .unwrap_or("name")
                .trim_end_matches('s');
            reply(problem(
                422,
                "unknown-name",
                "Unknown name",
                format!(
                    "No {what} named {name:?} exists on the platform ({map}); nothing was sent."
                ),
                trace,
            ))
        }
        ApplyError::MapUnavailable { map } => reply(
            problem(
                503,
                "metadata-unavailable",
                "Platform metadata not synced yet",
                format!("The {map} ID map has not been synced yet; retry shortly."),
                trace,
            )
            .with_header("retry-after", "1"),
        ),
        ApplyError::Unconvertible { pointer, reason } => reply(
            problem(
                400,
                "unmappable-value",
                "Value cannot be mapped",
                format!("{pointer}: {reason}"),
                trace,
            )
            .with_error(pointer, reason),
        ),
    }
}

/// The consumer's request against the route's schema: every invalid field, nothing sent.
fn check_request(schema: &Schema, body: &Value, trace: Option<&str>) -> Result<(), Box<Problem>> {
    let errors = schema_errors(schema, body);
    if errors.is_empty() {
        return Ok(());
    }
    let p = problem(
        400,
        "validation",
        "Invalid request",
        format!("{} field(s) are invalid; nothing was sent.", errors.len()),
        trace,
    );
    Err(Box::new(with_errors(p, errors)))
}

/// A problem with one `errors` entry per schema error (pointer and message).
fn with_errors(p: Problem, errors: Vec<(String, String)>) -> Problem {
    errors
        .into_iter()
        .fold(p, |p, (pointer, message)| p.with_error(pointer, message))
}

/// The platform path's parameters, each from its template over the request.
fn path_values(
    profile: &Profile,
    body: &Value,
    lookup: &dyn Lookup,
    trace: Option<&str>,
) -> Result<Vec<(String, String)>, Box<Outcome>> {
    let mut params = Vec::with_capacity(profile.params.len());
    for (name, t) in &profile.params {
        match t.apply(body, lookup) {
            Ok(Some(v)) => params.push((
                name.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )),
            Ok(None) => {
                return Err(Box::new(reply(problem(
                    400,
                    "validation",
                    "Invalid request",
                    format!("Nothing in the request gives the path parameter {{{name}}}."),
                    trace,
                ))));
            }
            Err(e) => return Err(Box::new(apply_error(e, trace))),
        }
    }
    Ok(params)
}

/// The platform's payload from the profile's body template, with its defaults filled in (a
/// merge update fills nothing: the platform's current object does).
fn mapped_payload(
    profile: &Profile,
    body: &Value,
    lookup: &dyn Lookup,
    trace: Option<&str>,
) -> Result<Option<Value>, Box<Outcome>> {
    let Some(t) = &profile.body else {
        return Ok(None);
    };
    match t.apply(body, lookup) {
        Ok(v) => {
            let mut v = v.unwrap_or_else(|| Value::Object(Map::new()));
            if profile.merge.is_none() {
                for (pointer, value) in &profile.defaults {
                    fill_default(&mut v, pointer, value);
                }
            }
            Ok(Some(v))
        }
        Err(e) => Err(Box::new(apply_error(e, trace))),
    }
}

/// An idempotent route's key (header or body) and what it is stored under.
fn idempotency_of(route: &Route, inc: &Incoming<'_>) -> Result<Option<idem::Keyed>, Box<Problem>> {
    if !route.idempotent {
        return Ok(None);
    }
    match idem::request_key(inc.idempotency_key, inc.body) {
        Ok(None) => Ok(None),
        Ok(Some(key)) => Ok(Some(idem::Keyed {
            fingerprint: idem::fingerprint(inc.consumer, &route.method, &route.name, key),
            body: idem::body_digest(inc.body),
        })),
        Err(e) => {
            let detail = match e {
                idem::KeyError::Conflict => {
                    "The Idempotency-Key header and the body's idempotency_key differ; send one of them, or the same key in both."
                }
                idem::KeyError::Invalid => {
                    "The Idempotency-Key header must be 1 to 255 visible ASCII characters."
                }
            };
            Err(Box::new(problem(
                400,
                "idempotency-key-invalid",
                "Invalid idempotency key",
                detail,
                inc.trace_id,
            )))
        }
    }
}

/// The whole request pipeline. `lookup` resolves names through the synced ID maps.
pub fn on_request(cfg: &Config, inc: &Incoming<'_>, lookup: &dyn Lookup) -> Outcome {
    let trace = inc.trace_id;
    let Some(route) = cfg.routes.get(inc.route) else {
        return reply(problem(
            500,
            "gateway-error",
            "Gateway error",
            "no such route",
            trace,
        ));
    };
    let body = inc.body;
    if let Some(schema) = &route.request_schema
        && let Err(p) = check_request(schema, body, trace)
    {
        return reply(*p);
    }
    let Some(profile_index) = route.platforms.get(inc.platform).copied() else {
        let known: Vec<&str> = route.platforms.keys().map(String::as_str).collect();
        return reply(problem(
            400,
            "unknown-platform",
            "Unknown target platform",
            format!("{:?} is not one of {known:?} for this route.", inc.platform),
            trace,
        ));
    };
    let platform = inc.platform.to_ascii_uppercase();
    let Some(profile) = cfg.profiles.get(profile_index) else {
        return reply(problem(
            500,
            "gateway-error",
            "Gateway error",
            "no such profile",
            trace,
        ));
    };
    let params = match path_values(profile, body, lookup, trace) {
        Ok(params) => params,
        Err(outcome) => return *outcome,
    };
    if let Some(paging) = &profile.paging {
        return crate::listing::listing(
            cfg,
            route,
            inc,
            profile,
            profile_index,
            paging,
            &platform,
            params,
        );
    }
    let payload = match mapped_payload(profile, body, lookup, trace) {
        Ok(payload) => payload,
        Err(outcome) => return *outcome,
    };
    if let (None, Some(v)) = (&profile.merge, &payload)
        && let Err(p) = check_platform(profile, v, trace)
    {
        return reply(*p);
    }
    let idempotency = match idempotency_of(route, inc) {
        Ok(keyed) => keyed,
        Err(p) => return reply(*p),
    };
    let path = platform_path(profile, &params);
    let (body, merge) = match (&profile.merge, payload) {
        (Some(_), patch) => {
            let own = path
                .get(profile.platform.len() + 1..)
                .unwrap_or_default()
                .to_string();
            let patch = patch.unwrap_or_else(|| Value::Object(Map::new()));
            (None, Some(MergeCall { path: own, patch }))
        }
        (None, payload) => (payload.map(|v| v.to_string().into_bytes()), None),
    };
    Outcome::Forward(Forward {
        method: profile.method.clone(),
        path,
        body,
        headers: route_headers(route),
        profile: profile_index,
        platform,
        cursor: None,
        idempotency,
        merge,
    })
}

/// A payload our mapping produced must pass the platform schema, or it is never sent.
pub(crate) fn check_platform(
    profile: &Profile,
    v: &Value,
    trace: Option<&str>,
) -> Result<(), Box<Problem>> {
    let Some(schema) = &profile.platform_schema else {
        return Ok(());
    };
    let errors = schema_errors(schema, v);
    if errors.is_empty() {
        return Ok(());
    }
    let p = problem(
        500,
        "transform-invalid",
        "Transformed payload failed the platform schema",
        format!(
            "Profile {} produced a payload that {} rejects ({} field(s)); nothing was sent.",
            profile.name,
            schema.name,
            errors.len()
        ),
        trace,
    );
    Err(Box::new(with_errors(p, errors)))
}

fn platform_message(v: &Value) -> Option<String> {
    [
        "/message",
        "/error_description",
        "/error/message",
        "/description",
        "/error",
    ]
    .iter()
    .find_map(|p| v.pointer(p).and_then(Value::as_str).map(str::to_string))
}

/// `platform_metadata`: the platform's own fields the profile names, when asked for.
fn add_metadata(profile: &Profile, src: &Value, out: &mut Value) {
    if profile.metadata.is_empty() {
        return;
    }
    let m: Map<String, Value> = profile
        .metadata
        .iter()
        .filter_map(|k| src.get(k).map(|x| (k.clone(), x.clone())))
        .collect();
    set(out, "platform_metadata", Value::Object(m));
}

/// One page of a listing: the mapped items, and a cursor for the next page while there is one.
fn page_of(
    cfg: &Config,
    fwd: &Forward,
    ret: &Returned<'_>,
    profile: &Profile,
    (paging, cursor): (&Paging, &page::Cursor),
    v: &Value,
) -> Normalized {
    let (items_at, total_at) = match paging {
        Paging::PageNumber { items, total, .. } | Paging::SkipTop { items, total, .. } => {
            (items, total)
        }
    };
    let Some(raw_items) = v.pointer(items_at).and_then(Value::as_array).cloned() else {
        return crate::unusable::invalid(fwd, ret, &format!("no list at {items_at}"));
    };
    let items: Vec<Value> = raw_items
        .iter()
        .map(|item| match &profile.response {
            Some(t) => t.apply(item, &NoMaps).ok().flatten().unwrap_or(Value::Null),
            None => item.clone(),
        })
        .collect();
    let total = v.pointer(total_at).and_then(Value::as_u64);
    let seen = cursor.seen + items.len() as u64;
    let has_more = !raw_items.is_empty()
        && match paging {
            Paging::PageNumber { .. } => v
                .get("pageCount")
                .and_then(Value::as_u64)
                .map(|pc| cursor.next < pc)
                .unwrap_or_else(|| v.get("nextUri").is_some_and(|n| !n.is_null())),
            Paging::SkipTop { .. } => total.is_some_and(|t| seen < t),
        };
    let next_cursor = has_more.then(|| {
        let mut c = cursor.clone();
        c.next = match paging {
            Paging::PageNumber { .. } => cursor.next + 1,
            Paging::SkipTop { .. } => cursor.next + raw_items.len() as u64,
        };
        c.seen = seen;
        c.encode(ret.cursor_key, ret.now_ms.saturating_add(cfg.cursor_ttl_ms))
    });
    let event = match total {
        Some(t) if !has_more && page::mismatch(seen, t) => Some(
            Event::new("PAGINATION_MISMATCH")
                .str("platform", &fwd.platform)
                .num("seen", seen)
                .num("total", t)
                .str("trace_id", ret.trace_id.unwrap_or_default()),
        ),
        _ => None,
    };
    let mut out = json!({"items": items, "next_cursor": next_cursor, "has_more": has_more});
    if let Some(t) = total {
        set(&mut out, "total", json!(t));
    }
    Normalized {
        status: ret.status,
        content_type: "application/json".into(),
        body: out.to_string().into_bytes(),
        event,
    }
}

pub fn on_response(cfg: &Config, fwd: &Forward, ret: &Returned<'_>) -> Normalized {
    let parsed: Option<Value> = serde_json::from_slice(ret.body).ok();
    let Some(profile) = cfg.profiles.get(fwd.profile) else {
        return passthrough(ret);
    };
    if ret.status >= 400 {
        let detail = parsed
            .as_ref()
            .and_then(platform_message)
            .unwrap_or_else(|| format!("{} answered {}", fwd.platform, ret.status));
        return crate::unusable::about_platform(
            fwd,
            ret,
            (ret.status, "platform-error"),
            "Platform error",
            detail,
        );
    }
    // A success the consumer could not use is the platform's failure, not a success: a
    // truncated or non-JSON body, or one that is not the object the profile reads.
    if ret.body.is_empty() {
        return passthrough(ret);
    }
    let declared_json = ret
        .content_type
        .is_none_or(|c| cxgate_model::body::is_json(Some(c)));
    let Some(v) = parsed.filter(|_| declared_json) else {
        let what = if declared_json {
            "a body that is not JSON (truncated?)".to_string()
        } else {
            format!("a {} body, not JSON", ret.content_type.unwrap_or_default())
        };
        return crate::unusable::invalid(fwd, ret, &what);
    };
    if let (Some(paging), Some(cursor)) = (&profile.paging, &fwd.cursor) {
        return page_of(cfg, fwd, ret, profile, (paging, cursor), &v);
    }
    let mut out = match &profile.response {
        Some(t) => {
            let out = t
                .apply(&v, &NoMaps)
                .ok()
                .flatten()
                .unwrap_or_else(|| json!({}));
            // Only the template's literals: the body holds none of the fields it reads (an
            // error envelope sent with a 200, say). An empty object is a plain "done".
            if v.as_object().is_some_and(|o| !o.is_empty())
                && profile.response_literals.as_ref() == Some(&out)
            {
                return crate::unusable::invalid(
                    fwd,
                    ret,
                    "an object that has none of the fields read from it",
                );
            }
            out
        }
        None => v.clone(),
    };
    if out.is_object() && ret.include_metadata {
        add_metadata(profile, &v, &mut out);
    }
    Normalized {
        status: ret.status,
        content_type: "application/json".into(),
        body: out.to_string().into_bytes(),
        event: None,
    }
}

fn passthrough(ret: &Returned<'_>) -> Normalized {
    Normalized {
        status: ret.status,
        content_type: "application/json".into(),
        body: ret.body.to_vec(),
        event: None,
    }
}
