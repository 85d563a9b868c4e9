//! Layer 2: the LLM chain in the whole pipeline module with the shipped config, both profiles,
//! under the virtual clock. A 429's Retry-After is waited out on the timer call and the retry
//! leaves exactly that long after the 429; retries stop at the budget with the error shape.

use cxgate_abi_host::fixtures::{shipped_pipeline, start_synced};
use cxgate_abi_host::{Action, CallInfo, CallReply, Host, Profile, Stream, filter_wasm};
use serde_json::{Value, json};
use std::time::Duration;

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];
const INPUT: &str = "I need to change my flight to next Tuesday and update my seat to 14A";

/// The pipeline with the shipped config; on Kong the calls go to `host:port`.
fn host(profile: Profile) -> Host {
    let mut doc = shipped_pipeline(profile);
    if profile == Profile::Kong {
        doc["guard"]["calls"] = json!({
            "llm": {"upstream": "127.0.0.1:7103", "authority": "llm"},
            "timer": {"upstream": "127.0.0.1:7070", "authority": "sidecar"}});
        doc["guard"]["routes"]["bot-cxone"]["bot"]["history"]["upstream"] = json!("127.0.0.1:7102");
    }
    start_synced(&filter_wasm("cxgate-pipeline"), profile, 1, &doc).unwrap()
}

fn start(h: &mut Host) -> Stream {
    let body = json!({"input": INPUT}).to_string();
    let len = body.len().to_string();
    let s = h.new_stream(0).unwrap();
    let headers = [
        (":method", "POST"),
        (":path", "/gateway/v1/llm/pipeline"),
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
        Action::Pause
    );
    s
}

/// The one call the stream waits for (the sidecar's long poll aside).
fn pending(h: &Host) -> CallInfo {
    h.awaited_call().unwrap()
}

fn completion(text: &str) -> CallReply {
    let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                      "usage": {"prompt_tokens": 10, "completion_tokens": 5}});
    CallReply::json(200, &body.to_string())
}

fn failure(status: u16, retry_after: Option<&str>) -> CallReply {
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(r) = retry_after {
        headers.push(("retry-after".into(), r.into()));
    }
    CallReply::Response {
        status,
        headers,
        body: br#"{"error": {"message": "busy"}}"#.to_vec(),
    }
}

fn is_llm(c: &CallInfo) -> bool {
    c.path() == "/v1/chat/completions"
}

fn reply_json(h: &Host, s: Stream) -> (u32, Option<String>, Value) {
    let r = h.local_reply(s).expect("a reply");
    // Kong appends a newline to local replies.
    let v = serde_json::from_slice(r.body.trim_ascii_end()).unwrap();
    (r.status, r.header("retry-after").map(str::to_string), v)
}

#[test]
fn a_429_on_the_specialist_is_retried_exactly_retry_after_later() {
    for profile in PROFILES {
        let mut h = host(profile);
        let s = start(&mut h);
        let extraction = pending(&h);
        assert!(is_llm(&extraction), "{profile:?}");
        h.reply(
            extraction.token,
            completion(
                r#"```json
{"action": "modify_flight", "date": "next Tuesday", "seat": "14A"}
```"#,
            ),
        )
        .unwrap();
        let specialist = pending(&h);
        assert!(is_llm(&specialist));
        h.advance(Duration::from_millis(30)).unwrap();
        let refused_at = h.now_ms();
        h.reply(specialist.token, failure(429, Some("2"))).unwrap();
        let timer = pending(&h);
        assert_eq!(timer.path(), "/cxgate/delay?ms=2010", "{profile:?}");
        assert_eq!(timer.header("x-envoy-fault-delay-request"), Some("2010"));
        // Nothing is sent before the time is up.
        h.advance(Duration::from_millis(1_999)).unwrap();
        assert!(
            !is_llm(&pending(&h)),
            "{profile:?}: no retry before Retry-After"
        );
        h.advance(Duration::from_millis(1)).unwrap();
        h.reply(timer.token, CallReply::json(204, "")).unwrap();
        let retry = pending(&h);
        assert!(is_llm(&retry), "{profile:?}");
        assert_eq!(
            retry.dispatched_ns / 1_000_000 - refused_at,
            2_000,
            "{profile:?}: the retry leaves exactly Retry-After after the 429"
        );
        h.reply(
            retry.token,
            completion(r#"{"isValid": true, "reason": "ok", "nextSteps": ["confirm"]}"#),
        )
        .unwrap();
        let (status, _, v) = reply_json(&h, s);
        assert_eq!(status, 200, "{profile:?}");
        assert_eq!(v["status"], "success");
        assert_eq!(v["extraction"]["seat"], "14A");
        assert_eq!(v["metadata"]["usage"]["specialization"]["attempts"], 2);
        assert!(
            h.violations().is_empty(),
            "{profile:?}: {:?}",
            h.violations()
        );
        h.finish(s).unwrap();
    }
}

#[test]
fn a_timer_that_never_answers_still_ends_the_wait_by_its_timeout() {
    for profile in PROFILES {
        let mut h = host(profile);
        let _s = start(&mut h);
        let extraction = pending(&h);
        h.reply(extraction.token, failure(503, Some("1"))).unwrap();
        let timer = pending(&h);
        assert_eq!(
            timer.timeout_ms, 3_010,
            "the wait, its margin and its grace"
        );
        h.advance(Duration::from_millis(3_010)).unwrap();
        assert!(
            is_llm(&pending(&h)),
            "{profile:?}: the host's timeout ends the wait"
        );
    }
}

#[test]
fn retries_stop_at_the_budget_with_the_error_shape() {
    for profile in PROFILES {
        let mut h = host(profile);
        let s = start(&mut h);
        let mut tries = 0;
        loop {
            let call = pending(&h);
            if is_llm(&call) {
                tries += 1;
                // Two six-second waits would be 12 s against a 10 s budget.
                h.reply(call.token, failure(429, Some("6"))).unwrap();
            } else {
                h.advance(Duration::from_millis(6_000)).unwrap();
                h.reply(call.token, CallReply::json(204, "")).unwrap();
            }
            if h.local_reply(s).is_some() {
                break;
            }
            assert!(tries < 5, "{profile:?}: runaway retries");
        }
        assert_eq!(tries, 2, "{profile:?}");
        let (status, retry_after, v) = reply_json(&h, s);
        assert_eq!(status, 502, "{profile:?}");
        assert_eq!(retry_after.as_deref(), Some("6"));
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"], "upstream_error");
        assert_eq!(v["metadata"]["pipelineStage"], "extraction");
        assert!(
            v["message"].as_str().unwrap().contains("retry_budget"),
            "{v}"
        );
        assert!(
            h.violations().is_empty(),
            "{profile:?}: {:?}",
            h.violations()
        );
    }
}
