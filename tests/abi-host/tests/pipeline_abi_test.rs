//! Layer 2: the whole pipeline module with the shipped config (envoy/cxgate.json), 2 workers,
//! both profiles: one HTTP context runs trace, authz, ratelimit, transform and breaker over
//! one request model.

use cxgate_abi_host::fixtures::{shipped_pipeline, start_synced};
use cxgate_abi_host::{Action, Host, Profile, Stream, filter_wasm};
use serde_json::{Value, json};
use std::time::Duration;

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];

const UPDATE: &str = r#"{"idempotency_key": "k-1", "target_platform": "GENESYS",
  "payload": {"queue_name": "Premium_Support", "routing_strategy": "LONGEST_IDLE_AGENT",
              "skill_requirements": ["billing", "tier2"], "max_wait_time_ms": 120000}}"#;

fn pipeline(profile: Profile, edit: impl FnOnce(&mut Value)) -> Host {
    let mut doc = shipped_pipeline(profile);
    edit(&mut doc);
    start_synced(&filter_wasm("cxgate-pipeline"), profile, 2, &doc).unwrap()
}

fn get(h: &mut Host, w: usize, consumer: &str, method: &str, path: &str) -> (Stream, Action) {
    let s = h.new_stream(w).unwrap();
    let a = h
        .request_headers(
            s,
            &[
                (":method", method),
                (":path", path),
                (":authority", "gateway"),
                ("x-cxgate-consumer", consumer),
            ],
            true,
        )
        .unwrap();
    (s, a)
}

fn post(h: &mut Host, w: usize, consumer: &str, body: &str) -> (Stream, Action) {
    let s = h.new_stream(w).unwrap();
    let len = body.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/gateway/v1/routing/queues/update"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("content-length", len.as_str()),
        ("x-cxgate-consumer", consumer),
    ];
    let a = h.request_headers(s, &headers, false).unwrap();
    if a != Action::Pause || h.local_reply(s).is_some() {
        return (s, a);
    }
    let a = h.request_body(s, body.as_bytes(), true).unwrap();
    (s, a)
}

/// `n` raw Genesys reads over both workers, each answered with these response headers.
fn answered(h: &mut Host, n: usize, response: &[(&str, &str)]) {
    for i in 0..n {
        let (s, _) = get(
            h,
            i % 2,
            "omnichannel-app-prod",
            "GET",
            "/genesys/api/v2/users",
        );
        h.response_headers(s, response, true).unwrap();
        h.finish(s).unwrap();
    }
}

/// The problem a refused request got.
fn problem(h: &Host, s: Stream) -> (u32, Value) {
    let r = h.local_reply(s).expect("a local reply");
    (r.status, r.problem().unwrap())
}

#[test]
fn the_read_only_consumer_reads_but_every_write_is_403_and_nothing_is_forwarded() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |_| {});
        let (s, a) = get(
            &mut h,
            0,
            "analytics-batch",
            "GET",
            "/genesys/api/v2/routing/queues",
        );
        assert_eq!(a, Action::Continue, "{profile:?}: {:?}", h.local_reply(s));
        assert!(h.local_reply(s).is_none());

        let (s, a) = get(
            &mut h,
            1,
            "analytics-batch",
            "DELETE",
            "/genesys/api/v2/routing/queues/q-1",
        );
        assert_eq!(a, Action::Pause);
        let (status, p) = problem(&h, s);
        assert_eq!(status, 403, "{p}");
        assert_eq!(p["type"], "urn:cxgate:problem:forbidden");
        assert_eq!(p["missing_scopes"], json!(["genesys:passthrough:write"]));
        assert_eq!(p["route"], "genesys-write");
        assert!(p["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{p}");

        let (s, _) = post(&mut h, 0, "analytics-batch", UPDATE);
        let (status, p) = problem(&h, s);
        assert_eq!(status, 403, "{p}");
        assert_eq!(p["missing_scopes"], json!(["routing:queue:edit"]));
        // The refusal came before the body was read: no body callback was needed at all.
        assert_eq!(h.request_continued(s), 0);

        // A spoofed consumer header cannot help: the proxy's auth sets it (layer 3 checks
        // that); here an unknown id gets the default consumer's rights, which are none.
        let (s, _) = get(&mut h, 0, "root", "GET", "/genesys/api/v2/routing/queues");
        assert_eq!(problem(&h, s).0, 403);
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn unmatched_routes_are_denied_and_a_wrong_method_is_405_with_allow() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |_| {});
        let (s, _) = get(&mut h, 0, "omnichannel-app-prod", "GET", "/admin/secrets");
        let (status, p) = problem(&h, s);
        assert_eq!(
            (status, p["type"].as_str()),
            (404, Some("urn:cxgate:problem:no-route"))
        );
        assert!(
            p["trace_id"].is_string(),
            "the trace stage tags refusals too: {p}"
        );
        let (s, _) = get(
            &mut h,
            0,
            "omnichannel-app-prod",
            "DELETE",
            "/gateway/v1/routing/queues/update",
        );
        let r = h.local_reply(s).unwrap();
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(r.header("x-cxgate-reply"), Some("model"));
    }
}

#[test]
fn a_normalized_update_is_rewritten_for_the_platform_in_one_context() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |_| {});
        h.reset_host_calls();
        let (s, a) = post(&mut h, 0, "omnichannel-app-prod", UPDATE);
        assert_eq!(a, Action::Continue, "{profile:?}: {:?}", h.local_reply(s));
        let path = h.request_header(s, ":path").unwrap();
        assert_eq!(path, "/genesys/api/v2/routing/queues/q-1");
        assert_eq!(h.request_header(s, ":method").as_deref(), Some("PUT"));
        let body: Value = serde_json::from_slice(&h.request_body_bytes(s)).unwrap();
        assert_eq!(body["routingConfig"]["maxWaitTime"], "PT2M");
        let calls = h.host_calls();
        assert_eq!(
            calls.get("proxy_get_header_map_pairs"),
            Some(&1),
            "{calls:?}"
        );
        assert_eq!(calls.get("proxy_get_header_map_value"), None, "{calls:?}");
        h.response_headers(
            s,
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", "40"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            h.response_header(s, "ratelimit-limit").as_deref(),
            Some("300")
        );
        assert!(h.response_header(s, "x-gateway-trace-id").is_some());
        h.response_body(
            s,
            br#"{"id":"q-1","name":"Premium_Support","enabled":true}"#,
            true,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&h.response_body_bytes(s)).unwrap();
        assert_eq!(out["queue_id"], "q-1", "{out}");
        assert_eq!(out["platform"], "GENESYS");
    }
}

#[test]
fn on_envoy_a_2xx_the_consumer_cannot_use_becomes_a_502_before_its_headers_leave() {
    let mut h = pipeline(Profile::Envoy, |_| {});
    let (s, a) = post(&mut h, 0, "omnichannel-app-prod", UPDATE);
    assert_eq!(a, Action::Continue);
    // The status waits for the body: the response headers are held.
    let a = h
        .response_headers(
            s,
            &[(":status", "200"), ("content-type", "application/json")],
            false,
        )
        .unwrap();
    assert_eq!(a, Action::Pause);
    h.response_body(s, br#"{"id": "q-1", "na"#, true).unwrap();
    assert_eq!(h.response_header(s, ":status").as_deref(), Some("502"));
    assert_eq!(
        h.response_header(s, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let p: Value = serde_json::from_slice(&h.response_body_bytes(s)).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:platform-invalid-response");
    // A usable one is held just as long, and leaves as it came.
    let (s, _) = post(&mut h, 0, "omnichannel-app-prod", UPDATE);
    let a = h
        .response_headers(
            s,
            &[(":status", "200"), ("content-type", "application/json")],
            false,
        )
        .unwrap();
    assert_eq!(a, Action::Pause);
    h.response_body(s, br#"{"id":"q-1","name":"Premium_Support"}"#, true)
        .unwrap();
    assert_eq!(h.response_header(s, ":status").as_deref(), Some("200"));
}

#[test]
fn the_platform_budget_applies_to_normalized_traffic_once_the_platform_is_known() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |d| {
            d["ratelimit"]["platforms"]["genesys"] = json!({"capacity": 3, "per_minute": 3});
        });
        let mut got = Vec::new();
        for i in 0..3 {
            let path = format!(
                "/gateway/v1/routing/queues?platform=GENESYS&page_size={}",
                i + 1
            );
            let (s, a) = get(&mut h, i % 2, "wfm-sync", "GET", &path);
            got.push((a, h.local_reply(s).map(|r| r.status)));
        }
        // The body phase: the platform comes from the body, and the bucket is spent.
        let (s, _) = post(&mut h, 0, "omnichannel-app-prod", UPDATE);
        let (status, p) = problem(&h, s);
        assert_eq!(got, vec![(Action::Continue, None); 3], "{profile:?}");
        assert_eq!(status, 429, "{p}");
        assert_eq!(p["type"], "urn:cxgate:problem:platform-rate-limited");
        assert!(h.local_reply(s).unwrap().header("retry-after").is_some());
        // CXone is another budget.
        let (s, a) = get(
            &mut h,
            1,
            "wfm-sync",
            "GET",
            "/gateway/v1/routing/queues?platform=CXONE",
        );
        assert_eq!(a, Action::Continue, "{:?}", h.local_reply(s));
    }
}

#[test]
fn a_reply_the_gateway_made_passes_the_transform_unchanged() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |_| {});
        let (s, a) = post(&mut h, 0, "omnichannel-app-prod", UPDATE);
        assert_eq!(a, Action::Continue);
        // The upstream token filter had no token: its own 503 problem comes back.
        let problem = br#"{"type":"urn:cxgate:problem:token-unavailable","title":"t","status":503,"detail":"d"}"#;
        let len = problem.len().to_string();
        h.response_headers(
            s,
            &[
                (":status", "503"),
                ("content-type", "application/problem+json"),
                ("content-length", &len),
                ("x-cxgate-problem", "token-unavailable"),
            ],
            false,
        )
        .unwrap();
        h.response_body(s, problem, true).unwrap();
        assert_eq!(h.response_body_bytes(s), problem.to_vec(), "{profile:?}");
        assert_eq!(
            h.response_header(s, "content-length").as_deref(),
            Some(len.as_str())
        );
        h.finish(s).unwrap();
        // And it said nothing about Genesys: 40 of them never trip the breaker.
        answered(
            &mut h,
            40,
            &[
                (":status", "503"),
                ("x-cxgate-problem", "token-unavailable"),
            ],
        );
        h.advance(Duration::from_millis(1100)).unwrap();
        let (s, a) = get(
            &mut h,
            0,
            "omnichannel-app-prod",
            "GET",
            "/genesys/api/v2/users",
        );
        assert_eq!(a, Action::Continue, "{:?}", h.local_reply(s));
    }
}

#[test]
fn an_open_breaker_answers_the_normalized_api_with_its_own_fallback() {
    for profile in PROFILES {
        let mut h = pipeline(profile, |_| {});
        // 30 platform failures on two workers, batched per worker and flushed on the tick.
        answered(&mut h, 30, &[(":status", "502")]);
        h.advance(Duration::from_millis(1100)).unwrap();
        assert!(
            !h.logs_containing("BREAKER_OPENED").is_empty(),
            "{profile:?}"
        );
        let (s, _) = post(&mut h, 1, "omnichannel-app-prod", UPDATE);
        let r = h.local_reply(s).expect("the fallback");
        assert_eq!(r.status, 503);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body["status"], "degraded",
            "the static fallback as configured: {body}"
        );
        assert_eq!(r.header("x-cxgate-reply"), Some("breaker"));
        assert!(r.header("retry-after").is_some());
        h.advance(Duration::from_millis(1100)).unwrap();
        assert_eq!(h.metric("cxgate_breaker.fallbacks.genesys"), Some(1));
    }
}

#[test]
fn a_bad_document_names_the_field_and_envoy_refuses_it_while_kong_answers_503() {
    let mut doc = shipped_pipeline(Profile::Envoy);
    doc["model"]["routes"][1]["scopes"] = json!(["Not A Scope"]);
    let envoy = start_synced(&filter_wasm("cxgate-pipeline"), Profile::Envoy, 1, &doc);
    assert!(envoy.is_err(), "Envoy refuses the plugin");
    let mut doc = shipped_pipeline(Profile::Kong);
    doc["ratelimit"]["platfroms"] = json!({});
    let mut kong = start_synced(&filter_wasm("cxgate-pipeline"), Profile::Kong, 1, &doc).unwrap();
    let logged = kong.logs_containing("CONFIG_REJECTED");
    assert!(
        logged
            .iter()
            .any(|l| l.message.contains("/ratelimit/platfroms")),
        "{logged:?}"
    );
    let (s, a) = get(
        &mut kong,
        0,
        "omnichannel-app-prod",
        "GET",
        "/genesys/api/v2/users",
    );
    assert_eq!(a, Action::Pause);
    let (status, p) = problem(&kong, s);
    assert_eq!(
        (status, p["type"].as_str()),
        (503, Some("urn:cxgate:problem:filter-not-configured"))
    );
}
