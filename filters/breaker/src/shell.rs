//! proxy-wasm binding of the breaker filter.

use crate::core::{self, Admit, Config, Served, Transition};
use cxgate_kit::host::{Clock, Metrics};
use cxgate_kit::problem::MARKER_HEADER;
use cxgate_kit::proxy::{self, Level, ProxyClock, ProxyHeaders, ProxyMetrics, ProxyStore};
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
    Box::new(BreakerRoot::default())
}

/// Metric ids of one route's platform (routes to one platform share the same metrics).
#[derive(Clone, Copy, Default)]
struct PlatformIds {
    /// 0 closed, 1 open, 2 half-open (a probe in flight).
    state: u32,
    trips: u32,
    probes: u32,
    fallbacks: u32,
    open_ms_total: u32,
}

struct Shared {
    config: Config,
    /// Per route (index into `Config::routes`).
    ids: Vec<PlatformIds>,
    errors: u32,
}

#[derive(Default)]
struct BreakerRoot {
    shared: Option<Rc<Shared>>,
    store: Option<ProxyStore>,
}

impl Context for BreakerRoot {}

impl RootContext for BreakerRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy::plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => return proxy::reject_config("cxgate-breaker", &e.field, &e.message),
        };
        let Ok(store) = ProxyStore::detect() else {
            return proxy::reject_config("cxgate-breaker", "", "shared data is unavailable");
        };
        let mut m = ProxyMetrics;
        let mut metric = |name: &str, platform: &str, gauge: bool| {
            let full = format!("cxgate_breaker.{name}.{platform}");
            if gauge {
                m.gauge(&full).unwrap_or_default()
            } else {
                m.counter(&full).unwrap_or_default()
            }
        };
        let ids = config
            .routes
            .iter()
            .map(|r| PlatformIds {
                state: metric("state", &r.platform, true),
                trips: metric("trips", &r.platform, false),
                probes: metric("probes", &r.platform, false),
                fallbacks: metric("fallbacks", &r.platform, false),
                open_ms_total: metric("open_ms_total", &r.platform, false),
            })
            .collect();
        let errors = m.counter("cxgate_breaker.errors").unwrap_or_default();
        self.store = Some(store);
        self.shared = Some(Rc::new(Shared {
            config,
            ids,
            errors,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(BreakerStream {
            shared: self.shared.clone()?,
            store: self.store?,
            route: None,
            started_ms: 0,
            probe: false,
            answered: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct BreakerStream {
    shared: Rc<Shared>,
    store: ProxyStore,
    /// The route whose platform this request's outcome counts for.
    route: Option<usize>,
    started_ms: u64,
    probe: bool,
    answered: bool,
}

impl BreakerStream {
    fn ids(&self, route: usize) -> PlatformIds {
        self.shared.ids.get(route).copied().unwrap_or_default()
    }

    fn count(&self, id: u32, by: i64) {
        let _ = ProxyMetrics.increment(id, by);
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) {
        self.count(self.shared.errors, 1);
        let event = cxgate_kit::log::Event::new("BREAKER_STATE_ERROR")
            .str("during", what)
            .str("error", &e.to_string());
        proxy::log(Level::Warn, &event.render());
    }

    /// Logs and counts a state change; only the request whose write made it gets here.
    fn report(&self, route: usize, t: Transition) {
        let cfg = &self.shared.config;
        let Some(r) = cfg.routes.get(route) else {
            return;
        };
        let ids = self.ids(route);
        let (level, state) = match t {
            Transition::Opened(_) => {
                self.count(ids.trips, 1);
                (Level::Warn, 1)
            }
            Transition::ProbeStarted => {
                self.count(ids.probes, 1);
                (Level::Info, 2)
            }
            Transition::Closed { open_for_ms } => {
                self.count(ids.open_ms_total, i64::try_from(open_for_ms).unwrap_or(0));
                (Level::Info, 0)
            }
            Transition::Reopened | Transition::ProbeAbandoned => (Level::Warn, 1),
        };
        let _ = ProxyMetrics.record(ids.state, state);
        proxy::log(level, &t.event(&r.platform, cfg.window_ms).render());
    }

    fn serve_fallback(&mut self, route: usize, retry_after_s: u64) -> Action {
        let cfg = &self.shared.config;
        let Some(r) = cfg.routes.get(route) else {
            return Action::Continue;
        };
        self.count(self.ids(route).fallbacks, 1);
        let request = ProxyHeaders::request();
        let trace = cxgate_kit::Headers::get(&request, &cfg.trace_header)
            .ok()
            .flatten();
        match core::fallback(r, retry_after_s, trace.as_deref()) {
            Served::Reply(reply) => {
                let _ = proxy::send_local_reply(&reply, "cxgate_breaker_open");
                Action::Pause
            }
            Served::Reroute { header, value } => {
                let mut request = ProxyHeaders::request();
                if let Err(e) = cxgate_kit::Headers::set(&mut request, &header, &value) {
                    self.error("reroute", e);
                }
                Action::Continue
            }
        }
    }
}

impl Context for BreakerStream {}

impl HttpContext for BreakerStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let cfg = &self.shared.config;
        let path = cxgate_kit::Headers::get(&ProxyHeaders::request(), ":path")
            .ok()
            .flatten()
            .unwrap_or_default();
        let Some(route) = cfg.route_index(&path) else {
            return Action::Continue;
        };
        let Some(r) = cfg.routes.get(route) else {
            return Action::Continue;
        };
        let now = ProxyClock.now_ms();
        // Fails open: the breaker's own state trouble must never block traffic.
        let (admit, transition) = match core::admit(cfg, r, &mut self.store, now) {
            Ok(v) => v,
            Err(e) => {
                self.error("admit", format!("{e:?}"));
                return Action::Continue;
            }
        };
        if let Some(t) = transition {
            self.report(route, t);
        }
        match admit {
            Admit::Pass | Admit::Probe => {
                self.route = Some(route);
                self.started_ms = now;
                self.probe = admit == Admit::Probe;
                Action::Continue
            }
            Admit::Fallback { retry_after_s } => self.serve_fallback(route, retry_after_s),
        }
    }

    /// Never pauses (Kong cannot pause in response headers).
    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(route) = self.route else {
            return Action::Continue;
        };
        let cfg = &self.shared.config;
        let Some(r) = cfg.routes.get(route) else {
            return Action::Continue;
        };
        let response = ProxyHeaders::response();
        let status = response.status();
        let now = ProxyClock.now_ms();
        // A failure the gateway itself answered (e.g. no platform token) says nothing about
        // the platform; only failures need the extra header read.
        let failed = cfg.is_failure(status)
            && cxgate_kit::Headers::get(&response, MARKER_HEADER)
                .ok()
                .flatten()
                .is_none();
        let slow = cfg.is_slow(now.saturating_sub(self.started_ms));
        self.answered = true;
        let out = if self.probe {
            core::probe_answered(cfg, r, &mut self.store, now, failed || slow)
        } else {
            core::record(cfg, r, &mut self.store, now, failed, slow)
        };
        match out {
            Ok(Some(t)) => self.report(route, t),
            Ok(None) => {}
            Err(e) => self.error("record", format!("{e:?}")),
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(route), true, false) = (self.route, self.probe, self.answered) else {
            return;
        };
        let cfg = &self.shared.config;
        let Some(r) = cfg.routes.get(route) else {
            return;
        };
        match core::probe_abandoned(cfg, r, &mut self.store, ProxyClock.now_ms()) {
            Ok(Some(t)) => self.report(route, t),
            Ok(None) => {}
            Err(e) => self.error("probe", format!("{e:?}")),
        }
    }
}
