//! Layer 2: the guard in the whole pipeline module with the shipped config, both profiles.
//! A streamed answer is rewritten chunk by chunk through the host's response body buffer
//! (no pause, so Kong can run it), a JSON answer is buffered and replaced, and a bot route's
//! 5xx becomes the fallback from response headers. (The key swap is the token filter's, a
//! module of its own.)

use cxgate_abi_host::fixtures::shipped_host;
use cxgate_abi_host::{Action, Host, Profile, Stream};
use serde_json::{Value, json};

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];

fn host(profile: Profile) -> Host {
    shipped_host(profile).unwrap()
}

/// A chat request on `path`, sent through the request phase; the upstream body it left with.
fn ask(h: &mut Host, path: &str, text: &str, stream: bool) -> (Stream, Value) {
    let body = json!({"model": "mock-gpt", "stream": stream,
                      "messages": [{"role": "user", "content": text}]})
    .to_string();
    let len = body.len().to_string();
    let s = h.new_stream(0).unwrap();
    let headers = [
        (":method", "POST"),
        (":path", path),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
        ("x-cxgate-consumer", "omnichannel-app-prod"),
    ];
    assert_eq!(
        h.request_headers(s, &headers, false).unwrap(),
        Action::Pause
    );
    assert_eq!(
        h.request_body(s, body.as_bytes(), true).unwrap(),
        Action::Continue
    );
    assert!(h.local_reply(s).is_none(), "{:?}", h.local_reply(s));
    let sent = serde_json::from_slice(&h.request_body_bytes(s)).unwrap();
    (s, sent)
}

fn event(content: Option<&str>, finish: Option<&str>) -> String {
    let delta = content.map_or(json!({}), |c| json!({"content": c}));
    let e = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                   "model": "mock-gpt",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    format!("data: {e}\n\n")
}

/// The text a client assembles from SSE bytes.
fn assembled(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for block in text.split("\n\n") {
        let Some(data) = block.strip_prefix("data: ") else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(data)
            && let Some(c) = v["choices"][0]["delta"]["content"].as_str()
        {
            out.push_str(c);
        }
    }
    out
}

#[test]
fn a_stream_split_into_one_byte_chunks_is_redacted_in_the_hosts_buffer_without_pausing() {
    for profile in PROFILES {
        let mut h = host(profile);
        let (s, sent) = ask(&mut h, "/llm/v1/chat/completions", "Hi", true);
        assert_eq!(sent["stream_options"]["include_usage"], true, "{profile:?}");
        let response = [
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("content-length", "9999"),
        ];
        assert_eq!(
            h.response_headers(s, &response, false).unwrap(),
            Action::Continue
        );
        assert_eq!(h.response_header(s, "content-length"), None, "{profile:?}");
        let upstream = [
            event(Some("Your SSN is 123-"), None),
            event(Some("45-6789 and mail "), None),
            event(Some("ann@example.com."), None),
            event(None, Some("stop")),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let bytes = upstream.as_bytes();
        let mut client = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            let end = i + 1 == bytes.len();
            let a = h.response_body(s, std::slice::from_ref(b), end).unwrap();
            assert_eq!(a, Action::Continue, "{profile:?}: a stream is never paused");
            let out = h.response_body_bytes(s);
            let seen =
                String::from_utf8_lossy(&client).to_string() + &String::from_utf8_lossy(&out);
            assert!(!assembled(seen.as_bytes()).contains("6789"), "{profile:?}");
            client.extend_from_slice(&out);
        }
        assert_eq!(
            assembled(&client),
            "Your SSN is [SSN REDACTED] and mail [EMAIL REDACTED].",
            "{profile:?}"
        );
        assert!(String::from_utf8_lossy(&client).ends_with("data: [DONE]\n\n"));
        h.finish(s).unwrap();
        h.tick_all().unwrap(); // counters are flushed on the tick
        assert_eq!(h.metric("cxgate_llm.redactions.type_ssn"), Some(1));
        assert_eq!(h.metric("cxgate_llm.estimated_usage"), Some(1));
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_json_answer_is_buffered_and_replaced_whole() {
    for profile in PROFILES {
        let mut h = host(profile);
        let (s, sent) = ask(&mut h, "/llm/v1/chat/completions", "Hi", false);
        assert!(sent.get("stream_options").is_none(), "{profile:?}");
        let answer = json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 1,
            "model": "mock-gpt",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Call +1 415 555 0100 now"}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}})
        .to_string();
        let len = answer.len().to_string();
        let response = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", len.as_str()),
        ];
        h.response_headers(s, &response, false).unwrap();
        let (a, b) = answer.as_bytes().split_at(40);
        assert_eq!(h.response_body(s, a, false).unwrap(), Action::Pause);
        assert_eq!(h.response_body(s, b, true).unwrap(), Action::Continue);
        let out: Value = serde_json::from_slice(&h.response_body_bytes(s)).unwrap();
        assert_eq!(
            out["choices"][0]["message"]["content"], "Call [PHONE REDACTED] now",
            "{profile:?}"
        );
        h.finish(s).unwrap();
        h.tick_all().unwrap(); // counters are flushed on the tick
        assert_eq!(
            h.metric(
                "cxgate_llm.tokens.kind_completion.model_mock-gpt.consumer_omnichannel-app-prod"
            ),
            Some(7)
        );
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_5xx_on_the_bot_route_becomes_the_fallback_with_its_headers_on_the_response() {
    for profile in PROFILES {
        let mut h = host(profile);
        let (s, _) = ask(&mut h, "/llm-bot/v1/chat/completions", "Hi", false);
        let response = [
            (":status", "503"),
            ("content-type", "text/plain"),
            ("content-length", "19"),
        ];
        assert_eq!(
            h.response_headers(s, &response, false).unwrap(),
            Action::Continue
        );
        let reply = h.local_reply(s).expect("the fallback");
        assert_eq!(reply.status, 200);
        let body: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["source"], "fallback", "{profile:?}");
        assert_eq!(body["reason"], "upstream_error");
        // Kong keeps only status and body from a reply sent here: the headers must already be
        // on the response, and the upstream's length gone.
        assert_eq!(
            h.response_header(s, "content-type").as_deref(),
            Some("application/json"),
            "{profile:?}"
        );
        assert_eq!(
            h.response_header(s, "x-cxgate-fallback").as_deref(),
            Some("upstream_error")
        );
        assert_eq!(h.response_header(s, "content-length"), None);
        h.finish(s).unwrap();
        h.tick_all().unwrap(); // counters are flushed on the tick
        assert_eq!(
            h.metric("cxgate_llm.fallbacks.reason_upstream_error"),
            Some(1)
        );
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}
