//! The token stage: once the platform is known, the consumer's credential goes and the
//! platform's goes in (or a bounded wait for one); a platform 401 starts drift recovery.

use crate::core::{self, Answer, Config, Decision, OnUnauthorized, RequestInfo, Sent, TokenCache};
use cxgate_kit::ConfigError;
use cxgate_kit::host::{Callout, Now};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_model::exchange::RequestHeaders;
use cxgate_model::{Build, CallAnswer, Exchange, Flow, Io, Stage, StageKind, StageStream};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "token",
    build,
};

/// Envoy retries no answer that carries it (but on `envoy-ratelimited`, which no route of ours
/// names): set on one whose Retry-After is longer than the route can wait. Stripped before the
/// client.
pub const NO_RETRY_HEADER: &str = "x-envoy-ratelimited";

/// Set on a platform 401 that Envoy may replay (the route's `retriable_headers` match it),
/// never on the replay's own 401: a route that also retries 429s and 5xx still replays a
/// 401 exactly once. The gateway strips it before the client.
pub const REPLAY_HEADER: &str = "x-cxgate-token-replay";

/// Metric ids, defined once per worker.
#[derive(Default)]
struct Ids {
    /// Per platform (index into `Config::routes`).
    injected: Vec<u32>,
    stale_served: u32,
    waited: u32,
    wait_ms_total: u32,
    wait_timeouts: u32,
    /// 401s to our token that started a recovery (replay or retry-later).
    drift_recoveries: u32,
    /// Replays the platform refused again (their 401 went to the consumer).
    replays_failed: u32,
    /// 401s answered 503 + Retry-After because the host cannot replay.
    drift_retry_later: u32,
    errors: u32,
}

struct Shared {
    model: Rc<cxgate_model::Model>,
    config: Config,
    key: String,
    ids: Ids,
    cache: RefCell<TokenCache>,
}

struct Token(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section, &b.model, b.sync)?;
    let key = b.sidecar_key.unwrap_or_default().to_string();
    let m = &mut *b.metrics;
    let mut c = |n: &str| m.counter(&format!("cxgate_token.{n}")).unwrap_or_default();
    let mut ids = Ids {
        stale_served: c("stale_served"),
        waited: c("waited"),
        wait_ms_total: c("wait_ms_total"),
        wait_timeouts: c("wait_timeouts"),
        drift_recoveries: c("drift_recoveries"),
        replays_failed: c("replays_failed"),
        drift_retry_later: c("drift_retry_later"),
        errors: c("errors"),
        ..Ids::default()
    };
    for route in &config.routes {
        ids.injected
            .push(c(&format!("injected.{}", route.platform)));
    }
    Ok(Box::new(Token(Rc::new(Shared {
        model: b.model.clone(),
        config,
        key,
        ids,
        cache: RefCell::new(TokenCache::default()),
    }))))
}

impl Stage for Token {
    fn name(&self) -> &'static str {
        "token"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(TokenStream {
            shared: self.0.clone(),
            waiting: None,
            sent: None,
            info: RequestInfo::default(),
            route_id: String::new(),
        })
    }
}

/// A bounded wait in progress.
struct Waiting {
    route: usize,
    attempt: u32,
    callout: u32,
    started_ms: u64,
}

struct TokenStream {
    shared: Rc<Shared>,
    waiting: Option<Waiting>,
    /// Set once the request carries our token: its 401 is what drift recovery acts on.
    sent: Option<Sent>,
    info: RequestInfo,
    /// The model route, for the drift log.
    route_id: String,
}

impl TokenStream {
    /// Fails closed: without a credential the platform would only answer 401.
    fn fail(&self, x: &Exchange, io: &mut Io<'_>, detail: &str) -> Flow {
        let _ = io.metrics.increment(self.shared.ids.errors, 1);
        Flow::Reply(
            Problem::new(503, "gateway-error", "Gateway error", detail)
                .with_trace_id(x.trace_id.as_deref())
                .with_header("retry-after", self.shared.config.retry_after_s.to_string())
                .into_reply(),
        )
    }

    fn injected(&self, io: &mut Io<'_>, route: usize) {
        if let Some(id) = self.shared.ids.injected.get(route) {
            let _ = io.metrics.increment(*id, 1);
        }
    }

    /// Envoy numbers its retries in `x-envoy-attempt-count` (the virtual host's
    /// `include_request_attempt_count`); only replay mode needs to know.
    fn attempt(&self, x: &Exchange) -> u32 {
        if self.shared.config.on_unauthorized != OnUnauthorized::Replay {
            return 1;
        }
        x.header("x-envoy-attempt-count")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    }

    fn wait(
        &mut self,
        x: &Exchange,
        io: &mut Io<'_>,
        route: usize,
        after: u64,
        rejected: bool,
    ) -> Flow {
        let s = self.shared.clone();
        let cfg = &s.config;
        let platform = cfg
            .routes
            .get(route)
            .map(|r| r.platform.as_str())
            .unwrap_or_default();
        let wait = core::wait_call(cfg, platform, after, rejected);
        let authority = cfg.sync.authority.as_deref().unwrap_or(&cfg.sync.upstream);
        let call = Callout {
            upstream: &cfg.sync.upstream,
            method: wait.method,
            path: &wait.path,
            authority,
            scheme: "http",
            headers: vec![
                (cxgate_kit::sync::KEY_HEADER, s.key.as_str()),
                ("content-type", "application/json"),
            ],
            body: wait.body.as_deref(),
            timeout_ms: cfg.wait_ms.saturating_add(500),
        };
        match io.callout.dispatch(&call) {
            Ok(callout) => {
                let _ = io.metrics.increment(s.ids.waited, 1);
                self.waiting = Some(Waiting {
                    route,
                    attempt: self.attempt(x),
                    callout,
                    started_ms: io.now.ms(),
                });
                Flow::Wait(callout)
            }
            Err(e) => self.fail(
                x,
                io,
                &format!("cannot reach the sidecar for a {platform} token: {e}"),
            ),
        }
    }
}

impl StageStream for TokenStream {
    fn on_platform(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let Some(route) = x.platform.as_deref().and_then(|p| s.config.route_index(p)) else {
            return Flow::Continue;
        };
        let platform = s
            .config
            .routes
            .get(route)
            .map(|r| r.platform.clone())
            .unwrap_or_default();
        self.route_id = x.route(&s.model).map(|r| r.id.clone()).unwrap_or_default();
        let token = match s.cache.borrow_mut().read(&*io.store, &platform) {
            Ok(t) => t,
            Err(e) => return self.fail(x, io, &format!("shared data unreadable: {e}")),
        };
        let attempt = self.attempt(x);
        let now = io.now.ms();
        let mut headers = RequestHeaders {
            x,
            host: &mut *io.stream,
        };
        let decision = core::on_request(
            &s.config,
            route,
            &mut headers,
            token.as_ref(),
            now,
            &mut *io.entropy,
            &mut self.info,
        );
        match decision {
            Ok(Decision::Injected {
                route,
                stale,
                generation,
            }) => {
                self.injected(io, route);
                if stale {
                    let _ = io.metrics.increment(s.ids.stale_served, 1);
                }
                self.sent = Some(Sent {
                    route,
                    generation,
                    attempt,
                });
                Flow::Continue
            }
            Ok(Decision::Wait {
                route,
                after,
                rejected,
            }) => self.wait(x, io, route, after, rejected),
            Err(e) => self.fail(x, io, &format!("header access failed: {e}")),
        }
    }

    fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &mut Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        let Some(w) = self.waiting.take_if(|w| w.callout == token) else {
            return Flow::Continue;
        };
        let s = self.shared.clone();
        let waited = io.now.ms().saturating_sub(w.started_ms);
        let _ = io.metrics.increment(
            s.ids.wait_ms_total,
            i64::try_from(waited).unwrap_or(i64::MAX),
        );
        let status = answer.status.filter(|s| *s > 0);
        let now = Now(io.now.ms());
        let mut headers = RequestHeaders {
            x,
            host: &mut *io.stream,
        };
        let out = core::on_wait_answer(
            &s.config,
            w.route,
            &mut headers,
            &mut *io.store,
            &now,
            status,
            &answer.body,
        );
        match out {
            Ok(Ok(generation)) => {
                self.injected(io, w.route);
                self.sent = Some(Sent {
                    route: w.route,
                    generation,
                    attempt: w.attempt,
                });
                Flow::Continue
            }
            Ok(Err(reply)) => {
                let _ = io.metrics.increment(s.ids.wait_timeouts, 1);
                let platform = s
                    .config
                    .routes
                    .get(w.route)
                    .map(|r| r.platform.as_str())
                    .unwrap_or_default();
                // A wait that ended early did not time out: the sidecar could not be asked
                // (on Kong a failed dispatch answers at once, which read as "0 ms of 2000").
                let budget = u64::from(s.config.wait_ms);
                let event = match status {
                    None if waited < budget => {
                        Event::new("TOKEN_WAIT_FAILED").str("reason", "no answer from the sidecar")
                    }
                    Some(code) if code != 200 && waited < budget => {
                        Event::new("TOKEN_WAIT_FAILED").num("sidecar_status", u64::from(code))
                    }
                    _ => Event::new("TOKEN_WAIT_TIMEOUT"),
                };
                io.log.event(
                    Level::Warn,
                    &event
                        .str("platform", platform)
                        .num("waited_ms", waited)
                        .num("budget_ms", budget),
                );
                Flow::Reply(reply)
            }
            Err(e) => self.fail(x, io, &format!("header update failed: {e}")),
        }
    }

    fn reads_response(&self, _x: &Exchange) -> bool {
        self.sent.is_some()
    }

    /// A platform 401 to our token. Never pauses: Kong cannot pause in response headers, and
    /// Envoy's retry needs none; retry-later answers instead.
    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let sent = self.sent.take()?;
        // The gateway's own replies are nobody's answer to our token.
        let response = x.response.as_ref().filter(|r| !r.gateway)?;
        let s = &self.shared;
        if let Some(max) = s.config.retry_wait_max_s
            && core::waits_too_long(response.headers.get("retry-after"), max)
        {
            let _ = io.stream.set_response_header(NO_RETRY_HEADER, "true");
        }
        if response.status != 401 {
            return None;
        }
        let answer = core::on_response(
            &s.config,
            &sent,
            response.status,
            &self.info.path,
            Some(self.info.trace_id.as_str()),
            &mut *io.store,
            io.now.ms(),
        );
        match answer {
            Answer::Accepted => None,
            Answer::Replay { event, .. } => {
                let event = event.str("route", &self.route_id);
                let _ = io.metrics.increment(s.ids.drift_recoveries, 1);
                // Without it the 401 is not replayed, as if no retry were configured.
                let _ = io.stream.set_response_header(REPLAY_HEADER, "1");
                io.log.event(Level::Warn, &event);
                None
            }
            Answer::ReplayFailed { event } => {
                let event = event.str("route", &self.route_id);
                let _ = io.metrics.increment(s.ids.replays_failed, 1);
                io.log.event(Level::Warn, &event);
                None
            }
            Answer::RetryLater { event, reply, .. } => {
                let event = event.str("route", &self.route_id);
                let _ = io.metrics.increment(s.ids.drift_recoveries, 1);
                let _ = io.metrics.increment(s.ids.drift_retry_later, 1);
                io.log.event(Level::Warn, &event);
                Some(reply)
            }
        }
    }
}
