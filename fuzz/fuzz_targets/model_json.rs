//! The JSON a model wrote (the LLM chain): the first object out of fences and prose.
#![no_main]

use cxgate_guard::extract::first_object;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(obj) = first_object(text) {
        // What comes out is an object, and finding it again in its own text gives it back.
        // (After one round: serde_json without `float_roundtrip` rounds a float of more than
        // 17 significant digits to a neighbour of the nearest double; FUZZING.md.)
        let once: Value = serde_json::from_str(&Value::Object(obj).to_string()).expect("re-parses");
        let again = first_object(&once.to_string()).map(Value::Object);
        assert_eq!(again.ok(), Some(once));
    }
});
