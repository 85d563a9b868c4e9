//! The transform stage: a normalized route's request becomes the platform's (at request
//! headers for a listing, with the body otherwise), and the platform's answer is normalized
//! back. Replies the gateway made (its own, or another cxgate filter's) pass through unchanged.

mod calls;

use crate::config::Config;
use crate::core::{self, Forward, Incoming, Outcome, Returned};
use crate::idem::{self, Begin, Stored};
use crate::template::{Found, Lookup};
use cxgate_kit::ConfigError;
use cxgate_kit::host::{Cas, SharedStore};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::Stamped;
use cxgate_model::{Build, CallAnswer, Exchange, Flow, Io, Model, Stage, StageKind, StageStream};
use cxgate_state::IdMap;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "transform",
    build,
};

#[derive(Default, Clone, Copy)]
struct Ids {
    forwarded: u32,
    rejected: u32,
    replayed: u32,
    in_flight_conflicts: u32,
    platform_errors: u32,
    errors: u32,
    /// What the idempotency store holds (gauges, after each stored response).
    idem_entries: u32,
    idem_bytes: u32,
}

/// Each worker's decoded ID maps, decoded once per shared-data version (CAS).
#[derive(Default)]
struct MapCache {
    maps: Vec<(String, Cas, Option<Rc<IdMap>>)>,
}

struct Shared {
    model: Rc<Model>,
    config: Config,
    cursor_key: Vec<u8>,
    ids: Ids,
    maps: RefCell<MapCache>,
}

struct Transform(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section, &b.model)?;
    let cursor_key = match (b.env)(&config.cursor_key_env) {
        Some(k) if k.len() >= 32 => k,
        found => {
            let why = if found.is_some() {
                "is shorter than 32 characters"
            } else {
                "is not set in the VM"
            };
            return Err(ConfigError::at(
                "/transform/cursor_key_env",
                format!("environment variable {} {why}", config.cursor_key_env),
            ));
        }
    };
    let m = &mut *b.metrics;
    let mut c = |n: &str| {
        m.counter(&format!("cxgate_transform.{n}"))
            .unwrap_or_default()
    };
    let ids = Ids {
        forwarded: c("forwarded"),
        rejected: c("rejected"),
        replayed: c("idempotent_replays"),
        in_flight_conflicts: c("idempotent_conflicts"),
        platform_errors: c("platform_errors"),
        errors: c("errors"),
        idem_entries: m
            .gauge("cxgate_transform.idempotency_entries")
            .unwrap_or_default(),
        idem_bytes: m
            .gauge("cxgate_transform.idempotency_bytes")
            .unwrap_or_default(),
    };
    Ok(Box::new(Transform(Rc::new(Shared {
        model: b.model.clone(),
        config,
        cursor_key: cursor_key.into_bytes(),
        ids,
        maps: RefCell::new(MapCache::default()),
    }))))
}

/// ID maps from shared data for one request: each map read (and checked against the worker's
/// decoded copy) once, however many `$lookup`s the request makes.
struct SharedMaps<'a> {
    store: &'a dyn SharedStore,
    cache: &'a RefCell<MapCache>,
    seen: RefCell<Vec<(String, Option<Rc<IdMap>>)>>,
}

impl SharedMaps<'_> {
    fn map(&self, name: &str) -> Option<Rc<IdMap>> {
        if let Some((_, m)) = self.seen.borrow().iter().find(|(n, _)| n == name) {
            return m.clone();
        }
        let map = self.read(name);
        self.seen.borrow_mut().push((name.to_string(), map.clone()));
        map
    }

    fn read(&self, name: &str) -> Option<Rc<IdMap>> {
        let v = self.store.get(&cxgate_state::keys::map(name)).ok()??;
        let mut cache = self.cache.borrow_mut();
        if let Some((_, _, m)) = cache
            .maps
            .iter()
            .find(|(n, cas, _)| n == name && *cas == v.cas)
        {
            return m.clone();
        }
        let map = Stamped::decode(&v.value)
            .and_then(|s| serde_json::from_slice::<IdMap>(&s.payload).ok())
            .map(Rc::new);
        cache.maps.retain(|(n, _, _)| n != name);
        cache.maps.push((name.to_string(), v.cas, map.clone()));
        map
    }
}

impl Lookup for SharedMaps<'_> {
    fn lookup(&self, map: &str, name: &str) -> Found {
        match self.map(map) {
            Some(m) => m
                .entries
                .get(name)
                .cloned()
                .map_or(Found::Unknown, Found::Id),
            None => Found::NoMap,
        }
    }
}

impl Stage for Transform {
    fn name(&self) -> &'static str {
        "transform"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(TransformStream {
            shared: self.0.clone(),
            route: None,
            include_metadata: false,
            forward: None,
            claim: None,
            status: 0,
            content_type: None,
            correlation_id: None,
            pending: None,
            outcome: None,
        })
    }
}

/// What became of a transformed request (its counter, and the access log's `transform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Transformed,
    Rejected,
    Replayed,
    Error,
    PlatformError,
}

impl Ended {
    fn name(self) -> &'static str {
        match self {
            Ended::Transformed => "transformed",
            Ended::Rejected => "rejected",
            Ended::Replayed => "replayed",
            Ended::Error => "error",
            Ended::PlatformError => "platform_error",
        }
    }
}

struct TransformStream {
    shared: Rc<Shared>,
    /// Index into `Config::routes`.
    route: Option<usize>,
    include_metadata: bool,
    /// Set once the request went to the platform.
    forward: Option<Forward>,
    /// The idempotency entry this request claimed: its key and the body digest.
    claim: Option<(String, String)>,
    status: u16,
    content_type: Option<String>,
    correlation_id: Option<String>,
    /// The stage's own call awaited (a merge update's, or the direct call).
    pending: Option<calls::Pending>,
    /// What became of the request, for the access log (`None`: not transformed).
    outcome: Option<Ended>,
}

impl TransformStream {
    fn has_body(&self) -> bool {
        self.route
            .and_then(|i| self.shared.config.routes.get(i))
            .is_some_and(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH"))
    }

    /// What became of the request: counted, and noted for the access log.
    fn ended(&mut self, io: &mut Io<'_>, outcome: Ended) {
        let ids = &self.shared.ids;
        let id = match outcome {
            Ended::Transformed => ids.forwarded,
            Ended::Rejected => ids.rejected,
            Ended::Replayed => ids.replayed,
            Ended::Error => ids.errors,
            Ended::PlatformError => ids.platform_errors,
        };
        let _ = io.metrics.increment(id, 1);
        self.outcome = Some(outcome);
    }

    fn answer(&mut self, io: &mut Io<'_>, reply: LocalReply) -> Flow {
        self.ended(io, Ended::Rejected);
        Flow::Reply(reply)
    }

    /// The request will not reach the platform after all: free its idempotency claim.
    fn give_up_claim(&mut self, io: &mut Io<'_>) {
        if let Some((key, _)) = self.claim.take() {
            let _ = idem::abandon(&mut *io.store, &key);
        }
    }

    fn error(&mut self, x: &Exchange, io: &mut Io<'_>, detail: &str) -> Flow {
        self.give_up_claim(io);
        self.ended(io, Ended::Error);
        Flow::Reply(x.reply(Problem::new(500, "gateway-error", "Gateway error", detail)))
    }

    /// Runs the core over the complete request, then rewrites it for the platform or answers.
    fn decide(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let Some(route) = self.route else {
            return Flow::Continue;
        };
        let s = self.shared.clone();
        let Some(platform) = x.platform.clone() else {
            return self.error(x, io, "no platform resolved for a transformed route");
        };
        let body = if self.has_body() {
            match x.json(&s.model) {
                Ok(v) => v.clone(),
                Err(p) => return self.answer(io, x.reply(*p)),
            }
        } else {
            Value::Null
        };
        let incoming = Incoming {
            route,
            path: &x.path,
            body: &body,
            platform: &platform,
            consumer: &x.consumer,
            trace_id: x.trace_id.as_deref(),
            cursor_key: &s.cursor_key,
            idempotency_key: x.header("idempotency-key"),
            now_ms: io.now.ms(),
        };
        let lookup = SharedMaps {
            store: &*io.store,
            cache: &s.maps,
            seen: RefCell::new(Vec::new()),
        };
        let fwd = match core::on_request(&s.config, &incoming, &lookup) {
            Outcome::Reply(r) => return self.answer(io, r),
            Outcome::Forward(f) => f,
        };
        if let Some(keyed) = &fwd.idempotency
            && let Some(flow) = self.claim_key(x, io, keyed)
        {
            return flow;
        }
        // Nothing is proxied: the stage reads, merges and writes by calls.
        if fwd.merge.is_some() {
            self.ended(io, Ended::Transformed);
            self.forward = Some(fwd);
            return self.read(x, io, false);
        }
        // Nothing is proxied: the mapped request goes out as the stage's own call (Kong).
        if s.config
            .profiles
            .get(fwd.profile)
            .is_some_and(|p| p.call.is_some())
        {
            self.ended(io, Ended::Transformed);
            self.forward = Some(fwd);
            return self.send(x, io);
        }
        self.rewrite(x, io, fwd)
    }

    /// Claims an idempotency key for this request; the reply instead when the key was used
    /// for another request, is in flight, or has a stored answer to replay.
    fn claim_key(
        &mut self,
        x: &mut Exchange,
        io: &mut Io<'_>,
        keyed: &idem::Keyed,
    ) -> Option<Flow> {
        let s = self.shared.clone();
        let buckets = s.config.idempotency.buckets();
        let key = idem::key(&x.consumer, &keyed.fingerprint, buckets);
        match idem::begin(
            &mut *io.store,
            &key,
            &keyed.body,
            io.now.ms(),
            s.config.idempotency.ttl_ms,
        ) {
            Ok(Begin::Claimed) => {
                self.claim = Some((key, keyed.body.clone()));
                None
            }
            Ok(Begin::Reused) => {
                let _ = io.metrics.increment(s.ids.in_flight_conflicts, 1);
                let reply = x.reply(Problem::new(
                    422,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                    "This idempotency key was already used for a different request; use a new key for a new request.",
                ));
                Some(self.answer(io, reply))
            }
            Ok(Begin::Replay(stored)) => {
                self.ended(io, Ended::Replayed);
                Some(Flow::Reply(LocalReply {
                    status: u32::from(stored.status),
                    headers: vec![
                        ("content-type".into(), stored.content_type),
                        ("idempotent-replayed".into(), "true".into()),
                    ],
                    body: stored.body.into_bytes(),
                }))
            }
            Ok(Begin::InFlight) => {
                let _ = io.metrics.increment(s.ids.in_flight_conflicts, 1);
                let reply = x.reply(
                    Problem::new(
                        409,
                        "idempotent-request-in-flight",
                        "Duplicate request in flight",
                        "An identical request is still being processed; retry shortly to get its response.",
                    )
                    .with_header("retry-after", "1"),
                );
                Some(self.answer(io, reply))
            }
            Err(e) => Some(self.error(x, io, &format!("idempotency store: {e:?}"))),
        }
    }

    /// Rewrites the proxied request into the platform's: method, path, headers and body.
    fn rewrite(&mut self, x: &mut Exchange, io: &mut Io<'_>, fwd: Forward) -> Flow {
        let host = &mut *io.stream;
        let mut ok = x.set_request_header(host, ":method", &fwd.method).is_ok()
            && x.set_request_header(host, ":path", &fwd.path).is_ok();
        for (k, v) in &fwd.headers {
            ok &= x.set_request_header(host, k, v).is_ok();
        }
        if let Some(b) = &fwd.body {
            ok &= x
                .set_request_header(host, "content-type", "application/json")
                .is_ok()
                && x.set_request_header(host, "content-length", &b.len().to_string())
                    .is_ok()
                && host.replace_request_body(b).is_ok();
        }
        if !ok {
            return self.error(x, io, "the request could not be rewritten");
        }
        // Envoy picks the platform route again for the new path (Kong keeps its route).
        io.stream.clear_route_cache();
        self.ended(io, Ended::Transformed);
        self.forward = Some(fwd);
        Flow::Continue
    }
}

impl StageStream for TransformStream {
    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = &self.shared;
        self.route = x.route.and_then(|i| s.config.route_for(i));
        if self.route.is_none() {
            return Flow::Continue;
        }
        self.include_metadata = x
            .header(&s.config.metadata_header)
            .is_some_and(|v| v.eq_ignore_ascii_case("include"));
        if self.has_body() {
            return Flow::Continue;
        }
        self.decide(x, io)
    }

    fn wants_body(&self, _x: &Exchange) -> bool {
        self.has_body()
    }

    fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        self.decide(x, io)
    }

    /// A call of a merge update, or the direct call, answered.
    fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &mut Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        self.call_answered(token, answer, x, io)
    }

    /// A later stage answered: the claimed request never went out.
    fn on_reply(&mut self, _x: &Exchange, io: &mut Io<'_>, _reply: &mut LocalReply) {
        self.give_up_claim(io);
    }

    fn reads_response(&self, _x: &Exchange) -> bool {
        self.forward.is_some()
    }

    fn log_field(&self, _x: &Exchange) -> Option<(&'static str, String)> {
        let name = self.outcome.map_or("none", Ended::name);
        Some(("cxgate_transform", name.to_string()))
    }

    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let response = x.response.as_ref()?;
        if self.forward.is_none() || response.gateway {
            return None;
        }
        if response.upstream_failure {
            // Envoy's own problem (upstream-unavailable, 503/504) stands; the write may not
            // have happened, so a retry must not find it claimed.
            self.give_up_claim(io);
            self.forward = None;
            self.ended(io, Ended::PlatformError);
            return None;
        }
        self.status = response.status;
        self.content_type = response.headers.get("content-type").map(str::to_string);
        self.correlation_id = ["inin-correlation-id", "x-correlation-id", "x-request-id"]
            .iter()
            .find_map(|h| response.headers.get(h).map(str::to_string));
        let ct = if self.status >= 400 {
            self.ended(io, Ended::PlatformError);
            cxgate_kit::problem::CONTENT_TYPE
        } else {
            "application/json"
        };
        // The body is rewritten: its length is only known at the end.
        let _ = io.stream.remove_response_header("content-length");
        let _ = io.stream.set_response_header("content-type", ct);
        None
    }

    /// A 2xx may still turn out unusable (a 502): its status waits for the body.
    fn holds_response_headers(&self, x: &Exchange) -> bool {
        self.forward.is_some()
            && x.response
                .as_ref()
                .is_some_and(|r| !r.gateway && r.status < 400)
    }

    fn wants_response_body(&self, x: &Exchange) -> bool {
        self.forward.is_some() && x.response.as_ref().is_some_and(|r| !r.gateway)
    }

    fn on_response_body(
        &mut self,
        x: &mut Exchange,
        io: &mut Io<'_>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let fwd = self.forward.as_ref()?;
        let s = self.shared.clone();
        let cfg = &s.config;
        let normalized = core::on_response(
            cfg,
            fwd,
            &Returned {
                status: self.status,
                body,
                content_type: self.content_type.as_deref(),
                correlation_id: self.correlation_id.as_deref(),
                include_metadata: self.include_metadata,
                trace_id: x.trace_id.as_deref(),
                cursor_key: &s.cursor_key,
                now_ms: io.now.ms(),
            },
        );
        if let Some(event) = &normalized.event {
            io.log.event(Level::Warn, event);
        }
        if normalized.status != self.status {
            self.ended(io, Ended::PlatformError);
            let _ = io
                .stream
                .set_response_header(":status", &normalized.status.to_string());
            let _ = io
                .stream
                .set_response_header("content-type", &normalized.content_type);
        }
        if let Some((key, body)) = self.claim.take() {
            let idem_cfg = &cfg.idempotency;
            let result = if normalized.status < 500
                && normalized.body.len() <= idem_cfg.max_response_bytes
            {
                let stored = Stored {
                    status: normalized.status,
                    content_type: normalized.content_type.clone(),
                    body: String::from_utf8_lossy(&normalized.body).into_owned(),
                };
                idem::finish(
                    &mut *io.store,
                    &key,
                    &body,
                    stored,
                    io.now.ms(),
                    idem_cfg.max_entries,
                    idem_cfg.max_bytes,
                )
                .map(|held| {
                    let _ = io.metrics.record(s.ids.idem_entries, held.entries);
                    let _ = io.metrics.record(s.ids.idem_bytes, held.bytes);
                })
            } else {
                // A platform failure is not a result to replay: let a retry go through.
                idem::abandon(&mut *io.store, &key)
            };
            if let Err(e) = result {
                let _ = io.metrics.increment(s.ids.errors, 1);
                io.log.event(
                    Level::Warn,
                    &Event::new("IDEMPOTENCY_STORE_ERROR").str("error", &format!("{e:?}")),
                );
            }
        }
        Some(normalized.body)
    }

    fn on_done(&mut self, _x: &Exchange, io: &mut Io<'_>) {
        // A claim with no stored response (reset, no body): give it up so a retry can proceed.
        self.give_up_claim(io);
    }
}
