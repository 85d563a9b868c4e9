//! proxy-wasm binding of the token filter.

use crate::core::{self, Config, Decision};
use cxgate_kit::host::{Callout, Clock, HttpCallout, Metrics};
use cxgate_kit::log::Event;
use cxgate_kit::problem::Problem;
use cxgate_kit::proxy::{
    self, Level, ProxyCallout, ProxyClock, ProxyEntropy, ProxyHeaders, ProxyMetrics, ProxyStore,
    SyncDriver,
};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy::install_panic_hook();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(TokenRoot::default()) });
}}

/// Metric ids, defined once per worker.
#[derive(Default)]
struct Ids {
    injected: HashMap<String, u32>,
    stale_served: u32,
    waited: u32,
    wait_ms_total: u32,
    wait_timeouts: u32,
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
            errors: m.counter("cxgate_token.errors").unwrap_or_default(),
            ..Ids::default()
        };
        for route in &config.routes {
            let id = m
                .counter(&format!("cxgate_token.injected.{}", route.platform))
                .unwrap_or_default();
            ids.injected.insert(route.platform.clone(), id);
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
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TokenStream {
    shared: Rc<Shared>,
    store: ProxyStore,
    /// (platform, callout token, started at) while waiting for a token.
    waiting: Option<(String, u32, u64)>,
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

    fn wait(&mut self, platform: String, after: u64) -> Action {
        let cfg = &self.shared.config;
        let path = core::wait_path(cfg, &platform, after);
        let authority = cfg
            .sync
            .authority
            .clone()
            .unwrap_or_else(|| cfg.sync.upstream.clone());
        let call = Callout {
            upstream: &cfg.sync.upstream,
            method: "GET",
            path: &path,
            authority: &authority,
            scheme: "http",
            headers: vec![("x-cxgate-sidecar-key", self.shared.key.as_str())],
            body: None,
            timeout_ms: cfg.wait_ms.saturating_add(500),
        };
        match ProxyCallout.dispatch(&call) {
            Ok(token) => {
                self.count(self.shared.ids.waited, 1);
                self.waiting = Some((platform, token, ProxyClock.now_ms()));
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
        let Some((platform, expected, started)) = self.waiting.take() else {
            return;
        };
        if token != expected {
            return;
        }
        let status = if headers == 0 {
            None
        } else {
            cxgate_kit::Headers::get(&ProxyHeaders::call_response(), ":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse().ok())
        };
        let body = proxy::buffer(4, 0, usize::MAX).unwrap_or_default();
        let waited = ProxyClock.now_ms().saturating_sub(started);
        self.count(
            self.shared.ids.wait_ms_total,
            i64::try_from(waited).unwrap_or(i64::MAX),
        );
        let out = core::on_wait_answer(
            &self.shared.config,
            &platform,
            &mut ProxyHeaders::request(),
            &mut self.store,
            &ProxyClock,
            status,
            &body,
        );
        match out {
            Ok(Ok(())) => {
                if let Some(id) = self.shared.ids.injected.get(&platform) {
                    self.count(*id, 1);
                }
                let _ = proxy::continue_stream(0);
            }
            Ok(Err(reply)) => {
                self.count(self.shared.ids.wait_timeouts, 1);
                let event = Event::new("TOKEN_WAIT_TIMEOUT")
                    .str("platform", &platform)
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
        );
        match decision {
            Ok(Decision::Pass) => Action::Continue,
            Ok(Decision::Injected { platform, stale }) => {
                if let Some(id) = self.shared.ids.injected.get(&platform) {
                    self.count(*id, 1);
                }
                if stale {
                    self.count(self.shared.ids.stale_served, 1);
                }
                Action::Continue
            }
            Ok(Decision::Wait { platform, after }) => self.wait(platform, after),
            Err(e) => self.fail(&format!("header access failed: {e}")),
        }
    }
}
