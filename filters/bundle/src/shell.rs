//! The root context that becomes whichever filter its plugin's root id names.

use crate::{Stage, unknown_root_id};
use cxgate_kit::problem::Problem;
use cxgate_kit::proxy::{self, Level};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy::install_panic_hook();
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Bundle::default()) });
}}

/// Chooses its filter on the first configure (the root id is a plugin property) and then
/// forwards every root callback to it.
#[derive(Default)]
struct Bundle {
    inner: Option<Box<dyn RootContext>>,
}

fn filter_root(stage: Stage) -> Box<dyn RootContext> {
    match stage {
        Stage::Trace => cxgate_trace::shell::root(),
        Stage::Token => cxgate_token::shell::root(),
        Stage::Breaker => cxgate_breaker::shell::root(),
        Stage::Ratelimit => cxgate_ratelimit::shell::root(),
        Stage::Transform => cxgate_transform::shell::root(),
    }
}

impl Context for Bundle {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        if let Some(inner) = self.inner.as_mut() {
            inner.on_http_call_response(token, headers, body, trailers);
        }
    }

    fn on_done(&mut self) -> bool {
        self.inner.as_mut().is_none_or(|i| i.on_done())
    }
}

impl RootContext for Bundle {
    fn on_configure(&mut self, size: usize) -> bool {
        if self.inner.is_none() {
            let root_id = proxy_wasm::hostcalls::get_property(vec!["plugin_root_id"])
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let Some(stage) = Stage::for_root_id(&root_id) else {
                return proxy::reject_config(
                    "cxgate-bundle",
                    "/root_id",
                    &unknown_root_id(&root_id),
                );
            };
            self.inner = Some(filter_root(stage));
        }
        self.inner.as_mut().is_some_and(|i| i.on_configure(size))
    }

    fn on_tick(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            inner.on_tick();
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        match self.inner.as_ref() {
            Some(inner) => inner.create_http_context(context_id),
            None => Some(Box::new(Unconfigured)),
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A stream of a plugin whose configuration was refused: the proxy should never route one
/// here, but if it does the request is answered, not forwarded half-checked.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let reply = Problem::new(
            500,
            "filter-not-configured",
            "Gateway filter not configured",
            "This cxgate filter has no valid configuration; see the proxy's log.",
        )
        .into_reply();
        if proxy::send_local_reply(&reply, "cxgate_bundle_unconfigured").is_err() {
            proxy::log(Level::Error, "cxgate-bundle: local reply failed");
        }
        Action::Pause
    }
}
