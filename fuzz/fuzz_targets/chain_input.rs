//! The LLM chain's request: refused with a 400 naming the field, or an input that is not blank
//! and within its length.
#![no_main]

use cxgate_guard::chain::parse_input;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_input(&v, 4000) {
        Ok(i) => {
            assert!(!i.input.trim().is_empty());
            assert!(i.input.chars().count() <= 4000);
        }
        Err(e) => {
            assert_eq!(e.status, 400);
            assert!(!e.errors.is_empty());
        }
    }
});
