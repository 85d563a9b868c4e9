//! One bot webhook: read the conversation (CXone's session history for the seed shape,
//! `botSessionState` for Custom Exchange), call the LLM with streaming, reassemble, redact
//! and check the text, and answer in the shape the webhook came in. Every failure of the
//! model, the history or the input ends in the configured fallback, within the budget:
//! CXone never gets a bare 5xx.

use super::{Caller, Pending, after_failure, begin_wait, timer_answered};
use crate::bot::{self, BotConfig, Exchange as Cx, Metrics, Turn, Webhook};
use crate::completion::{self, Message};
use crate::config::RouteKind;
use crate::meter::Usage;
use crate::pii::Kind;
use crate::retry::{self, Spent};
use crate::worker::{Shared, part};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::{CallAnswer, Exchange, Flow, Io};
use std::rc::Rc;

enum Shape {
    Seed { bot_id: String, session_id: String },
    Exchange(Box<Cx>),
}

pub(crate) struct BotRun {
    shared: Rc<Shared>,
    route: usize,
    started_ms: u64,
    deadline_ms: u64,
    shape: Option<Shape>,
    turns: Vec<Turn>,
    page: u32,
    pending: Pending,
    tries: u32,
    waited_ms: u64,
    prompt_chars: u64,
    usage: Option<Usage>,
    redacted: Vec<Kind>,
    /// Why the fallback was sent, once it was.
    reason: Option<&'static str>,
    /// The fallback reply for an LLM failure that goes through the response phase (so the
    /// breaker sees the failure) and is answered in its place.
    replace: Option<LocalReply>,
    status: u16,
}

impl BotRun {
    pub(crate) fn new(shared: Rc<Shared>, route: usize, now_ms: u64) -> Self {
        BotRun {
            shared,
            route,
            started_ms: now_ms,
            deadline_ms: now_ms,
            shape: None,
            turns: Vec::new(),
            page: 0,
            pending: Pending::None,
            tries: 0,
            waited_ms: 0,
            prompt_chars: 0,
            usage: None,
            redacted: Vec::new(),
            reason: None,
            replace: None,
            status: 0,
        }
    }

    fn config(&self) -> Option<&BotConfig> {
        match &self.shared.config.routes.get(self.route)?.1.kind {
            RouteKind::Bot(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) fn start(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let Some(cfg) = self.config() else {
            return Flow::Reply(x.reply(x.problem(
                500,
                "gateway-error",
                "Gateway error",
                "no bot config",
            )));
        };
        self.deadline_ms = self.started_ms.saturating_add(cfg.budget_ms);
        let v = match x.json(&s.model) {
            Ok(v) => v.clone(),
            Err(p) => return Flow::Reply(x.reply(*p)),
        };
        let Some(seed) = bot::shape_of(&v) else {
            let p = x
                .problem(
                    400,
                    "invalid-request",
                    "Invalid request",
                    "the body is neither a {botId, sessionId} webhook nor a CXone Custom Exchange request",
                )
                .with_error("", "unknown webhook shape");
            return Flow::Reply(x.reply(p));
        };
        let webhook = match bot::parse(&v) {
            Ok(w) => w,
            Err(bad) => {
                let event = Event::new("BOT_WEBHOOK_INVALID")
                    .str("pointer", bad.pointer)
                    .str("reason", bad.message);
                io.log.event(Level::Warn, &event);
                self.shape = Some(if seed {
                    Shape::Seed {
                        bot_id: String::new(),
                        session_id: String::new(),
                    }
                } else {
                    Shape::Exchange(Box::default())
                });
                return self.fallback("malformed_input", None, io);
            }
        };
        match webhook {
            Webhook::Seed { bot_id, session_id } => {
                self.shape = Some(Shape::Seed { bot_id, session_id });
                if self.config().is_some_and(|c| c.history.is_none()) {
                    return self.fallback("history_not_configured", None, io);
                }
                self.history(x, io)
            }
            Webhook::Exchange(cx) => {
                let quiet = cx.user_input.trim().is_empty()
                    || cx.input_type.eq_ignore_ascii_case("NO_INPUT");
                let text = cx.user_input.clone();
                self.turns = cx.turns.clone();
                self.shape = Some(Shape::Exchange(Box::new(cx)));
                if quiet {
                    return self.reprompt();
                }
                match screen(&s, self.route, &text, x, io) {
                    Some(clean) => self.turns.push(Turn {
                        user: true,
                        text: clean,
                    }),
                    None => return self.fallback("prompt_rejected", None, io),
                }
                self.call(x, io)
            }
        }
    }

    /// Reads the next page of the seed shape's session history from CXone.
    fn history(&mut self, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let (Some(h), Some(Shape::Seed { bot_id, session_id })) =
            (self.config().and_then(|c| c.history.clone()), &self.shape)
        else {
            return self.fallback("history_not_configured", None, io);
        };
        let left = self.deadline_ms.saturating_sub(io.now.ms());
        let Some(caller) = Caller::of(&s, x) else {
            return self.fallback("history_unavailable", None, io);
        };
        self.page += 1;
        let path = format!(
            "{}?pageSize={}&pageNumber={}",
            h.path
                .replace("{botId}", bot_id)
                .replace("{sessionId}", session_id),
            h.page_size,
            self.page
        );
        let headers = vec![("accept", "application/json")];
        match caller.call(io, &h.endpoint, ("GET", &path), headers, None, left.max(1)) {
            Some(token) => {
                self.pending = Pending::History(token);
                Flow::Wait(token)
            }
            None => self.fallback("history_unavailable", None, io),
        }
    }

    fn call(&mut self, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let left = self.deadline_ms.saturating_sub(io.now.ms());
        let (Some(cfg), Some(caller)) = (self.config(), Caller::of(&s, x)) else {
            return self.fallback("upstream_error", None, io);
        };
        if left == 0 {
            return self.fallback("timeout", None, io);
        }
        let mut messages: Vec<Message> = bot::messages(&cfg.system, &self.turns, cfg.max_turns);
        let redact_prompts = s
            .config
            .routes
            .get(self.route)
            .is_some_and(|(_, r)| r.redact_prompts);
        if redact_prompts {
            // The caller's words and the history go to the model redacted; the session state
            // the platform keeps is left as the platform sent it.
            for m in messages.iter_mut().filter(|m| m.role != "system") {
                let (clean, _) = s.config.scanner.redact(&m.content);
                m.content = clean;
            }
        }
        let model = cfg.call.clone();
        self.prompt_chars = completion::prompt_chars(&messages);
        self.tries += 1;
        match caller.model(io, &model, &messages, true, left) {
            Some(token) => {
                self.pending = Pending::Model(token);
                Flow::Wait(token)
            }
            None => self.fallback("upstream_error", None, io),
        }
    }

    pub(crate) fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &mut Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        match self.pending {
            Pending::History(t) if t == token => {
                self.pending = Pending::None;
                self.history_answered(answer, x, io)
            }
            Pending::Model(t) if t == token => {
                self.pending = Pending::None;
                self.answered(answer, x, io)
            }
            Pending::Wait {
                token: t,
                wake_ms,
                rewaits,
            } if t == token => {
                self.pending = Pending::None;
                let s = self.shared.clone();
                match timer_answered(&s, x, io, (wake_ms, rewaits), &mut self.pending) {
                    Some(flow) => flow,
                    None => self.call(x, io),
                }
            }
            _ => self.fallback("upstream_error", None, io),
        }
    }

    fn history_answered(&mut self, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let page = match answer.status {
            Some(200) => bot::history_page(&answer.body),
            _ => None,
        };
        let Some((turns, page_count)) = page else {
            let event = Event::new("BOT_HISTORY_UNAVAILABLE")
                .num("status", u64::from(answer.status.unwrap_or(0)));
            io.log.event(Level::Warn, &event);
            return self.fallback("history_unavailable", None, io);
        };
        let (max_turns, max_pages) = self.config().map_or((10, 1), |c| {
            (c.max_turns, c.history.as_ref().map_or(1, |h| h.max_pages))
        });
        self.turns.extend(turns);
        let excess = self.turns.len().saturating_sub(max_turns);
        self.turns.drain(..excess);
        if page_count.is_some_and(|n| n > u64::from(self.page)) && self.page < max_pages {
            return self.history(x, io);
        }
        // The newest thing the caller said is screened like any prompt.
        let s = self.shared.clone();
        if let Some(last) = self.turns.iter_mut().rev().find(|t| t.user) {
            match screen(&s, self.route, &last.text, x, io) {
                Some(clean) => last.text = clean,
                None => return self.fallback("prompt_rejected", None, io),
            }
        }
        if !self.turns.iter().any(|t| t.user) {
            return self.fallback("no_user_message", None, io);
        }
        self.call(x, io)
    }

    /// The model answered (or the call failed).
    fn answered(&mut self, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        match answer.status {
            Some(200..=299) => {}
            status if retry::retriable(status) => return self.retry(answer, x, io),
            None => return self.retry(answer, x, io),
            Some(_) => return self.fallback("upstream_rejected", Some(answer), io),
        }
        let json = answer.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let (text, usage) = if json {
            match completion::read_answer(&answer.body) {
                Ok(a) => (a.text, a.usage),
                Err(_) => (String::new(), None),
            }
        } else {
            let a = completion::assemble_sse(&answer.body);
            (a.text, a.usage)
        };
        if text.trim().is_empty() {
            return self.fallback("empty_answer", Some(answer), io);
        }
        self.usage =
            Some(usage.unwrap_or_else(|| {
                Usage::estimate(self.prompt_chars, text.chars().count() as u64)
            }));
        let s = self.shared.clone();
        let (clean, kinds) = s.config.scanner.redact(&text);
        self.redacted = kinds;
        if s.config.safety.check(&clean).is_some() {
            // The model answered; what it said is not sent. Not an outage for the breaker.
            let reply = self.fallback_reply("unsafe_output", io);
            return answered_with(200, &[], reply.body);
        }
        self.turns.push(Turn {
            user: false,
            text: clean.clone(),
        });
        let body = self.reply_body(&clean, None, io);
        self.status = 200;
        answered_with(200, &[], body)
    }

    fn retry(&mut self, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let Some(policy) = self.config().map(|c| c.retry) else {
            return self.fallback("upstream_error", Some(answer), io);
        };
        let spent = Spent {
            tries: self.tries,
            waited_ms: self.waited_ms,
            left_ms: self.deadline_ms.saturating_sub(io.now.ms()),
        };
        let Ok(wait) = after_failure(&policy, answer, spent, io) else {
            let reason = match answer.status {
                Some(429) => "rate_limited",
                None if io.now.ms() >= self.deadline_ms => "timeout",
                None => "upstream_unreachable",
                Some(_) => "upstream_error",
            };
            return self.fallback(reason, Some(answer), io);
        };
        self.waited_ms += wait;
        let s = self.shared.clone();
        match begin_wait(&s, x, io, wait, 0, &mut self.pending) {
            Some(flow) => flow,
            None => self.call(x, io),
        }
    }

    fn metrics(&self, io: &mut Io<'_>) -> Metrics {
        let (model, temperature) = self.config().map_or((String::new(), 0.0), |c| {
            (c.call.model.clone(), c.call.temperature)
        });
        let usage = self.usage.unwrap_or_default();
        Metrics {
            cost_micros: self.shared.cost(&model, &usage),
            usage,
            latency_ms: io.now.ms().saturating_sub(self.started_ms),
            model,
            temperature,
        }
    }

    /// The reply in the webhook's shape: the model's text, or the fallback with its reason.
    fn reply_body(&self, text: &str, reason: Option<&str>, io: &mut Io<'_>) -> Vec<u8> {
        match &self.shape {
            Some(Shape::Exchange(cx)) => {
                let max = self.config().map_or(8_192, |c| c.max_state_bytes);
                let state = bot::session_state(&cx.other_state, &self.turns, max);
                bot::exchange_reply(text, reason, &cx.user_input, &state, &cx.custom_payload)
            }
            _ => bot::seed_reply(text, reason, &self.metrics(io)),
        }
    }

    fn fallback_reply(&mut self, reason: &'static str, io: &mut Io<'_>) -> LocalReply {
        let text = self.shared.config.fallback_text.clone();
        let body = self.reply_body(&text, Some(reason), io);
        self.reason = Some(reason);
        self.status = 200;
        LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-cxgate-fallback".into(), reason.into()),
            ],
            body,
        }
    }

    /// Answers with the fallback. A failure of the LLM's (`from` its answer) goes through the
    /// response phase first, so the breaker counts it; the fallback then replaces it.
    fn fallback(
        &mut self,
        reason: &'static str,
        from: Option<&CallAnswer>,
        io: &mut Io<'_>,
    ) -> Flow {
        let reply = self.fallback_reply(reason, io);
        match from {
            None => Flow::Reply(reply),
            Some(a) => {
                let seen = match a.status {
                    Some(s) if s >= 400 => s,
                    Some(_) => 502,
                    None => 504,
                };
                let kept: Vec<(String, String)> = a
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                    .cloned()
                    .collect();
                let body = reply.body.clone();
                self.replace = Some(reply);
                answered_with(seen, &kept, body)
            }
        }
    }

    /// Custom Exchange with no input: ask again, no model call.
    fn reprompt(&mut self) -> Flow {
        let Some(Shape::Exchange(cx)) = &self.shape else {
            return Flow::Continue;
        };
        let (text, max) = self.config().map_or((String::new(), 8_192), |c| {
            (c.reprompt_text.clone(), c.max_state_bytes)
        });
        let state = bot::session_state(&cx.other_state, &self.turns, max);
        let body = bot::exchange_reply(&text, None, &cx.user_input, &state, &cx.custom_payload);
        self.status = 200;
        Flow::Reply(LocalReply {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    /// The response phase over the model's answer: a failure is replaced by the fallback.
    pub(crate) fn on_response(&mut self, _x: &Exchange) -> Option<LocalReply> {
        self.replace.take()
    }

    /// A later stage answered (the breaker is open): CXone still gets the fallback. The body
    /// was not read yet, so the reply carries both shapes' fields.
    pub(crate) fn on_reply(&mut self, _x: &Exchange, io: &mut Io<'_>, reply: &mut LocalReply) {
        let text = self.shared.config.fallback_text.clone();
        let reason = "unavailable";
        self.reason = Some(reason);
        self.status = 200;
        *reply = LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-cxgate-fallback".into(), reason.into()),
            ],
            body: bot::either_reply(&text, reason, &self.metrics(io)),
        };
    }

    pub(crate) fn on_done(&mut self, x: &Exchange, io: &mut Io<'_>) {
        if self.status == 0 {
            return;
        }
        let s = self.shared.clone();
        let m = self.metrics(io);
        if let Some(u) = &self.usage {
            s.meter(io, &m.model, &x.consumer, u);
        }
        for k in &self.redacted {
            s.count(io, &format!("cxgate_llm.redactions.type_{}", k.name()), 1);
        }
        if let Some(r) = self.reason {
            s.count(io, &format!("cxgate_llm.fallbacks.reason_{}", part(r)), 1);
        }
        s.observe(io, "cxgate_llm.latency_ms", m.latency_ms);
        let shape = match self.shape {
            Some(Shape::Exchange(_)) => "custom_exchange",
            _ => "seed",
        };
        let mut event = Event::new("LLM_BOT")
            .str("shape", shape)
            .str("consumer", &x.consumer)
            .str("model", &m.model)
            .num("prompt_tokens", m.usage.prompt)
            .num("completion_tokens", m.usage.completion)
            .num("latency_ms", m.latency_ms)
            .num("turns", self.turns.len() as u64)
            .num("redactions", self.redacted.len() as u64);
        if let Some(r) = self.reason {
            event = event.str("fallback", r);
        }
        io.log.event(Level::Info, &event);
    }
}

fn answered_with(status: u16, extra: &[(String, String)], body: Vec<u8>) -> Flow {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    headers.extend(extra.iter().cloned());
    Flow::Answered(CallAnswer {
        status: Some(status),
        headers,
        body,
    })
}

/// The caller's words through prompt screening; `None` when block mode refuses them.
fn screen(s: &Shared, route: usize, text: &str, x: &Exchange, io: &mut Io<'_>) -> Option<String> {
    super::chain::screen(s, route, text, x, io).ok()
}
