//! proxy-wasm binding of the trace filter: config at `on_configure`, the core per request.

use crate::core::{self, Config};
use cxgate_kit::host::Metrics;
use cxgate_kit::log::Event;
use cxgate_kit::proxy::{self, Level, ProxyEntropy, ProxyHeaders, ProxyMetrics};
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
    Box::new(TraceRoot::default())
}

/// Metric ids, defined once per worker.
#[derive(Clone, Copy, Default)]
struct Ids {
    generated: u32,
    kept: u32,
    traceparent_generated: u32,
    errors: u32,
}

#[derive(Default)]
struct TraceRoot {
    config: Option<Rc<Config>>,
    ids: Ids,
}

impl Context for TraceRoot {}

impl RootContext for TraceRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match proxy::plugin_configuration() {
            Ok(bytes) => bytes,
            Err(e) => {
                proxy::log(
                    Level::Error,
                    &Event::new("CONFIG_UNREADABLE")
                        .str("error", &e.to_string())
                        .render(),
                );
                return false;
            }
        };
        match Config::parse(&bytes) {
            Ok(config) => self.config = Some(Rc::new(config)),
            Err(e) => return proxy::reject_config("cxgate-trace", &e.field, &e.message),
        }
        let mut m = ProxyMetrics;
        self.ids = Ids {
            generated: m.counter("cxgate_trace.generated").unwrap_or_default(),
            kept: m.counter("cxgate_trace.kept").unwrap_or_default(),
            traceparent_generated: m
                .counter("cxgate_trace.traceparent_generated")
                .unwrap_or_default(),
            errors: m.counter("cxgate_trace.errors").unwrap_or_default(),
        };
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(TraceStream {
            config,
            ids: self.ids,
            trace_id: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct TraceStream {
    config: Rc<Config>,
    ids: Ids,
    trace_id: Option<String>,
}

impl Context for TraceStream {}

impl HttpContext for TraceStream {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let mut m = ProxyMetrics;
        match core::on_request(
            &self.config,
            &mut ProxyHeaders::request(),
            &mut ProxyEntropy,
        ) {
            Ok(decision) => {
                let counter = if decision.generated_id {
                    self.ids.generated
                } else {
                    self.ids.kept
                };
                let _ = m.increment(counter, 1);
                if decision.generated_traceparent {
                    let _ = m.increment(self.ids.traceparent_generated, 1);
                }
                self.trace_id = Some(decision.trace_id);
            }
            // Tracing must never block traffic: count, log, and forward.
            Err(e) => {
                let _ = m.increment(self.ids.errors, 1);
                proxy::log(
                    Level::Warn,
                    &Event::new("TRACE_HEADERS_FAILED")
                        .str("error", &e.to_string())
                        .render(),
                );
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(trace_id) = &self.trace_id
            && let Err(e) = core::on_response(&self.config, &mut ProxyHeaders::response(), trace_id)
        {
            let event = Event::new("TRACE_ECHO_FAILED").str("error", &e.to_string());
            proxy::log(Level::Warn, &event.render());
        }
        Action::Continue
    }
}
