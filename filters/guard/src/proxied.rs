//! The guard on a route the proxy forwards to the LLM: screens the prompt, redacts and checks
//! the answer (whole or streamed), turns upstream failures into the fallback on routes that
//! ask for it, and meters usage.

use crate::answer::{self, Fallback};
use crate::api::Api;
use crate::meter::Usage;
use crate::pii::Kind;
use crate::placeholder::Placeholders;
use crate::prompt::{self, Screened};
use crate::sse::{Policy, SseGuard};
use crate::verdict;
use crate::worker::Shared;
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
    api: Api,
    /// The route's index in the guard's `routes`.
    route: usize,
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
    pub(crate) fn new(
        shared: Rc<Shared>,
        api: Api,
        route: usize,
        fallback_route: bool,
        now_ms: u64,
    ) -> Self {
        ProxiedStream {
            shared,
            api,
            route,
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

    /// The fallback in the operation's shape; `None` where it has none (embeddings).
    fn fallback_reply(&mut self, reason: &'static str, io: &mut Io<'_>) -> Option<LocalReply> {
        let cfg = &self.shared.config;
        let (model, stream) = self
            .req
            .as_ref()
            .map_or(("unknown", false), |r| (r.model.as_str(), r.stream));
        let id = format!("fallback-{}", io.now.ms());
        let f = Fallback {
            api: self.api,
            model,
            text: &cfg.fallback_text,
            reason,
            id: &id,
            now_s: io.now.ms() / 1000,
        };
        let (ct, body) = f.body(stream)?;
        self.fallback = Some(reason);
        Some(LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), ct.into()),
                ("x-cxgate-fallback".into(), reason.into()),
            ],
            body,
        })
    }

    fn note_first(&mut self, io: &mut Io<'_>) {
        if self.first_ms.is_none() {
            self.first_ms = Some(io.now.ms());
        }
    }

    pub(crate) fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let cfg = &s.config;
        let Some((_, route)) = cfg.routes.get(self.route) else {
            return Flow::Continue;
        };
        let screened = match prompt::screen_request(cfg, self.api, route, &x.body) {
            Ok(v) => v,
            Err((problem, verdict)) => {
                if let Some(v) = verdict {
                    verdict::record(&s, &v, &x.consumer, io);
                }
                return Flow::Reply(x.reply(*problem));
            }
        };
        for v in &screened.filtered {
            verdict::record(&s, v, &x.consumer, io);
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
            if let Some(reply) = self.fallback_reply(reason, io) {
                return Some(reply);
            }
            return None;
        }
        if !(200..300).contains(&status) {
            return None;
        }
        let ct = response
            .headers
            .get("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if self.api == Api::Embeddings {
            // No text comes back: the usage is all the guard reads.
            self.answer = Answer::Json;
        } else if ct.starts_with("text/event-stream") {
            self.answer = Answer::Sse(Box::new(SseGuard::new(self.api)));
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
        let placeholders = self
            .req
            .as_ref()
            .map(|r| &r.placeholders)
            .filter(|p| !p.is_empty());
        let Answer::Sse(sse) = &mut self.answer else {
            return None;
        };
        let policy = Policy {
            scanner: &cfg.scanner,
            safety: &cfg.safety,
            fallback_text: &cfg.fallback_text,
            strip_usage,
            placeholders,
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
        let none = Placeholders::default();
        let restore = self.req.as_ref().map_or(&none, |r| &r.placeholders);
        let g = answer::guard(&s.config, self.api, body, restore);
        self.note_first(io);
        self.usage = g.usage;
        self.completion_chars = g.completion_chars;
        self.redacted.extend(g.redacted);
        if g.unsafe_hit.is_some() {
            return self.fallback_reply("unsafe_output", io).map(|r| r.body);
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
        for k in &req.redacted {
            let name = format!("cxgate_llm.prompt_redactions.type_{}", k.name());
            s.count(io, &name, 1);
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
            .str("api", self.api.name())
            .str("model", &req.model)
            .str("consumer", &x.consumer)
            .num("status", u64::from(self.status))
            .num("prompt_tokens", usage.prompt)
            .num("completion_tokens", usage.completion)
            .flag("estimated", usage.estimated)
            .num("cost_micros", cost)
            .num("latency_ms", latency)
            .num("redactions", self.redacted.len() as u64)
            .num("prompt_redactions", req.redacted.len() as u64)
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
