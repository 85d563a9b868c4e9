//! The guard on a route the proxy forwards to the LLM: screens the prompt, redacts and checks
//! the answer (whole or streamed), turns upstream failures into the fallback on routes that
//! ask for it, and meters usage.

use crate::chat::{self, Screened};
use crate::meter::Usage;
use crate::pii::Kind;
use crate::sse::{Policy, SseGuard};
use crate::stage::{Shared, part};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::{Exchange, Flow, Io};
use std::rc::Rc;

enum Answer {
    None,
    Json,
    Sse(Box<SseGuard>),
}

pub(crate) struct ProxiedStream {
    shared: Rc<Shared>,
    /// Upstream timeouts, 429s and 5xx become the fallback reply.
    fallback_route: bool,
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

impl ProxiedStream {
    pub(crate) fn new(shared: Rc<Shared>, fallback_route: bool, now_ms: u64) -> Self {
        ProxiedStream {
            shared,
            fallback_route,
            started_ms: now_ms,
            req: None,
            answer: Answer::None,
            status: 0,
            first_ms: None,
            usage: None,
            completion_chars: 0,
            redacted: Vec::new(),
            fallback: None,
        }
    }

    pub(crate) fn forwarded(&self) -> bool {
        self.req.is_some()
    }
    pub(crate) fn streams(&self) -> bool {
        matches!(self.answer, Answer::Sse(_))
    }
    pub(crate) fn wants_body(&self) -> bool {
        matches!(self.answer, Answer::Json)
    }

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

    pub(crate) fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
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

    pub(crate) fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let response = x.response.as_ref()?;
        if self.req.is_none() || response.gateway {
            return None;
        }
        self.status = response.status;
        let status = response.status;
        if self.fallback_route && (status == 429 || status >= 500) {
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

    pub(crate) fn on_response_chunk(
        &mut self,
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

    pub(crate) fn on_response_body(&mut self, io: &mut Io<'_>, body: &[u8]) -> Option<Vec<u8>> {
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

    pub(crate) fn on_done(&mut self, x: &Exchange, io: &mut Io<'_>) {
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
        let cost = s.meter(io, &req.model, &x.consumer, &usage);
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
