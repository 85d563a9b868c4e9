//! The pipeline: a list of stages run over one request model, in one HTTP context. Pure, so
//! the whole sequencing (phases, waits, replies, unwinding) is tested natively.
//!
//! Request: the route and consumer are resolved once; then each stage's `on_request` (and
//! `on_platform` when the platform is already known) in order; then, if any stage wants the
//! body or the platform comes from it, the body phase: the platform is resolved from the
//! parsed body, `on_platform` runs in order, then `on_body`. A stage that answers stops the
//! request, and every stage that ran gets `on_reply` (reverse order). Response: stages run in
//! reverse order; the pipeline's own replies pass every stage unchanged.

use crate::document::Document;
use crate::exchange::{Exchange, HeaderView, REPLY_HEADER, ResponseView};
use crate::model::{Model, PlatformSource, Resolved, Unmatched, query_param};
use crate::stage::{Build, CallAnswer, Flow, Io, Stage, StageStream};
use cxgate_kit::ConfigError;
use cxgate_kit::problem::LocalReply;
use std::rc::Rc;

mod answered;

pub struct Pipeline {
    pub model: Rc<Model>,
    pub stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// Builds every stage of the document, in order.
    pub fn build(doc: Document, build: &mut Build<'_>) -> Result<Pipeline, ConfigError> {
        let mut stages = Vec::with_capacity(doc.stages.len());
        for (kind, section) in doc.stages {
            stages.push((kind.build)(section, build)?);
        }
        Ok(Pipeline {
            model: build.model.clone(),
            stages,
        })
    }

    /// The shortest tick any stage asks for.
    pub fn tick_ms(&self) -> Option<u32> {
        self.stages.iter().filter_map(|s| s.tick_ms()).min()
    }
}

/// What the proxy should do with the stream now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Continue,
    /// Hold the request: a callout or the body is awaited.
    Pause,
    /// Answer with this (marked as the gateway's own).
    Reply(LocalReply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    Request,
    Platform,
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Headers,
    /// The header phase is done; the whole body is awaited.
    AwaitBody,
    Body,
    /// Forwarded, or answered.
    Past,
}

/// One request through the pipeline.
pub struct Request {
    pub x: Exchange,
    model: Rc<Model>,
    names: Vec<&'static str>,
    streams: Vec<Box<dyn StageStream>>,
    ran: Vec<bool>,
    steps: Vec<(usize, Hook)>,
    next: usize,
    waiting: Option<(usize, u32)>,
    phase: Phase,
    /// Unmatched and let through: no stage sees it.
    pass: bool,
}

impl Request {
    /// Request headers arrived: resolve, then run the header phase.
    pub fn start(p: &Pipeline, headers: impl Into<HeaderView>, io: &mut Io<'_>) -> (Request, Step) {
        let model = p.model.clone();
        let x = Exchange::new(headers.into(), &model);
        let mut r = Request {
            x,
            names: p.stages.iter().map(|s| s.name()).collect(),
            streams: p.stages.iter().map(|s| s.stream()).collect(),
            ran: vec![false; p.stages.len()],
            steps: Vec::new(),
            next: 0,
            waiting: None,
            phase: Phase::Headers,
            pass: false,
            model,
        };
        let step = r.begin(io);
        (r, step)
    }

    /// What the proxy's access log gets for this request (README, "Access log"): the
    /// consumer, route and platform, then each stage's decision (transform status, rate-limit
    /// cost). Empty for a pipeline without `authz` (the upstream token filter), which decides
    /// nothing a request log would show.
    pub fn log_fields(&self) -> Vec<(&'static str, String)> {
        if !self.names.contains(&crate::authz::KIND.name) {
            return Vec::new();
        }
        let route = self.x.route(&self.model).map_or("-", |r| r.id.as_str());
        let mut out = vec![
            ("cxgate_consumer", self.x.consumer.clone()),
            ("cxgate_route", route.to_string()),
            (
                "cxgate_platform",
                self.x.platform.clone().unwrap_or_else(|| "-".into()),
            ),
        ];
        for (stream, ran) in self.streams.iter().zip(&self.ran) {
            if *ran && let Some(field) = stream.log_field(&self.x) {
                out.push(field);
            }
        }
        out
    }

    fn begin(&mut self, io: &mut Io<'_>) -> Step {
        let model = self.model.clone();
        match model.resolve(&self.x.method, &self.x.path) {
            Resolved::Route(i) => self.x.route = Some(i),
            Resolved::NoRoute if model.unmatched == Unmatched::Pass => {
                self.pass = true;
                self.phase = Phase::Past;
                return Step::Continue;
            }
            Resolved::NoRoute => {
                self.unrouted(io);
                let p = self.x.problem(
                    404,
                    "no-route",
                    "Not Found",
                    format!(
                        "No gateway route matches {} {}.",
                        self.x.method,
                        self.x.path.split('?').next().unwrap_or_default()
                    ),
                );
                return self.reject(p.into_reply(), io);
            }
            Resolved::MethodNotAllowed(allowed) => {
                self.unrouted(io);
                let p = self
                    .x
                    .problem(
                        405,
                        "method-not-allowed",
                        "Method not allowed",
                        format!(
                            "{} is not allowed here; use {}.",
                            self.x.method,
                            allowed.join(", ")
                        ),
                    )
                    .with_header("allow", allowed.join(", "));
                return self.reject(p.into_reply(), io);
            }
        }
        let source = self.x.route(&model).map(|r| r.platform.clone());
        match source {
            Some(PlatformSource::Fixed(p)) => self.x.platform = Some(p),
            Some(PlatformSource::Query(q)) => {
                let said = query_param(&self.x.path, &q)
                    .unwrap_or_default()
                    .to_string();
                match model.known_platform(&said) {
                    Some(p) => self.x.platform = Some(p.to_string()),
                    None => {
                        self.unrouted(io);
                        let p = self.unknown_platform(&said, &format!("?{q}"));
                        return self.reject(p, io);
                    }
                }
            }
            _ => {}
        }
        let known = self.x.platform.is_some();
        for i in 0..self.streams.len() {
            self.steps.push((i, Hook::Request));
            if known {
                self.steps.push((i, Hook::Platform));
            }
        }
        self.run(io)
    }

    fn unknown_platform(&self, said: &str, pointer: &str) -> LocalReply {
        let known = &self.model.platforms;
        self.x
            .problem(
                400,
                "unknown-platform",
                "Unknown target platform",
                format!("{said:?} is not one of {known:?}."),
            )
            .with_error(pointer, format!("must be one of {known:?}"))
            .into_reply()
    }

    /// Before a refusal that comes ahead of every stage: stages that tag every answer (trace)
    /// still see the request, and its reply.
    fn unrouted(&mut self, io: &mut Io<'_>) {
        for (s, ran) in self.streams.iter_mut().zip(self.ran.iter_mut()) {
            *ran = s.on_unrouted(&mut self.x, io);
        }
    }

    fn reject(&mut self, reply: LocalReply, io: &mut Io<'_>) -> Step {
        self.phase = Phase::Past;
        self.finish_reply(usize::MAX, "model", reply, io)
    }

    fn run(&mut self, io: &mut Io<'_>) -> Step {
        while let Some(&(i, hook)) = self.steps.get(self.next) {
            self.next += 1;
            let Some(stream) = self.streams.get_mut(i) else {
                continue;
            };
            if let Some(r) = self.ran.get_mut(i) {
                *r = true;
            }
            let flow = match hook {
                Hook::Request => stream.on_request(&mut self.x, io),
                Hook::Platform => stream.on_platform(&mut self.x, io),
                Hook::Body => stream.on_body(&mut self.x, io),
            };
            match flow {
                Flow::Continue => {}
                Flow::Reply(reply) => return self.stage_reply(i, reply, io),
                Flow::Wait(token) => {
                    self.waiting = Some((i, token));
                    return Step::Pause;
                }
                Flow::Answered(answer) => return self.answered(i, answer, io),
            }
        }
        match self.phase {
            Phase::Headers if self.needs_body() => {
                self.phase = Phase::AwaitBody;
                Step::Pause
            }
            _ => {
                self.phase = Phase::Past;
                Step::Continue
            }
        }
    }

    fn needs_body(&self) -> bool {
        matches!(
            self.x.route(&self.model).map(|r| &r.platform),
            Some(PlatformSource::Body(_))
        ) || self.streams.iter().any(|s| s.wants_body(&self.x))
    }

    /// The header phase is done and the whole body is awaited.
    pub fn awaiting_body(&self) -> bool {
        self.phase == Phase::AwaitBody
    }

    /// Still in the header phase (a callout is out): a body that arrives must be held.
    pub fn in_header_phase(&self) -> bool {
        self.phase == Phase::Headers
    }

    pub fn max_body_bytes(&self) -> usize {
        self.model.max_body_bytes
    }

    /// A body over the limit: refuse it before buffering the rest.
    pub fn body_too_large(&mut self, len: usize, io: &mut Io<'_>) -> Step {
        let max = self.model.max_body_bytes;
        let reply = self.x.reply(crate::body::too_large(len, max));
        self.phase = Phase::Past;
        self.finish_reply(usize::MAX, "model", reply, io)
    }

    /// The whole request body arrived (after `awaiting_body`).
    pub fn on_body(&mut self, body: Vec<u8>, io: &mut Io<'_>) -> Step {
        if self.phase != Phase::AwaitBody {
            return Step::Continue;
        }
        self.phase = Phase::Body;
        self.x.body = body;
        let model = self.model.clone();
        if let Some(PlatformSource::Body(pointer)) =
            self.x.route(&model).map(|r| r.platform.clone())
        {
            let said = match self.x.json(&model) {
                Ok(v) => v
                    .pointer(&pointer)
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
                Err(p) => {
                    let reply = self.x.reply(*p);
                    self.phase = Phase::Past;
                    return self.finish_reply(usize::MAX, "model", reply, io);
                }
            };
            match said.as_deref().and_then(|s| model.known_platform(s)) {
                Some(p) => self.x.platform = Some(p.to_string()),
                None => {
                    let reply =
                        self.unknown_platform(said.as_deref().unwrap_or_default(), &pointer);
                    self.phase = Phase::Past;
                    return self.finish_reply(usize::MAX, "model", reply, io);
                }
            }
            for i in 0..self.streams.len() {
                self.steps.push((i, Hook::Platform));
            }
        }
        for (i, s) in self.streams.iter().enumerate() {
            if s.wants_body(&self.x) {
                self.steps.push((i, Hook::Body));
            }
        }
        self.run(io)
    }

    /// A callout answered; `None` if this request was not waiting for it.
    pub fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        io: &mut Io<'_>,
    ) -> Option<Step> {
        let (i, _) = self.waiting.take_if(|(_, t)| *t == token)?;
        let stream = self.streams.get_mut(i)?;
        let flow = stream.on_call_response(token, answer, &mut self.x, io);
        Some(match flow {
            Flow::Continue => self.run(io),
            Flow::Reply(reply) => self.stage_reply(i, reply, io),
            Flow::Wait(t) => {
                self.waiting = Some((i, t));
                Step::Pause
            }
            Flow::Answered(answer) => self.answered(i, answer, io),
        })
    }

    fn stage_reply(&mut self, from: usize, reply: LocalReply, io: &mut Io<'_>) -> Step {
        self.phase = Phase::Past;
        let name = self.names.get(from).copied().unwrap_or("pipeline");
        self.finish_reply(from, name, reply, io)
    }

    /// Lets every stage that ran (but the one answering) undo and decorate, then marks it.
    fn finish_reply(
        &mut self,
        from: usize,
        name: &str,
        mut reply: LocalReply,
        io: &mut Io<'_>,
    ) -> Step {
        self.x.replied = true;
        for i in (0..self.streams.len()).rev() {
            if i == from || !self.ran.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(s) = self.streams.get_mut(i) {
                s.on_reply(&self.x, io, &mut reply);
            }
        }
        reply
            .headers
            .push((REPLY_HEADER.to_string(), name.to_string()));
        Step::Reply(reply)
    }

    /// Response headers: stages in reverse order. `Some` when a stage answers instead. The
    /// headers are read (`load`) only if a stage that ran reads them.
    pub fn on_response_headers<H: Into<HeaderView>>(
        &mut self,
        load: impl FnOnce() -> H,
        io: &mut Io<'_>,
    ) -> Option<LocalReply> {
        if self.pass || self.x.replied {
            return None;
        }
        let reads = self
            .streams
            .iter()
            .zip(&self.ran)
            .any(|(s, ran)| *ran && s.reads_response(&self.x));
        self.x.response = Some(if reads {
            ResponseView::new(load().into())
        } else {
            ResponseView::default()
        });
        for i in (0..self.streams.len()).rev() {
            if !self.ran.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            if let Some(mut reply) = s.on_response(&mut self.x, io) {
                self.x.replied = true;
                let name = self.names.get(i).copied().unwrap_or("pipeline");
                reply
                    .headers
                    .push((REPLY_HEADER.to_string(), name.to_string()));
                return Some(reply);
            }
        }
        None
    }

    /// The response is the platform's and a stage that ran says `yes` to it.
    fn a_stage_takes(&self, yes: impl Fn(&dyn StageStream, &Exchange) -> bool) -> bool {
        !self.pass
            && !self.x.replied
            && self
                .streams
                .iter()
                .zip(&self.ran)
                .any(|(s, ran)| *ran && yes(s.as_ref(), &self.x))
    }

    pub fn holds_response_headers(&self) -> bool {
        self.a_stage_takes(|s, x| s.holds_response_headers(x))
    }

    pub fn wants_response_body(&self) -> bool {
        self.a_stage_takes(|s, x| s.wants_response_body(x))
    }

    /// The whole response body: each stage that wants it may replace it (reverse order).
    pub fn on_response_body(&mut self, body: Vec<u8>, io: &mut Io<'_>) -> Option<Vec<u8>> {
        self.rewrite(
            &body,
            |s, x| s.wants_response_body(x),
            |s, x, seen| s.on_response_body(x, io, seen),
        )
    }

    pub fn streams_response(&self) -> bool {
        self.a_stage_takes(|s, x| s.streams_response(x))
    }

    /// One piece of a streamed response body: each stage that streams may replace it
    /// (reverse order).
    pub fn on_response_chunk(
        &mut self,
        chunk: Vec<u8>,
        end: bool,
        io: &mut Io<'_>,
    ) -> Option<Vec<u8>> {
        self.rewrite(
            &chunk,
            |s, x| s.streams_response(x),
            |s, x, seen| s.on_response_chunk(x, io, seen, end),
        )
    }

    /// Stages that ran and `take` the bytes, in reverse order, each seeing the previous one's
    /// output; `Some` if any replaced them.
    fn rewrite(
        &mut self,
        bytes: &[u8],
        take: impl Fn(&dyn StageStream, &Exchange) -> bool,
        mut replace: impl FnMut(&mut dyn StageStream, &mut Exchange, &[u8]) -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for i in (0..self.streams.len()).rev() {
            if !self.ran.get(i).copied().unwrap_or(false) {
                continue;
            }
            let Some(s) = self.streams.get_mut(i) else {
                continue;
            };
            if !take(s.as_ref(), &self.x) {
                continue;
            }
            let seen = current.as_deref().unwrap_or(bytes);
            if let Some(next) = replace(s.as_mut(), &mut self.x, seen) {
                current = Some(next);
            }
        }
        current
    }

    pub fn on_done(&mut self, io: &mut Io<'_>) {
        for (s, ran) in self.streams.iter_mut().zip(&self.ran) {
            if *ran {
                s.on_done(&self.x, io);
            }
        }
    }
}
