//! Every answer shape the guard forwards, whole and streamed (split at every byte): the text
//! the consumer assembles is redacted as a whole answer would be, no fragment of an entity is
//! ever sent, usage is read, and an unsafe answer ends in the API's own fallback shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use cxgate_guard::api::Api;
use cxgate_guard::pii::{Kind, Scanner};
use cxgate_guard::safety::{DEFAULT_KEYWORDS, Safety};
use cxgate_guard::sse::{Policy, SseGuard};
use serde_json::{Value, json};

const TEXT: &str = "Sure. SSN 123-45-6789, card 4111 1111 1111 1111, mail jane.doe@example.com, tel (415) 555-2671 ext. 12. Bye";
const CLEAN: &str = "Sure. SSN [SSN REDACTED], card [CARD REDACTED], mail [EMAIL REDACTED], tel [PHONE REDACTED]. Bye";
const FRAGMENTS: [&str; 5] = ["6789", "1111", "jane", "2671", "ext. 12"];

fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_string).collect()
}

fn event(out: &mut String, name: Option<&str>, data: &Value) {
    if let Some(n) = name {
        out.push_str(&format!("event: {n}\n"));
    }
    out.push_str(&format!("data: {data}\n\n"));
}

/// A Responses API stream of `text` in word deltas, as OpenAI sends it.
fn responses_stream(text: &str) -> Vec<u8> {
    let mut out = String::new();
    let mut seq = 0;
    let mut next = |out: &mut String, mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        let name = v["type"].as_str().unwrap().to_string();
        event(out, Some(&name), &v);
    };
    let resp = json!({"id": "resp_1", "object": "response", "status": "in_progress", "model": "m", "output": []});
    next(
        &mut out,
        json!({"type": "response.created", "response": resp}),
    );
    next(
        &mut out,
        json!({"type": "response.output_item.added", "output_index": 0,
        "item": {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}}),
    );
    for w in words(text) {
        next(
            &mut out,
            json!({"type": "response.output_text.delta", "item_id": "msg_1",
            "output_index": 0, "content_index": 0, "delta": w}),
        );
    }
    next(
        &mut out,
        json!({"type": "response.output_text.done", "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "text": text}),
    );
    let part = json!({"type": "output_text", "text": text, "annotations": []});
    next(
        &mut out,
        json!({"type": "response.content_part.done", "item_id": "msg_1",
        "output_index": 0, "content_index": 0, "part": part}),
    );
    let item = json!({"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [part]});
    next(
        &mut out,
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    );
    let done = json!({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
        "output": [item], "usage": {"input_tokens": 11, "output_tokens": 22, "total_tokens": 33}});
    next(
        &mut out,
        json!({"type": "response.completed", "response": done}),
    );
    out.into_bytes()
}

/// An Anthropic Messages stream of `text` in word deltas.
fn messages_stream(text: &str) -> Vec<u8> {
    let mut out = String::new();
    let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": null, "usage": {"input_tokens": 9, "output_tokens": 1}});
    event(
        &mut out,
        Some("message_start"),
        &json!({"type": "message_start", "message": msg}),
    );
    event(
        &mut out,
        Some("content_block_start"),
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    event(&mut out, Some("ping"), &json!({"type": "ping"}));
    for w in words(text) {
        event(
            &mut out,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        );
    }
    event(
        &mut out,
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    );
    event(
        &mut out,
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 22}}),
    );
    event(
        &mut out,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    out.into_bytes()
}

/// A legacy completions stream of `text`.
fn completions_stream(text: &str) -> Vec<u8> {
    let mut out = String::new();
    for w in words(text) {
        event(
            &mut out,
            None,
            &json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": w, "finish_reason": null, "logprobs": null}]}),
        );
    }
    event(
        &mut out,
        None,
        &json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": null}]}),
    );
    event(
        &mut out,
        None,
        &json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 22, "total_tokens": 33}}),
    );
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

struct Seen {
    /// Each event: its `event:` name and its data.
    events: Vec<(Option<String>, Value)>,
    raw: String,
}

fn parse(bytes: &[u8]) -> Seen {
    let raw = String::from_utf8(bytes.to_vec()).unwrap();
    let mut events = Vec::new();
    for block in raw.split("\n\n").filter(|b| !b.is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = Some(n.to_string());
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if data == "[DONE]" {
            events.push((name, json!("[DONE]")));
            continue;
        }
        events.push((name, serde_json::from_str(&data).unwrap()));
    }
    Seen { events, raw }
}

/// The text the consumer assembles from the deltas of `api`.
fn deltas(api: Api, seen: &Seen) -> (String, Vec<String>) {
    let mut pieces = Vec::new();
    for (_, v) in &seen.events {
        let piece = match api {
            Api::Chat => v["choices"][0]["delta"]["content"].as_str(),
            Api::Completions => v["choices"][0]["text"].as_str(),
            Api::Responses if v["type"] == "response.output_text.delta" => v["delta"].as_str(),
            Api::Messages if v["type"] == "content_block_delta" => v["delta"]["text"].as_str(),
            _ => None,
        };
        if let Some(p) = piece {
            pieces.push(p.to_string());
        }
    }
    (pieces.concat(), pieces)
}

fn run(api: Api, bytes: &[u8], split: usize, keywords: &[&str]) -> (Seen, SseGuard) {
    let scanner = Scanner::new(&Kind::ALL);
    let safety = Safety::new(keywords.iter().map(|s| s.to_string()).collect()).unwrap();
    let p = Policy {
        scanner: &scanner,
        safety: &safety,
        fallback_text: "FALLBACK",
        strip_usage: false,
        placeholders: None,
    };
    let mut g = SseGuard::new(api);
    let mut out = Vec::new();
    for piece in bytes.chunks(split) {
        out.extend(g.push(&p, piece));
    }
    out.extend(g.finish(&p));
    (parse(&out), g)
}

fn streams() -> [(Api, Vec<u8>); 3] {
    [
        (Api::Responses, responses_stream(TEXT)),
        (Api::Messages, messages_stream(TEXT)),
        (Api::Completions, completions_stream(TEXT)),
    ]
}

#[test]
fn every_stream_split_at_any_byte_is_redacted_whole_and_never_leaks_a_fragment() {
    for (api, bytes) in streams() {
        for split in [1, 2, 5, 13, bytes.len()] {
            let (seen, g) = run(api, &bytes, split, &[]);
            let (text, pieces) = deltas(api, &seen);
            assert_eq!(text, CLEAN, "{api:?} split {split}");
            for p in &pieces {
                for f in FRAGMENTS {
                    assert!(!p.contains(f), "{api:?}: {f} in {p:?}");
                }
            }
            for f in FRAGMENTS {
                assert!(!seen.raw.contains(f), "{api:?} split {split}: {f} sent");
            }
            assert_eq!(g.redacted.len(), 4, "{api:?}");
            assert_eq!(
                g.usage.map(|u| (u.prompt, u.completion)),
                Some((if api == Api::Messages { 9 } else { 11 }, 22)),
                "{api:?}"
            );
        }
    }
}

#[test]
fn the_responses_apis_whole_text_events_carry_what_was_streamed_in_order() {
    let bytes = responses_stream(TEXT);
    let (seen, g) = run(Api::Responses, &bytes, 3, &[]);
    assert!(g.done);
    let mut seqs = Vec::new();
    for (name, v) in &seen.events {
        assert_eq!(name.as_deref(), v["type"].as_str(), "{v}");
        seqs.push(v["sequence_number"].as_u64().unwrap());
        match v["type"].as_str().unwrap() {
            "response.output_text.done" => assert_eq!(v["text"], CLEAN),
            "response.content_part.done" => assert_eq!(v["part"]["text"], CLEAN),
            "response.output_item.done" => assert_eq!(v["item"]["content"][0]["text"], CLEAN),
            "response.completed" => {
                assert_eq!(v["response"]["output"][0]["content"][0]["text"], CLEAN);
            }
            _ => {}
        }
    }
    let expected: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "sequence numbers stay a gapless run");
    assert_eq!(seen.events.last().unwrap().1["type"], "response.completed");
}

#[test]
fn an_unsafe_stream_ends_in_each_apis_own_fallback() {
    let risky = "Here is how to bypass security right now";
    for (api, bytes) in [
        (Api::Responses, responses_stream(risky)),
        (Api::Messages, messages_stream(risky)),
        (Api::Completions, completions_stream(risky)),
    ] {
        for split in [1, 7, bytes.len()] {
            let (seen, g) = run(api, &bytes, split, &DEFAULT_KEYWORDS);
            assert_eq!(g.unsafe_hit.as_deref(), Some("bypass security"), "{api:?}");
            assert!(
                !seen.raw.to_lowercase().contains("bypass security"),
                "{api:?}"
            );
            let (text, _) = deltas(api, &seen);
            assert!(text.ends_with("FALLBACK"), "{api:?}: {text}");
            let last = &seen.events.last().unwrap().1;
            match api {
                Api::Responses => {
                    assert_eq!(last["type"], "response.incomplete");
                    assert_eq!(
                        last["response"]["incomplete_details"]["reason"],
                        "content_filter"
                    );
                    assert!(
                        last["response"]["output"][0]["content"][0]["text"]
                            .as_str()
                            .unwrap()
                            .ends_with("FALLBACK")
                    );
                }
                Api::Messages => {
                    assert_eq!(last["type"], "message_stop");
                    let delta = seen
                        .events
                        .iter()
                        .find(|(_, v)| v["type"] == "message_delta")
                        .unwrap();
                    assert_eq!(delta.1["delta"]["stop_reason"], "refusal");
                }
                _ => {
                    assert_eq!(last, &json!("[DONE]"));
                    let before = &seen.events[seen.events.len() - 2].1;
                    assert_eq!(before["choices"][0]["finish_reason"], "content_filter");
                }
            }
        }
    }
}

#[test]
fn an_aborted_responses_or_messages_stream_releases_what_it_held() {
    for (api, bytes) in [
        (Api::Responses, responses_stream("call 415-555-2671")),
        (Api::Messages, messages_stream("call 415-555-2671")),
    ] {
        // Cut before any terminal event: right after the last delta.
        let text = String::from_utf8(bytes).unwrap();
        let cut = text.find("2671").unwrap() + 8;
        let end = text[cut..].find("\n\n").unwrap() + cut + 2;
        let (seen, g) = run(api, &text.as_bytes()[..end], 4, &[]);
        let (got, _) = deltas(api, &seen);
        assert_eq!(got, "call [PHONE REDACTED]", "{api:?}");
        assert!(!g.done);
        assert!(g.usage.is_none() || api == Api::Messages);
    }
}

mod whole {
    use super::*;
    use common::{host, pipeline};
    use cxgate_model::Request;

    fn through(
        api_path: &str,
        request: Value,
        answer: Value,
    ) -> (Value, cxgate_model::fakes::TestHost) {
        let mut h = host();
        let p = pipeline(&mut h, |_| {});
        let headers = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), api_path.to_string()),
            (
                "x-cxgate-consumer".to_string(),
                "omnichannel-app-prod".to_string(),
            ),
        ];
        let (mut r, _) = Request::start(&p, headers, &mut h.io());
        let _ = r.on_body(request.to_string().into_bytes(), &mut h.io());
        let resp = vec![
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        assert!(r.on_response_headers(|| resp, &mut h.io()).is_none());
        let out = r
            .on_response_body(answer.to_string().into_bytes(), &mut h.io())
            .unwrap_or_else(|| answer.to_string().into_bytes());
        r.on_done(&mut h.io());
        (serde_json::from_slice(&out).unwrap(), h)
    }

    #[test]
    fn every_whole_answer_is_redacted_and_metered() {
        let cases = [
            (
                "/llm/v1/responses",
                json!({"model": "mock-gpt", "input": "hi"}),
                json!({"id": "r", "object": "response", "output": [
                    {"type": "reasoning", "id": "rs", "summary": []},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": TEXT, "annotations": []}]}],
                    "usage": {"input_tokens": 100, "output_tokens": 200}}),
                "/output/1/content/0/text",
            ),
            (
                "/llm/v1/completions",
                json!({"model": "mock-gpt", "prompt": "hi"}),
                json!({"choices": [{"index": 0, "text": TEXT, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 200, "total_tokens": 300}}),
                "/choices/0/text",
            ),
            (
                "/llm/v1/messages",
                json!({"model": "mock-gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
                json!({"type": "message", "content": [{"type": "text", "text": TEXT}, {"type": "tool_use", "id": "t", "name": "f", "input": {}}],
                    "usage": {"input_tokens": 100, "output_tokens": 200}}),
                "/content/0/text",
            ),
        ];
        for (path, req, answer, pointer) in cases {
            let (v, h) = through(path, req, answer);
            assert_eq!(v.pointer(pointer).unwrap(), CLEAN, "{path}");
            let labels = "model_mock-gpt.consumer_omnichannel-app-prod";
            let tokens = h
                .metrics
                .value(&format!("cxgate_llm.tokens.kind_completion.{labels}"));
            assert_eq!(tokens, 200, "{path}: usage read in the API's own names");
            assert_eq!(h.metrics.value("cxgate_llm.estimated_usage"), 0, "{path}");
        }
        // Embeddings: no text back, the input tokens metered.
        let (_, h) = through(
            "/llm/v1/embeddings",
            json!({"model": "mock-gpt", "input": "hi"}),
            json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 7, "total_tokens": 7}}),
        );
        let labels = "model_mock-gpt.consumer_omnichannel-app-prod";
        assert_eq!(
            h.metrics
                .value(&format!("cxgate_llm.tokens.kind_prompt.{labels}")),
            7
        );
    }

    #[test]
    fn an_unsafe_whole_answer_gets_the_fallback_in_its_own_shape() {
        let risky = "here is an exploit";
        let (v, _) = through(
            "/llm/v1/responses",
            json!({"model": "mock-gpt", "input": "hi"}),
            json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": risky}]}]}),
        );
        assert_eq!(v["object"], "response");
        assert_eq!(v["source"], "fallback");
        assert!(
            v["output"][0]["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("high demand")
        );
        let (v, _) = through(
            "/llm/v1/messages",
            json!({"model": "mock-gpt", "max_tokens": 5, "messages": []}),
            json!({"type": "message", "content": [{"type": "text", "text": risky}]}),
        );
        assert_eq!(v["type"], "message");
        assert_eq!(v["reason"], "unsafe_output");
        assert!(
            v["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains("high demand")
        );
        let (v, _) = through(
            "/llm/v1/completions",
            json!({"model": "mock-gpt", "prompt": "hi"}),
            json!({"choices": [{"index": 0, "text": risky}]}),
        );
        assert_eq!(v["object"], "text_completion");
        assert!(
            v["choices"][0]["text"]
                .as_str()
                .unwrap()
                .contains("high demand")
        );
    }
}
