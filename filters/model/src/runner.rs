//! The one proxy-wasm shell: a list of stages in one HTTP context per request. Every cxgate
//! module is this runner with the stages it hosts (the pipeline hosts them all; a standalone
//! filter its own and authz).
//!
//! Per request it reads the request headers once (`proxy_get_header_map_pairs`), and the
//! response headers once; counters are batched per worker and flushed on the tick.

use crate::document;
use crate::exchange::HeaderView;
use crate::flow::{Pipeline, Request, Step};
use crate::stage::{Build, CallAnswer, Io, NowOnce, RootIo, StageKind, StreamHost};
use cxgate_kit::HostError;
use cxgate_kit::host::{CasDialect, Clock, Headers, Metrics};
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::proxy::{
    self, Level, ProxyCallout, ProxyClock, ProxyEntropy, ProxyHeaders, ProxyLog, ProxyMetrics,
    ProxyStore, SyncDriver,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::RefCell;
use std::rc::Rc;

const REQUEST_BODY: u32 = 0;
const RESPONSE_BODY: u32 = 1;
const CALL_RESPONSE_BODY: u32 = 4;
/// Counters are flushed at least this often.
const FLUSH_MS: u32 = 1_000;

/// The runner as a module's root context: `kinds` are the stages this module hosts,
/// `default` the stages a document that lists none runs, `filter` names it in logs. A module's
/// entry point is `proxy_wasm::main!` with `set_root_context(|_| runner::root(...))`.
pub fn root(
    kinds: &'static [StageKind],
    default: &'static [&'static str],
    filter: &'static str,
) -> Box<dyn RootContext> {
    proxy::install_panic_hook();
    Box::new(Root {
        kinds,
        default,
        filter,
        state: None,
        refused: None,
        sync: None,
        tick_set: false,
        batch: Batch::default(),
    })
}

/// Counter increments of this worker, added up until the next flush.
#[derive(Clone, Default)]
struct Batch(Rc<RefCell<Vec<(u32, i64)>>>);

impl Batch {
    fn flush(&self) {
        let pending: Vec<(u32, i64)> = self.0.borrow_mut().drain(..).collect();
        for (id, by) in pending {
            let _ = ProxyMetrics.increment(id, by);
        }
    }
}

impl Metrics for Batch {
    fn counter(&mut self, name: &str) -> Result<u32, HostError> {
        ProxyMetrics.counter(name)
    }
    fn gauge(&mut self, name: &str) -> Result<u32, HostError> {
        ProxyMetrics.gauge(name)
    }
    fn histogram(&mut self, name: &str) -> Result<u32, HostError> {
        ProxyMetrics.histogram(name)
    }
    fn increment(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        let mut pending = self.0.borrow_mut();
        match pending.iter_mut().find(|(i, _)| *i == id) {
            Some((_, n)) => *n = n.saturating_add(by),
            None => pending.push((id, by)),
        }
        Ok(())
    }
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        ProxyMetrics.record(id, value)
    }
}

struct State {
    pipeline: Rc<Pipeline>,
    store: ProxyStore,
}

struct Root {
    kinds: &'static [StageKind],
    default: &'static [&'static str],
    filter: &'static str,
    state: Option<State>,
    /// Why the config was refused (Kong: every request gets a 503 instead of a dead worker).
    refused: Option<Rc<String>>,
    sync: Option<SyncDriver>,
    tick_set: bool,
    batch: Batch,
}

/// Runs `f` with a [`RootIo`] over the proxy (ticks, root callouts).
fn with_root_io<T>(
    store: &mut ProxyStore,
    batch: &mut Batch,
    f: impl FnOnce(&mut RootIo<'_>) -> T,
) -> T {
    let mut io = RootIo {
        now_ms: ProxyClock.now_ms(),
        store,
        entropy: &mut ProxyEntropy,
        callout: &mut ProxyCallout,
        metrics: batch,
        log: &mut ProxyLog,
    };
    f(&mut io)
}

impl Root {
    fn configure(&mut self) -> Result<ProxyStore, cxgate_kit::ConfigError> {
        let bytes = proxy::plugin_configuration()
            .map_err(|e| cxgate_kit::ConfigError::at("", format!("config unreadable: {e}")))?;
        let store = ProxyStore::detect()
            .map_err(|_| cxgate_kit::ConfigError::at("", "shared data is unavailable"))?;
        let doc = document::parse(&bytes, self.kinds, self.default)?;
        let key = match &doc.sync {
            Some(s) => Some(std::env::var(&s.key_env).map_err(|_| {
                cxgate_kit::ConfigError::at(
                    "/sync/key_env",
                    format!(
                        "environment variable {} is not set in the VM (Envoy: vm_config.environment_variables.host_env_keys; Kong: nginx_main_env)",
                        s.key_env
                    ),
                )
            })?),
            None => None,
        };
        let sync = doc.sync.clone();
        let env = |name: &str| std::env::var(name).ok();
        let mut metrics = ProxyMetrics;
        let mut entropy = ProxyEntropy;
        let mut build = Build {
            model: Rc::new(doc.model.clone()),
            sync: sync.as_ref(),
            sidecar_key: key.as_deref(),
            env: &env,
            metrics: &mut metrics,
            entropy: &mut entropy,
        };
        let pipeline = Pipeline::build(doc, &mut build)?;
        if let Some(s) = sync {
            self.sync = Some(SyncDriver::new(s, store)?);
        }
        let tick = pipeline.tick_ms().unwrap_or(FLUSH_MS).min(FLUSH_MS);
        if !self.tick_set {
            proxy::set_tick_period_ms(tick)
                .map_err(|_| cxgate_kit::ConfigError::at("", "the host refused the tick period"))?;
            self.tick_set = true;
        }
        self.state = Some(State {
            pipeline: Rc::new(pipeline),
            store,
        });
        Ok(store)
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        if let Some(sync) = self.sync.as_mut()
            && sync.on_http_call_response(token, headers)
        {
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        let answer = call_answer(headers);
        let pipeline = state.pipeline.clone();
        with_root_io(&mut state.store, &mut self.batch, |io| {
            pipeline
                .stages
                .iter()
                .any(|stage| stage.on_call_response(token, &answer, io))
        });
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.configure() {
            Ok(_) => {
                self.refused = None;
                true
            }
            Err(e) => {
                self.state = None;
                let kong = ProxyStore::detect().is_ok_and(|s| s.dialect() == CasDialect::Kong);
                proxy::reject_config(self.filter, &e.field, &e.message);
                if kong {
                    // Kong takes the worker down for good on `false`: answer 503s instead.
                    self.refused = Some(Rc::new(e.to_string()));
                    true
                } else {
                    false
                }
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_tick();
        }
        if let Some(state) = self.state.as_mut() {
            let pipeline = state.pipeline.clone();
            with_root_io(&mut state.store, &mut self.batch, |io| {
                for stage in &pipeline.stages {
                    stage.on_tick(io);
                }
            });
        }
        // Last, so what the stages counted on this tick goes out with it.
        self.batch.flush();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.state {
            Some(state) => Some(Box::new(Stream {
                pipeline: state.pipeline.clone(),
                store: state.store,
                batch: self.batch.clone(),
                req: None,
                body_len: 0,
                body_complete: false,
            })),
            None => Some(Box::new(Refused {
                filter: self.filter,
                why: self.refused.clone(),
            })),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn call_answer(headers: usize) -> CallAnswer {
    let pairs = if headers == 0 {
        Vec::new()
    } else {
        ProxyHeaders::call_response().pairs().unwrap_or_default()
    };
    let status = pairs
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.trim().parse().ok());
    let body = proxy::buffer(CALL_RESPONSE_BODY, 0, usize::MAX).unwrap_or_default();
    CallAnswer {
        status,
        headers: pairs,
        body,
    }
}

/// The current stream's header maps and body, for stages.
struct ProxyStream {
    request_body_len: usize,
    /// Kong traps on any foreign function (it has none), so `clear_route_cache` is never
    /// called there; its route stays the one it chose.
    kong: bool,
}

impl StreamHost for ProxyStream {
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        ProxyHeaders::request().set(name, value)
    }
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        ProxyHeaders::request().remove(name)
    }
    fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        ProxyHeaders::response().set(name, value)
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        ProxyHeaders::response().remove(name)
    }
    fn replace_request_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        proxy::replace_buffer(REQUEST_BODY, self.request_body_len, body)?;
        self.request_body_len = body.len();
        Ok(())
    }
    fn clear_route_cache(&mut self) -> bool {
        !self.kong && proxy::clear_route_cache()
    }
}

struct Stream {
    pipeline: Rc<Pipeline>,
    store: ProxyStore,
    batch: Batch,
    req: Option<Request>,
    body_len: usize,
    /// The whole body arrived while the header phase still waited for a callout.
    body_complete: bool,
}

/// Runs `f` with an [`Io`] over the proxy for this stream.
fn with_io<T>(
    store: &mut ProxyStore,
    batch: &mut Batch,
    body_len: usize,
    f: impl FnOnce(&mut Io<'_>) -> T,
) -> T {
    let mut stream = ProxyStream {
        request_body_len: body_len,
        kong: store.dialect() == CasDialect::Kong,
    };
    let mut io = Io {
        now: NowOnce::new(&ProxyClock),
        store,
        entropy: &mut ProxyEntropy,
        callout: &mut ProxyCallout,
        stream: &mut stream,
        metrics: batch,
        log: &mut ProxyLog,
    };
    f(&mut io)
}

/// The request's access-log fields, before the response leaves (Envoy's access log runs
/// before `on_log`). Not on Kong: it refuses properties it does not know.
fn write_log_fields(req: &Request, kong: bool) {
    if !kong {
        cxgate_kit::property::set_all(&req.log_fields());
    }
}

impl Stream {
    fn kong(&self) -> bool {
        self.store.dialect() == CasDialect::Kong
    }

    fn act(&mut self, step: Step) -> Action {
        match step {
            Step::Continue => Action::Continue,
            Step::Pause => Action::Pause,
            Step::Reply(reply) => {
                self.req
                    .iter()
                    .for_each(|r| write_log_fields(r, self.kong()));
                send(&reply, "cxgate_local_reply");
                Action::Pause
            }
        }
    }

    /// The header phase is done and wants the body: run it now if it is all there.
    fn body_or_wait(&mut self, end_of_stream: bool) -> Action {
        let Some(req) = self.req.as_mut() else {
            return Action::Continue;
        };
        let declared = req
            .x
            .header("content-length")
            .and_then(|v| v.trim().parse::<usize>().ok());
        let max = req.max_body_bytes();
        let (store, batch) = (&mut self.store, &mut self.batch);
        if let Some(n) = declared.filter(|n| *n > max) {
            let step = with_io(store, batch, 0, |io| req.body_too_large(n, io));
            return self.act(step);
        }
        // Kong always says end_of_stream = false in headers: a declared empty body is empty.
        if end_of_stream || declared == Some(0) || self.body_complete {
            let body = if self.body_complete {
                proxy::buffer(REQUEST_BODY, 0, max + 1).unwrap_or_default()
            } else {
                Vec::new()
            };
            let len = body.len();
            let step = with_io(store, batch, len, |io| req.on_body(body, io));
            return self.act(step);
        }
        Action::Pause
    }
}

fn send(reply: &LocalReply, details: &str) {
    if let Err(e) = proxy::send_local_reply(reply, details) {
        let event = Event::new("LOCAL_REPLY_FAILED").str("error", &e.to_string());
        proxy::log(Level::Error, &event.render());
    }
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        let answer = call_answer(headers);
        let Some(req) = self.req.as_mut() else {
            return;
        };
        let (store, batch) = (&mut self.store, &mut self.batch);
        let step = with_io(store, batch, self.body_len, |io| {
            req.on_call_response(token, &answer, io)
        });
        match step {
            None => {}
            Some(Step::Continue) => {
                let _ = proxy::continue_stream(0);
            }
            Some(Step::Reply(reply)) => {
                self.req
                    .iter()
                    .for_each(|r| write_log_fields(r, self.kong()));
                send(&reply, "cxgate_local_reply");
            }
            Some(Step::Pause) => {
                let awaiting = self.req.as_ref().is_some_and(Request::awaiting_body);
                if awaiting && self.body_or_wait(false) == Action::Continue {
                    let _ = proxy::continue_stream(0);
                }
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let read = ProxyHeaders::request().wire().map_err(|e| e.to_string());
        let pairs = match read.and_then(|w| HeaderView::from_wire(&w).ok_or("malformed".into())) {
            Ok(p) => p,
            Err(e) => {
                let reply = Problem::new(
                    500,
                    "gateway-error",
                    "Gateway error",
                    format!("request headers unreadable: {e}"),
                )
                .into_reply();
                send(&reply, "cxgate_local_reply");
                return Action::Pause;
            }
        };
        let pipeline = self.pipeline.clone();
        let (store, batch) = (&mut self.store, &mut self.batch);
        let (req, step) = with_io(store, batch, 0, |io| Request::start(&pipeline, pairs, io));
        let awaiting = req.awaiting_body();
        self.req = Some(req);
        match step {
            Step::Pause if awaiting => self.body_or_wait(end_of_stream),
            other => self.act(other),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(req) = self.req.as_mut() else {
            return Action::Continue;
        };
        let waiting = req.in_header_phase();
        if !waiting && !req.awaiting_body() {
            return Action::Continue;
        }
        self.body_len = body_size;
        if body_size > req.max_body_bytes() {
            let (store, batch) = (&mut self.store, &mut self.batch);
            let step = with_io(store, batch, body_size, |io| {
                req.body_too_large(body_size, io)
            });
            return self.act(step);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        if waiting {
            self.body_complete = true;
            return Action::Pause;
        }
        let body = proxy::buffer(REQUEST_BODY, 0, body_size).unwrap_or_default();
        let (store, batch) = (&mut self.store, &mut self.batch);
        let step = with_io(store, batch, body_size, |io| req.on_body(body, io));
        self.act(step)
    }

    /// Pauses only on Envoy, for a stage that may change the status from the body (Kong cannot
    /// pause in response headers: there such a stage runs its own call, `Flow::Answered`).
    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(req) = self.req.as_mut() else {
            return Action::Continue;
        };
        if req.x.replied {
            return Action::Continue;
        }
        let load = || {
            ProxyHeaders::response()
                .wire()
                .ok()
                .and_then(|w| HeaderView::from_wire(&w))
                .unwrap_or_default()
        };
        let (store, batch) = (&mut self.store, &mut self.batch);
        let reply = with_io(store, batch, 0, |io| req.on_response_headers(load, io));
        let kong = self.store.dialect() == CasDialect::Kong;
        if reply.is_some() || !req.holds_response_headers() {
            write_log_fields(req, kong);
        }
        if let Some(reply) = reply {
            // From response headers a host keeps only status and body (Kong): set the headers
            // on the response first, and drop the upstream's length.
            let mut response = ProxyHeaders::response();
            let _ = response.remove("content-length");
            for (k, v) in &reply.headers {
                let _ = response.set(k, v);
            }
            send(&reply, "cxgate_local_reply");
        } else if !kong && req.holds_response_headers() {
            // Sent with the body, once a stage has seen it (it may change the status).
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(req) = self.req.as_mut() else {
            return Action::Continue;
        };
        if req.streams_response() {
            let chunk = if body_size > 0 {
                proxy::buffer(RESPONSE_BODY, 0, body_size).unwrap_or_default()
            } else {
                Vec::new()
            };
            let (store, batch) = (&mut self.store, &mut self.batch);
            let new = with_io(store, batch, 0, |io| {
                req.on_response_chunk(chunk, end_of_stream, io)
            });
            if let Some(new) = new {
                let _ = proxy::replace_buffer(RESPONSE_BODY, body_size, &new);
            }
            if end_of_stream {
                write_log_fields(req, self.store.dialect() == CasDialect::Kong);
            }
            return Action::Continue;
        }
        if !req.wants_response_body() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = proxy::buffer(RESPONSE_BODY, 0, body_size).unwrap_or_default();
        let (store, batch) = (&mut self.store, &mut self.batch);
        if let Some(new) = with_io(store, batch, 0, |io| req.on_response_body(body, io)) {
            let _ = proxy::replace_buffer(RESPONSE_BODY, body_size, &new);
        }
        // The body may have changed the outcome (a 2xx found unusable).
        write_log_fields(req, self.store.dialect() == CasDialect::Kong);
        Action::Continue
    }

    fn on_log(&mut self) {
        if let Some(req) = self.req.as_mut() {
            let (store, batch) = (&mut self.store, &mut self.batch);
            with_io(store, batch, 0, |io| req.on_done(io));
        }
    }
}

/// A stream of a module whose config was refused: answered, never forwarded unchecked.
struct Refused {
    filter: &'static str,
    why: Option<Rc<String>>,
}

impl Context for Refused {}

impl HttpContext for Refused {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let detail = match &self.why {
            Some(why) => format!(
                "{} is not configured ({why}); see the proxy's log.",
                self.filter
            ),
            None => format!("{} is not configured; see the proxy's log.", self.filter),
        };
        let reply = Problem::new(
            503,
            "filter-not-configured",
            "Gateway filter not configured",
            detail,
        )
        .with_header("retry-after", "30")
        .into_reply();
        send(&reply, "cxgate_not_configured");
        Action::Pause
    }
}
