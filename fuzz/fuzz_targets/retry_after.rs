//! A model's Retry-After (seconds or an HTTP date), as the chain's retries read it.
#![no_main]

use cxgate_guard::retry::{RetryPolicy, Spent, retry_after_ms};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64, u64, u32, u64)| {
    let (value, now, jitter, tries, waited) = input;
    let ms = retry_after_ms(Some(value), now);
    if let Some(ms) = ms {
        assert!(ms <= 86_400_000, "a wait is at most a day: {ms}");
        if value.trim().bytes().all(|b| b.is_ascii_digit()) {
            let secs: u128 = value.trim().parse().unwrap_or(u128::MAX);
            assert_eq!(u128::from(ms), secs.saturating_mul(1000).min(86_400_000));
        }
    }
    // Whatever the wait, the policy never waits past the budget or the deadline.
    let p = RetryPolicy::default();
    let spent = Spent {
        tries: tries % 5 + 1,
        waited_ms: waited % 20_000,
        left_ms: now % 60_000,
    };
    if let Ok(wait) = p.next_wait(spent, ms, jitter) {
        assert!(spent.waited_ms + wait <= p.budget_ms);
        assert!(wait < spent.left_ms);
        assert!(spent.tries < p.attempts);
    }
});
