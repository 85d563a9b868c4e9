//! The rate-limit stage's pure core: admission (the consumer's bucket at request headers, the
//! platform's once the platform is known, each one CAS update), upstream feedback, and the
//! response headers.

use crate::bucket::{Bucket, Limit, MAX_HOLD_MS, Take, retry_after_s};
use crate::config::Config;
use crate::distributed::allot_items;
use cxgate_kit::host::SharedStore;
use cxgate_kit::log::Event;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_kit::shared::{Update, UpdateError, update};
use cxgate_state::AllotItem;

pub use crate::keys;

/// How buckets behave right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One instance: buckets refill locally.
    Local,
    /// Buckets hold allotments from the shared budget and do not refill locally.
    Distributed,
    /// The shared budget is unreachable: refill locally at budget / instances.
    Fallback,
}

impl Mode {
    pub fn read<S: SharedStore + ?Sized>(cfg: &Config, store: &S) -> Mode {
        if cfg.distributed.is_none() {
            return Mode::Local;
        }
        match store.get(keys::MODE) {
            Ok(Some(v)) if v.value == b"fallback" => Mode::Fallback,
            _ => Mode::Distributed,
        }
    }

    pub(crate) fn effective(self, cfg: &Config, l: Limit) -> (Limit, bool) {
        match self {
            Mode::Local => (l, true),
            Mode::Distributed => (l, false),
            Mode::Fallback => (
                l.share(cfg.distributed.as_ref().map_or(1, |d| d.instances)),
                true,
            ),
        }
    }
}

/// The rate-limit headers for the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset_s: u64,
}

impl Quota {
    pub fn headers(&self, legacy: bool) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(6);
        for prefix in ["ratelimit", "x-ratelimit"]
            .into_iter()
            .take(if legacy { 2 } else { 1 })
        {
            out.push((format!("{prefix}-limit"), self.limit.to_string()));
            out.push((format!("{prefix}-remaining"), self.remaining.to_string()));
            out.push((format!("{prefix}-reset"), self.reset_s.to_string()));
        }
        out
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admitted(Quota),
    Limited(Limited, LocalReply),
    /// Distributed mode, a bucket this instance has not held yet: ask the sidecar for its
    /// first allotment, then decide again.
    Allot(Vec<AllotItem>),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Consumer,
    Platform,
    /// The cost is above the budget's capacity.
    NeverFits,
}

/// Who is asking, for what (the route's cost and platform come from the request model).
pub struct Ask<'a> {
    pub consumer: &'a str,
    pub cost: u64,
    pub platform: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub now_ms: u64,
    pub mode: Mode,
    /// False once an allotment was asked for this request (never loop).
    pub may_allot: bool,
}

const ATTEMPTS: u32 = cxgate_kit::shared::CAS_BUDGET;

enum Step {
    Taken(Bucket),
    Missing,
    Denied(u64),
    Never,
}

/// One CAS update of bucket `key`.
fn take_from<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    l: &Limit,
    refills: bool,
    cost: u64,
    now: u64,
    create: bool,
) -> Result<Step, UpdateError> {
    update(store, key, ATTEMPTS, |current| {
        let existing = current.and_then(Bucket::decode);
        let mut clamped = false;
        let mut b = match existing {
            Some(mut b) => {
                clamped = b.clamp(now);
                b
            }
            None if !create => return Update::Keep(Step::Missing),
            None if refills => Bucket::full(l, now),
            None => Bucket {
                at_ms: now,
                ..Bucket::default()
            },
        };
        match b.take(l, now, cost, refills) {
            Take::Admitted { .. } => {
                b.at_ms = b.at_ms.max(now);
                Update::Write(b.encode(), Step::Taken(b))
            }
            Take::Denied { wait_ms } if existing.is_none() || clamped => {
                Update::Write(b.encode(), Step::Denied(wait_ms))
            }
            Take::Denied { wait_ms } => Update::Keep(Step::Denied(wait_ms)),
            Take::Never => Update::Keep(Step::Never),
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn limited(
    why: Limited,
    status_slug: &str,
    title: &str,
    detail: String,
    retry_after: Option<u64>,
    quota: Option<Quota>,
    cfg: &Config,
    trace_id: Option<&str>,
) -> Verdict {
    let mut p = Problem::new(429, status_slug, title, detail).with_trace_id(trace_id);
    if let Some(s) = retry_after {
        p = p.with_header("retry-after", s.to_string());
    }
    for (k, v) in quota
        .map(|q| q.headers(cfg.legacy_headers))
        .unwrap_or_default()
    {
        p = p.with_header(&k, v);
    }
    Verdict::Limited(why, p.into_reply())
}

/// Admission: the consumer's bucket, then (if the platform is known) the platform's,
/// refunding the consumer if the platform says no. Nothing is forwarded for a limited request.
pub fn admit<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    ask: &Ask<'_>,
) -> Result<Verdict, UpdateError> {
    let quota = match admit_consumer(cfg, store, ask)? {
        Verdict::Admitted(q) => q,
        other => return Ok(other),
    };
    match ask.platform {
        Some(p) => admit_platform(cfg, store, ask, p, quota),
        None => Ok(Verdict::Admitted(quota)),
    }
}

/// The consumer's bucket (request headers).
pub fn admit_consumer<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    ask: &Ask<'_>,
) -> Result<Verdict, UpdateError> {
    let Ask {
        consumer,
        cost,
        trace_id,
        now_ms: now,
        mode,
        may_allot,
        ..
    } = *ask;
    let declared = cfg.consumer_limit(consumer);
    let (l, refills) = mode.effective(cfg, declared);
    let key = keys::consumer(consumer);
    let distributed = mode == Mode::Distributed;
    // A distributed bucket this instance has not held yet is created by its first allotment.
    let create = !distributed || !may_allot;
    match take_from(store, &key, &l, refills, cost, now, create)? {
        Step::Missing => Ok(Verdict::Allot(allot_items(cfg, store, &[key])?)),
        Step::Never => Ok(limited(
            Limited::NeverFits,
            "cost-exceeds-capacity",
            "Request can never fit the budget",
            format!(
                "This request costs {cost} units but {consumer}'s budget holds at most {}: it can never be admitted. Ask for a larger budget or split the request.",
                declared.capacity
            ),
            None,
            None,
            cfg,
            trace_id,
        )),
        Step::Denied(wait_ms) => {
            let wait_ms = if distributed {
                // The next allotment arrives within a sync period at worst.
                wait_ms.min(cfg.distributed.as_ref().map_or(1000, |d| d.sync_ms * 2))
            } else {
                wait_ms
            };
            let s = retry_after_s(wait_ms);
            Ok(limited(
                Limited::Consumer,
                "rate-limited",
                "Rate limit exceeded",
                format!(
                    "{consumer}'s budget of {} units per {} s is spent; this request costs {cost}. Retry in {s} s.",
                    declared.capacity,
                    declared.period_ms / 1000
                ),
                Some(s),
                Some(Quota {
                    limit: declared.capacity,
                    remaining: 0,
                    reset_s: s,
                }),
                cfg,
                trace_id,
            ))
        }
        Step::Taken(b) => Ok(Verdict::Admitted(Quota {
            limit: declared.capacity,
            remaining: b.remaining(&l),
            reset_s: b.reset_s(&l),
        })),
    }
}

/// The platform's bucket (counted in requests, as the platform counts them), or its own
/// "stop" (feedback) when it has no budget here. On a refusal the consumer's units go back.
pub fn admit_platform<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    ask: &Ask<'_>,
    platform: &str,
    quota: Quota,
) -> Result<Verdict, UpdateError> {
    let now = ask.now_ms;
    let declared = cfg.consumer_limit(ask.consumer);
    let (l, _) = ask.mode.effective(cfg, declared);
    let key = keys::consumer(ask.consumer);
    let create = ask.mode != Mode::Distributed || !ask.may_allot;
    let pkey = keys::platform(platform);
    let refused = match cfg.platforms.get(platform) {
        Some(pl) => {
            let (pl, refills) = ask.mode.effective(cfg, *pl);
            match take_from(store, &pkey, &pl, refills, 1, now, create)? {
                Step::Taken(_) => None,
                Step::Missing => return Ok(Verdict::Allot(allot_items(cfg, store, &[pkey])?)),
                Step::Denied(w) => Some(w),
                Step::Never => Some(u64::MAX),
            }
        }
        None => store
            .get(&pkey)?
            .and_then(|v| Bucket::decode(&v.value))
            .filter(|b| b.blocked_until_ms > now)
            .map(|b| b.blocked_until_ms - now),
    };
    let Some(wait_ms) = refused else {
        return Ok(Verdict::Admitted(quota));
    };
    refund(store, &key, &l, ask.cost)?;
    let s = retry_after_s(wait_ms.min(3_600_000));
    let back = (ask.cost.saturating_add(quota.remaining)).min(declared.capacity);
    Ok(limited(
        Limited::Platform,
        "platform-rate-limited",
        "Platform rate limit",
        format!("The gateway is holding {platform} traffic under its rate limit; retry in {s} s."),
        Some(s),
        Some(Quota {
            remaining: back,
            ..quota
        }),
        cfg,
        ask.trace_id,
    ))
}

/// A request charged to `platform` was answered by the gateway after all: the platform never
/// saw it, so its request goes back.
pub fn refund_platform<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    platform: &str,
    mode: Mode,
) -> Result<(), UpdateError> {
    let Some(pl) = cfg.platforms.get(platform) else {
        return Ok(());
    };
    let (pl, _) = mode.effective(cfg, *pl);
    refund(store, &keys::platform(platform), &pl, 1)
}

fn refund<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    l: &Limit,
    cost: u64,
) -> Result<(), UpdateError> {
    update(store, key, ATTEMPTS, |current| {
        match current.and_then(Bucket::decode) {
            Some(mut b) => {
                b.refund(l, cost);
                Update::Write(b.encode(), ())
            }
            None => Update::Keep(()),
        }
    })
}

/// The platform's answer, fed back into its bucket: a 429 stops that platform's traffic for
/// its `Retry-After`; `inin-ratelimit-*` near the limit drains the bucket to what is left.
pub struct Feedback<'a> {
    pub status: u16,
    pub retry_after: Option<&'a str>,
    /// `inin-ratelimit-count`, `-allowed`, `-reset` (Genesys).
    pub inin: Option<(u64, u64, u64)>,
}

pub fn on_response<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    platform: &str,
    fb: &Feedback<'_>,
    now: u64,
) -> Result<Option<Event>, UpdateError> {
    let block_s = if fb.status == 429 {
        Some(
            fb.retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .or(fb.inin.map(|(_, _, reset)| reset))
                .unwrap_or(1)
                .clamp(1, MAX_HOLD_MS / 1000),
        )
    } else {
        fb.inin
            .filter(|(count, allowed, _)| *allowed > 0 && count >= allowed)
            .map(|(_, _, reset)| reset.clamp(1, MAX_HOLD_MS / 1000))
    };
    let drain_to = fb.inin.and_then(|(count, allowed, _)| {
        (allowed > 0 && count as f64 >= allowed as f64 * cfg.nearly_spent)
            .then(|| allowed.saturating_sub(count))
    });
    if block_s.is_none() && drain_to.is_none() {
        return Ok(None);
    }
    let pl = cfg.platforms.get(platform).copied();
    update(store, &keys::platform(platform), ATTEMPTS, |current| {
        let mut b = current
            .and_then(Bucket::decode)
            .unwrap_or_else(|| match pl {
                Some(l) => Bucket::full(&l, now),
                None => Bucket::default(),
            });
        b.clamp(now);
        if let Some(l) = &pl {
            b.refill(l, now);
            if let Some(left) = drain_to {
                b.level = b.level.min(l.scaled(left));
            }
        }
        let mut event = None;
        if let Some(s) = block_s {
            let until = now.saturating_add(s * 1000);
            if until > b.blocked_until_ms {
                b.blocked_until_ms = until;
                event = Some(
                    Event::new("PLATFORM_RATE_LIMITED")
                        .str("platform", platform)
                        .num("status", u64::from(fb.status))
                        .num("hold_s", s),
                );
            }
        }
        Update::Write(b.encode(), event)
    })
}
