//! Requests the guard answers itself by calling the LLM: the chain ([`chain`]) and the bot
//! webhooks ([`bot`]). This module holds what both need: the calls (model, timer, history)
//! and the retry wait, which in proxy-wasm is a call that answers when the wait is over.

pub mod bot;
pub mod chain;

use crate::completion::{self, Message, ModelCall};
use crate::endpoint::{Calls, Endpoint};
use crate::retry::{self, GiveUp, RetryPolicy, Spent};
use crate::worker::Shared;
use cxgate_kit::credential::Unavailable;
use cxgate_kit::host::Callout;
use cxgate_kit::log::{Event, Level};
use cxgate_model::{CallAnswer, Exchange, Flow, Io};

/// Asked of the timer past each wait: Envoy arms it on its event loop's cached clock, so it
/// can answer a millisecond or two before the deadline (CI saw a retry 1,999.5 ms after a
/// `Retry-After: 2`), and a platform that counts exactly must never see the retry early.
const TIMER_MARGIN_MS: u64 = 10;
/// Times an early timer answer is waited out again before the wait counts as done.
const MAX_REWAITS: u8 = 4;
/// The timer call's own timeout past its wait: the proxy ends it even if the timer hangs.
const TIMER_GRACE_MS: u64 = 2_000;

/// The header the timer holds a request for (Envoy's fault filter reads it as milliseconds).
pub const DELAY_HEADER: &str = "x-envoy-fault-delay-request";

/// The call a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    None,
    Model(u32),
    History(u32),
    /// A retry wait, over at `wake_ms`.
    Wait {
        token: u32,
        wake_ms: u64,
        rewaits: u8,
    },
}

/// Calls made for one request: they carry its request id and trace.
pub(crate) struct Caller<'a> {
    pub x: &'a Exchange,
    pub trace_header: &'a str,
    pub calls: &'a Calls,
    pub sidecar_key: Option<&'a str>,
}

impl<'a> Caller<'a> {
    /// The caller for a request; `None` when the section names no calls.
    pub(crate) fn of(shared: &'a Shared, x: &'a Exchange) -> Option<Caller<'a>> {
        Some(Caller {
            x,
            trace_header: &shared.model.trace_header,
            calls: shared.config.calls.as_ref()?,
            sidecar_key: shared.sidecar_key.as_deref(),
        })
    }

    /// A call to an endpoint; `None` when it cannot be made (no token to send, or the proxy
    /// refused it).
    pub(crate) fn call(
        &self,
        io: &mut Io<'_>,
        to: &Endpoint,
        (method, path): (&str, &str),
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
        timeout_ms: u64,
    ) -> Option<u32> {
        let credential = match &to.credential {
            None => None,
            Some(c) => match c.header(&*io.store, io.now.ms()) {
                Ok(h) => Some(h),
                Err(why) => {
                    let event = Event::new("LLM_CALL_NO_TOKEN")
                        .str("platform", &c.platform)
                        .flag("expired", why == Unavailable::Expired);
                    io.log.event(Level::Warn, &event);
                    return None;
                }
            },
        };
        let mut all: Vec<(&str, &str)> = headers;
        for name in ["x-request-id", "traceparent", self.trace_header] {
            if let Some(v) = self.x.header(name) {
                all.push((name, v));
            }
        }
        if let Some((k, v)) = &credential {
            all.push((k.as_str(), v.as_str()));
        }
        if to.sidecar_key
            && let Some(k) = self.sidecar_key
        {
            all.push((cxgate_kit::sync::KEY_HEADER, k));
        }
        io.callout
            .dispatch(&Callout {
                upstream: &to.upstream,
                method,
                path,
                authority: &to.authority,
                scheme: &to.scheme,
                headers: all,
                body,
                timeout_ms: u32::try_from(timeout_ms).unwrap_or(u32::MAX),
            })
            .ok()
    }

    /// A chat completion call to the configured LLM.
    pub(crate) fn model(
        &self,
        io: &mut Io<'_>,
        model: &ModelCall,
        messages: &[Message],
        stream: bool,
        timeout_ms: u64,
    ) -> Option<u32> {
        let body = completion::request_body(model, messages, stream);
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let headers = vec![("content-type", "application/json"), ("accept", accept)];
        let to = ("POST", self.calls.llm_path.as_str());
        self.call(io, &self.calls.llm, to, headers, Some(&body), timeout_ms)
    }

    /// Starts a wait of `ms`: a call to the timer, which answers once the time is up.
    pub(crate) fn wait(&self, io: &mut Io<'_>, ms: u64, rewaits: u8) -> Option<Pending> {
        let (timer, path) = self.calls.timer.as_ref()?;
        let asked = ms.saturating_add(TIMER_MARGIN_MS);
        let ms_text = asked.to_string();
        let path = format!("{path}?ms={asked}");
        let headers = vec![(DELAY_HEADER, ms_text.as_str())];
        let timeout = asked.saturating_add(TIMER_GRACE_MS);
        let token = self.call(io, timer, ("GET", &path), headers, None, timeout)?;
        Some(Pending::Wait {
            token,
            wake_ms: io.now.ms().saturating_add(ms),
            rewaits,
        })
    }
}

/// Starts a wait of `ms` and notes it in `pending`; `None` when no timer can be called.
pub(crate) fn begin_wait(
    shared: &Shared,
    x: &Exchange,
    io: &mut Io<'_>,
    ms: u64,
    rewaits: u8,
    pending: &mut Pending,
) -> Option<Flow> {
    match Caller::of(shared, x)?.wait(io, ms, rewaits)? {
        p @ Pending::Wait { token, .. } => {
            *pending = p;
            Some(Flow::Wait(token))
        }
        _ => None,
    }
}

/// The timer of a wait answered: waits out the rest if it came early (`Some`), else `None`:
/// time to try again.
pub(crate) fn timer_answered(
    shared: &Shared,
    x: &Exchange,
    io: &mut Io<'_>,
    (wake_ms, rewaits): (u64, u8),
    pending: &mut Pending,
) -> Option<Flow> {
    let rest = wait_left(io.now.ms(), wake_ms, rewaits)?;
    begin_wait(shared, x, io, rest, rewaits + 1, pending)
}

/// The timer answered: `Some(rest)` when it was early and the rest must be waited out.
pub(crate) fn wait_left(now_ms: u64, wake_ms: u64, rewaits: u8) -> Option<u64> {
    (now_ms < wake_ms && rewaits < MAX_REWAITS).then(|| wake_ms - now_ms)
}

/// A failed try's verdict: wait this long and try again, or give up.
pub(crate) fn after_failure(
    policy: &RetryPolicy,
    answer: &CallAnswer,
    spent: Spent,
    io: &mut Io<'_>,
) -> Result<u64, GiveUp> {
    let now = io.now.ms();
    let retry_after = answer
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| retry::retry_after_ms(Some(v), now));
    let jitter = io.entropy.next_u64().unwrap_or(now);
    policy.next_wait(spent, retry_after, jitter)
}

/// The `Retry-After` seconds of an answer, rounded up, to pass on to the consumer.
pub(crate) fn retry_after_s(answer: &CallAnswer, now_ms: u64) -> Option<u64> {
    let v = answer
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.as_str());
    retry::retry_after_ms(v, now_ms).map(|ms| ms.div_ceil(1000).max(1))
}
