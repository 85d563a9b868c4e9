//! A streamed answer through the guard: however the bytes are split into chunks, the client
//! gets the same stream, and the text released holds nothing the scanner would redact.
#![no_main]

use cxgate_guard::pii::{Kind, Scanner};
use cxgate_guard::safety::Safety;
use cxgate_guard::sse::{Policy, SseGuard};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

fn parts() -> &'static (Scanner, Safety) {
    static P: OnceLock<(Scanner, Safety)> = OnceLock::new();
    P.get_or_init(|| {
        (
            Scanner::new(&[Kind::Ssn, Kind::Card, Kind::Phone, Kind::Email]),
            Safety::new(vec!["exploit".into()]).unwrap_or_else(|_| unreachable!()),
        )
    })
}

fn run(p: &Policy<'_>, chunks: &[&[u8]]) -> Vec<u8> {
    let mut g = SseGuard::default();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(g.push(p, c));
    }
    out.extend(g.finish(p));
    out
}

/// The content the client assembles from the stream.
fn content(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for event in text.split("\n\n") {
        if let Some(data) = event.strip_prefix("data: ")
            && let Ok(v) = serde_json::from_str::<Value>(data)
            && let Some(c) = v["choices"][0]["delta"]["content"].as_str()
        {
            out.push_str(c);
        }
    }
    out
}

fuzz_target!(|input: (Vec<String>, Vec<u8>)| {
    let (texts, cuts) = input;
    // An OpenAI stream of the fuzzer's deltas.
    let mut body = String::new();
    for t in texts.iter().take(64) {
        let e = serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
        body.push_str(&format!("data: {e}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    let bytes = body.as_bytes();
    let (scanner, safety) = parts();
    let p = Policy {
        scanner,
        safety,
        fallback_text: "fallback",
        strip_usage: false,
    };
    let whole = run(&p, &[bytes]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts.iter().take(256) {
        let next = (at + usize::from(*c) + 1).min(bytes.len());
        pieces.push(&bytes[at..next]);
        at = next;
    }
    pieces.push(&bytes[at..]);
    let split = run(&p, &pieces);
    assert_eq!(
        content(&split),
        content(&whole),
        "the split changed what the client sees"
    );
    let released = content(&whole);
    if !released.contains("fallback") {
        assert!(scanner.find(&released).is_empty(), "{released:?}");
    }
});
