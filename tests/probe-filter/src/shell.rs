use cxgate_kit::host::{Callout, Expect, Headers, HttpCallout, Metrics, SharedStore};
use cxgate_kit::log::Event;
use cxgate_kit::problem::Problem;
use cxgate_kit::proxy::SyncDriver;
use cxgate_kit::proxy::{
    self, Level, ProxyCallout, ProxyClock, ProxyEntropy, ProxyHeaders, ProxyMetrics, ProxyStore,
};
use cxgate_kit::shared::{Lease, LeaseState, Update, update};
use cxgate_kit::{Clock, Entropy, config};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use serde::Deserialize;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy::install_panic_hook();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    upstream: String,
    #[serde(default)]
    tick_ms: u32,
    /// Set the tick period twice in on_configure (Kong traps on the second).
    #[serde(default)]
    tick_twice: bool,
    #[serde(default = "default_attempts")]
    cas_attempts: u32,
    #[serde(default)]
    sync: Option<cxgate_kit::sync::SyncConfig>,
}

fn default_attempts() -> u32 {
    8
}

#[derive(Default)]
struct Root {
    config: Rc<Config>,
    store: Option<ProxyStore>,
    holder: u64,
    sync: Option<SyncDriver>,
}

impl Context for Root {
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

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = proxy::plugin_configuration().unwrap_or_default();
        let config: Config = match config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                proxy::log(Level::Error, &e.to_string());
                return false;
            }
        };
        let store = match ProxyStore::detect() {
            Ok(s) => s,
            Err(e) => {
                proxy::log(Level::Error, &format!("store: {e}"));
                return false;
            }
        };
        proxy::log(
            Level::Info,
            &Event::new("CAS_DIALECT")
                .str("dialect", &format!("{:?}", store.dialect()))
                .render(),
        );
        self.holder = ProxyEntropy.next_u64().unwrap_or(1) | 1;
        if config.tick_ms > 0 && proxy::set_tick_period_ms(config.tick_ms).is_err() {
            return false;
        }
        if config.tick_twice && proxy::set_tick_period_ms(config.tick_ms.max(1)).is_err() {
            return false;
        }
        if let Some(sync) = config.sync.clone() {
            match SyncDriver::new(sync, store) {
                Ok(d) => self.sync = Some(d),
                Err(e) => {
                    proxy::log(Level::Error, &e.to_string());
                    return false;
                }
            }
        }
        self.store = Some(store);
        self.config = Rc::new(config);
        true
    }

    fn on_tick(&mut self) {
        // "trap-tick" asks for one trap here (how each proxy survives a trapping on_tick).
        let flag = proxy_wasm::hostcalls::get_shared_data("cxgate/test/trap-tick").ok();
        let cas = flag.as_ref().and_then(|(_, c)| *c);
        let trap = flag.and_then(|(v, _)| v).is_some_and(|v| !v.is_empty());
        if trap {
            // With the key's CAS: Kong refuses a blind overwrite.
            let _ = proxy_wasm::hostcalls::set_shared_data("cxgate/test/trap-tick", Some(b""), cas);
            core::arch::wasm32::unreachable();
        }
        if let Some(sync) = self.sync.as_mut() {
            sync.on_tick();
            return;
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let lease = Lease::new("cxgate/lease/probe", self.holder, 3_000);
        if let Ok(LeaseState::Held { .. }) = lease.acquire(store, &ProxyClock) {
            // Record who held the lease at this instant.
            let key = format!("cxgate/test/held/{}", ProxyClock.now_ms());
            let _ = update(store, &key, 8, |cur| {
                let mut v = cur.map(<[u8]>::to_vec).unwrap_or_default();
                v.extend_from_slice(&self.holder.to_le_bytes());
                Update::Write(v, ())
            });
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            config: self.config.clone(),
            store: self.store?,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    config: Rc<Config>,
    store: ProxyStore,
}

impl Probe {
    fn result(&self, value: &str) {
        let _ = ProxyHeaders::request().set("x-probe-result", value);
    }
}

impl Context for Probe {
    fn on_http_call_response(
        &mut self,
        _token: u32,
        headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        if headers == 0 {
            // Kong still offers a `:dispatch_status` pseudo-header on a failed call.
            let why = ProxyHeaders::call_response()
                .get(":dispatch_status")
                .ok()
                .flatten()
                .unwrap_or_else(|| "none".into());
            let reply = Problem::new(
                504,
                "upstream-timeout",
                "Upstream timeout",
                format!("callout failed (dispatch_status: {why})"),
            )
            .into_reply();
            let _ = proxy::send_local_reply(&reply, "probe_callout_failed");
            return;
        }
        let status = ProxyHeaders::call_response()
            .get(":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = proxy::buffer(4, 0, usize::MAX).unwrap_or_default();
        self.result(&format!("{status}:{}", String::from_utf8_lossy(&body)));
        let _ = proxy::continue_stream(0);
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let op = ProxyHeaders::request()
            .get("x-probe-op")
            .ok()
            .flatten()
            .unwrap_or_default();
        match op.as_str() {
            "incr" => {
                let out = update(
                    &mut self.store,
                    "cxgate/test/counter",
                    self.config.cas_attempts,
                    |cur| {
                        let n = cur
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_le_bytes)
                            .unwrap_or(0)
                            + 1;
                        Update::Write(n.to_le_bytes().to_vec(), n)
                    },
                );
                match out {
                    Ok(n) => self.result(&n.to_string()),
                    Err(e) => self.result(&format!("error:{e:?}")),
                }
            }
            "insert" => {
                let out = self.store.set("cxgate/test/once", b"x", Expect::Absent);
                self.result(&format!("{out:?}"));
            }
            "callout" => {
                let call = Callout {
                    upstream: &self.config.upstream,
                    method: "GET",
                    path: "/probe",
                    authority: "probe.local",
                    scheme: "http",
                    headers: vec![("x-from", "probe")],
                    body: None,
                    timeout_ms: 500,
                };
                match ProxyCallout.dispatch(&call) {
                    Ok(_) => return Action::Pause,
                    Err(e) => self.result(&format!("dispatch:{e:?}")),
                }
            }
            "token" => {
                let found = cxgate_kit::sync::read_token(&self.store, "genesys")
                    .ok()
                    .flatten();
                self.result(
                    &found
                        .map(|(t, _)| t.access_token)
                        .unwrap_or_else(|| "none".into()),
                );
            }
            "sync-status" => {
                let status = cxgate_kit::sync::read_status(&self.store).unwrap_or_default();
                self.result(&format!(
                    "{}/{}/{}",
                    status.version, status.synced_ms, status.failures
                ));
            }
            "metric" => {
                let mut m = ProxyMetrics;
                if let Ok(id) = m.counter("probe.requests") {
                    let _ = m.increment(id, 1);
                }
            }
            "grpc" => {
                let _ =
                    self.dispatch_grpc_call("svc", "s", "m", vec![], None, Duration::from_secs(1));
            }
            "done" => {
                let _ = proxy_wasm::hostcalls::done();
            }
            "node" => {
                let _ = proxy_wasm::hostcalls::get_property(vec!["node", "id"]);
            }
            "foreign" => self.result(&format!("cleared:{}", proxy::clear_route_cache())),
            "set-authority" => {
                let out = ProxyHeaders::request().set(":authority", "elsewhere.example");
                self.result(&format!("{out:?}"));
            }
            "tick-in-stream" => {
                let out = proxy::set_tick_period_ms(1000);
                self.result(&format!("{out:?}"));
            }
            "root-id" => {
                let id = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"])
                    .ok()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|| "absent".into());
                self.result(&id);
            }
            "delete" => {
                let key = "cxgate/test/deleted";
                let _ = proxy_wasm::hostcalls::set_shared_data(key, Some(b"v"), None);
                // With the current CAS: Kong refuses any other on an existing key.
                let cas = proxy_wasm::hostcalls::get_shared_data(key)
                    .ok()
                    .and_then(|(_, c)| c);
                let _ = proxy_wasm::hostcalls::set_shared_data(key, None, cas);
                let after = proxy_wasm::hostcalls::get_shared_data(key);
                let seen = match after {
                    Ok((None, None)) => "absent".to_string(),
                    Ok((v, _)) => format!("kept:{}", v.map_or(0, |v| v.len())),
                    Err(e) => format!("error:{e:?}"),
                };
                self.result(&seen);
            }
            "header-names" => {
                let names: Vec<String> =
                    proxy_wasm::hostcalls::get_map(proxy_wasm::types::MapType::HttpRequestHeaders)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, _)| k)
                        .filter(|k| k.starts_with('X') || k.starts_with('x'))
                        .collect();
                let found = ProxyHeaders::request().get("x-mixed-case").ok().flatten();
                self.result(&format!(
                    "{}|{}",
                    names.join(","),
                    found.unwrap_or_default()
                ));
            }
            "zone-write" => {
                let header = |n: &str| ProxyHeaders::request().get(n).ok().flatten();
                let key = header("x-probe-key").unwrap_or_default();
                let bytes = header("x-probe-bytes")
                    .and_then(|b| b.parse::<usize>().ok())
                    .unwrap_or(1);
                let out = self.store.set(&key, &vec![b'z'; bytes], Expect::Absent);
                self.result(&format!("{out:?}"));
            }
            "trap-tick" => {
                let _ = proxy_wasm::hostcalls::set_shared_data(
                    "cxgate/test/trap-tick",
                    Some(b"1"),
                    None,
                );
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let op = ProxyHeaders::request()
            .get("x-probe-op")
            .ok()
            .flatten()
            .unwrap_or_default();
        match op.as_str() {
            "pause-response" => return Action::Pause,
            // A local reply from response headers, naively and the way that works on Kong.
            "reply-in-response" | "reply-in-response-fixed" => {
                if op.ends_with("fixed") {
                    let mut r = ProxyHeaders::response();
                    let _ = r.remove("content-length");
                    let _ = r.set("retry-after", "1");
                }
                let reply = cxgate_kit::problem::LocalReply {
                    status: 503,
                    headers: vec![("retry-after".into(), "1".into())],
                    body: b"try later".to_vec(),
                };
                let _ = proxy::send_local_reply(&reply, "probe_retry_later");
            }
            _ => {}
        }
        Action::Continue
    }
}
