//! One request through the chain: screen the input, call the extraction model, parse its
//! JSON, call the specialist with it, check its fields, and answer with both. Failed calls
//! are retried as [`crate::retry`] decides, waiting on the timer; the whole chain keeps to the
//! route's `timeout_ms`.

use super::{Caller, Pending, after_failure, begin_wait, retry_after_s, timer_answered};
use crate::chain::{self, ChainConfig, ChainError, EXTRACTION, INPUT, Meta, Phase, StageUsage};
use crate::completion;
use crate::config::RouteKind;
use crate::extract;
use crate::meter::Usage;
use crate::pii::Kind;
use crate::retry::{self, GiveUp, Spent};
use crate::verdict::{self, Verdict, judge};
use crate::worker::{Shared, part};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_model::{CallAnswer, Exchange, Flow, Io};
use serde_json::{Map, Value};
use std::rc::Rc;

pub(crate) struct ChainRun {
    shared: Rc<Shared>,
    route: usize,
    started_ms: u64,
    deadline_ms: u64,
    pipeline: usize,
    phase: Phase,
    input: String,
    request_id: String,
    pending: Pending,
    /// Tries of the current stage's call.
    tries: u32,
    /// Time waited between tries, for the whole chain.
    waited_ms: u64,
    retries: u64,
    prompt_chars: u64,
    extraction: Option<Map<String, Value>>,
    usage: Vec<(Phase, StageUsage)>,
    /// `success` or the error code, once decided.
    outcome: Option<&'static str>,
    status: u16,
    /// PII replaced in what the models wrote, and in the input (`redact_prompts`).
    redacted: Vec<Kind>,
    prompt_redacted: Vec<Kind>,
}

impl ChainRun {
    pub(crate) fn new(shared: Rc<Shared>, route: usize, now_ms: u64) -> Self {
        ChainRun {
            shared,
            route,
            started_ms: now_ms,
            deadline_ms: now_ms,
            pipeline: 0,
            phase: Phase::Extraction,
            input: String::new(),
            request_id: String::new(),
            pending: Pending::None,
            tries: 0,
            waited_ms: 0,
            retries: 0,
            prompt_chars: 0,
            extraction: None,
            usage: Vec::new(),
            outcome: None,
            status: 0,
            redacted: Vec::new(),
            prompt_redacted: Vec::new(),
        }
    }

    fn config(&self) -> Option<&ChainConfig> {
        match &self.shared.config.routes.get(self.route)?.1.kind {
            RouteKind::Chain(c) => Some(c),
            _ => None,
        }
    }

    /// The request body arrived: check it and make the first call.
    pub(crate) fn start(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        self.request_id = cxgate_kit::ids::random_uuid(&mut *io.entropy)
            .unwrap_or_else(|_| format!("req-{}", io.now.ms()));
        let Some((timeout_ms, max_chars)) =
            self.config().map(|c| (c.timeout_ms, c.max_input_chars))
        else {
            let e = ChainError::new(500, "gateway_error", "failed", "no chain".into());
            return self.fail(e, x, io, None);
        };
        self.deadline_ms = self.started_ms.saturating_add(timeout_ms);
        let parsed = match x.json(&s.model) {
            Ok(v) => chain::parse_input(v, max_chars),
            // Its own status: 413 too large, 415 not JSON, 400 malformed.
            Err(p) => {
                let mut e = ChainError::bad_input("", &p.detail);
                e.status = p.status;
                Err(Box::new(e))
            }
        };
        let input = match parsed {
            Ok(i) => i,
            Err(e) => return self.fail(*e, x, io, None),
        };
        let Some((index, _)) = self
            .config()
            .and_then(|c| c.pipeline(input.pipeline.as_deref()))
        else {
            let names: Vec<&str> = self
                .config()
                .map(|c| c.pipelines.iter().map(|p| p.name.as_str()).collect())
                .unwrap_or_default();
            let e = ChainError::bad_input(
                "/pipeline",
                &format!("unknown pipeline: use one of {names:?}"),
            );
            return self.fail(e, x, io, None);
        };
        self.pipeline = index;
        match screen(&s, self.route, &input.input, x, io) {
            Ok(text) => self.input = text,
            Err(e) => return self.fail(*e, x, io, None),
        }
        let redact_prompts = s
            .config
            .routes
            .get(self.route)
            .is_some_and(|(_, r)| r.redact_prompts);
        if redact_prompts {
            let (clean, kinds) = s.config.scanner.redact(&self.input);
            self.input = clean;
            self.prompt_redacted = kinds;
        }
        self.call(x, io)
    }

    /// Calls the current stage's model.
    fn call(&mut self, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let now = io.now.ms();
        let left = self.deadline_ms.saturating_sub(now);
        if left == 0 {
            return self.timed_out(x, io, None);
        }
        let Some(caller) = Caller::of(&s, x) else {
            let e = ChainError::new(500, "gateway_error", "failed", "no calls.llm".into());
            return self.fail(e, x, io, None);
        };
        let cfg = s.clone();
        let p = match &cfg.config.routes.get(self.route).map(|r| &r.1.kind) {
            Some(RouteKind::Chain(c)) => c.pipelines.get(self.pipeline),
            _ => None,
        };
        let Some(p) = p else {
            let e = ChainError::new(500, "gateway_error", "failed", "no pipeline".into());
            return self.fail(e, x, io, None);
        };
        let (prompt, messages) = match self.phase {
            Phase::Extraction => (&p.extraction, p.extraction.messages(INPUT, &self.input)),
            Phase::Specialization => {
                let json = Value::Object(self.extraction.clone().unwrap_or_default()).to_string();
                (&p.specialist, p.specialist.messages(EXTRACTION, &json))
            }
        };
        self.prompt_chars = completion::prompt_chars(&messages);
        self.tries += 1;
        match caller.model(io, &prompt.call, &messages, false, left) {
            Some(token) => {
                self.pending = Pending::Model(token);
                Flow::Wait(token)
            }
            None => {
                let e = ChainError::new(
                    502,
                    "upstream_error",
                    self.phase.as_str(),
                    "the proxy refused the call to the LLM (is calls.llm.upstream a cluster it knows?)".into(),
                );
                self.fail(e, x, io, None)
            }
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
            _ => {
                let e = ChainError::new(
                    500,
                    "gateway_error",
                    "failed",
                    "unexpected call answer".into(),
                );
                self.fail(e, x, io, None)
            }
        }
    }

    /// The model answered (or the call failed).
    fn answered(&mut self, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let stage = self.phase.as_str();
        match answer.status {
            Some(200..=299) => {}
            status if retry::retriable(status) => return self.retry(answer, x, io),
            None => return self.retry(answer, x, io),
            Some(s) => {
                let e = ChainError::new(
                    502,
                    "upstream_rejected",
                    stage,
                    format!("the LLM refused the {stage} call with {s}"),
                );
                return self.fail(e, x, io, Some(answer));
            }
        }
        let read = completion::read_answer(&answer.body);
        let Ok(mut a) = read else {
            let e = ChainError::new(
                502,
                "invalid_response",
                stage,
                "the LLM's answer is not a chat completion with text".into(),
            );
            return self.fail(e, x, io, None);
        };
        let usage = a
            .usage
            .unwrap_or_else(|| Usage::estimate(self.prompt_chars, a.text.chars().count() as u64));
        self.record(usage);
        // What a model wrote is redacted and checked before anything reads it: the
        // specialist never sees PII the extraction echoed, and the consumer never gets it.
        let (clean, kinds) = self.shared.config.scanner.redact(&a.text);
        self.redacted.extend(kinds);
        if let Some(kw) = self.shared.config.safety.check(&clean) {
            let e = ChainError::new(
                502,
                "unsafe_output",
                stage,
                format!("the {stage} model's answer failed the safety check ({kw:?})"),
            );
            return self.fail(e, x, io, None);
        }
        a.text = clean;
        let required: Vec<String> = match self.phase {
            Phase::Extraction => Vec::new(),
            Phase::Specialization => self
                .config()
                .and_then(|c| c.pipelines.get(self.pipeline))
                .map(|p| p.required.clone())
                .unwrap_or_default(),
        };
        match chain::stage_output(self.phase, &a.text, &required) {
            Err(e) => {
                let mut e = *e;
                // What the model wrote (redacted above) goes back cut; it is never logged.
                e.output = e
                    .output
                    .map(|o| extract::cut(&o, chain::OUTPUT_EXCERPT).to_string());
                self.fail(e, x, io, None)
            }
            Ok(obj) if self.phase == Phase::Extraction => {
                self.extraction = Some(obj);
                self.phase = Phase::Specialization;
                self.tries = 0;
                self.call(x, io)
            }
            Ok(specialization) => self.succeed(&specialization, x, io),
        }
    }

    fn record(&mut self, usage: Usage) {
        let model = self
            .config()
            .and_then(|c| c.pipelines.get(self.pipeline))
            .map(|p| match self.phase {
                Phase::Extraction => p.extraction.call.model.clone(),
                Phase::Specialization => p.specialist.call.model.clone(),
            })
            .unwrap_or_default();
        let cost = self.shared.cost(&model, &usage);
        self.usage.push((
            self.phase,
            StageUsage {
                model,
                attempts: self.tries,
                usage,
                cost_micros: cost,
            },
        ));
    }

    /// A 429, a 5xx or no answer: wait and try again, or give up.
    fn retry(&mut self, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let Some(policy) = self.config().map(|c| c.retry) else {
            return self.give_up(GiveUp::Attempts, answer, x, io);
        };
        let spent = Spent {
            tries: self.tries,
            waited_ms: self.waited_ms,
            left_ms: self.deadline_ms.saturating_sub(io.now.ms()),
        };
        let wait = match after_failure(&policy, answer, spent, io) {
            Ok(ms) => ms,
            Err(g) => return self.give_up(g, answer, x, io),
        };
        self.waited_ms += wait;
        self.retries += 1;
        match begin_wait(&s, x, io, wait, 0, &mut self.pending) {
            Some(flow) => flow,
            // No timer could be called: try again at once rather than never.
            None => {
                let event = Event::new("LLM_RETRY_TIMER_UNAVAILABLE").num("wait_ms", wait);
                io.log.event(Level::Warn, &event);
                self.call(x, io)
            }
        }
    }

    fn give_up(&mut self, why: GiveUp, answer: &CallAnswer, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let stage = self.phase.as_str();
        if answer.status.is_none() && (why == GiveUp::Deadline || io.now.ms() >= self.deadline_ms) {
            return self.timed_out(x, io, Some(answer));
        }
        let what = match answer.status {
            Some(st) => format!("answered {st}"),
            None => "did not answer".into(),
        };
        let mut e = ChainError::new(
            502,
            "upstream_error",
            stage,
            format!(
                "the LLM {what} to the {stage} call after {} tries (stopped by {})",
                self.tries,
                why.as_str()
            ),
        );
        e.retry_after_s = retry_after_s(answer, io.now.ms());
        self.fail(e, x, io, Some(answer))
    }

    fn timed_out(&mut self, x: &Exchange, io: &mut Io<'_>, answer: Option<&CallAnswer>) -> Flow {
        let stage = self.phase.as_str();
        let timeout = self.config().map_or(0, |c| c.timeout_ms);
        let e = ChainError::new(
            504,
            "timeout",
            stage,
            format!("the chain did not finish within its {timeout} ms (in {stage})"),
        );
        self.fail(e, x, io, answer)
    }

    fn meta<'a>(&'a self, x: &'a Exchange, stamp: &'a str, stage: &'a str, now: u64) -> Meta<'a> {
        Meta {
            timestamp: stamp,
            stage,
            request_id: &self.request_id,
            pipeline: self
                .config()
                .and_then(|c| c.pipelines.get(self.pipeline))
                .map_or("", |p| p.name.as_str()),
            trace_id: x.trace_id.as_deref(),
            latency_ms: now.saturating_sub(self.started_ms),
            usage: &self.usage,
        }
    }

    fn succeed(
        &mut self,
        specialization: &Map<String, Value>,
        x: &Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        let now = io.now.ms();
        let stamp = cxgate_kit::time::rfc3339_ms(now);
        let extraction = self.extraction.clone().unwrap_or_default();
        let body = chain::success_body(
            &extraction,
            specialization,
            &self.meta(x, &stamp, "complete", now),
        );
        self.outcome = Some("success");
        self.status = 200;
        // The model's answer stands for the platform's: the breaker counts it.
        Flow::Answered(CallAnswer {
            status: Some(200),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }

    /// Ends the chain with the error shape. A failure of the LLM's own (`from` its answer)
    /// goes through the response phase as the platform's answer, so the breaker counts it;
    /// the gateway's own findings (bad input, unusable JSON) are the gateway's replies.
    fn fail(
        &mut self,
        e: ChainError,
        x: &Exchange,
        io: &mut Io<'_>,
        from: Option<&CallAnswer>,
    ) -> Flow {
        let now = io.now.ms();
        let stamp = cxgate_kit::time::rfc3339_ms(now);
        let body = chain::error_body(&e, &self.meta(x, &stamp, e.stage, now));
        self.outcome = Some(e.code);
        self.status = e.status;
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(s) = e.retry_after_s {
            headers.push(("retry-after".into(), s.to_string()));
        }
        match from {
            Some(_) => Flow::Answered(CallAnswer {
                status: Some(e.status),
                headers,
                body,
            }),
            None => Flow::Reply(LocalReply {
                status: u32::from(e.status),
                headers,
                body,
            }),
        }
    }

    /// A later stage answered (the breaker is open): in the chain's shape, not a problem.
    pub(crate) fn on_reply(&mut self, x: &Exchange, io: &mut Io<'_>, reply: &mut LocalReply) {
        if self.request_id.is_empty() {
            self.request_id = cxgate_kit::ids::random_uuid(&mut *io.entropy).unwrap_or_default();
        }
        let status = u16::try_from(reply.status).unwrap_or(503);
        let detail = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "the LLM is unavailable".into());
        let e = ChainError::new(status, "unavailable", "failed", detail);
        let now = io.now.ms();
        let stamp = cxgate_kit::time::rfc3339_ms(now);
        reply.body = chain::error_body(&e, &self.meta(x, &stamp, "failed", now));
        reply
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        reply
            .headers
            .insert(0, ("content-type".into(), "application/json".into()));
        self.outcome = Some("unavailable");
        self.status = status;
    }

    pub(crate) fn on_done(&mut self, x: &Exchange, io: &mut Io<'_>) {
        let Some(outcome) = self.outcome else {
            return;
        };
        let s = self.shared.clone();
        let mut event = Event::new("LLM_CHAIN")
            .str("request_id", &self.request_id)
            .str("consumer", &x.consumer)
            .str("outcome", outcome)
            .num("status", u64::from(self.status))
            .num("retries", self.retries)
            .num("latency_ms", io.now.ms().saturating_sub(self.started_ms));
        if let Some(p) = self.config().and_then(|c| c.pipelines.get(self.pipeline)) {
            event = event.str("pipeline", &p.name);
        }
        for (phase, u) in &self.usage {
            s.meter(io, &u.model, &x.consumer, &u.usage);
            event = event
                .num(&format!("{}_tokens", phase.as_str()), u.usage.total())
                .num(
                    &format!("{}_attempts", phase.as_str()),
                    u64::from(u.attempts),
                );
        }
        s.count(
            io,
            &format!("cxgate_llm.chains.outcome_{}", part(outcome)),
            1,
        );
        for k in &self.redacted {
            s.count(io, &format!("cxgate_llm.redactions.type_{}", k.name()), 1);
        }
        for k in &self.prompt_redacted {
            let name = format!("cxgate_llm.prompt_redactions.type_{}", k.name());
            s.count(io, &name, 1);
        }
        if !self.redacted.is_empty() {
            event = event.num("redactions", self.redacted.len() as u64);
        }
        if self.retries > 0 {
            s.count(io, "cxgate_llm.retries", self.retries);
        }
        let level = if outcome == "success" {
            Level::Info
        } else {
            Level::Warn
        };
        io.log.event(level, &event);
    }
}

/// The consumer's input through prompt screening (the deny phrases and the detector, with
/// the route's thresholds): filtered (marker in place of each match) or refused.
pub(crate) fn screen(
    s: &Shared,
    route: usize,
    text: &str,
    x: &Exchange,
    io: &mut Io<'_>,
) -> Result<String, Box<ChainError>> {
    let detector = s.config.routes.get(route).and_then(|(_, r)| r.detector);
    let v = judge(&s.config, detector, text);
    verdict::record(s, &v, &x.consumer, io);
    match v {
        Verdict::Clean => Ok(text.to_string()),
        Verdict::Filtered { text, .. } => Ok(text),
        Verdict::Blocked { rule, .. } => {
            let mut e = ChainError::bad_input("/input", &format!("matches deny rule {rule}"));
            e.code = "prompt_rejected";
            e.message = if rule == "detector" {
                "the input reads as an injection attempt".into()
            } else {
                format!("the input matches the deny rule {rule:?}")
            };
            Err(Box::new(e))
        }
    }
}
