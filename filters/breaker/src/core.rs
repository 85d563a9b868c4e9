//! The breaker filter's pure core: the three shared-data operations a request makes (admit on
//! the way in, record or answer a probe on the way out). Its config is `config.rs`.

pub use crate::config::{Config, Fallback, Route, key};
use crate::window::{Breaker, Phase, Trip};
use cxgate_kit::host::SharedStore;
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::{Update, UpdateError, update};

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// The one request let through while open; its answer decides.
    Probe,
    Fallback {
        retry_after_s: u64,
    },
}

/// A state change, reported once: by the request whose CAS write made it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Opened(Trip),
    ProbeStarted,
    Closed {
        open_for_ms: u64,
    },
    Reopened,
    /// A probe's stream ended without an answer: the next request probes.
    ProbeAbandoned,
}

impl Transition {
    pub fn event(&self, platform: &str, window_ms: u64) -> Event {
        let e = |name: &str| Event::new(name).str("platform", platform);
        match *self {
            Transition::Opened(Trip::FailureRatio { failed, total }) => e("BREAKER_OPENED")
                .str("reason", "failure-ratio")
                .num("failed", failed)
                .num("total", total)
                .num("window_ms", window_ms),
            Transition::Opened(Trip::Latency { slow, total }) => e("BREAKER_OPENED")
                .str("reason", "latency-p95")
                .num("slow", slow)
                .num("total", total)
                .num("window_ms", window_ms),
            Transition::ProbeStarted => e("BREAKER_PROBE"),
            Transition::Closed { open_for_ms } => e("BREAKER_CLOSED")
                .str("reason", "probe-succeeded")
                .num("open_for_ms", open_for_ms),
            Transition::Reopened => e("BREAKER_REOPENED").str("reason", "probe-failed"),
            Transition::ProbeAbandoned => e("BREAKER_PROBE_ABANDONED"),
        }
    }
}

const ATTEMPTS: u32 = cxgate_kit::shared::CAS_BUDGET;

fn seconds_until(now_ms: u64, at_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

fn load(cfg: &Config, current: Option<&[u8]>) -> Breaker {
    current
        .and_then(Breaker::decode)
        .filter(|b| b.ring.len() == cfg.rules.buckets)
        .unwrap_or_else(|| Breaker::closed(cfg.rules.buckets))
}

/// Is the platform's breaker open or probing (the platform is down)? For other stages: the
/// coexistence decision sends calls away from a cloud that is down. One shared-data read.
pub fn is_open<S: SharedStore + ?Sized>(store: &S, platform: &str) -> bool {
    store
        .get(&key(platform))
        .ok()
        .flatten()
        .and_then(|v| Breaker::decode_phase(&v.value))
        .is_some_and(|p| p != Phase::Closed)
}

/// The request path: one read while closed; a CAS write only to take the probe.
pub fn admit<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<(Admit, Option<Transition>), UpdateError> {
    let phase = store
        .get(&route.key)?
        .and_then(|v| Breaker::decode_phase(&v.value))
        .unwrap_or(Phase::Closed);
    if phase.clamped(&cfg.rules, now_ms).is_some() {
        return clamp(cfg, route, store, now_ms);
    }
    match phase {
        Phase::Closed => return Ok((Admit::Pass, None)),
        Phase::Open { next_probe_ms } if now_ms < next_probe_ms => {
            return Ok((
                Admit::Fallback {
                    retry_after_s: seconds_until(now_ms, next_probe_ms),
                },
                None,
            ));
        }
        Phase::HalfOpen { probe_until_ms } if now_ms < probe_until_ms => {
            return Ok((
                Admit::Fallback {
                    retry_after_s: probe_wait(cfg),
                },
                None,
            ));
        }
        _ => {}
    }
    // A probe is due: the one request whose CAS write lands takes it.
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        let due = match b.phase {
            Phase::Closed => return Update::Keep((Admit::Pass, None)),
            Phase::Open { next_probe_ms } => now_ms >= next_probe_ms,
            Phase::HalfOpen { probe_until_ms } => now_ms >= probe_until_ms,
        };
        if !due {
            return Update::Keep((
                Admit::Fallback {
                    retry_after_s: probe_wait(cfg),
                },
                None,
            ));
        }
        b.phase = Phase::HalfOpen {
            probe_until_ms: now_ms.saturating_add(cfg.rules.probe_timeout_ms),
        };
        Update::Write(b.encode(), (Admit::Probe, Some(Transition::ProbeStarted)))
    })
}

/// Writes the phase back with its time clamped (the wall clock stepped back), then admits.
fn clamp<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<(Admit, Option<Transition>), UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        match b.phase.clamped(&cfg.rules, now_ms) {
            Some(p) => {
                b.phase = p;
                Update::Write(b.encode(), ())
            }
            None => Update::Keep(()),
        }
    })?;
    admit(cfg, route, store, now_ms)
}

/// While a probe is out, a consumer may retry after one probe interval at the latest.
fn probe_wait(cfg: &Config) -> u64 {
    cfg.rules.probe_interval_ms.div_ceil(1000).max(1)
}

/// One worker's outcomes for one platform since its last flush, by time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    /// (time in the bucket, ok, failed, slow).
    pub buckets: Vec<(u64, u32, u32, u32)>,
}

impl Pending {
    pub fn add(&mut self, rules: &crate::window::Rules, now_ms: u64, failed: bool, slow: bool) {
        let epoch = now_ms / rules.bucket_ms.max(1);
        let at = |t: &u64| *t / rules.bucket_ms.max(1) == epoch;
        let (ok, bad, sl) = (u32::from(!failed), u32::from(failed), u32::from(slow));
        match self.buckets.iter_mut().find(|(t, ..)| at(t)) {
            Some((_, o, f, s)) => {
                *o = o.saturating_add(ok);
                *f = f.saturating_add(bad);
                *s = s.saturating_add(sl);
            }
            None => self.buckets.push((now_ms, ok, bad, sl)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// Counts a batch of outcomes (one CAS update however many requests it holds), and opens the
/// breaker if the window trips. Outcomes that arrive while not closed are dropped (only the
/// probe decides then).
pub fn record_batch<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    pending: &Pending,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if b.phase != Phase::Closed {
            return Update::Keep(None);
        }
        for (at, ok, failed, slow) in &pending.buckets {
            b.add_counts(&cfg.rules, *at, *ok, *failed, *slow);
        }
        match b.trip(&cfg.rules, now_ms) {
            Some(trip) => {
                b.open(&cfg.rules, now_ms);
                b.opened_ms = now_ms;
                Update::Write(b.encode(), Some(Transition::Opened(trip)))
            }
            None => Update::Write(b.encode(), None),
        }
    })
}

/// One outcome at once (what a flush of one request does).
pub fn record<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    failed: bool,
    slow: bool,
) -> Result<Option<Transition>, UpdateError> {
    let mut pending = Pending::default();
    pending.add(&cfg.rules, now_ms, failed, slow);
    record_batch(cfg, route, store, now_ms, &pending)
}

/// The probe's answer: success closes the breaker, failure re-opens it for another interval.
pub fn probe_answered<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
    failed: bool,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if !matches!(b.phase, Phase::HalfOpen { .. }) {
            return Update::Keep(None);
        }
        if failed {
            b.open(&cfg.rules, now_ms);
            Update::Write(b.encode(), Some(Transition::Reopened))
        } else {
            let open_for_ms = now_ms.saturating_sub(b.opened_ms);
            b.close();
            Update::Write(b.encode(), Some(Transition::Closed { open_for_ms }))
        }
    })
}

/// The probe's stream ended without a response: let the next request probe at once.
pub fn probe_abandoned<S: SharedStore + ?Sized>(
    cfg: &Config,
    route: &Route,
    store: &mut S,
    now_ms: u64,
) -> Result<Option<Transition>, UpdateError> {
    update(store, &route.key, ATTEMPTS, |current| {
        let mut b = load(cfg, current);
        if !matches!(b.phase, Phase::HalfOpen { .. }) {
            return Update::Keep(None);
        }
        b.phase = Phase::Open {
            next_probe_ms: now_ms,
        };
        Update::Write(b.encode(), Some(Transition::ProbeAbandoned))
    })
}

/// What the consumer gets while the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    Reply(LocalReply),
    /// Forward with this header set (the route config sends it to the fallback upstream).
    Reroute {
        header: String,
        value: String,
    },
}

pub fn fallback(route: &Route, retry_after_s: u64, trace_id: Option<&str>) -> Served {
    let marker = ("x-cxgate-breaker".to_string(), "open".to_string());
    match &route.fallback {
        Fallback::Problem => {
            let mut reply = Problem::new(
                503,
                "breaker-open",
                "Platform temporarily unavailable",
                format!(
                    "{} is failing; the gateway is not forwarding to it. Retry after {retry_after_s} s.",
                    route.platform
                ),
            )
            .with_trace_id(trace_id)
            .with_header("retry-after", retry_after_s.to_string())
            .into_reply();
            reply.headers.push(marker);
            Served::Reply(reply)
        }
        Fallback::Static {
            status,
            headers,
            body,
        } => {
            let mut headers = headers.clone();
            if !headers.iter().any(|(k, _)| k == "retry-after") {
                headers.push(("retry-after".into(), retry_after_s.to_string()));
            }
            headers.push(marker);
            Served::Reply(LocalReply {
                status: u32::from(*status),
                headers,
                body: body.clone(),
            })
        }
        Fallback::Reroute { header, value } => Served::Reroute {
            header: header.clone(),
            value: value.clone(),
        },
    }
}
