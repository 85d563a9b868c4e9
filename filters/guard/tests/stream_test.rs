//! Redaction that survives streaming: entities split at any byte, in deltas and in SSE events.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use cxgate_guard::hold::Holdback;
use cxgate_guard::pii::{Kind, Scanner};
use cxgate_guard::safety::{DEFAULT_KEYWORDS, Safety};
use cxgate_guard::sse::{Policy, SseGuard};
use serde_json::{Value, json};

fn scanner() -> Scanner {
    Scanner::new(&Kind::ALL)
}

const TEXT: &str = "Sure. Your SSN 123-45-6789 and card 4111 1111 1111 1111 are on file; mail jane.doe@example.com or call (415) 555-2671. Done, thanks!";
const CLEAN: &str = "Sure. Your SSN [SSN REDACTED] and card [CARD REDACTED] are on file; mail [EMAIL REDACTED] or call [PHONE REDACTED]. Done, thanks!";

/// Feeds `text` in pieces of `n` chars; returns everything released, in order.
fn through_holdback(text: &str, n: usize) -> Vec<String> {
    let s = scanner();
    let mut h = Holdback::default();
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<String> = chars
        .chunks(n)
        .map(|c| h.push(&s, &c.iter().collect::<String>()).text)
        .collect();
    out.push(h.finish(&s).text);
    out
}

#[test]
fn any_split_gives_the_same_redacted_text_and_never_a_fragment() {
    for n in 1..=12 {
        let released = through_holdback(TEXT, n);
        assert_eq!(released.concat(), CLEAN, "pieces of {n}");
        for piece in &released {
            for fragment in ["6789", "1111", "jane", "example", "2671"] {
                assert!(
                    !piece.contains(fragment),
                    "{fragment} leaked in {piece:?} (pieces of {n})"
                );
            }
        }
    }
}

#[test]
fn a_streamed_answer_is_redacted_to_a_fixpoint_like_a_whole_one() {
    // Found by the fuzz target sse_stream: once the first address was replaced, the next
    // (whose name had run into it) stood alone in what was released.
    let s = scanner();
    let deltas = [
        "zifYYYYYYYYYYYYYYY".to_string(),
        "YYY".to_string(),
        format!(
            "{}i@L.iq{}i@L.iq{}i{}i@L.iq{}",
            "Y".repeat(23),
            "Y".repeat(82),
            "Y".repeat(62),
            "Y".repeat(64),
            "Y".repeat(11)
        ),
        "YYYYYYYY".to_string(),
    ];
    let mut h = Holdback::default();
    let mut released: String = deltas.iter().map(|d| h.push(&s, d).text).collect();
    released.push_str(&h.finish(&s).text);
    assert!(s.find(&released).is_empty(), "{released:?}");
    let mut whole = Holdback::default();
    let mut once = whole.push(&s, &deltas.concat()).text;
    once.push_str(&whole.finish(&s).text);
    assert_eq!(released, once, "the split changed the text");
}

#[test]
fn prose_is_released_promptly() {
    let s = scanner();
    let mut h = Holdback::default();
    let r = h.push(&s, "Hello there, how are you? ");
    assert_eq!(r.text, "Hello there, how are you? ");
    assert_eq!(h.held(), 0);
    let r = h.push(&s, "Fine");
    assert_eq!(r.text, "", "a trailing word may still become an email");
    assert_eq!(h.finish(&s).text, "Fine");
}

#[test]
fn the_held_tail_is_bounded() {
    let s = scanner();
    let mut h = Holdback::default();
    let _ = h.push(&s, &"a".repeat(10_000));
    assert!(h.held() <= 255, "held {}", h.held());
}

fn sse(events: &[Value], done: bool) -> Vec<u8> {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out.into_bytes()
}

fn chunk(content: Option<&str>, finish: Option<&str>) -> Value {
    let delta = content.map_or(json!({}), |c| json!({"content": c}));
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// The stream the client gets: contents of every event, and whether it ended with [DONE].
fn client_view(bytes: &[u8]) -> (String, Vec<Value>, bool) {
    let text = String::from_utf8_lossy(bytes);
    let mut content = String::new();
    let mut events = Vec::new();
    let mut done = false;
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let data = block.strip_prefix("data: ").unwrap_or(block);
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        for c in v["choices"].as_array().into_iter().flatten() {
            content.push_str(c["delta"]["content"].as_str().unwrap_or(""));
        }
        events.push(v);
    }
    (content, events, done)
}

fn policy<'a>(s: &'a Scanner, safety: &'a Safety, strip_usage: bool) -> Policy<'a> {
    Policy {
        scanner: s,
        safety,
        fallback_text: "FALLBACK",
        strip_usage,
        placeholders: None,
    }
}

fn run(
    bytes: &[u8],
    split: usize,
    strip_usage: bool,
    keywords: Vec<String>,
) -> (Vec<u8>, SseGuard) {
    let s = scanner();
    let safety = Safety::new(keywords).unwrap_or_else(|e| unreachable!("{e}"));
    let p = policy(&s, &safety, strip_usage);
    let mut g = SseGuard::default();
    let mut out = Vec::new();
    for piece in bytes.chunks(split) {
        out.extend(g.push(&p, piece));
    }
    out.extend(g.finish(&p));
    (out, g)
}

#[test]
fn an_sse_stream_split_at_every_byte_is_redacted_whole() {
    let words: Vec<String> = TEXT.split_inclusive(' ').map(str::to_string).collect();
    let mut events: Vec<Value> = words.iter().map(|w| chunk(Some(w), None)).collect();
    events.push(chunk(None, Some("stop")));
    let bytes = sse(&events, true);
    for split in [1, 2, 3, 7, 64, bytes.len()] {
        let (out, g) = run(&bytes, split, false, vec![]);
        let (content, _, done) = client_view(&out);
        assert_eq!(content, CLEAN, "split {split}");
        assert!(done);
        assert_eq!(g.redacted.len(), 4);
        assert!(!String::from_utf8_lossy(&out).contains("6789"));
    }
}

#[test]
fn the_usage_chunk_is_read_and_dropped_unless_the_consumer_asked() {
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                       "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}});
    let bytes = sse(
        &[chunk(Some("hi"), None), chunk(None, Some("stop")), usage],
        true,
    );
    let (out, g) = run(&bytes, 5, true, vec![]);
    assert_eq!(g.usage.map(|u| (u.prompt, u.completion)), Some((7, 3)));
    let (_, events, _) = client_view(&out);
    assert!(events.iter().all(|e| e.get("usage").is_none()), "stripped");
    let (out, _) = run(&bytes, 5, false, vec![]);
    let (_, events, _) = client_view(&out);
    assert!(events.iter().any(|e| e.get("usage").is_some()), "kept");
}

#[test]
fn an_aborted_stream_flushes_what_it_held_and_has_no_usage() {
    let bytes = sse(
        &[
            chunk(Some("call 415-555-"), None),
            chunk(Some("2671"), None),
        ],
        false,
    );
    let (out, g) = run(&bytes, 9, true, vec![]);
    let (content, _, done) = client_view(&out);
    assert_eq!(content, "call [PHONE REDACTED]");
    assert!(!done);
    assert!(g.usage.is_none());
    assert_eq!(
        g.released_chars,
        "call [PHONE REDACTED]".chars().count() as u64
    );
}

#[test]
fn unsafe_text_split_across_events_is_replaced_before_it_is_sent() {
    let keywords: Vec<String> = DEFAULT_KEYWORDS.iter().map(|s| s.to_string()).collect();
    let bytes = sse(
        &[
            chunk(Some("Here is how to byp"), None),
            chunk(Some("ass secur"), None),
            chunk(Some("ity quickly"), None),
            chunk(None, Some("stop")),
        ],
        true,
    );
    let (out, g) = run(&bytes, 4, true, keywords);
    let (content, events, done) = client_view(&out);
    assert!(
        !content.to_lowercase().contains("bypass security"),
        "{content}"
    );
    assert!(content.ends_with("FALLBACK"), "{content}");
    assert!(done);
    assert_eq!(g.unsafe_hit.as_deref(), Some("bypass security"));
    let last = events.last().cloned().unwrap_or(Value::Null);
    assert_eq!(last["source"], "fallback");
    assert_eq!(last["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(String::from_utf8_lossy(&out).matches("[DONE]").count(), 1);
}

#[test]
fn comments_and_non_json_events_pass_through() {
    let bytes = b": keep-alive\n\ndata: not json\n\n".to_vec();
    let (out, _) = run(&bytes, 3, false, vec![]);
    assert_eq!(out, bytes);
}

#[test]
fn a_redaction_never_frees_an_address_whose_start_was_already_sent() {
    // Found by the fuzz target sse_stream (FUZZING.md, finding 6): the first domain runs past
    // the length bound into the second address's name, so the first is refused and its start
    // sent; replacing the second then cut the first domain short enough to be an address.
    let s = scanner();
    // (The fuzzer's input had a second address there; names are whole runs since finding 8,
    // so this one has a card.)
    let text = format!("x@L.Y{}-4111111111111111 done", "Z".repeat(240));
    let released = through_holdback(&text, 7).concat();
    assert!(s.find(&released).is_empty(), "{released:?}");
    assert!(released.ends_with("-[CARD REDACTED] done"), "{released:?}");
    assert_eq!(
        released,
        s.redact(&text).0,
        "a stream redacts as a whole answer does"
    );
}

#[test]
fn where_a_stream_last_released_never_decides_an_address() {
    // Found by the fuzz target sse_stream (FUZZING.md, finding 7): the first domain runs into
    // the second address's name. Counted from the first name's true start it is too long, so
    // a whole answer refuses it and redacts the second; a stream scanning from where it last
    // released saw a shorter first address, kept none of it, and let the second through.
    let s = scanner();
    let text = format!(
        "{}@L.Y{}{}@L.YZ) done",
        "q".repeat(46),
        "Z".repeat(150),
        "q".repeat(70)
    );
    for size in [1, 7, 64, text.len()] {
        let released = through_holdback(&text, size).concat();
        assert!(s.find(&released).is_empty(), "{size}: {released:?}");
        assert_eq!(
            released,
            s.redact(&text).0,
            "{size}: a stream redacts as a whole answer does"
        );
    }
}

#[test]
fn an_address_never_starts_inside_a_name_so_its_neighbour_stays_refused() {
    // Found by the fuzz target sse_stream (FUZZING.md, finding 8): a name longer than 64 bytes
    // was cut to its last 64, so the address began right after a phone number that ran into
    // it. A stream sent the number (refused: it ran into a letter) before it saw the address;
    // a whole answer, once the address was replaced, redacted the number as well.
    let s = scanner();
    let text = format!(
        "+5555555555{}@L.Y{}%{} end",
        "5".to_owned() + &"q".repeat(63),
        "Z".repeat(100),
        "q".repeat(200)
    );
    for size in [1, 7, text.len()] {
        let released = through_holdback(&text, size).concat();
        assert!(s.find(&released).is_empty(), "{size}: {released:?}");
        assert_eq!(released, s.redact(&text).0, "{size}");
        assert!(
            released.starts_with("[EMAIL REDACTED]%"),
            "{size}: {released:?}"
        );
    }
}
