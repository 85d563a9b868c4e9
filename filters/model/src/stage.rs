//! The stage contract. A stage is a pure core behind these small traits; the runner (feature
//! `proxy`) implements them over proxy-wasm, and tests implement them in memory. One stage
//! alone behind the runner is a standalone filter; several in a list are the pipeline.

use crate::exchange::Exchange;
use crate::model::Model;
use cxgate_kit::host::{Clock, Entropy, HttpCallout, Metrics, SharedStore};
use cxgate_kit::log::Log;
use cxgate_kit::problem::LocalReply;
use cxgate_kit::sync::SyncConfig;
use serde_json::Value;
use std::cell::Cell;
use std::rc::Rc;

pub use crate::stream_host::StreamHost;

/// The clock read at most once per hook, and only if a stage asks (each read is a host call).
pub struct NowOnce<'a> {
    clock: &'a dyn Clock,
    at: Cell<Option<u64>>,
}

impl<'a> NowOnce<'a> {
    pub fn new(clock: &'a dyn Clock) -> Self {
        NowOnce {
            clock,
            at: Cell::new(None),
        }
    }

    /// Milliseconds since the Unix epoch, the same for the whole hook.
    pub fn ms(&self) -> u64 {
        if let Some(t) = self.at.get() {
            return t;
        }
        let t = self.clock.now_ms();
        self.at.set(Some(t));
        t
    }

    /// The same clock for an inner scope, with what was read so far.
    pub fn share(&self) -> NowOnce<'a> {
        NowOnce {
            clock: self.clock,
            at: Cell::new(self.at.get()),
        }
    }
}

/// The host as a stage sees it on a request.
pub struct Io<'a> {
    pub now: NowOnce<'a>,
    pub store: &'a mut dyn SharedStore,
    pub entropy: &'a mut dyn Entropy,
    pub callout: &'a mut dyn HttpCallout,
    pub stream: &'a mut dyn StreamHost,
    /// Counter increments are batched per worker and flushed on the tick.
    pub metrics: &'a mut dyn Metrics,
    pub log: &'a mut dyn Log,
}

/// The host as a stage sees it outside a request (ticks, root callouts).
pub struct RootIo<'a> {
    pub now_ms: u64,
    pub store: &'a mut dyn SharedStore,
    pub entropy: &'a mut dyn Entropy,
    pub callout: &'a mut dyn HttpCallout,
    pub metrics: &'a mut dyn Metrics,
    pub log: &'a mut dyn Log,
}

/// The answer to a callout. `status` is `None` when the call failed or timed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallAnswer {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a request hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    /// On to the next stage.
    Continue,
    /// Answer the consumer with this; nothing is forwarded.
    Reply(LocalReply),
    /// The stage made this callout and resumes when it answers.
    Wait(u32),
    /// The stage called the platform itself, and this answer stands for the forwarded
    /// request's: the response phase runs over it and its result is the reply.
    Answered(CallAnswer),
}

/// One stage on one worker: its compiled config and worker-level state.
pub trait Stage {
    fn name(&self) -> &'static str;
    /// The per-request part.
    fn stream(&self) -> Box<dyn StageStream>;
    /// How often the stage wants `on_tick` (the runner ticks at the shortest period asked).
    fn tick_ms(&self) -> Option<u32> {
        None
    }
    fn on_tick(&self, _io: &mut RootIo<'_>) {}
    /// A callout made from `on_tick` answered; true if it was this stage's.
    fn on_call_response(&self, _token: u32, _answer: &CallAnswer, _io: &mut RootIo<'_>) -> bool {
        false
    }
}

/// One stage on one request. Every hook has a default that does nothing.
pub trait StageStream {
    /// Request headers: the route and consumer are resolved.
    fn on_request(&mut self, _x: &mut Exchange, _io: &mut Io<'_>) -> Flow {
        Flow::Continue
    }
    /// The request matched no route (or named an unknown platform) and is refused before any
    /// stage runs; true to see it anyway and get `on_reply` (the trace stage tags every reply).
    fn on_unrouted(&mut self, _x: &mut Exchange, _io: &mut Io<'_>) -> bool {
        false
    }
    /// Called once, as soon as the platform is known: right after `on_request` for a fixed or
    /// query platform, in the body phase for one taken from the body.
    fn on_platform(&mut self, _x: &mut Exchange, _io: &mut Io<'_>) -> Flow {
        Flow::Continue
    }
    /// Asked after the header phase: does this stage need the whole request body?
    fn wants_body(&self, _x: &Exchange) -> bool {
        false
    }
    /// The whole body is in `x.body`.
    fn on_body(&mut self, _x: &mut Exchange, _io: &mut Io<'_>) -> Flow {
        Flow::Continue
    }
    /// The callout this stage waits for (`Flow::Wait`) answered.
    fn on_call_response(
        &mut self,
        _token: u32,
        _answer: &CallAnswer,
        _x: &mut Exchange,
        _io: &mut Io<'_>,
    ) -> Flow {
        Flow::Continue
    }
    /// A later stage answered the request itself: undo what assumed it would be forwarded
    /// (refunds, claims) and add to the reply (headers).
    fn on_reply(&mut self, _x: &Exchange, _io: &mut Io<'_>, _reply: &mut LocalReply) {}
    /// This stage's decision for the proxy's access log, once it ran: the property the
    /// runner sets (`cxgate_<field>`, which the shipped access log reads) and its value.
    fn log_field(&self, _x: &Exchange) -> Option<(&'static str, String)> {
        None
    }
    /// Does `on_response` read `x.response`? The runner reads the response headers from the
    /// proxy only if a stage that ran does.
    fn reads_response(&self, _x: &Exchange) -> bool {
        false
    }
    /// Response headers are in `x.response` when a stage reads them (never called for the
    /// pipeline's own replies).
    /// A stage may answer instead (the runner sets the headers on the response first).
    fn on_response(&mut self, _x: &mut Exchange, _io: &mut Io<'_>) -> Option<LocalReply> {
        None
    }
    /// Must the response headers wait for the body, so that the stage may still change the
    /// status from it (`:status` set in `on_response_body`)? Asked after `on_response`.
    /// Envoy holds them; Kong cannot (it warns and sends them), so only Envoy paths use it.
    fn holds_response_headers(&self, _x: &Exchange) -> bool {
        false
    }
    fn wants_response_body(&self, _x: &Exchange) -> bool {
        false
    }
    /// The whole response body; a stage returns its replacement.
    fn on_response_body(
        &mut self,
        _x: &mut Exchange,
        _io: &mut Io<'_>,
        _body: &[u8],
    ) -> Option<Vec<u8>> {
        None
    }
    /// Does this stage rewrite the response body piece by piece as it arrives (SSE streams)?
    /// Asked after `on_response`; such a stage gets every chunk, never the whole body.
    fn streams_response(&self, _x: &Exchange) -> bool {
        false
    }
    /// One piece of the response body (`end` on the last, which may be empty); a stage
    /// returns what to send in its place.
    fn on_response_chunk(
        &mut self,
        _x: &mut Exchange,
        _io: &mut Io<'_>,
        _chunk: &[u8],
        _end: bool,
    ) -> Option<Vec<u8>> {
        None
    }
    /// The stream is over (also after a reset).
    fn on_done(&mut self, _x: &Exchange, _io: &mut Io<'_>) {}
}

/// What a stage's constructor gets besides its own config section.
pub struct Build<'a> {
    pub model: Rc<Model>,
    /// The document's `sync` object: where the sidecar is (its key is in `sidecar_key`).
    pub sync: Option<&'a SyncConfig>,
    /// The sidecar key from the VM environment, when `sync` is configured.
    pub sidecar_key: Option<&'a str>,
    /// Reads a VM environment variable (never config: secrets stay out of proxy config).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub metrics: &'a mut dyn Metrics,
    pub entropy: &'a mut dyn Entropy,
}

/// Builds a stage from its config section (`Value::Null` when the document has none);
/// errors point into the document (e.g. `/ratelimit/platforms/genesys`).
pub type StageFactory =
    fn(section: Value, build: &mut Build<'_>) -> Result<Box<dyn Stage>, cxgate_kit::ConfigError>;

/// A stage a module can host: its name in `stages` and its constructor.
#[derive(Clone, Copy)]
pub struct StageKind {
    pub name: &'static str,
    pub build: StageFactory,
}
