//! Layer 2: the shipped `kong/kong.yml` document in the pipeline module under the kong
//! profile (Kong's measured host). Kong does not route again after `:path` changes and has no
//! filter under a call, so the normalized API goes out as the transform's own call carrying
//! the synced token; the LLM chain and the bot webhook call with their tokens too, and the
//! chain's retry waits call the sidecar's timer with its key.

use cxgate_abi_host::fixtures::{SIDECAR_KEY, kong_pipeline, start_synced};
use cxgate_abi_host::{Action, CallInfo, CallReply, Host, Profile, Stream, filter_wasm};
use serde_json::{Value, json};

fn host() -> Host {
    let doc = kong_pipeline();
    assert!(doc.is_object(), "kong/kong.yml has a pipeline document");
    start_synced(&filter_wasm("cxgate-pipeline"), Profile::Kong, 1, &doc).unwrap()
}

/// A request as Kong hands it over: key-auth's consumer header, names in the client's case,
/// the body (if any) in one piece.
fn send(h: &mut Host, method: &str, path: &str, consumer: &str, body: Option<&Value>) -> Stream {
    let s = h.new_stream(0).unwrap();
    let text = body.map(Value::to_string).unwrap_or_default();
    let len = text.len().to_string();
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "127.0.0.1:8080"),
        ("X-Consumer-Username", consumer),
    ];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
        headers.push(("Content-Length", len.as_str()));
    }
    let a = h.request_headers(s, &headers, false).unwrap();
    if body.is_some() && a == Action::Pause {
        h.request_body(s, text.as_bytes(), true).unwrap();
    }
    s
}

/// The one call a request waits for (the sidecar's long poll aside).
fn pending(h: &Host) -> CallInfo {
    h.awaited_call().unwrap()
}

fn reply_json(h: &Host, s: Stream) -> (u32, Value) {
    let r = h.local_reply(s).expect("a reply");
    let v = serde_json::from_slice(r.body.trim_ascii_end()).unwrap();
    (r.status, v)
}

fn clean(h: &Host) {
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    assert!(h.recycles().is_empty(), "{:?}", h.recycles());
}

#[test]
fn the_normalized_update_goes_out_as_the_transforms_own_call_with_the_synced_token() {
    let mut h = host();
    let body = json!({"idempotency_key": "k-1", "target_platform": "GENESYS",
        "payload": {"queue_name": "Premium_Support", "enabled": true,
                    "routing_strategy": "LONGEST_IDLE_AGENT", "skill_requirements": ["billing"],
                    "max_wait_time_ms": 120000}});
    let s = send(
        &mut h,
        "POST",
        "/gateway/v1/routing/queues/update",
        "wfm-sync",
        Some(&body),
    );
    let call = pending(&h);
    assert_eq!(call.upstream, "127.0.0.1:7101");
    assert_eq!(call.header(":method"), Some("PUT"));
    assert_eq!(
        call.path(),
        "/api/v2/routing/queues/q-1",
        "the platform's own path"
    );
    assert_eq!(call.header("authorization"), Some("Bearer genesys-tok-1"));
    let sent: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(sent["routingConfig"]["maxWaitTime"], "PT2M");
    let platform = json!({"id": "q-1", "name": "Premium_Support", "enabled": true, "version": 3,
        "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing"], "maxWaitTime": "PT2M"}});
    h.reply(call.token, CallReply::json(200, &platform.to_string()))
        .unwrap();
    let (status, v) = reply_json(&h, s);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["platform"], "GENESYS");
    assert_eq!(v["queue_id"], "q-1");
    assert_eq!(v["max_wait_time_ms"], 120000);
    h.finish(s).unwrap();

    // The same key again: the stored answer, and no call.
    let s = send(
        &mut h,
        "POST",
        "/gateway/v1/routing/queues/update",
        "wfm-sync",
        Some(&body),
    );
    assert!(
        h.pending_calls()
            .iter()
            .all(|c| c.path().starts_with("/v1/state")),
        "a replay makes no call"
    );
    let r = h.local_reply(s).unwrap();
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    clean(&h);
}

#[test]
fn a_listing_pages_through_the_transforms_own_calls() {
    let mut h = host();
    let s = send(
        &mut h,
        "GET",
        "/gateway/v1/routing/queues?platform=CXONE&page_size=2",
        "analytics-batch",
        None,
    );
    let call = pending(&h);
    assert_eq!(call.upstream, "127.0.0.1:7102");
    assert_eq!(
        call.path(),
        "/incontactapi/services/v30.0/skills?skip=0&top=2"
    );
    assert_eq!(call.header("authorization"), Some("Bearer cxone-tok-1"));
    let page = json!({"skills": [{"skillId": 11000, "skillName": "billing", "isActive": true},
                                 {"skillId": 11001, "skillName": "tier2", "isActive": true}],
                      "totalRecords": 5});
    h.reply(call.token, CallReply::json(200, &page.to_string()))
        .unwrap();
    let (status, v) = reply_json(&h, s);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["items"][1]["queue_name"], "tier2");
    assert_eq!(v["has_more"], true);
    assert!(v["next_cursor"].is_string());
    h.finish(s).unwrap();
    // A 200 that is not the listing (an error envelope): the consumer gets a 502, not an
    // empty last page.
    let s = send(
        &mut h,
        "GET",
        "/gateway/v1/routing/queues?platform=CXONE&page_size=2",
        "analytics-batch",
        None,
    );
    let call = pending(&h);
    h.reply(call.token, CallReply::json(200, r#"{"error": "busy"}"#))
        .unwrap();
    let (status, v) = reply_json(&h, s);
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["type"], "urn:cxgate:problem:platform-invalid-response");
    let r = h.local_reply(s).unwrap();
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.header(":status"),
        None,
        "the status is the reply's, not a header"
    );
    clean(&h);
}

#[test]
fn without_a_synced_token_nothing_is_sent_and_the_consumer_is_told_to_retry() {
    let mut h = Host::builder(filter_wasm("cxgate-pipeline"))
        .profile(Profile::Kong)
        .env("CXGATE_SIDECAR_KEY", SIDECAR_KEY)
        .env("CXGATE_CURSOR_KEY", cxgate_abi_host::fixtures::CURSOR_KEY)
        .config(&kong_pipeline().to_string())
        .start()
        .unwrap();
    let s = send(
        &mut h,
        "GET",
        "/gateway/v1/routing/queues?platform=GENESYS",
        "analytics-batch",
        None,
    );
    let r = h.local_reply(s).expect("a reply");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.problem().unwrap()["type"],
        "urn:cxgate:problem:token-unavailable"
    );
    assert!(
        !h.pending_calls()
            .iter()
            .any(|c| c.upstream == "127.0.0.1:7101"),
        "nothing went to the platform"
    );
}

#[test]
fn the_chain_and_the_bot_call_with_their_tokens_and_wait_on_the_sidecars_timer() {
    let mut h = host();
    let s = send(
        &mut h,
        "POST",
        "/gateway/v1/llm/pipeline",
        "omnichannel-app-prod",
        Some(&json!({"input": "Change my flight to next Tuesday"})),
    );
    let llm = pending(&h);
    assert_eq!(llm.upstream, "127.0.0.1:7103");
    assert_eq!(llm.header("authorization"), Some("Bearer llm-key"));
    h.reply(
        llm.token,
        CallReply::Response {
            status: 429,
            headers: vec![("retry-after".into(), "1".into())],
            body: b"{}".to_vec(),
        },
    )
    .unwrap();
    let timer = pending(&h);
    assert_eq!(timer.upstream, "127.0.0.1:7070");
    assert_eq!(timer.path(), "/cxgate/delay?ms=1010");
    assert_eq!(timer.header("x-cxgate-sidecar-key"), Some(SIDECAR_KEY));
    h.finish(s).unwrap();

    let s = send(
        &mut h,
        "POST",
        "/gateway/v1/bots/cxone",
        "cxone-bot-hub",
        Some(&json!({"botId": "b", "sessionId": "s"})),
    );
    let history = pending(&h);
    assert_eq!(history.upstream, "127.0.0.1:7102");
    assert_eq!(history.header("authorization"), Some("Bearer cxone-tok-1"));
    h.finish(s).unwrap();
    clean(&h);
}
