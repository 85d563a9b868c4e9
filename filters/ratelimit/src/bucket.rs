//! Token-bucket arithmetic in exact integers. A limit of `rate` units per `period_ms` is kept
//! in "scaled" units (1 unit = `period_ms` scaled units), so one millisecond refills exactly
//! `rate` scaled units and no rounding ever creeps in. Refill is computed from timestamps.

pub use cxgate_model::Limit;

/// Seconds for a `Retry-After` header: whole seconds, rounded up, at least 1.
pub fn retry_after_s(wait_ms: u64) -> u64 {
    wait_ms.div_ceil(1000).max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Scaled units available.
    pub level: u64,
    /// When `level` was last brought up to date.
    pub at_ms: u64,
    /// The platform asked us to stop until then (its 429 / rate-limit headers).
    pub blocked_until_ms: u64,
}

/// What taking from a bucket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Taken; `level` is what is left (scaled).
    Admitted { level: u64 },
    /// Not enough yet: enough will be there in `wait_ms`.
    Denied { wait_ms: u64 },
    /// The cost is above the capacity: it can never fit.
    Never,
}

const ENCODED: usize = 24;

/// The longest a platform's 429 holds its traffic (`Retry-After` is clamped to this).
pub const MAX_HOLD_MS: u64 = 3_600_000;

impl Bucket {
    pub fn full(limit: &Limit, now_ms: u64) -> Self {
        Bucket {
            level: limit.full(),
            at_ms: now_ms,
            blocked_until_ms: 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCODED);
        out.extend_from_slice(&self.level.to_le_bytes());
        out.extend_from_slice(&self.at_ms.to_le_bytes());
        out.extend_from_slice(&self.blocked_until_ms.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != ENCODED {
            return None;
        }
        let at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        Some(Bucket {
            level: at(0)?,
            at_ms: at(8)?,
            blocked_until_ms: at(16)?,
        })
    }

    /// Pulls stamps from the future back to `now_ms` (the hold to at most [`MAX_HOLD_MS`]
    /// ahead): they were written before the wall clock stepped back, and would otherwise stop
    /// the refill, or hold traffic, for as long as the step. True if anything changed, so the
    /// caller writes the bucket back even when it refuses.
    pub fn clamp(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        if self.at_ms > now_ms {
            self.at_ms = now_ms;
            changed = true;
        }
        let hold = now_ms.saturating_add(MAX_HOLD_MS);
        if self.blocked_until_ms > hold {
            self.blocked_until_ms = hold;
            changed = true;
        }
        changed
    }

    /// Brings `level` up to `now_ms` (never past full; time never runs backwards).
    pub fn refill(&mut self, limit: &Limit, now_ms: u64) {
        if now_ms > self.at_ms {
            let added = (now_ms - self.at_ms).saturating_mul(limit.rate);
            self.level = self.level.saturating_add(added).min(limit.full());
            self.at_ms = now_ms;
        }
    }

    /// Takes `cost` units if they are there. `refills` is false for a distributed bucket,
    /// which only grows by the allotments the sidecar grants.
    pub fn take(&mut self, limit: &Limit, now_ms: u64, cost: u64, refills: bool) -> Take {
        if cost > limit.capacity {
            return Take::Never;
        }
        if refills {
            self.refill(limit, now_ms);
        }
        if self.blocked_until_ms > now_ms {
            return Take::Denied {
                wait_ms: self.blocked_until_ms - now_ms,
            };
        }
        let need = limit.scaled(cost);
        if self.level >= need {
            self.level -= need;
            Take::Admitted { level: self.level }
        } else {
            Take::Denied {
                wait_ms: limit.wait_ms(need - self.level),
            }
        }
    }

    /// Gives `cost` units back (a later check refused the request), never past full.
    pub fn refund(&mut self, limit: &Limit, cost: u64) {
        self.level = self
            .level
            .saturating_add(limit.scaled(cost))
            .min(limit.full());
    }

    /// Seconds until the bucket is full again (the `RateLimit-Reset` header).
    pub fn reset_s(&self, limit: &Limit) -> u64 {
        limit
            .wait_ms(limit.full().saturating_sub(self.level))
            .div_ceil(1000)
    }

    /// Whole units left (the `RateLimit-Remaining` header).
    pub fn remaining(&self, limit: &Limit) -> u64 {
        self.level / limit.period_ms.max(1)
    }
}
