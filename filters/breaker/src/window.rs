//! One platform's breaker as it lives in shared data: the phase and a ring of time buckets,
//! in a small fixed binary layout (it is read on every request and rewritten on every
//! response, so no JSON). All arithmetic here is pure; `core` wraps it in CAS updates.

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    /// Not forwarding; the next probe may go at `next_probe_ms`.
    Open {
        next_probe_ms: u64,
    },
    /// One probe is in flight; if it has not answered by `probe_until_ms` (its stream died),
    /// the next request may probe instead.
    HalfOpen {
        probe_until_ms: u64,
    },
}

impl Phase {
    /// The phase with its time pulled back to at most one interval from `now_ms`: a stamp
    /// further ahead was written before the wall clock stepped back, and would otherwise keep
    /// the breaker open (or a probe out) for as long as the step. `None` if already within.
    pub fn clamped(self, rules: &Rules, now_ms: u64) -> Option<Phase> {
        match self {
            Phase::Open { next_probe_ms }
                if next_probe_ms > now_ms.saturating_add(rules.probe_interval_ms) =>
            {
                Some(Phase::Open {
                    next_probe_ms: now_ms.saturating_add(rules.probe_interval_ms),
                })
            }
            Phase::HalfOpen { probe_until_ms }
                if probe_until_ms > now_ms.saturating_add(rules.probe_timeout_ms) =>
            {
                Some(Phase::HalfOpen {
                    probe_until_ms: now_ms.saturating_add(rules.probe_timeout_ms),
                })
            }
            _ => None,
        }
    }
}

/// Outcomes in one time bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// `now_ms / bucket_ms` when the bucket was filled; older epochs are stale.
    pub epoch: u64,
    pub ok: u32,
    pub failed: u32,
    /// Responses slower than the latency bound (success or not).
    pub slow: u32,
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub failed: u64,
    pub slow: u64,
}

/// The window's shape and the trip rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub bucket_ms: u64,
    pub buckets: usize,
    pub min_requests: u64,
    /// Opens when `failed / total` exceeds this.
    pub failure_ratio: f64,
    /// Opens when `slow / total` exceeds this (p95 above the bound ⇔ more than 5 % slow).
    pub slow_ratio: Option<f64>,
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
}

/// Why a breaker opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trip {
    FailureRatio { failed: u64, total: u64 },
    Latency { slow: u64, total: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub phase: Phase,
    /// When it last opened from closed (time-in-open is measured from here).
    pub opened_ms: u64,
    pub ring: Vec<Bucket>,
}

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 8 + 2;
const BUCKET: usize = 8 + 4 + 4 + 4;

impl Breaker {
    pub fn closed(buckets: usize) -> Self {
        Breaker {
            phase: Phase::Closed,
            opened_ms: 0,
            ring: vec![Bucket::default(); buckets],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + BUCKET * self.ring.len());
        let (tag, at) = match self.phase {
            Phase::Closed => (0u8, 0u64),
            Phase::Open { next_probe_ms } => (1, next_probe_ms),
            Phase::HalfOpen { probe_until_ms } => (2, probe_until_ms),
        };
        out.push(FORMAT);
        out.push(tag);
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&self.opened_ms.to_le_bytes());
        out.extend_from_slice(&(self.ring.len() as u16).to_le_bytes());
        for b in &self.ring {
            out.extend_from_slice(&b.epoch.to_le_bytes());
            out.extend_from_slice(&b.ok.to_le_bytes());
            out.extend_from_slice(&b.failed.to_le_bytes());
            out.extend_from_slice(&b.slow.to_le_bytes());
        }
        out
    }

    /// Just the phase, without decoding the window: the request path's read.
    pub fn decode_phase(bytes: &[u8]) -> Option<Phase> {
        let (tag, at) = (*bytes.get(1)?, u64_at(bytes, 2)?);
        if *bytes.first()? != FORMAT {
            return None;
        }
        match tag {
            0 => Some(Phase::Closed),
            1 => Some(Phase::Open { next_probe_ms: at }),
            2 => Some(Phase::HalfOpen { probe_until_ms: at }),
            _ => None,
        }
    }

    /// `None` for bytes this version cannot read (they are then replaced by a closed breaker).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let phase = Self::decode_phase(bytes)?;
        let opened_ms = u64_at(bytes, 10)?;
        let n = usize::from(u16::from_le_bytes([*bytes.get(18)?, *bytes.get(19)?]));
        if bytes.len() != HEADER + n * BUCKET {
            return None;
        }
        let ring = (0..n)
            .map(|i| {
                let at = HEADER + i * BUCKET;
                Some(Bucket {
                    epoch: u64_at(bytes, at)?,
                    ok: u32_at(bytes, at + 8)?,
                    failed: u32_at(bytes, at + 12)?,
                    slow: u32_at(bytes, at + 16)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Breaker {
            phase,
            opened_ms,
            ring,
        })
    }

    /// Adds one outcome at `now_ms`, recycling the bucket if it holds an older epoch.
    pub fn add(&mut self, rules: &Rules, now_ms: u64, failed: bool, slow: bool) {
        let (ok, failed) = if failed { (0, 1) } else { (1, 0) };
        self.add_counts(rules, now_ms, ok, failed, u32::from(slow));
    }

    /// Adds a worker's batch of outcomes that fell into the bucket of `at_ms`. A batch older
    /// than what the bucket now holds is dropped (its window has passed).
    pub fn add_counts(&mut self, rules: &Rules, at_ms: u64, ok: u32, failed: u32, slow: u32) {
        let epoch = at_ms / rules.bucket_ms.max(1);
        let len = self.ring.len().max(1) as u64;
        let Some(b) = self.ring.get_mut((epoch % len) as usize) else {
            return;
        };
        if b.epoch > epoch {
            return;
        }
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b.ok = b.ok.saturating_add(ok);
        b.failed = b.failed.saturating_add(failed);
        b.slow = b.slow.saturating_add(slow);
    }

    pub fn counts(&self, rules: &Rules, now_ms: u64) -> Counts {
        let epoch = now_ms / rules.bucket_ms.max(1);
        let oldest = epoch.saturating_sub(self.ring.len() as u64 - 1);
        self.ring
            .iter()
            .filter(|b| b.epoch >= oldest && b.epoch <= epoch && (b.ok > 0 || b.failed > 0))
            .fold(Counts::default(), |c, b| Counts {
                total: c.total + u64::from(b.ok) + u64::from(b.failed),
                failed: c.failed + u64::from(b.failed),
                slow: c.slow + u64::from(b.slow),
            })
    }

    /// Whether the window now trips the breaker.
    pub fn trip(&self, rules: &Rules, now_ms: u64) -> Option<Trip> {
        let c = self.counts(rules, now_ms);
        if c.total < rules.min_requests.max(1) {
            return None;
        }
        let total = c.total as f64;
        if c.failed as f64 / total > rules.failure_ratio {
            return Some(Trip::FailureRatio {
                failed: c.failed,
                total: c.total,
            });
        }
        match rules.slow_ratio {
            Some(r) if c.slow as f64 / total > r => Some(Trip::Latency {
                slow: c.slow,
                total: c.total,
            }),
            _ => None,
        }
    }

    pub fn open(&mut self, rules: &Rules, now_ms: u64) {
        self.phase = Phase::Open {
            next_probe_ms: now_ms.saturating_add(rules.probe_interval_ms),
        };
    }

    /// Closed again: the window starts empty, so the old failures cannot re-trip it.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
        self.ring.iter_mut().for_each(|b| *b = Bucket::default());
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}
