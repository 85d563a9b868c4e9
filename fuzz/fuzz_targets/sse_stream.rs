//! A streamed answer through the guard, in every streaming dialect it reads (chat,
//! completions, Responses, Anthropic Messages; the first cut picks one): however the bytes are
//! split into chunks, the client gets the same text, and the text released holds nothing the
//! scanner would redact.
#![no_main]

use cxgate_guard::api::Api;
use cxgate_guard::pii::{Kind, Scanner};
use cxgate_guard::safety::Safety;
use cxgate_guard::sse::{Policy, SseGuard};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::sync::OnceLock;

fn parts() -> &'static (Scanner, Safety) {
    static P: OnceLock<(Scanner, Safety)> = OnceLock::new();
    P.get_or_init(|| {
        (
            Scanner::new(&Kind::ALL),
            Safety::new(vec!["exploit".into()]).unwrap_or_else(|_| unreachable!()),
        )
    })
}

fn run(api: Api, p: &Policy<'_>, chunks: &[&[u8]]) -> Vec<u8> {
    let mut g = SseGuard::new(api);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(g.push(p, c));
    }
    out.extend(g.finish(p));
    out
}

/// The stream of `texts` as deltas in `api`'s dialect.
fn stream(api: Api, texts: &[String]) -> String {
    let mut body = String::new();
    let mut event = |name: Option<&str>, v: Value| {
        if let Some(n) = name {
            body.push_str(&format!("event: {n}\n"));
        }
        body.push_str(&format!("data: {v}\n\n"));
    };
    for (n, t) in texts.iter().take(64).enumerate() {
        match api {
            Api::Completions => event(None, json!({"id": "c", "choices": [{"index": 0, "text": t}]})),
            Api::Responses => event(
                Some("response.output_text.delta"),
                json!({"type": "response.output_text.delta", "sequence_number": n,
                       "item_id": "m", "output_index": 0, "content_index": 0, "delta": t}),
            ),
            Api::Messages => event(
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": t}}),
            ),
            _ => event(
                None,
                json!({"id": "c", "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]}),
            ),
        }
    }
    match api {
        Api::Responses => event(
            Some("response.completed"),
            json!({"type": "response.completed", "sequence_number": 999, "response": {"output": []}}),
        ),
        Api::Messages => event(Some("message_stop"), json!({"type": "message_stop"})),
        _ => body.push_str("data: [DONE]\n\n"),
    }
    body
}

/// The text the client assembles from the stream's deltas.
fn content(api: Api, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for event in text.split("\n\n") {
        let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let piece = match api {
            Api::Completions => v["choices"][0]["text"].as_str(),
            Api::Responses => v["delta"].as_str(),
            Api::Messages => v["delta"]["text"].as_str(),
            _ => v["choices"][0]["delta"]["content"].as_str(),
        };
        out.push_str(piece.unwrap_or(""));
    }
    out
}

fuzz_target!(|input: (Vec<String>, Vec<u8>)| {
    let (texts, cuts) = input;
    let api = match cuts.first().copied().unwrap_or(0) % 4 {
        0 => Api::Chat,
        1 => Api::Completions,
        2 => Api::Responses,
        _ => Api::Messages,
    };
    let body = stream(api, &texts);
    let bytes = body.as_bytes();
    let (scanner, safety) = parts();
    let p = Policy {
        scanner,
        safety,
        fallback_text: "fallback",
        strip_usage: false,
        placeholders: None,
    };
    let whole = run(api, &p, &[bytes]);
    let mut pieces = Vec::new();
    let mut at = 0;
    for c in cuts.iter().skip(1).take(256) {
        let next = (at + usize::from(*c) + 1).min(bytes.len());
        pieces.push(&bytes[at..next]);
        at = next;
    }
    pieces.push(&bytes[at..]);
    let split = run(api, &p, &pieces);
    assert_eq!(
        content(api, &split),
        content(api, &whole),
        "the split changed what the client sees"
    );
    let released = content(api, &whole);
    if !released.contains("fallback") {
        assert!(scanner.find(&released).is_empty(), "{released:?}");
    }
});
