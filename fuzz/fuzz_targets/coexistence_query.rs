//! A SIP proxy's decision request: refused with a problem naming the field, or read into a
//! query whose every field keeps its promise.
#![no_main]

use cxgate_coexistence::decide::{is_uuid, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data, 4096) {
        Ok(q) => {
            let digits = q.dnis.strip_prefix('+').unwrap_or(&q.dnis);
            assert!((1..=20).contains(&digits.len()), "{}", q.dnis);
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{}", q.dnis);
            if let Some(c) = &q.correlation_id {
                assert!(is_uuid(c), "{c}");
            }
            if let Some(u) = &q.target_user {
                assert_eq!(u, &u.to_ascii_lowercase());
            }
        }
        Err(p) => assert!((400..500).contains(&p.status), "{}", p.status),
    }
});
