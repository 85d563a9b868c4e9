//! The trace stage: the core behind the stage contract.

use crate::core::{self, Config};
use cxgate_kit::ConfigError;
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::exchange::RequestHeaders;
use cxgate_model::{Build, Exchange, Flow, Io, Stage, StageKind, StageStream};
use serde_json::Value;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "trace",
    build,
};

#[derive(Clone, Copy, Default)]
struct Ids {
    generated: u32,
    kept: u32,
    traceparent_generated: u32,
    errors: u32,
}

struct Shared {
    config: Config,
    ids: Ids,
}

struct Trace(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(&b.model.trace_header, section)?;
    let mut c = |n: &str| {
        b.metrics
            .counter(&format!("cxgate_trace.{n}"))
            .unwrap_or_default()
    };
    let ids = Ids {
        generated: c("generated"),
        kept: c("kept"),
        traceparent_generated: c("traceparent_generated"),
        errors: c("errors"),
    };
    Ok(Box::new(Trace(Rc::new(Shared { config, ids }))))
}

impl Stage for Trace {
    fn name(&self) -> &'static str {
        "trace"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(TraceStream(self.0.clone()))
    }
}

struct TraceStream(Rc<Shared>);

impl TraceStream {
    fn ensure(&self, x: &mut Exchange, io: &mut Io<'_>) {
        let ids = self.0.ids;
        let mut headers = RequestHeaders {
            x,
            host: &mut *io.stream,
        };
        match core::on_request(&self.0.config, &mut headers, &mut *io.entropy) {
            Ok(d) => {
                let counter = if d.generated_id {
                    ids.generated
                } else {
                    ids.kept
                };
                let _ = io.metrics.increment(counter, 1);
                if d.generated_traceparent {
                    let _ = io.metrics.increment(ids.traceparent_generated, 1);
                }
                x.trace_id = Some(d.trace_id);
            }
            // Tracing must never block traffic: count, log, and forward.
            Err(e) => {
                let _ = io.metrics.increment(ids.errors, 1);
                io.log.event(
                    Level::Warn,
                    &Event::new("TRACE_HEADERS_FAILED").str("error", &e.to_string()),
                );
            }
        }
    }
}

impl StageStream for TraceStream {
    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        self.ensure(x, io);
        Flow::Continue
    }

    fn on_unrouted(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> bool {
        self.ensure(x, io);
        true
    }

    fn on_reply(&mut self, x: &Exchange, _io: &mut Io<'_>, reply: &mut LocalReply) {
        if let (true, Some(id)) = (self.0.config.echo_in_response, &x.trace_id) {
            reply
                .headers
                .push((self.0.config.trace_header.clone(), id.clone()));
        }
    }

    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        if let (true, Some(id)) = (self.0.config.echo_in_response, &x.trace_id)
            && let Err(e) = io
                .stream
                .set_response_header(&self.0.config.trace_header, id)
        {
            io.log.event(
                Level::Warn,
                &Event::new("TRACE_ECHO_FAILED").str("error", &e.to_string()),
            );
        }
        None
    }
}
