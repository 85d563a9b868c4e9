//! proxy-wasm binding of the transform filter. Request bodies and platform response bodies are
//! buffered (both hosts support it); response headers are never paused (Kong cannot).

use crate::config::Config;
use crate::core::{self, Forward, Incoming, Outcome, Returned};
use crate::idem::{self, Begin, Stored};
use crate::template::{Found, Lookup};
use cxgate_kit::host::{Clock, Metrics};
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::proxy::{
    self, Level, ProxyClock, ProxyHeaders, ProxyMetrics, ProxyStore, SyncDriver,
};
use cxgate_kit::sync::read_map;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

#[cfg(feature = "standalone")]
proxy_wasm::main! {{
    proxy::install_panic_hook();
    proxy_wasm::set_root_context(|_| root());
}}

/// This filter's root context; the standalone module and the one-module bundle both start here.
pub fn root() -> Box<dyn RootContext> {
    Box::new(TransformRoot::default())
}

const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;

#[derive(Default, Clone, Copy)]
struct Ids {
    forwarded: u32,
    rejected: u32,
    replayed: u32,
    in_flight_conflicts: u32,
    platform_errors: u32,
    errors: u32,
}

struct Shared {
    config: Config,
    cursor_key: Vec<u8>,
    ids: Ids,
}

#[derive(Default)]
struct TransformRoot {
    shared: Option<Rc<Shared>>,
    store: Option<ProxyStore>,
    sync: Option<SyncDriver>,
}

/// ID maps straight from shared data (synced from the sidecar).
struct SharedMaps(ProxyStore);

impl Lookup for SharedMaps {
    fn lookup(&self, map: &str, name: &str) -> Found {
        match read_map(&self.0, map) {
            Ok(Some(m)) => m
                .entries
                .get(name)
                .cloned()
                .map_or(Found::Unknown, Found::Id),
            _ => Found::NoMap,
        }
    }
}

impl Context for TransformRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_http_call_response(token, headers);
        }
    }
}

impl RootContext for TransformRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let reject =
            |field: &str, message: &str| proxy::reject_config("cxgate-transform", field, message);
        let bytes = proxy::plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => return reject(&e.field, &e.message),
        };
        let Ok(cursor_key) = std::env::var(&config.cursor_key_env) else {
            return reject(
                "/cursor_key_env",
                &format!(
                    "environment variable {} is not set in the VM",
                    config.cursor_key_env
                ),
            );
        };
        let Ok(store) = ProxyStore::detect() else {
            return reject("", "shared data is unavailable");
        };
        if let Some(sync) = &config.sync {
            match SyncDriver::new(sync.clone(), store) {
                Ok(d) => self.sync = Some(d),
                Err(e) => return reject(&e.field, &e.message),
            }
            if proxy::set_tick_period_ms(config.tick_ms).is_err() {
                return reject("/tick_ms", "the host refused the tick period");
            }
        }
        let mut m = ProxyMetrics;
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
        };
        self.store = Some(store);
        self.shared = Some(Rc::new(Shared {
            config,
            cursor_key: cursor_key.into_bytes(),
            ids,
        }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TransformStream {
            shared: self.shared.clone()?,
            store: self.store?,
            route: None,
            path: String::new(),
            content_type: None,
            consumer: String::new(),
            trace_id: None,
            include_metadata: false,
            forward: None,
            claim: None,
            status: 0,
            correlation_id: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TransformStream {
    shared: Rc<Shared>,
    store: ProxyStore,
    route: Option<usize>,
    path: String,
    content_type: Option<String>,
    consumer: String,
    trace_id: Option<String>,
    include_metadata: bool,
    /// Set once the request went to the platform.
    forward: Option<Forward>,
    /// The idempotency entry this request claimed (key).
    claim: Option<String>,
    status: u16,
    correlation_id: Option<String>,
}

impl TransformStream {
    fn count(&self, id: u32) {
        let _ = ProxyMetrics.increment(id, 1);
    }

    fn answer(&self, reply: &LocalReply) -> Action {
        self.count(self.shared.ids.rejected);
        let _ = proxy::send_local_reply(reply, "cxgate_transform");
        Action::Pause
    }

    fn error(&self, detail: &str) -> Action {
        self.count(self.shared.ids.errors);
        let reply = Problem::new(500, "gateway-error", "Gateway error", detail)
            .with_trace_id(self.trace_id.as_deref())
            .into_reply();
        self.answer(&reply)
    }

    /// Runs the core over the complete request, then forwards or answers.
    fn decide(&mut self, body: &[u8], body_len: usize) -> Action {
        let Some(route) = self.route else {
            return Action::Continue;
        };
        let cfg = &self.shared.config;
        let incoming = Incoming {
            route,
            path: &self.path,
            content_type: self.content_type.as_deref(),
            body,
            consumer: &self.consumer,
            trace_id: self.trace_id.as_deref(),
            cursor_key: &self.shared.cursor_key,
        };
        let fwd = match core::on_request(cfg, &incoming, &SharedMaps(self.store)) {
            Outcome::Reply(r) => return self.answer(&r),
            Outcome::Forward(f) => f,
        };
        if let Some(fp) = &fwd.fingerprint {
            let key = idem::key(&self.consumer, fp);
            let now = ProxyClock.now_ms();
            match idem::begin(&mut self.store, &key, now, cfg.idempotency.ttl_ms) {
                Ok(Begin::Claimed) => self.claim = Some(key),
                Ok(Begin::Replay(stored)) => {
                    self.count(self.shared.ids.replayed);
                    let reply = LocalReply {
                        status: u32::from(stored.status),
                        headers: vec![
                            ("content-type".into(), stored.content_type),
                            ("idempotent-replayed".into(), "true".into()),
                        ],
                        body: stored.body.into_bytes(),
                    };
                    let _ = proxy::send_local_reply(&reply, "cxgate_idempotent_replay");
                    return Action::Pause;
                }
                Ok(Begin::InFlight) => {
                    self.count(self.shared.ids.in_flight_conflicts);
                    let reply = Problem::new(
                        409,
                        "idempotent-request-in-flight",
                        "Duplicate request in flight",
                        "An identical request is still being processed; retry shortly to get its response.",
                    )
                    .with_trace_id(self.trace_id.as_deref())
                    .with_header("retry-after", "1")
                    .into_reply();
                    return self.answer(&reply);
                }
                Err(e) => return self.error(&format!("idempotency store: {e:?}")),
            }
        }
        let mut request = ProxyHeaders::request();
        let mut set = |k: &str, v: &str| cxgate_kit::Headers::set(&mut request, k, v).is_ok();
        let mut ok = set(":method", &fwd.method) && set(":path", &fwd.path);
        for (k, v) in &fwd.headers {
            ok &= set(k, v);
        }
        if let Some(b) = &fwd.body {
            ok &= set("content-type", "application/json")
                && set("content-length", &b.len().to_string());
            ok &= proxy::replace_buffer(REQUEST_BODY, body_len, b).is_ok();
        }
        if !ok {
            if let Some(key) = self.claim.take() {
                let _ = idem::abandon(&mut self.store, &key);
            }
            return self.error("the request could not be rewritten");
        }
        // Envoy picks the platform route again for the new path (Kong keeps its route).
        proxy::clear_route_cache();
        self.count(self.shared.ids.forwarded);
        self.forward = Some(fwd);
        Action::Continue
    }
}

impl Context for TransformStream {}

impl HttpContext for TransformStream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let request = ProxyHeaders::request();
        let get = |n: &str| cxgate_kit::Headers::get(&request, n).ok().flatten();
        let cfg = &self.shared.config;
        let method = get(":method").unwrap_or_default();
        self.path = get(":path").unwrap_or_default();
        self.route = cfg.route_index(&method, &self.path);
        let Some(route) = self.route.and_then(|i| cfg.routes.get(i)) else {
            return Action::Continue;
        };
        self.consumer = get(&cfg.consumer_header).unwrap_or_else(|| "anonymous".into());
        self.trace_id = get(&cfg.trace_header);
        self.content_type = get("content-type");
        self.include_metadata =
            get(&cfg.metadata_header).is_some_and(|v| v.eq_ignore_ascii_case("include"));
        let has_body = matches!(route.method.as_str(), "POST" | "PUT" | "PATCH");
        if !has_body {
            return self.decide(b"", 0);
        }
        // Refuse an oversize body before buffering it.
        let declared = get("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        if declared.is_some_and(|n| n > cfg.max_body_bytes) {
            return self.decide(&vec![0u8; cfg.max_body_bytes + 1], 0);
        }
        if end_of_stream {
            return self.decide(b"", 0);
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.route.is_none() || self.forward.is_some() {
            return Action::Continue;
        }
        let limit = self.shared.config.max_body_bytes;
        if !end_of_stream && body_size <= limit {
            return Action::Pause;
        }
        let body = proxy::buffer(REQUEST_BODY, 0, limit + 1).unwrap_or_default();
        self.decide(&body, body_size)
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.forward.is_none() {
            return Action::Continue;
        }
        let mut response = ProxyHeaders::response();
        self.status = response.status();
        self.correlation_id = ["inin-correlation-id", "x-correlation-id", "x-request-id"]
            .iter()
            .find_map(|h| cxgate_kit::Headers::get(&response, h).ok().flatten());
        if self.status >= 400 {
            self.count(self.shared.ids.platform_errors);
        }
        let ct = if self.status >= 400 {
            cxgate_kit::problem::CONTENT_TYPE
        } else {
            "application/json"
        };
        // The body is rewritten: its length is only known at the end.
        let _ = cxgate_kit::Headers::remove(&mut response, "content-length");
        let _ = cxgate_kit::Headers::set(&mut response, "content-type", ct);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(fwd) = self.forward.as_ref() else {
            return Action::Continue;
        };
        if !end_of_stream {
            return Action::Pause;
        }
        let body = proxy::buffer(RESPONSE_BODY, 0, body_size).unwrap_or_default();
        let cfg = &self.shared.config;
        let normalized = core::on_response(
            cfg,
            fwd,
            &Returned {
                status: self.status,
                body: &body,
                correlation_id: self.correlation_id.as_deref(),
                include_metadata: self.include_metadata,
                trace_id: self.trace_id.as_deref(),
                cursor_key: &self.shared.cursor_key,
            },
        );
        if let Some(event) = &normalized.event {
            proxy::log(Level::Warn, &event.render());
        }
        let _ = proxy::replace_buffer(RESPONSE_BODY, body_size, &normalized.body);
        if let Some(key) = self.claim.take() {
            let now = ProxyClock.now_ms();
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
                    &mut self.store,
                    &key,
                    stored,
                    now,
                    idem_cfg.max_entries,
                    idem_cfg.max_bytes,
                )
            } else {
                // A platform failure is not a result to replay: let a retry go through.
                idem::abandon(&mut self.store, &key)
            };
            if let Err(e) = result {
                self.count(self.shared.ids.errors);
                let event = Event::new("IDEMPOTENCY_STORE_ERROR").str("error", &format!("{e:?}"));
                proxy::log(Level::Warn, &event.render());
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // A claim with no stored response (reset, no body): give it up so a retry can proceed.
        if let Some(key) = self.claim.take() {
            let _ = idem::abandon(&mut self.store, &key);
        }
    }
}
