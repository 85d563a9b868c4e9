//! Listing cursors: what the gateway signs decodes to itself, and any other text is refused
//! without a panic (a decoded cursor re-encodes identically).
#![no_main]

use cxgate_transform::page::{Cursor, Refused, VERSION};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzz-cursor-key-0123456789abcdef";

fuzz_target!(|input: (&str, String, String, u64, u64, u32, u64, u64)| {
    let (text, route, consumer, exp_ms, next, size, seen, now) = input;
    if let Ok(c) = Cursor::decode(text, KEY, &consumer, now) {
        assert_eq!(
            c.encode(KEY, c.exp_ms),
            text,
            "a decoded cursor re-encodes identically"
        );
    }
    let made = Cursor {
        v: VERSION,
        route,
        platform: "genesys".into(),
        consumer: consumer.clone(),
        exp_ms,
        next,
        size,
        seen,
    };
    let text = made.encode(KEY, exp_ms);
    match Cursor::decode(&text, KEY, &consumer, now) {
        Ok(c) => assert_eq!(c, made),
        Err(Refused::Expired) => assert!(now >= exp_ms),
        Err(Refused::Invalid) => panic!("our own cursor was refused: {text}"),
    }
    let other = format!("{consumer}x");
    assert!(
        Cursor::decode(&text, KEY, &other, now).is_err(),
        "bound to its consumer"
    );
});
