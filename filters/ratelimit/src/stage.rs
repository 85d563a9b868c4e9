//! The rate-limit stage: admission at request headers (consumer) and once the platform is
//! known (platform), quota headers and platform feedback on the response, and the distributed
//! mode's periodic top-up from the root's tick.

use crate::config::{Config, FailMode};
use crate::core::{self, Ask, Feedback, Limited, Mode, Quota, Verdict, keys};
use crate::distributed;
use cxgate_kit::ConfigError;
use cxgate_kit::host::{Callout, Expect, HttpCallout, Now};
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::{Lease, LeaseState, UpdateError};
use cxgate_model::{
    Build, CallAnswer, Exchange, Flow, Io, Model, RootIo, Stage, StageKind, StageStream,
};
use cxgate_state::{AllotAnswer, AllotItem, AllotRequest};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "ratelimit",
    build,
};

#[derive(Default, Clone, Copy)]
struct Ids {
    admitted: u32,
    limited: u32,
    limited_platform: u32,
    never_fits: u32,
    platform_holds: u32,
    fallback: u32,
    allotted_units: u32,
    errors: u32,
    contention: u32,
}

struct Shared {
    model: Rc<Model>,
    config: Config,
    /// The sidecar key (distributed mode only).
    key: String,
    ids: Ids,
    /// This worker's view of the mode, refreshed on every tick.
    mode: Cell<Mode>,
    lease: Option<Lease>,
    /// The periodic top-up in flight: (callout, what it asked for).
    syncing: RefCell<Option<(u32, Vec<AllotItem>)>>,
    failures: Cell<u32>,
}

struct Limiter(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let sync = b.sync.map(|s| {
        (
            s.upstream.as_str(),
            s.authority.as_deref().unwrap_or(s.upstream.as_str()),
        )
    });
    let config = Config::compile(section, &b.model, sync)?;
    let mut lease = None;
    if let Some(d) = &config.distributed {
        let holder = b
            .entropy
            .next_u64()
            .map_err(|_| ConfigError::at("", "no entropy for the sync lease"))?;
        lease = Some(Lease::new(keys::SYNC_LEASE, holder | 1, d.sync_ms * 5));
    }
    let mut c = |name: &str| {
        b.metrics
            .counter(&format!("cxgate_ratelimit.{name}"))
            .unwrap_or_default()
    };
    let ids = Ids {
        admitted: c("admitted"),
        limited: c("limited"),
        limited_platform: c("limited_platform"),
        never_fits: c("never_fits"),
        platform_holds: c("platform_holds"),
        allotted_units: c("allotted_units"),
        errors: c("errors"),
        contention: c("contention"),
        fallback: b
            .metrics
            .gauge("cxgate_ratelimit.distributed_fallback")
            .unwrap_or_default(),
    };
    let mode = if config.distributed.is_some() {
        Mode::Distributed
    } else {
        Mode::Local
    };
    Ok(Box::new(Limiter(Rc::new(Shared {
        model: b.model.clone(),
        key: b.sidecar_key.unwrap_or_default().to_string(),
        config,
        ids,
        mode: Cell::new(mode),
        lease,
        syncing: RefCell::new(None),
        failures: Cell::new(0),
    }))))
}

impl Shared {
    fn allot_call(
        &self,
        items: Vec<AllotItem>,
        callout: &mut dyn HttpCallout,
    ) -> Result<u32, String> {
        let Some(d) = self.config.distributed.as_ref() else {
            return Err("not distributed".into());
        };
        let body =
            serde_json::to_vec(&AllotRequest { buckets: items }).map_err(|e| e.to_string())?;
        let call = Callout {
            upstream: &d.upstream,
            method: "POST",
            path: "/v1/ratelimit/allot",
            authority: &d.authority,
            scheme: "http",
            headers: vec![
                (cxgate_kit::sync::KEY_HEADER, self.key.as_str()),
                ("content-type", "application/json"),
            ],
            body: Some(&body),
            timeout_ms: d.timeout_ms,
        };
        callout.dispatch(&call).map_err(|e| e.to_string())
    }

    fn set_mode(&self, mode: Mode, reason: &str, io: &mut RootIo<'_>) {
        if self.mode.get() == mode {
            return;
        }
        let value: &[u8] = if mode == Mode::Fallback {
            b"fallback"
        } else {
            b"distributed"
        };
        let current = io.store.get(keys::MODE).ok().flatten();
        let expect = current.map_or(Expect::Absent, |v| Expect::Cas(v.cas));
        if io.store.set(keys::MODE, value, expect).is_err() {
            return;
        }
        self.mode.set(mode);
        let _ = io
            .metrics
            .record(self.ids.fallback, u64::from(mode == Mode::Fallback));
        let (level, name) = if mode == Mode::Fallback {
            (Level::Warn, "RATE_LIMIT_FALLBACK")
        } else {
            (Level::Info, "RATE_LIMIT_DISTRIBUTED")
        };
        io.log.event(level, &Event::new(name).str("reason", reason));
    }

    fn failed(&self, reason: &str, io: &mut RootIo<'_>) {
        self.failures.set(self.failures.get() + 1);
        if self.failures.get() >= 2 {
            self.set_mode(Mode::Fallback, reason, io);
        }
    }
}

/// The grants in an allotment answer, if it is one.
fn grants(answer: &CallAnswer) -> Option<Vec<u64>> {
    if answer.status != Some(200) {
        return None;
    }
    serde_json::from_slice::<AllotAnswer>(&answer.body)
        .ok()
        .map(|a| a.grants)
}

impl Stage for Limiter {
    fn name(&self) -> &'static str {
        "ratelimit"
    }

    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(LimitStream {
            shared: self.0.clone(),
            quota: None,
            charged: None,
            allot: None,
        })
    }

    fn tick_ms(&self) -> Option<u32> {
        self.0
            .config
            .distributed
            .as_ref()
            .map(|d| u32::try_from(d.sync_ms).unwrap_or(u32::MAX))
    }

    fn on_tick(&self, io: &mut RootIo<'_>) {
        let s = &self.0;
        s.mode.set(Mode::read(&s.config, &*io.store));
        let Some(lease) = s.lease.as_ref() else {
            return;
        };
        if !matches!(
            lease.acquire(&mut *io.store, &Now(io.now_ms)),
            Ok(LeaseState::Held { .. })
        ) {
            return;
        }
        if s.syncing.borrow().is_some() {
            return;
        }
        let items = match distributed::plan_sync(&s.config, &*io.store) {
            Ok(items) if !items.is_empty() => items,
            _ => return,
        };
        match s.allot_call(items.clone(), &mut *io.callout) {
            Ok(token) => *s.syncing.borrow_mut() = Some((token, items)),
            Err(_) => s.failed("the sidecar cannot be called", io),
        }
    }

    fn on_call_response(&self, token: u32, answer: &CallAnswer, io: &mut RootIo<'_>) -> bool {
        let s = &self.0;
        let Some((_, items)) = s.syncing.borrow_mut().take_if(|(t, _)| *t == token) else {
            return false;
        };
        match grants(answer) {
            Some(g) => {
                s.failures.set(0);
                if let Ok(units) = distributed::apply_grants(&mut *io.store, &items, &g, io.now_ms)
                {
                    let _ = io.metrics.increment(
                        s.ids.allotted_units,
                        i64::try_from(units / 1000).unwrap_or(0),
                    );
                }
                s.set_mode(Mode::Distributed, "the shared budget answers again", io);
            }
            None => s.failed(
                "the sidecar or Redis does not answer; local limits of budget/instances",
                io,
            ),
        }
        true
    }
}

/// Which admission an allotment callout is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Consumer,
    Platform,
}

struct LimitStream {
    shared: Rc<Shared>,
    /// The headers to add to the response.
    quota: Option<Quota>,
    /// The platform whose bucket this request spent a unit of.
    charged: Option<String>,
    /// A first allotment in flight: (callout, what it asked for, for which admission).
    allot: Option<(u32, Vec<AllotItem>, Phase)>,
}

impl LimitStream {
    fn ask<'a>(
        &self,
        x: &'a Exchange,
        may_allot: bool,
        now_ms: u64,
        platform: Option<&'a str>,
    ) -> Ask<'a> {
        Ask {
            consumer: &x.consumer,
            cost: x.route(&self.shared.model).map_or(1, |r| r.cost),
            platform,
            trace_id: x.trace_id.as_deref(),
            now_ms,
            mode: self.shared.mode.get(),
            may_allot,
        }
    }

    fn decide(&mut self, phase: Phase, x: &Exchange, io: &mut Io<'_>, may_allot: bool) -> Flow {
        let s = self.shared.clone();
        let verdict = match (phase, self.quota) {
            (Phase::Consumer, _) => {
                let ask = self.ask(x, may_allot, io.now.ms(), None);
                core::admit_consumer(&s.config, &mut *io.store, &ask)
            }
            (Phase::Platform, Some(q)) => {
                let Some(p) = x.platform.as_deref() else {
                    return Flow::Continue;
                };
                let ask = self.ask(x, may_allot, io.now.ms(), Some(p));
                core::admit_platform(&s.config, &mut *io.store, &ask, p, q)
            }
            // The consumer admission failed open: nothing to charge the platform against.
            (Phase::Platform, None) => return Flow::Continue,
        };
        match verdict {
            Ok(Verdict::Admitted(q)) => {
                if phase == Phase::Consumer {
                    let _ = io.metrics.increment(s.ids.admitted, 1);
                } else if s
                    .config
                    .platforms
                    .contains_key(x.platform.as_deref().unwrap_or_default())
                {
                    self.charged = x.platform.clone();
                }
                self.quota = Some(q);
                Flow::Continue
            }
            Ok(Verdict::Limited(why, reply)) => {
                let ids = s.ids;
                let id = match why {
                    Limited::NeverFits => ids.never_fits,
                    Limited::Platform => ids.limited_platform,
                    Limited::Consumer => ids.limited,
                };
                let _ = io.metrics.increment(id, 1);
                Flow::Reply(reply)
            }
            Ok(Verdict::Allot(items)) if may_allot => {
                match s.allot_call(items.clone(), &mut *io.callout) {
                    Ok(token) => {
                        self.allot = Some((token, items, phase));
                        Flow::Wait(token)
                    }
                    Err(_) => self.decide(phase, x, io, false),
                }
            }
            Ok(Verdict::Allot(_)) => self.fail("no allotment for a new bucket", x, io),
            Err(UpdateError::Contention { .. }) => self.contended(x, io),
            Err(e) => self.fail(&format!("{e:?}"), x, io),
        }
    }

    /// Lost every CAS round to other workers: the store works, so the request is neither sent
    /// unmetered nor logged as a failure; it is counted and told to retry at once.
    fn contended(&self, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let _ = io.metrics.increment(self.shared.ids.contention, 1);
        Flow::Reply(
            Problem::new(
                503,
                "rate-limit-contended",
                "Rate limiter busy",
                "Too many concurrent updates of this consumer's budget; retry the request.",
            )
            .with_trace_id(x.trace_id.as_deref())
            .with_header("retry-after", "1")
            .into_reply(),
        )
    }

    /// Shared data failed: the configured fail mode decides.
    fn fail(&self, detail: &str, x: &Exchange, io: &mut Io<'_>) -> Flow {
        let s = &self.shared;
        let _ = io.metrics.increment(s.ids.errors, 1);
        io.log.event(
            Level::Warn,
            &Event::new("RATE_LIMIT_STATE_ERROR").str("error", detail),
        );
        match s.config.fail_mode {
            FailMode::Open => Flow::Continue,
            FailMode::Closed => Flow::Reply(
                Problem::new(
                    503,
                    "rate-limit-unavailable",
                    "Rate limiter unavailable",
                    "The gateway cannot check the rate limit right now; the request was not forwarded.",
                )
                .with_trace_id(x.trace_id.as_deref())
                .with_header("retry-after", "1")
                .into_reply(),
            ),
        }
    }

    fn feedback(&self, x: &Exchange, io: &mut Io<'_>) {
        let (Some(platform), Some(response)) = (x.platform.as_deref(), x.response.as_ref()) else {
            return;
        };
        let h = &response.headers;
        let n = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok());
        let inin = h.get("inin-ratelimit-allowed").and_then(|allowed| {
            Some((
                n(h.get("inin-ratelimit-count"))?,
                n(Some(allowed))?,
                n(h.get("inin-ratelimit-reset")).unwrap_or(1),
            ))
        });
        if response.status != 429 && inin.is_none() {
            return;
        }
        let fb = Feedback {
            status: response.status,
            retry_after: h.get("retry-after"),
            inin,
        };
        let s = &self.shared;
        match core::on_response(&s.config, &mut *io.store, platform, &fb, io.now.ms()) {
            Ok(Some(event)) => {
                let _ = io.metrics.increment(s.ids.platform_holds, 1);
                io.log.event(Level::Warn, &event);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = io.metrics.increment(s.ids.errors, 1);
                io.log.event(
                    Level::Warn,
                    &Event::new("RATE_LIMIT_STATE_ERROR").str("error", &format!("{e:?}")),
                );
            }
        }
    }
}

impl StageStream for LimitStream {
    /// The units this request costs against its budgets (the route's `cost`).
    fn log_field(&self, x: &Exchange) -> Option<(&'static str, String)> {
        let cost = x.route(&self.shared.model).map_or(1, |r| r.cost);
        Some(("cxgate_cost", cost.to_string()))
    }

    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        self.decide(Phase::Consumer, x, io, true)
    }

    fn on_platform(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        self.decide(Phase::Platform, x, io, true)
    }

    fn on_call_response(
        &mut self,
        token: u32,
        answer: &CallAnswer,
        x: &mut Exchange,
        io: &mut Io<'_>,
    ) -> Flow {
        let Some((_, items, phase)) = self.allot.take_if(|(t, _, _)| *t == token) else {
            return Flow::Continue;
        };
        if let Some(g) = grants(answer) {
            let _ = distributed::apply_grants(&mut *io.store, &items, &g, io.now.ms());
        }
        self.decide(phase, x, io, false)
    }

    fn on_reply(&mut self, _x: &Exchange, io: &mut Io<'_>, reply: &mut LocalReply) {
        let s = &self.shared;
        if let Some(p) = self.charged.take()
            && core::refund_platform(&s.config, &mut *io.store, &p, s.mode.get()).is_err()
        {
            let _ = io.metrics.increment(s.ids.errors, 1);
        }
        if let Some(q) = self.quota {
            for (k, v) in q.headers(s.config.legacy_headers) {
                if !reply
                    .headers
                    .iter()
                    .any(|(h, _)| h.eq_ignore_ascii_case(&k))
                {
                    reply.headers.push((k, v));
                }
            }
        }
    }

    /// The platform's answer feeds its bucket back; the quota headers need nothing read.
    fn reads_response(&self, x: &Exchange) -> bool {
        self.quota.is_some() && x.platform.is_some()
    }

    /// Adds the quota headers and feeds the platform's answer back (never pauses).
    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let q = self.quota?;
        for (k, v) in q.headers(self.shared.config.legacy_headers) {
            let _ = io.stream.set_response_header(&k, &v);
        }
        if x.response.as_ref().is_some_and(|r| !r.gateway) {
            self.feedback(x, io);
        }
        None
    }
}
