//! The guard stage: on a proxied LLM route it screens the prompt, redacts and checks the
//! answer (whole or streamed), turns upstream failures into the fallback where asked, and
//! meters usage ([`crate::proxied`]); on a chain or bot route it answers the request itself
//! with calls to the LLM ([`crate::run`]). This file picks which, and holds what they share.

use crate::api::{self, Api, Operation};
use crate::config::{Config, RouteKind, RouteOptions};
use crate::meter::Usage;
use crate::proxied::ProxiedStream;
use crate::run::bot::BotRun;
use crate::run::chain::ChainRun;
use cxgate_kit::ConfigError;
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::model::Match;
use cxgate_model::{Build, CallAnswer, Exchange, Flow, Io, Model, Stage, StageKind, StageStream};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "guard",
    build,
};

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) model: Rc<Model>,
    /// For calls to the sidecar (`sidecar_key` endpoints), from the VM environment.
    pub(crate) sidecar_key: Option<String>,
    /// Metric ids by name, defined on first use (names carry model and consumer). A few
    /// dozen names per worker, so a vector is enough.
    metrics: RefCell<Vec<(String, u32)>>,
    /// Unpriced model labels given out so far (see [`Shared::model_label`]).
    models: RefCell<Vec<String>>,
}

/// Unpriced model names labelled as they are, per worker; later ones are `other`.
pub const MODEL_LABELS: usize = 16;

struct Guard(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section)?;
    for (id, _) in &config.routes {
        if b.model.route_by_id(id).is_none() {
            return Err(ConfigError::new(
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
        return Err(ConfigError::new(
            "/guard/calls",
            "a call carries the sidecar key (sidecar_key): configure sync, whose key_env holds it",
        ));
    }
    Ok(Box::new(Guard(Rc::new(Shared {
        config,
        model: b.model.clone(),
        sidecar_key: b.sidecar_key.map(str::to_string),
        metrics: RefCell::new(Vec::new()),
        models: RefCell::new(Vec::new()),
    }))))
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

/// A metric name part: letters, digits, `-` and `_` only (Envoy splits names at dots).
pub(crate) fn part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

impl Shared {
    /// The model comes from the request body and each label makes stats the proxy keeps for
    /// good, so only priced models and the first [`MODEL_LABELS`] others get their own.
    fn model_label(&self, model: &str) -> String {
        let label = part(model);
        if self.config.price(model).is_some() {
            return label;
        }
        let mut seen = self.models.borrow_mut();
        if seen.contains(&label) {
            return label;
        }
        if seen.len() < MODEL_LABELS {
            seen.push(label.clone());
            return label;
        }
        "other".into()
    }

    pub(crate) fn count(&self, io: &mut Io<'_>, name: &str, by: u64) {
        let id = self.id(io, name, false);
        if let Some(id) = id {
            let _ = io
                .metrics
                .increment(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
    pub(crate) fn observe(&self, io: &mut Io<'_>, name: &str, value: u64) {
        if let Some(id) = self.id(io, name, true) {
            let _ = io.metrics.record(id, value);
        }
    }
    fn id(&self, io: &mut Io<'_>, name: &str, histogram: bool) -> Option<u32> {
        let mut ids = self.metrics.borrow_mut();
        if let Some((_, id)) = ids.iter().find(|(n, _)| n == name) {
            return Some(*id);
        }
        let id = if histogram {
            io.metrics.histogram(name)
        } else {
            io.metrics.counter(name)
        }
        .ok()?;
        ids.push((name.to_string(), id));
        Some(id)
    }

    /// Counts one model call's tokens and cost under its model and consumer labels, and
    /// returns the cost in micro-dollars.
    pub(crate) fn meter(&self, io: &mut Io<'_>, model: &str, consumer: &str, usage: &Usage) -> u64 {
        let price = self.config.price(model).unwrap_or_default();
        let cost = price.cost_micros(usage);
        let labels = format!(
            "model_{}.consumer_{}",
            self.model_label(model),
            part(consumer)
        );
        self.count(
            io,
            &format!("cxgate_llm.tokens.kind_prompt.{labels}"),
            usage.prompt,
        );
        self.count(
            io,
            &format!("cxgate_llm.tokens.kind_completion.{labels}"),
            usage.completion,
        );
        self.count(io, &format!("cxgate_llm.cost_micros.{labels}"), cost);
        if usage.estimated {
            self.count(io, "cxgate_llm.estimated_usage", 1);
        }
        cost
    }

    /// The cost of a call without counting it (the reply reports it; `meter` counts it).
    pub(crate) fn cost(&self, model: &str, usage: &Usage) -> u64 {
        self.config
            .price(model)
            .unwrap_or_default()
            .cost_micros(usage)
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
