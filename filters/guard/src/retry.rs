//! When to call a model again: 429 and 5xx (and calls that got no answer) are retried with
//! exponential backoff and jitter, a `Retry-After` is honoured exactly, and the attempts, the
//! time spent waiting and the request's deadline bound it all.

use cxgate_kit::ConfigError;
use cxgate_kit::fields::Fields;

/// The longest `Retry-After` taken as given (a day); longer ones are treated as a day, which
/// is past every budget anyway.
const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

/// A `Retry-After` value (delay-seconds or an HTTP date, RFC 9110 §10.2.3) as milliseconds
/// from `now_ms`; `None` when absent or not understood (the backoff applies then).
pub fn retry_after_ms(value: Option<&str>, now_ms: u64) -> Option<u64> {
    let v = value?.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = v.parse().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000).min(MAX_RETRY_AFTER_MS));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))?;
    Some(at_ms.saturating_sub(now_ms).min(MAX_RETRY_AFTER_MS))
}

/// Is a model's answer worth another try? `None` status: no answer (refused, reset, timed out).
pub fn retriable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s == 429 || s >= 500,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries per model call, the first included.
    pub attempts: u32,
    /// Total time a request may spend waiting between tries.
    pub budget_ms: u64,
    /// The first backoff; each later one doubles, up to `max_ms`.
    pub base_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            budget_ms: 10_000,
            base_ms: 500,
            max_ms: 4_000,
        }
    }
}

/// Why no further try is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    Attempts,
    /// The wait would take the request past its retry budget.
    Budget,
    /// The wait would take the request past its deadline.
    Deadline,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::Attempts => "attempts",
            GiveUp::Budget => "retry_budget",
            GiveUp::Deadline => "deadline",
        }
    }
}

/// Where a request stands when a try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// Tries made so far for this call (at least 1).
    pub tries: u32,
    /// Time waited between tries so far, for the whole request.
    pub waited_ms: u64,
    /// Time left before the request's deadline.
    pub left_ms: u64,
}

impl RetryPolicy {
    /// How long to wait before the next try, or why there is none. `jitter` is a random
    /// number: the backoff waits between half and all of its step ("equal jitter"), so
    /// clients that failed together do not come back together, and never not at all.
    pub fn next_wait(
        &self,
        spent: Spent,
        retry_after_ms: Option<u64>,
        jitter: u64,
    ) -> Result<u64, GiveUp> {
        if spent.tries >= self.attempts {
            return Err(GiveUp::Attempts);
        }
        let wait = match retry_after_ms {
            Some(ms) => ms,
            None => {
                let shift = spent.tries.saturating_sub(1).min(32);
                let step = self.base_ms.saturating_mul(1u64 << shift).min(self.max_ms);
                let half = step / 2;
                half + jitter % (step - half + 1)
            }
        };
        if spent.waited_ms.saturating_add(wait) > self.budget_ms {
            return Err(GiveUp::Budget);
        }
        if wait >= spent.left_ms {
            return Err(GiveUp::Deadline);
        }
        Ok(wait)
    }

    /// `retry: {attempts, budget_ms, base_ms, max_ms}`, each optional.
    pub fn compile(f: Option<Fields<'_>>, default: RetryPolicy) -> Result<Self, ConfigError> {
        let Some(mut f) = f else {
            return Ok(default);
        };
        let attempts = match f.u64("attempts")? {
            None => default.attempts,
            Some(n @ 1..=10) => u32::try_from(n).unwrap_or(1),
            Some(_) => {
                return Err(ConfigError::at(
                    f.at("attempts"),
                    "must be between 1 and 10",
                ));
            }
        };
        let p = RetryPolicy {
            attempts,
            budget_ms: f.u64("budget_ms")?.unwrap_or(default.budget_ms),
            base_ms: f.u64("base_ms")?.unwrap_or(default.base_ms),
            max_ms: f.u64("max_ms")?.unwrap_or(default.max_ms),
        };
        if p.base_ms == 0 || p.max_ms < p.base_ms {
            return Err(ConfigError::at(
                f.at("max_ms"),
                "base_ms must be above 0 and max_ms at least base_ms",
            ));
        }
        f.done()?;
        Ok(p)
    }
}
