//! proxy-wasm binding of the token filter.

use crate::core::{self, Answer, Config, Decision, OnUnauthorized, RequestInfo, Sent};
use cxgate_kit::host::{Callout, Clock, HttpCallout, Metrics};
use cxgate_kit::log::Event;
use cxgate_kit::problem::Problem;
use cxgate_kit::proxy::{
    self, Level, ProxyCallout, ProxyClock, ProxyEntropy, ProxyHeaders, ProxyMetrics, ProxyStore,
    SyncDriver,
};
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
    Box::new(TokenRoot::default())
}

/// Metric ids, defined once per worker.
#[derive(Default)]
struct Ids {
    /// Per route (index into `Config::routes`), named by its platform.
    injected: Vec<u32>,
    stale_served: u32,
    waited: u32,
    wait_ms_total: u32,
    wait_timeouts: u32,
    /// 401s to our token that started a recovery (replay or retry-later).
    drift_recoveries: u32,
    /// Replays the platform refused again (their 401 went to the consumer).
    replays_failed: u32,
    /// 401s answered 503 + Retry-After because the host cannot replay.
    drift_retry_later: u32,
    errors: u32,
}

struct Shared {
    config: Config,
    key: String,
    ids: Ids,
}

#[derive(Default)]
struct TokenRoot {
    shared: Option<Rc<Shared>>,
    sync: Option<SyncDriver>,
    store: Option<ProxyStore>,
}

fn reject(field: &str, message: &str) -> bool {
    proxy::reject_config("cxgate-token", field, message)
}

impl Context for TokenRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_http_call_response(token, headers);
        }
    }
}

impl RootContext for TokenRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy::plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => return reject(&e.field, &e.message),
        };
        let Ok(key) = std::env::var(&config.sync.key_env) else {
            return reject(
                "/sync/key_env",
                &format!(
                    "environment variable {} is not set in the VM",
                    config.sync.key_env
                ),
            );
        };
        let Ok(sync_store) = ProxyStore::detect() else {
            return reject("", "shared data is unavailable");
        };
        self.store = Some(sync_store);
        match SyncDriver::new(config.sync.clone(), sync_store) {
            Ok(d) => self.sync = Some(d),
            Err(e) => return reject(&e.field, &e.message),
        }
        if proxy::set_tick_period_ms(config.tick_ms).is_err() {
            return reject("/tick_ms", "the host refused the tick period");
        }
        let mut m = ProxyMetrics;
        let mut ids = Ids {
            stale_served: m.counter("cxgate_token.stale_served").unwrap_or_default(),
            waited: m.counter("cxgate_token.waited").unwrap_or_default(),
            wait_ms_total: m.counter("cxgate_token.wait_ms_total").unwrap_or_default(),
            wait_timeouts: m.counter("cxgate_token.wait_timeouts").unwrap_or_default(),
            drift_recoveries: m
                .counter("cxgate_token.drift_recoveries")
                .unwrap_or_default(),
            replays_failed: m.counter("cxgate_token.replays_failed").unwrap_or_default(),
            drift_retry_later: m
                .counter("cxgate_token.drift_retry_later")
                .unwrap_or_default(),
            errors: m.counter("cxgate_token.errors").unwrap_or_default(),
            ..Ids::default()
        };
        for route in &config.routes {
            let id = m
                .counter(&format!("cxgate_token.injected.{}", route.platform))
                .unwrap_or_default();
            ids.injected.push(id);
        }
        self.shared = Some(Rc::new(Shared { config, key, ids }));
        true
    }

    fn on_tick(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.on_tick();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        let store = self.store?;
        Some(Box::new(TokenStream {
            shared,
            store,
            waiting: None,
            sent: None,
            info: RequestInfo::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A bounded wait in progress.
struct Waiting {
    route: usize,
    attempt: u32,
    callout: u32,
    started_ms: u64,
}

struct TokenStream {
    shared: Rc<Shared>,
    store: ProxyStore,
    waiting: Option<Waiting>,
    /// Set once the request carries our token: its 401 is what drift recovery acts on.
    sent: Option<Sent>,
    info: RequestInfo,
}

impl TokenStream {
    fn count(&self, id: u32, by: i64) {
        let _ = ProxyMetrics.increment(id, by);
    }

    /// Fails closed: without a credential the platform would only answer 401.
    fn fail(&self, detail: &str) -> Action {
        self.count(self.shared.ids.errors, 1);
        let trace =
            cxgate_kit::Headers::get(&ProxyHeaders::request(), &self.shared.config.trace_header)
                .ok()
                .flatten();
        let reply = Problem::new(503, "gateway-error", "Gateway error", detail)
            .with_trace_id(trace.as_deref())
            .with_header("retry-after", self.shared.config.retry_after_s.to_string())
            .into_reply();
        let _ = proxy::send_local_reply(&reply, "cxgate_token_error");
        Action::Pause
    }

    fn injected(&self, route: usize) {
        if let Some(id) = self.shared.ids.injected.get(route) {
            self.count(*id, 1);
        }
    }

    /// Envoy numbers its retries in `x-envoy-attempt-count` (the virtual host's
    /// `include_request_attempt_count`); only replay mode needs to know.
    fn attempt(&self) -> u32 {
        if self.shared.config.on_unauthorized != OnUnauthorized::Replay {
            return 1;
        }
        cxgate_kit::Headers::get(&ProxyHeaders::request(), "x-envoy-attempt-count")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    }

    fn wait(&mut self, route: usize, after: u64, rejected: bool) -> Action {
        let cfg = &self.shared.config;
        let platform = cfg
            .routes
            .get(route)
            .map(|r| r.platform.clone())
            .unwrap_or_default();
        let wait = core::wait_call(cfg, &platform, after, rejected);
        let authority = cfg
            .sync
            .authority
            .clone()
            .unwrap_or_else(|| cfg.sync.upstream.clone());
        let call = Callout {
            upstream: &cfg.sync.upstream,
            method: wait.method,
            path: &wait.path,
            authority: &authority,
            scheme: "http",
            headers: vec![
                ("x-cxgate-sidecar-key", self.shared.key.as_str()),
                ("content-type", "application/json"),
            ],
            body: wait.body.as_deref(),
            timeout_ms: cfg.wait_ms.saturating_add(500),
        };
        match ProxyCallout.dispatch(&call) {
            Ok(callout) => {
                self.count(self.shared.ids.waited, 1);
                self.waiting = Some(Waiting {
                    route,
                    attempt: self.attempt(),
                    callout,
                    started_ms: ProxyClock.now_ms(),
                });
                Action::Pause
            }
            Err(e) => self.fail(&format!(
                "cannot reach the sidecar for a {platform} token: {e}"
            )),
        }
    }
}

impl Context for TokenStream {
    fn on_http_call_response(
        &mut self,
        token: u32,
        headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let Some(w) = self.waiting.take_if(|w| w.callout == token) else {
            return;
        };
        let status = Some(ProxyHeaders::call_response().status()).filter(|s| headers > 0 && *s > 0);
        let body = proxy::buffer(4, 0, usize::MAX).unwrap_or_default();
        let waited = ProxyClock.now_ms().saturating_sub(w.started_ms);
        self.count(
            self.shared.ids.wait_ms_total,
            i64::try_from(waited).unwrap_or(i64::MAX),
        );
        let out = core::on_wait_answer(
            &self.shared.config,
            w.route,
            &mut ProxyHeaders::request(),
            &mut self.store,
            &ProxyClock,
            status,
            &body,
        );
        match out {
            Ok(Ok(generation)) => {
                self.injected(w.route);
                self.sent = Some(Sent {
                    route: w.route,
                    generation,
                    attempt: w.attempt,
                });
                let _ = proxy::continue_stream(0);
            }
            Ok(Err(reply)) => {
                self.count(self.shared.ids.wait_timeouts, 1);
                let platform = self
                    .shared
                    .config
                    .routes
                    .get(w.route)
                    .map(|r| r.platform.as_str())
                    .unwrap_or_default();
                let event = Event::new("TOKEN_WAIT_TIMEOUT")
                    .str("platform", platform)
                    .num("waited_ms", waited);
                proxy::log(Level::Warn, &event.render());
                let _ = proxy::send_local_reply(&reply, "cxgate_token_unavailable");
            }
            Err(e) => {
                self.fail(&format!("header update failed: {e}"));
            }
        }
    }
}

impl HttpContext for TokenStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let decision = core::on_request(
            &self.shared.config,
            &mut ProxyHeaders::request(),
            &self.store,
            &ProxyClock,
            &mut ProxyEntropy,
            &mut self.info,
        );
        match decision {
            Ok(Decision::Pass) => Action::Continue,
            Ok(Decision::Injected {
                route,
                stale,
                generation,
            }) => {
                self.injected(route);
                if stale {
                    self.count(self.shared.ids.stale_served, 1);
                }
                self.sent = Some(Sent {
                    route,
                    generation,
                    attempt: self.attempt(),
                });
                Action::Continue
            }
            Ok(Decision::Wait {
                route,
                after,
                rejected,
            }) => self.wait(route, after, rejected),
            Err(e) => self.fail(&format!("header access failed: {e}")),
        }
    }

    /// Never pauses: Kong cannot pause in response headers, and Envoy's retry needs none.
    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(sent) = self.sent.take() else {
            return Action::Continue;
        };
        let status = ProxyHeaders::response().status();
        if status != 401 {
            return Action::Continue;
        }
        let answer = core::on_response(
            &self.shared.config,
            &sent,
            status,
            &self.info.path,
            Some(self.info.trace_id.as_str()),
            &mut self.store,
            ProxyClock.now_ms(),
        );
        match answer {
            Answer::Accepted => {}
            Answer::Replay { event, .. } => {
                self.count(self.shared.ids.drift_recoveries, 1);
                proxy::log(Level::Warn, &event.render());
            }
            Answer::ReplayFailed { event } => {
                self.count(self.shared.ids.replays_failed, 1);
                proxy::log(Level::Warn, &event.render());
            }
            Answer::RetryLater { event, reply, .. } => {
                self.count(self.shared.ids.drift_recoveries, 1);
                self.count(self.shared.ids.drift_retry_later, 1);
                proxy::log(Level::Warn, &event.render());
                let _ = proxy::send_local_reply(&reply, "cxgate_token_rejected");
            }
        }
        Action::Continue
    }
}
