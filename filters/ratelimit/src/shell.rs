//! proxy-wasm binding of the rate-limit filter.

use crate::core::{self, Ask, Config, FailMode, Feedback, Limited, Mode, Quota, Verdict, keys};
use cxgate_kit::host::{Callout, Clock, Entropy, Expect, HttpCallout, Metrics, SharedStore};
use cxgate_kit::log::Event;
use cxgate_kit::problem::Problem;
use cxgate_kit::proxy::{
    self, Level, ProxyCallout, ProxyClock, ProxyEntropy, ProxyHeaders, ProxyMetrics, ProxyStore,
};
use cxgate_kit::shared::{Lease, LeaseState};
use cxgate_state::{AllotAnswer, AllotItem, AllotRequest};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::Cell;
use std::rc::Rc;

#[cfg(feature = "standalone")]
proxy_wasm::main! {{
    proxy::install_panic_hook();
    proxy_wasm::set_root_context(|_| root());
}}

/// This filter's root context; the standalone module and the one-module bundle both start here.
pub fn root() -> Box<dyn RootContext> {
    Box::new(LimitRoot::default())
}

#[derive(Default, Clone, Copy)]
struct Ids {
    admitted: u32,
    limited: u32,
    limited_platform: u32,
    never_fits: u32,
    platform_holds: u32,
    fallback: u32,
    allotted_units: u32,
    errors: u32,
}

struct Shared {
    config: Config,
    /// The sidecar key (distributed mode only).
    key: String,
    ids: Ids,
    /// This worker's view of the mode, refreshed on every tick.
    mode: Cell<Mode>,
}

impl Shared {
    fn count(&self, id: u32) {
        let _ = ProxyMetrics.increment(id, 1);
    }

    fn allot_call(&self, items: Vec<AllotItem>) -> Result<u32, String> {
        let Some(d) = self.config.distributed.as_ref() else {
            return Err("not distributed".into());
        };
        let body =
            serde_json::to_vec(&AllotRequest { buckets: items }).map_err(|e| e.to_string())?;
        let call = Callout {
            upstream: &d.upstream,
            method: "POST",
            path: "/v1/ratelimit/allot",
            authority: &d.authority,
            scheme: "http",
            headers: vec![
                ("x-cxgate-sidecar-key", self.key.as_str()),
                ("content-type", "application/json"),
            ],
            body: Some(&body),
            timeout_ms: d.timeout_ms,
        };
        ProxyCallout.dispatch(&call).map_err(|e| e.to_string())
    }
}

/// The grants in an allotment answer, if it is one.
fn grants(headers: usize) -> Option<Vec<u64>> {
    if headers == 0 || ProxyHeaders::call_response().status() != 200 {
        return None;
    }
    let body = proxy::buffer(4, 0, usize::MAX).ok()?;
    serde_json::from_slice::<AllotAnswer>(&body)
        .ok()
        .map(|a| a.grants)
}

#[derive(Default)]
struct LimitRoot {
    shared: Option<Rc<Shared>>,
    store: Option<ProxyStore>,
    lease: Option<Lease>,
    /// The periodic sync in flight: (callout, what it asked for).
    syncing: Option<(u32, Vec<AllotItem>)>,
    failures: u32,
}

fn reject(field: &str, message: &str) -> bool {
    proxy::reject_config("cxgate-ratelimit", field, message)
}

impl LimitRoot {
    fn set_mode(&mut self, mode: Mode, reason: &str) {
        let (Some(shared), Some(store)) = (self.shared.as_ref(), self.store.as_mut()) else {
            return;
        };
        if shared.mode.get() == mode {
            return;
        }
        let value: &[u8] = if mode == Mode::Fallback {
            b"fallback"
        } else {
            b"distributed"
        };
        let current = store.get(keys::MODE).ok().flatten();
        let expect = current.map_or(Expect::Absent, |v| Expect::Cas(v.cas));
        if store.set(keys::MODE, value, expect).is_err() {
            return;
        }
        shared.mode.set(mode);
        let _ = ProxyMetrics.record(shared.ids.fallback, u64::from(mode == Mode::Fallback));
        let (level, name) = if mode == Mode::Fallback {
            (Level::Warn, "RATE_LIMIT_FALLBACK")
        } else {
            (Level::Info, "RATE_LIMIT_DISTRIBUTED")
        };
        proxy::log(level, &Event::new(name).str("reason", reason).render());
    }
}

impl Context for LimitRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        let Some((_, items)) = self.syncing.take_if(|(t, _)| *t == token) else {
            return;
        };
        let (Some(shared), Some(store)) = (self.shared.clone(), self.store.as_mut()) else {
            return;
        };
        match grants(headers) {
            Some(g) => {
                self.failures = 0;
                if let Ok(units) = core::apply_grants(store, &items, &g, ProxyClock.now_ms()) {
                    let _ = ProxyMetrics.increment(
                        shared.ids.allotted_units,
                        i64::try_from(units / 1000).unwrap_or(0),
                    );
                }
                self.set_mode(Mode::Distributed, "the shared budget answers again");
            }
            None => {
                self.failures += 1;
                if self.failures >= 2 {
                    self.set_mode(
                        Mode::Fallback,
                        "the sidecar or Redis does not answer; local limits of budget/instances",
                    );
                }
            }
        }
    }
}

impl RootContext for LimitRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = proxy::plugin_configuration().unwrap_or_default();
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => return reject(&e.field, &e.message),
        };
        let Ok(store) = ProxyStore::detect() else {
            return reject("", "shared data is unavailable");
        };
        let mut key = String::new();
        if let Some(d) = &config.distributed {
            match std::env::var(&d.key_env) {
                Ok(k) => key = k,
                Err(_) => {
                    return reject(
                        "/distributed/key_env",
                        &format!("environment variable {} is not set in the VM", d.key_env),
                    );
                }
            }
            let Ok(holder) = ProxyEntropy.next_u64() else {
                return reject("", "no entropy for the sync lease");
            };
            self.lease = Some(Lease::new(keys::SYNC_LEASE, holder, d.sync_ms * 5));
            let tick = u32::try_from(d.sync_ms).unwrap_or(u32::MAX);
            if proxy::set_tick_period_ms(tick).is_err() {
                return reject("/distributed/sync_ms", "the host refused the tick period");
            }
        }
        let mut m = ProxyMetrics;
        let mut c = |name: &str| {
            m.counter(&format!("cxgate_ratelimit.{name}"))
                .unwrap_or_default()
        };
        let ids = Ids {
            admitted: c("admitted"),
            limited: c("limited"),
            limited_platform: c("limited_platform"),
            never_fits: c("never_fits"),
            platform_holds: c("platform_holds"),
            allotted_units: c("allotted_units"),
            errors: c("errors"),
            fallback: ProxyMetrics
                .gauge("cxgate_ratelimit.distributed_fallback")
                .unwrap_or_default(),
        };
        let mode = Mode::read(&config, &store);
        self.store = Some(store);
        self.shared = Some(Rc::new(Shared {
            config,
            key,
            ids,
            mode: Cell::new(mode),
        }));
        true
    }

    fn on_tick(&mut self) {
        let (Some(shared), Some(store)) = (self.shared.clone(), self.store) else {
            return;
        };
        shared.mode.set(Mode::read(&shared.config, &store));
        let Some(lease) = self.lease.as_ref() else {
            return;
        };
        let mut store = store;
        if !matches!(
            lease.acquire(&mut store, &ProxyClock),
            Ok(LeaseState::Held { .. })
        ) {
            return;
        }
        if self.syncing.is_some() {
            return;
        }
        let items = match core::plan_sync(&shared.config, &store) {
            Ok(items) if !items.is_empty() => items,
            _ => return,
        };
        match shared.allot_call(items.clone()) {
            Ok(token) => self.syncing = Some((token, items)),
            Err(_) => {
                self.failures += 1;
                if self.failures >= 2 {
                    self.set_mode(Mode::Fallback, "the sidecar cannot be called");
                }
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(LimitStream {
            shared: self.shared.clone()?,
            store: self.store?,
            route: None,
            consumer: String::new(),
            quota: None,
            allot: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct LimitStream {
    shared: Rc<Shared>,
    store: ProxyStore,
    route: Option<usize>,
    consumer: String,
    /// The headers to add to the response.
    quota: Option<Quota>,
    /// A first allotment in flight: (callout, what it asked for).
    allot: Option<(u32, Vec<AllotItem>)>,
}

impl LimitStream {
    fn decide(&mut self, may_allot: bool) -> Action {
        let Some(route) = self.route.and_then(|i| self.shared.config.routes.get(i)) else {
            return Action::Continue;
        };
        let cfg = &self.shared.config;
        let trace = cxgate_kit::Headers::get(&ProxyHeaders::request(), &cfg.trace_header)
            .ok()
            .flatten();
        let ask = Ask {
            route,
            consumer: &self.consumer,
            trace_id: trace.as_deref(),
            now_ms: ProxyClock.now_ms(),
            mode: self.shared.mode.get(),
            may_allot,
        };
        match core::admit(cfg, &mut self.store, &ask) {
            Ok(Verdict::Admitted(q)) => {
                self.shared.count(self.shared.ids.admitted);
                self.quota = Some(q);
                Action::Continue
            }
            Ok(Verdict::Limited(why, reply)) => {
                let ids = self.shared.ids;
                self.shared.count(match why {
                    Limited::NeverFits => ids.never_fits,
                    Limited::Platform => ids.limited_platform,
                    Limited::Consumer => ids.limited,
                });
                let _ = proxy::send_local_reply(&reply, "cxgate_rate_limited");
                Action::Pause
            }
            Ok(Verdict::Allot(items)) if may_allot => match self.shared.allot_call(items.clone()) {
                Ok(token) => {
                    self.allot = Some((token, items));
                    Action::Pause
                }
                Err(_) => self.decide(false),
            },
            Ok(Verdict::Allot(_)) => self.fail("no allotment for a new bucket"),
            Err(e) => self.fail(&format!("{e:?}")),
        }
    }

    /// Shared data failed: the configured fail mode decides.
    fn fail(&self, detail: &str) -> Action {
        self.shared.count(self.shared.ids.errors);
        let event = Event::new("RATE_LIMIT_STATE_ERROR").str("error", detail);
        proxy::log(Level::Warn, &event.render());
        match self.shared.config.fail_mode {
            FailMode::Open => Action::Continue,
            FailMode::Closed => {
                let reply = Problem::new(
                    503,
                    "rate-limit-unavailable",
                    "Rate limiter unavailable",
                    "The gateway cannot check the rate limit right now; the request was not forwarded.",
                )
                .with_header("retry-after", "1")
                .into_reply();
                let _ = proxy::send_local_reply(&reply, "cxgate_rate_limit_unavailable");
                Action::Pause
            }
        }
    }
}

impl Context for LimitStream {
    fn on_http_call_response(&mut self, token: u32, headers: usize, _: usize, _: usize) {
        let Some((_, items)) = self.allot.take_if(|(t, _)| *t == token) else {
            return;
        };
        if let Some(g) = grants(headers) {
            let _ = core::apply_grants(&mut self.store, &items, &g, ProxyClock.now_ms());
        }
        if self.decide(false) == Action::Continue {
            let _ = proxy::continue_stream(0);
        }
    }
}

impl HttpContext for LimitStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let request = ProxyHeaders::request();
        let get = |name: &str| {
            cxgate_kit::Headers::get(&request, name)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let cfg = &self.shared.config;
        self.route = cfg.route_index(&get(":method"), &get(":path"));
        if self.route.is_none() {
            return Action::Continue;
        }
        self.consumer = get(&cfg.consumer_header);
        if self.consumer.is_empty() {
            self.consumer = "anonymous".into();
        }
        self.decide(true)
    }

    /// Adds the quota headers and feeds the platform's answer back (never pauses).
    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let cfg = &self.shared.config;
        let mut response = ProxyHeaders::response();
        if let Some(q) = self.quota {
            for (k, v) in q.headers(cfg.legacy_headers) {
                let _ = cxgate_kit::Headers::set(&mut response, &k, &v);
            }
        }
        let platform = self
            .route
            .and_then(|i| cfg.routes.get(i))
            .and_then(|r| r.platform.as_deref());
        let (Some(platform), Some(_)) = (platform, self.quota) else {
            return Action::Continue;
        };
        let get = |name: &str| cxgate_kit::Headers::get(&response, name).ok().flatten();
        let status = response.status();
        let inin = get("inin-ratelimit-allowed").and_then(|allowed| {
            let n = |v: Option<String>| v.and_then(|v| v.trim().parse::<u64>().ok());
            Some((
                n(get("inin-ratelimit-count"))?,
                n(Some(allowed))?,
                n(get("inin-ratelimit-reset")).unwrap_or(1),
            ))
        });
        if status != 429 && inin.is_none() {
            return Action::Continue;
        }
        let retry_after = get("retry-after");
        let fb = Feedback {
            status,
            retry_after: retry_after.as_deref(),
            inin,
        };
        match core::on_response(cfg, &mut self.store, platform, &fb, ProxyClock.now_ms()) {
            Ok(Some(event)) => {
                self.shared.count(self.shared.ids.platform_holds);
                proxy::log(Level::Warn, &event.render());
            }
            Ok(None) => {}
            Err(e) => {
                self.shared.count(self.shared.ids.errors);
                let event = Event::new("RATE_LIMIT_STATE_ERROR").str("error", &format!("{e:?}"));
                proxy::log(Level::Warn, &event.render());
            }
        }
        Action::Continue
    }
}
