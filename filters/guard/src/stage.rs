//! The guard stage: on a proxied LLM route it screens the prompt, redacts and checks the
//! answer (whole or streamed), turns upstream failures into the fallback where asked, and
//! meters usage ([`crate::proxied`]); on a chain or bot route it answers the request itself
//! with calls to the LLM ([`crate::run`]). This file picks which; what they share per worker
//! is in [`crate::worker`].

use crate::api::{self, Api, Operation};
use crate::config::{Config, RouteKind, RouteOptions};
use crate::proxied::ProxiedStream;
use crate::run::bot::BotRun;
use crate::run::chain::ChainRun;
pub use crate::worker::MODEL_LABELS;
use crate::worker::Shared;
use cxgate_kit::ConfigError;
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::model::Match;
use cxgate_model::{Build, CallAnswer, Exchange, Flow, Io, Stage, StageKind, StageStream};
use serde_json::Value;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "guard",
    build,
};

struct Guard(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section)?;
    for (id, _) in &config.routes {
        if b.model.route_by_id(id).is_none() {
            return Err(ConfigError::at(
                format!("/guard/routes/{}", cxgate_kit::config::pointer_token(id)),
                format!("no route with id {id:?} in the model"),
            ));
        }
    }
    let wants_key = config
        .calls
        .as_ref()
        .is_some_and(|c| c.llm.sidecar_key || c.timer.as_ref().is_some_and(|(t, _)| t.sidecar_key));
    if wants_key && b.sidecar_key.is_none() {
        return Err(ConfigError::at(
            "/guard/calls",
            "a call carries the sidecar key (sidecar_key): configure sync, whose key_env holds it",
        ));
    }
    Ok(Box::new(Guard(Rc::new(Shared::new(
        config,
        b.model.clone(),
        b.sidecar_key.map(str::to_string),
    )))))
}

impl Stage for Guard {
    fn name(&self) -> &'static str {
        "guard"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(GuardStream {
            shared: self.0.clone(),
            mode: Mode::Idle,
        })
    }
}

/// What the guard does with this request, once its route is known.
enum Mode {
    Idle,
    Proxied(Box<ProxiedStream>),
    Chain(Box<ChainRun>),
    Bot(Box<BotRun>),
}

struct GuardStream {
    shared: Rc<Shared>,
    mode: Mode,
}

/// What the guard does with a request on a proxied route, from its method and the path below
/// the route's prefix: guard it as `api` (`Some`), let it pass (`None`: listing models, or a
/// path the route lists as `unguarded`, logged), or refuse it (404, nothing forwarded).
fn proxied_operation(
    s: &Shared,
    options: &RouteOptions,
    method: &str,
    rest: &str,
    x: &Exchange,
    io: &mut Io<'_>,
) -> Result<Option<Api>, LocalReply> {
    if api::listed(&options.unguarded, rest) {
        let event = Event::new("LLM_UNGUARDED")
            .str("method", method)
            .str("path", rest)
            .str("consumer", &x.consumer);
        io.log.event(Level::Warn, &event);
        s.count(io, "cxgate_llm.unguarded", 1);
        return Ok(None);
    }
    match api::classify(method, rest) {
        Some(Operation::Guarded(a)) => Ok(Some(a)),
        Some(Operation::Models) => Ok(None),
        None => {
            s.count(io, "cxgate_llm.unsupported", 1);
            let p = x.problem(
                404,
                "unsupported-llm-operation",
                "Unsupported LLM operation",
                format!(
                    "The LLM guard forwards only the operations it can screen and redact \
                     (chat completions, responses, completions, embeddings, messages, and \
                     listing models); {method} {rest} is not one of them."
                ),
            );
            Err(x.reply(p))
        }
    }
}

impl StageStream for GuardStream {
    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = &self.shared;
        let Some((index, options, prefix)) = x.route(&s.model).and_then(|r| {
            let i = s.config.routes.iter().position(|(id, _)| *id == r.id)?;
            let prefix = match &r.matcher {
                Match::Prefix(p) => p.len().saturating_sub(1),
                Match::Exact(_) => 0,
            };
            Some((i, &s.config.routes.get(i)?.1, prefix))
        }) else {
            return Flow::Continue;
        };
        let now = io.now.ms();
        self.mode = match &options.kind {
            RouteKind::Proxy => {
                let path = x.path.split('?').next().unwrap_or_default();
                let rest = path.get(prefix..).unwrap_or(path);
                match proxied_operation(s, options, &x.method, rest, x, io) {
                    Ok(Some(api)) => Mode::Proxied(Box::new(ProxiedStream::new(
                        s.clone(),
                        api,
                        index,
                        options.fallback,
                        now,
                    ))),
                    Ok(None) => return Flow::Continue,
                    Err(reply) => return Flow::Reply(reply),
                }
            }
            RouteKind::Chain(_) => Mode::Chain(Box::new(ChainRun::new(s.clone(), index, now))),
            RouteKind::Bot(_) => Mode::Bot(Box::new(BotRun::new(s.clone(), index, now))),
        };
        Flow::Continue
    }

    fn wants_body(&self, x: &Exchange) -> bool {
        !matches!(self.mode, Mode::Idle) && x.method == "POST"
    }

    fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        if !self.wants_body(x) {
            return Flow::Continue;
        }
        match &mut self.mode {
            Mode::Idle => Flow::Continue,
            Mode::Proxied(p) => p.on_body(x, io),
            Mode::Chain(c) => c.start(x, io),
            Mode::Bot(b) => b.start(x, io),
        }
    }

    fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &mut Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        match &mut self.mode {
            Mode::Chain(c) => c.on_call_response(token, answer, x, io),
            Mode::Bot(b) => b.on_call_response(token, answer, x, io),
            // Nothing else waits for a call: answer rather than forward unguarded.
            Mode::Idle | Mode::Proxied(_) => Flow::Reply(x.reply(x.problem(
                500,
                "gateway-error",
                "Gateway error",
                "an unexpected call answer reached the guard",
            ))),
        }
    }

    fn on_reply(&mut self, x: &Exchange, io: &mut Io<'_>, reply: &mut LocalReply) {
        match &mut self.mode {
            Mode::Chain(c) => c.on_reply(x, io, reply),
            Mode::Bot(b) => b.on_reply(x, io, reply),
            Mode::Idle | Mode::Proxied(_) => {}
        }
    }

    fn reads_response(&self, _x: &Exchange) -> bool {
        matches!(&self.mode, Mode::Proxied(p) if p.forwarded())
    }

    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        match &mut self.mode {
            Mode::Proxied(p) => p.on_response(x, io),
            Mode::Bot(b) => b.on_response(x),
            Mode::Idle | Mode::Chain(_) => None,
        }
    }

    fn streams_response(&self, _x: &Exchange) -> bool {
        matches!(&self.mode, Mode::Proxied(p) if p.streams())
    }

    fn on_response_chunk(
        &mut self,
        _x: &mut Exchange,
        io: &mut Io<'_>,
        chunk: &[u8],
        end: bool,
    ) -> Option<Vec<u8>> {
        match &mut self.mode {
            Mode::Proxied(p) => p.on_response_chunk(io, chunk, end),
            _ => None,
        }
    }

    fn wants_response_body(&self, _x: &Exchange) -> bool {
        matches!(&self.mode, Mode::Proxied(p) if p.wants_body())
    }

    fn on_response_body(
        &mut self,
        _x: &mut Exchange,
        io: &mut Io<'_>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        match &mut self.mode {
            Mode::Proxied(p) => p.on_response_body(io, body),
            _ => None,
        }
    }

    fn on_done(&mut self, x: &Exchange, io: &mut Io<'_>) {
        match &mut self.mode {
            Mode::Idle => {}
            Mode::Proxied(p) => p.on_done(x, io),
            Mode::Chain(c) => c.on_done(x, io),
            Mode::Bot(b) => b.on_done(x, io),
        }
    }
}
