//! The breaker stage: admission once the platform is known, outcomes batched per worker and
//! flushed on the tick (one CAS per platform per tick, not one per response); a probe's answer
//! is written at once.

use crate::core::{self, Admit, Config, Pending, Served, Transition};
use cxgate_kit::ConfigError;
use cxgate_kit::host::Metrics;
use cxgate_kit::log::{Event, Level, Log};
use cxgate_kit::problem::LocalReply;
use cxgate_kit::shared::UpdateError;
use cxgate_model::{Build, Exchange, Flow, Io, RootIo, Stage, StageKind, StageStream};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "breaker",
    build,
};

/// How often a worker's outcomes reach the shared window.
const FLUSH_MS: u32 = 1_000;

/// Metric ids of one platform's breaker.
#[derive(Clone, Copy, Default)]
struct PlatformIds {
    /// 0 closed, 1 open, 2 half-open (a probe in flight).
    state: u32,
    trips: u32,
    probes: u32,
    fallbacks: u32,
    open_ms_total: u32,
}

struct Shared {
    config: Config,
    /// Per breaker (index into `Config::routes`).
    ids: Vec<PlatformIds>,
    errors: u32,
    /// This worker's outcomes since the last flush, per breaker.
    pending: RefCell<Vec<Pending>>,
}

struct Breaker(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section, &b.model)?;
    let m = &mut *b.metrics;
    let mut metric = |name: &str, platform: &str, gauge: bool| {
        let full = format!("cxgate_breaker.{name}.{platform}");
        if gauge {
            m.gauge(&full).unwrap_or_default()
        } else {
            m.counter(&full).unwrap_or_default()
        }
    };
    let ids = config
        .routes
        .iter()
        .map(|r| PlatformIds {
            state: metric("state", &r.platform, true),
            trips: metric("trips", &r.platform, false),
            probes: metric("probes", &r.platform, false),
            fallbacks: metric("fallbacks", &r.platform, false),
            open_ms_total: metric("open_ms_total", &r.platform, false),
        })
        .collect();
    let errors = b
        .metrics
        .counter("cxgate_breaker.errors")
        .unwrap_or_default();
    let pending = RefCell::new(vec![Pending::default(); config.routes.len()]);
    Ok(Box::new(Breaker(Rc::new(Shared {
        config,
        ids,
        errors,
        pending,
    }))))
}

impl Shared {
    fn ids(&self, route: usize) -> PlatformIds {
        self.ids.get(route).copied().unwrap_or_default()
    }

    fn error(&self, what: &str, e: UpdateError, metrics: &mut dyn Metrics, log: &mut dyn Log) {
        let _ = metrics.increment(self.errors, 1);
        log.event(
            Level::Warn,
            &Event::new("BREAKER_STATE_ERROR")
                .str("during", what)
                .str("error", &format!("{e:?}")),
        );
    }

    /// Logs and counts a state change; only the write that made it reports it.
    fn report(&self, route: usize, t: Transition, metrics: &mut dyn Metrics, log: &mut dyn Log) {
        let Some(r) = self.config.routes.get(route) else {
            return;
        };
        let ids = self.ids(route);
        let (level, state) = match t {
            Transition::Opened(_) => {
                let _ = metrics.increment(ids.trips, 1);
                (Level::Warn, 1)
            }
            Transition::ProbeStarted => {
                let _ = metrics.increment(ids.probes, 1);
                (Level::Info, 2)
            }
            Transition::Closed { open_for_ms } => {
                let _ =
                    metrics.increment(ids.open_ms_total, i64::try_from(open_for_ms).unwrap_or(0));
                (Level::Info, 0)
            }
            Transition::Reopened | Transition::ProbeAbandoned => (Level::Warn, 1),
        };
        let _ = metrics.record(ids.state, state);
        log.event(level, &t.event(&r.platform, self.config.window_ms));
    }
}

impl Stage for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }

    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(BreakerStream {
            shared: self.0.clone(),
            route: None,
            started_ms: 0,
            probe: false,
            answered: false,
        })
    }

    fn tick_ms(&self) -> Option<u32> {
        Some(FLUSH_MS)
    }

    fn on_tick(&self, io: &mut RootIo<'_>) {
        let s = &self.0;
        let batches: Vec<Pending> = s
            .pending
            .borrow_mut()
            .iter_mut()
            .map(std::mem::take)
            .collect();
        for (i, pending) in batches.iter().enumerate() {
            let Some(r) = s.config.routes.get(i).filter(|_| !pending.is_empty()) else {
                continue;
            };
            match core::record_batch(&s.config, r, &mut *io.store, io.now_ms, pending) {
                Ok(Some(t)) => s.report(i, t, &mut *io.metrics, &mut *io.log),
                Ok(None) => {}
                Err(e) => s.error("record", e, &mut *io.metrics, &mut *io.log),
            }
        }
    }
}

struct BreakerStream {
    shared: Rc<Shared>,
    /// The breaker this request's outcome counts for.
    route: Option<usize>,
    started_ms: u64,
    probe: bool,
    answered: bool,
}

impl BreakerStream {
    fn abandon_probe(&mut self, io: &mut Io<'_>) {
        let (Some(route), true, false) = (self.route, self.probe, self.answered) else {
            return;
        };
        self.answered = true;
        let s = &self.shared;
        let Some(r) = s.config.routes.get(route) else {
            return;
        };
        match core::probe_abandoned(&s.config, r, &mut *io.store, io.now.ms()) {
            Ok(Some(t)) => s.report(route, t, &mut *io.metrics, &mut *io.log),
            Ok(None) => {}
            Err(e) => s.error("probe", e, &mut *io.metrics, &mut *io.log),
        }
    }
}

impl StageStream for BreakerStream {
    fn on_platform(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let s = self.shared.clone();
        let Some((route, r)) = x
            .platform
            .as_deref()
            .and_then(|p| s.config.route_index(p))
            .and_then(|i| s.config.routes.get(i).map(|r| (i, r)))
        else {
            return Flow::Continue;
        };
        // Fails open: the breaker's own state trouble must never block traffic.
        let (admit, transition) = match core::admit(&s.config, r, &mut *io.store, io.now.ms()) {
            Ok(v) => v,
            Err(e) => {
                s.error("admit", e, &mut *io.metrics, &mut *io.log);
                return Flow::Continue;
            }
        };
        if let Some(t) = transition {
            s.report(route, t, &mut *io.metrics, &mut *io.log);
        }
        match admit {
            Admit::Pass | Admit::Probe => {
                self.route = Some(route);
                self.started_ms = io.now.ms();
                self.probe = admit == Admit::Probe;
                Flow::Continue
            }
            Admit::Fallback { retry_after_s } => {
                let _ = io.metrics.increment(s.ids(route).fallbacks, 1);
                match core::fallback(r, retry_after_s, x.trace_id.as_deref()) {
                    Served::Reply(reply) => Flow::Reply(reply),
                    Served::Reroute { header, value } => {
                        if let Err(e) = x.set_request_header(&mut *io.stream, &header, &value) {
                            io.log.event(
                                Level::Warn,
                                &Event::new("BREAKER_REROUTE_FAILED").str("error", &e.to_string()),
                            );
                        }
                        Flow::Continue
                    }
                }
            }
        }
    }

    /// A later stage answered: a probe that never reached the platform decides nothing.
    fn on_reply(&mut self, _x: &Exchange, io: &mut Io<'_>, _reply: &mut LocalReply) {
        self.abandon_probe(io);
    }

    fn reads_response(&self, _x: &Exchange) -> bool {
        self.route.is_some()
    }

    fn on_response(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Option<LocalReply> {
        let route = self.route?;
        let response = x.response.as_ref()?;
        if response.gateway {
            // The gateway answered (e.g. no platform token): nothing about the platform.
            self.abandon_probe(io);
            return None;
        }
        let s = self.shared.clone();
        let r = s.config.routes.get(route)?;
        let failed = s.config.is_failure(response.status);
        let slow = s
            .config
            .is_slow(io.now.ms().saturating_sub(self.started_ms));
        self.answered = true;
        if self.probe {
            match core::probe_answered(&s.config, r, &mut *io.store, io.now.ms(), failed || slow) {
                Ok(Some(t)) => s.report(route, t, &mut *io.metrics, &mut *io.log),
                Ok(None) => {}
                Err(e) => s.error("probe", e, &mut *io.metrics, &mut *io.log),
            }
        } else if let Some(p) = s.pending.borrow_mut().get_mut(route) {
            p.add(&s.config.rules, io.now.ms(), failed, slow);
        }
        None
    }

    fn on_done(&mut self, _x: &Exchange, io: &mut Io<'_>) {
        self.abandon_probe(io);
    }
}
