//! Retry-After in both of RFC 9110's forms (and what is neither), and the retry policy's
//! decisions: backoff with jitter, Retry-After exactly, the attempt, budget and deadline bounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_guard::retry::{GiveUp, RetryPolicy, Spent, retriable, retry_after_ms};

/// 2015-10-21T07:28:00Z, the date in RFC 9110's example.
const NOW: u64 = 1_445_412_480_000;

#[test]
fn retry_after_in_seconds() {
    assert_eq!(retry_after_ms(Some("2"), NOW), Some(2_000));
    assert_eq!(retry_after_ms(Some(" 120 "), NOW), Some(120_000));
    assert_eq!(retry_after_ms(Some("0"), NOW), Some(0));
    // Absurdly long waits are taken as a day (past any budget, never an overflow).
    assert_eq!(
        retry_after_ms(Some("99999999999999999999999"), NOW),
        Some(86_400_000)
    );
}

#[test]
fn retry_after_as_an_http_date() {
    assert_eq!(
        retry_after_ms(Some("Wed, 21 Oct 2015 07:28:05 GMT"), NOW),
        Some(5_000)
    );
    // The obsolete forms RFC 9110 still asks recipients to read.
    assert_eq!(
        retry_after_ms(Some("Wednesday, 21-Oct-15 07:28:10 GMT"), NOW),
        Some(10_000)
    );
    assert_eq!(
        retry_after_ms(Some("Wed Oct 21 07:28:03 2015"), NOW),
        Some(3_000)
    );
    // A date in the past means now.
    assert_eq!(
        retry_after_ms(Some("Wed, 21 Oct 2015 07:00:00 GMT"), NOW),
        Some(0)
    );
}

#[test]
fn retry_after_absent_or_garbage_is_none() {
    assert_eq!(retry_after_ms(None, NOW), None);
    assert_eq!(retry_after_ms(Some(""), NOW), None);
    assert_eq!(retry_after_ms(Some("soon"), NOW), None);
    assert_eq!(retry_after_ms(Some("-5"), NOW), None);
    assert_eq!(retry_after_ms(Some("1.5"), NOW), None);
    assert_eq!(
        retry_after_ms(Some("Wed, 32 Oct 2015 07:28:00 GMT"), NOW),
        None
    );
}

#[test]
fn what_is_retried() {
    assert!(retriable(Some(429)));
    assert!(retriable(Some(500)));
    assert!(retriable(Some(503)));
    assert!(retriable(None), "no answer (reset, timeout) is retried");
    assert!(!retriable(Some(400)));
    assert!(!retriable(Some(401)));
    assert!(!retriable(Some(404)));
}

fn spent(tries: u32, waited_ms: u64, left_ms: u64) -> Spent {
    Spent {
        tries,
        waited_ms,
        left_ms,
    }
}

#[test]
fn retry_after_is_waited_exactly_and_the_backoff_doubles_with_jitter_in_its_upper_half() {
    let p = RetryPolicy::default();
    assert_eq!(p.next_wait(spent(1, 0, 30_000), Some(2_000), 0), Ok(2_000));
    for jitter in [0u64, 1, 7, 250, 9_999, u64::MAX] {
        let first = p.next_wait(spent(1, 0, 30_000), None, jitter).unwrap();
        assert!((250..=500).contains(&first), "{first}");
        let second = p.next_wait(spent(2, 0, 30_000), None, jitter).unwrap();
        assert!((500..=1_000).contains(&second), "{second}");
    }
    let capped = RetryPolicy { attempts: 10, ..p };
    let late = capped.next_wait(spent(9, 0, 300_000), None, 3).unwrap();
    assert!((2_000..=4_000).contains(&late), "capped at max_ms: {late}");
}

#[test]
fn attempts_budget_and_deadline_bound_the_retries() {
    let p = RetryPolicy::default();
    assert_eq!(
        p.next_wait(spent(3, 0, 30_000), Some(1), 0),
        Err(GiveUp::Attempts)
    );
    assert_eq!(
        p.next_wait(spent(1, 9_000, 30_000), Some(2_000), 0),
        Err(GiveUp::Budget),
        "9 s waited + 2 s is past the 10 s budget"
    );
    assert_eq!(
        p.next_wait(spent(1, 0, 1_500), Some(2_000), 0),
        Err(GiveUp::Deadline),
        "a wait past the deadline is not started"
    );
}
