//! A CXone bot webhook: either shape is read without a panic, and the conversation sent back
//! in botSessionState never grows past its bound, whatever came in.
#![no_main]

use cxgate_guard::bot::{self, Webhook};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(Webhook::Exchange(cx)) = bot::parse(&v) else {
        return;
    };
    for max in [256, 1_000, 8_192] {
        let state = bot::session_state(&cx.other_state, &cx.turns, max);
        assert!(
            state.to_string().len() <= max,
            "{} > {max}",
            state.to_string().len()
        );
        // What goes back reads back as the newest part of the same conversation.
        let back = bot::parse(&serde_json::json!({"userInput": "", "botSessionState": state}));
        if let Ok(Webhook::Exchange(again)) = back {
            assert!(cx.turns.ends_with(&again.turns));
        }
    }
});
