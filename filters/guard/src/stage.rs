//! The guard stage: screens the prompt, redacts and checks the answer (whole or streamed),
//! turns upstream failures into the fallback on routes that ask for it, and meters usage.

use crate::chat::{self, Screened};
use crate::config::{Config, RouteOptions};
use crate::meter::Usage;
use crate::pii::Kind;
use crate::sse::{Policy, SseGuard};
use cxgate_kit::ConfigError;
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::{Build, Exchange, Flow, Io, Model, Stage, StageKind, StageStream};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "guard",
    build,
};

struct Shared {
    config: Config,
    model: Rc<Model>,
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
    Ok(Box::new(Guard(Rc::new(Shared {
        config,
        model: b.model.clone(),
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
            route: None,
            started_ms: 0,
            req: None,
            answer: Answer::None,
            status: 0,
            first_ms: None,
            usage: None,
            completion_chars: 0,
            redacted: Vec::new(),
            fallback: None,
        })
    }
}

enum Answer {
    None,
    Json,
    Sse(Box<SseGuard>),
}

struct GuardStream {
    shared: Rc<Shared>,
    route: Option<RouteOptions>,
    started_ms: u64,
    /// Set once the request was screened and forwarded.
    req: Option<Screened>,
    answer: Answer,
    status: u16,
    first_ms: Option<u64>,
    usage: Option<Usage>,
    completion_chars: u64,
    redacted: Vec<Kind>,
    fallback: Option<&'static str>,
}

/// A metric name part: letters, digits, `-` and `_` only (Envoy splits names at dots).
fn part(s: &str) -> String {
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

    fn count(&self, io: &mut Io<'_>, name: &str, by: u64) {
        let id = self.id(io, name, false);
        if let Some(id) = id {
            let _ = io
                .metrics
                .increment(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
    fn observe(&self, io: &mut Io<'_>, name: &str, value: u64) {
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
}

impl GuardStream {
    fn fallback_reply(&mut self, reason: &'static str, io: &mut Io<'_>) -> LocalReply {
        let cfg = &self.shared.config;
        let (model, stream) = self
            .req
            .as_ref()
            .map_or(("unknown", false), |r| (r.model.as_str(), r.stream));
        let now_s = io.now.ms() / 1000;
        let id = format!("chatcmpl-fallback-{}", io.now.ms());
        let (ct, body) = if stream {
            let b = chat::fallback_sse(model, &cfg.fallback_text, reason, &id, now_s);
            ("text/event-stream", b)
        } else {
            let b = chat::fallback_json(model, &cfg.fallback_text, reason, &id, now_s);
            ("application/json", b)
        };
        self.fallback = Some(reason);
        LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), ct.into()),
                ("x-cxgate-fallback".into(), reason.into()),
            ],
            body,
        }
    }

    fn note_first(&mut self, io: &mut Io<'_>) {
        if self.first_ms.is_none() {
            self.first_ms = Some(io.now.ms());
        }
    }
}

impl StageStream for GuardStream {
    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = &self.shared;
        self.route = x
            .route(&s.model)
            .and_then(|r| s.config.route(&r.id))
            .cloned();
        if self.route.is_some() {
            self.started_ms = io.now.ms();
        }
        Flow::Continue
    }

    fn wants_body(&self, x: &Exchange) -> bool {
        self.route.is_some() && x.method == "POST"
    }

    fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        if !self.wants_body(x) {
            return Flow::Continue;
        }
        let s = self.shared.clone();
        let cfg = &s.config;
        let screened = match chat::screen_request(cfg, &x.body) {
            Ok(v) => v,
            Err((problem, rule)) => {
                if let Some(rule) = rule {
                    let event = Event::new("PROMPT_INJECTION_BLOCKED")
                        .str("rule", &rule)
                        .str("consumer", &x.consumer);
                    io.log.event(Level::Warn, &event);
                    let name = format!("cxgate_llm.injections.rule_{}.mode_block", part(&rule));
                    s.count(io, &name, 1);
                }
                return Flow::Reply(x.reply(*problem));
            }
        };
        if !screened.filtered.is_empty() {
            let rules = screened.filtered.join(",");
            let event = Event::new("PROMPT_INJECTION_FILTERED")
                .str("rules", &rules)
                .num("matches", screened.filtered.len() as u64)
                .str("consumer", &x.consumer);
            io.log.event(Level::Warn, &event);
            for r in &screened.filtered {
                let name = format!("cxgate_llm.injections.rule_{}.mode_filter", part(r));
                s.count(io, &name, 1);
            }
        }
        if let Some(body) = &screened.body {
            let replaced = io.stream.replace_request_body(body).is_ok()
                && x.set_request_header(io.stream, "content-length", &body.len().to_string())
                    .is_ok();
            if !replaced {
                let p = x.problem(
                    500,
                    "gateway-error",
                    "Gateway error",
                    "could not rewrite the request body",
                );
                return Flow::Reply(x.reply(p));
            }
            x.body.clone_from(body);
        }
        self.req = Some(screened);
        Flow::Continue
    }

    fn reads_response(&self, _x: &Exchange) -> bool {
        self.req.is_some()
    }

    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let response = x.response.as_ref()?;
        if self.req.is_none() || response.gateway {
            return None;
        }
        self.status = response.status;
        let status = response.status;
        let fallback = self.route.as_ref().is_some_and(|r| r.fallback);
        if fallback && (status == 429 || status >= 500) {
            let reason = match status {
                429 => "rate_limited",
                504 => "timeout",
                _ => "upstream_error",
            };
            return Some(self.fallback_reply(reason, io));
        }
        if !(200..300).contains(&status) {
            return None;
        }
        let ct = response
            .headers
            .get("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            self.answer = Answer::Sse(Box::default());
        } else if ct.contains("json") {
            self.answer = Answer::Json;
        } else {
            return None;
        }
        // The body is rewritten: its length is only known at the end.
        let _ = io.stream.remove_response_header("content-length");
        None
    }

    fn streams_response(&self, _x: &Exchange) -> bool {
        matches!(self.answer, Answer::Sse(_))
    }

    fn on_response_chunk(
        &mut self,
        _x: &mut Exchange,
        io: &mut Io<'_>,
        chunk: &[u8],
        end: bool,
    ) -> Option<Vec<u8>> {
        let s = self.shared.clone();
        let cfg = &s.config;
        let strip_usage = self.req.as_ref().is_some_and(|r| !r.consumer_usage);
        let Answer::Sse(sse) = &mut self.answer else {
            return None;
        };
        let policy = Policy {
            scanner: &cfg.scanner,
            safety: &cfg.safety,
            fallback_text: &cfg.fallback_text,
            strip_usage,
        };
        let mut out = sse.push(&policy, chunk);
        if end {
            out.extend(sse.finish(&policy));
        }
        let first = sse.first_content;
        let unsafe_hit = sse.unsafe_hit.is_some();
        if first {
            self.note_first(io);
        }
        if unsafe_hit && self.fallback.is_none() {
            self.fallback = Some("unsafe_output");
        }
        Some(out)
    }

    fn wants_response_body(&self, _x: &Exchange) -> bool {
        matches!(self.answer, Answer::Json)
    }

    fn on_response_body(
        &mut self,
        _x: &mut Exchange,
        io: &mut Io<'_>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        let s = self.shared.clone();
        let g = chat::guard_json(&s.config, body);
        self.note_first(io);
        self.usage = g.usage;
        self.completion_chars = g.completion_chars;
        self.redacted = g.redacted;
        if g.unsafe_hit.is_some() {
            let reply = self.fallback_reply("unsafe_output", io);
            return Some(reply.body);
        }
        g.body
    }

    fn on_done(&mut self, x: &Exchange, io: &mut Io<'_>) {
        let Some(req) = self.req.take() else {
            return;
        };
        let s = self.shared.clone();
        if let Answer::Sse(sse) = &mut self.answer {
            self.usage = sse.usage;
            self.completion_chars = sse.released_chars;
            self.redacted.append(&mut sse.redacted);
        }
        // An upstream failure answered with the fallback cost no tokens.
        let failed = matches!(self.fallback, Some(r) if r != "unsafe_output");
        let usage = match self.usage {
            _ if failed => Usage::default(),
            Some(u) => u,
            None => Usage::estimate(req.prompt_chars, self.completion_chars),
        };
        let price = s.config.price(&req.model).unwrap_or_default();
        let cost = price.cost_micros(&usage);
        let (model, consumer) = (s.model_label(&req.model), part(&x.consumer));
        let labels = format!("model_{model}.consumer_{consumer}");
        s.count(
            io,
            &format!("cxgate_llm.tokens.kind_prompt.{labels}"),
            usage.prompt,
        );
        s.count(
            io,
            &format!("cxgate_llm.tokens.kind_completion.{labels}"),
            usage.completion,
        );
        s.count(io, &format!("cxgate_llm.cost_micros.{labels}"), cost);
        if usage.estimated {
            s.count(io, "cxgate_llm.estimated_usage", 1);
        }
        for k in &self.redacted {
            s.count(io, &format!("cxgate_llm.redactions.type_{}", k.name()), 1);
        }
        if let Some(reason) = self.fallback {
            s.count(io, &format!("cxgate_llm.fallbacks.reason_{reason}"), 1);
        }
        let now = io.now.ms();
        let latency = now.saturating_sub(self.started_ms);
        let ttft = self.first_ms.map(|t| t.saturating_sub(self.started_ms));
        s.observe(io, "cxgate_llm.latency_ms", latency);
        if let Some(t) = ttft {
            s.observe(io, "cxgate_llm.ttft_ms", t);
            let generating = now.saturating_sub(self.first_ms.unwrap_or(now)) * 1000;
            if let Some(per) = generating.checked_div(usage.completion) {
                s.observe(io, "cxgate_llm.tpot_us", per);
            }
        }
        let mut event = Event::new("LLM_REQUEST")
            .str("model", &req.model)
            .str("consumer", &x.consumer)
            .num("status", u64::from(self.status))
            .num("prompt_tokens", usage.prompt)
            .num("completion_tokens", usage.completion)
            .flag("estimated", usage.estimated)
            .num("cost_micros", cost)
            .num("latency_ms", latency)
            .num("redactions", self.redacted.len() as u64)
            .flag("stream", req.stream);
        if let Some(t) = ttft {
            event = event.num("ttft_ms", t);
        }
        if let Some(r) = self.fallback {
            event = event.str("fallback", r);
        }
        io.log.event(Level::Info, &event);
    }
}
