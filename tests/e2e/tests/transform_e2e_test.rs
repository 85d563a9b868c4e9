//! Layer 3: the transform filter against real Envoy 1.40, the sidecar (ID maps) and the mocks:
//! the seed's example end to end for both platforms, every error class, a duplicate retry,
//! and 3-page listings through the opaque cursor.

use cxgate_e2e::{Stack, StackOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const UPDATE: &str = "/gateway/v1/routing/queues/update";
const PREMIUM_GENESYS: &str = "00009e0e-0000-4000-8000-000000000000";

/// The normalized API's example request (the normalized queue update's reference example).
const SEED: &str = include_str!("../../fixtures/queue-update.seed.json");

fn stack() -> Stack {
    let s = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        // Not about rate limits (many requests from one consumer).
        pipeline: Some(cxgate_e2e::unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // The ID maps and tokens reach shared data through the sync.
    let started = Instant::now();
    loop {
        let st = s.sidecar_state().unwrap_or_default();
        let ready = ["genesys/queues", "cxone/queues", "cxone/skills"]
            .iter()
            .all(|m| {
                st["maps"][m]["entries"]
                    .as_object()
                    .is_some_and(|e| !e.is_empty())
            });
        if ready && post(&s, UPDATE, "application/json", SEED.as_bytes()).0 == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "maps never synced: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.http
        .delete(s.mock_url("genesys", "/__mock/requests"))
        .send()
        .unwrap();
    s.http
        .delete(s.mock_url("cxone", "/__mock/requests"))
        .send()
        .unwrap();
    s
}

/// (status, headers we look at, body as JSON)
fn post(s: &Stack, path: &str, content_type: &str, body: &[u8]) -> (u16, Option<String>, Value) {
    let r = s
        .http
        .post(s.gateway_url(path))
        .header("x-api-key", KEY)
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let v = r.json().unwrap_or(Value::Null);
    (status, replayed, v)
}

fn platform_writes(s: &Stack, platform: &str) -> Vec<Value> {
    s.gateway_requests(platform)
        .into_iter()
        .filter(|r| r["method"] != "GET")
        .collect()
}

fn body_of(r: &Value) -> Value {
    match &r["body"] {
        Value::String(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

#[test]
fn the_seed_example_runs_end_to_end_for_genesys_and_cxone() {
    let s = stack();
    // A new idempotency key, so this is not a replay of the warm-up request.
    let genesys = SEED.replace("req_8f3a2c9d1e4b", "req-e2e-genesys");
    let (status, replayed, v) = post(&s, UPDATE, "application/json", genesys.as_bytes());
    assert_eq!((status, replayed), (200, None), "{v}");
    assert_eq!(
        v,
        json!({"platform": "GENESYS", "queue_id": PREMIUM_GENESYS, "queue_name": "Premium_Support", "enabled": true,
               "routing_strategy": "LONGEST_IDLE_AGENT", "skill_requirements": ["billing", "tier2"], "max_wait_time_ms": 120000}),
        "normalized, no selfUri"
    );
    let writes = platform_writes(&s, "genesys");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0]["method"], "PUT");
    assert_eq!(
        writes[0]["path"],
        format!("/api/v2/routing/queues/{PREMIUM_GENESYS}")
    );
    assert_eq!(
        body_of(&writes[0]),
        json!({"name": "Premium_Support", "enabled": true,
               "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing", "tier2"], "maxWaitTime": "PT2M"}})
    );
    assert!(
        writes[0]["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer genesys-tok-")
    );
    let cxone = SEED
        .replace("GENESYS", "CXONE")
        .replace("req_8f3a2c9d1e4b", "req-e2e-cxone");
    let (status, _, v) = post(&s, UPDATE, "application/json", cxone.as_bytes());
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"platform": "CXONE", "queue_id": "cxq-0001", "queue_name": "Premium_Support", "enabled": true,
               "routing_strategy": "LONGEST_IDLE_AGENT", "skill_ids": ["11000", "11001"], "max_wait_time_ms": 120000})
    );
    let writes = platform_writes(&s, "cxone");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0]["path"], "/api/v2/routing/queues/cxq-0001");
    assert_eq!(
        body_of(&writes[0]),
        json!({"name": "Premium_Support", "enabled": true,
               "routingStrategy": {"type": "LONGEST_IDLE_AGENT",
                                   "skills": [{"id": "11000", "required": true}, {"id": "11001", "required": true}],
                                   "maxWaitTimeSeconds": 120}})
    );
}

#[test]
fn bad_requests_get_exact_problems_and_nothing_reaches_a_platform() {
    let s = stack();
    let mut unknown: Value = serde_json::from_str(SEED).unwrap();
    unknown["payload"]["queue_name"] = json!("No_Such_Queue");
    let mut wrong_type: Value = serde_json::from_str(SEED).unwrap();
    wrong_type["payload"]["max_wait_time_ms"] = json!("two minutes");
    wrong_type["payload"]["enabled"] = json!("yes");
    let oversize = format!(r#"{{"pad": "{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed",
            "application/json",
            b"{\"target_platform\": \"GENESYS\",".to_vec(),
            400,
            "malformed-json",
        ),
        (
            "wrong type",
            "application/json",
            wrong_type.to_string().into_bytes(),
            400,
            "validation",
        ),
        (
            "unknown queue",
            "application/json",
            unknown.to_string().into_bytes(),
            422,
            "unknown-name",
        ),
        (
            "oversize",
            "application/json",
            oversize.into_bytes(),
            413,
            "body-too-large",
        ),
        (
            "not json",
            "text/plain",
            SEED.as_bytes().to_vec(),
            415,
            "unsupported-media-type",
        ),
    ];
    for (what, ct, body, status, slug) in cases {
        let (got, _, p) = post(&s, UPDATE, ct, &body);
        assert_eq!(got, status, "{what}: {p}");
        assert_eq!(p["type"], format!("urn:cxgate:problem:{slug}"), "{what}");
        assert_eq!(p["status"], status, "{what}");
        assert!(
            p["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{what}: {p}"
        );
        if what == "wrong type" {
            let pointers: Vec<&str> = p["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["pointer"].as_str().unwrap())
                .collect();
            assert_eq!(pointers.len(), 2, "{p}");
            assert!(
                pointers.contains(&"/payload/max_wait_time_ms")
                    && pointers.contains(&"/payload/enabled")
            );
        }
        if what == "unknown queue" {
            assert!(p["detail"].as_str().unwrap().contains("No_Such_Queue"));
        }
    }
    assert!(
        platform_writes(&s, "genesys").is_empty(),
        "nothing was forwarded"
    );
    assert!(s.gateway_requests("genesys").is_empty());
}

#[test]
fn a_duplicate_retry_gets_the_first_response_and_the_platform_one_call() {
    let s = stack();
    let body = SEED.replace("req_8f3a2c9d1e4b", "req-e2e-dup");
    let (s1, r1, v1) = post(&s, UPDATE, "application/json", body.as_bytes());
    let (s2, r2, v2) = post(&s, UPDATE, "application/json", body.as_bytes());
    assert_eq!((s1, r1), (200, None));
    assert_eq!((s2, r2.as_deref()), (200, Some("true")));
    assert_eq!(v1, v2);
    assert_eq!(platform_writes(&s, "genesys").len(), 1, "one upstream call");
    // The same body from another consumer is its own request.
    let r = s
        .http
        .post(s.gateway_url(UPDATE))
        .header("x-api-key", "demo-key-wfm")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotent-replayed").is_none());
    assert_eq!(platform_writes(&s, "genesys").len(), 2);
}

fn list_all(s: &Stack, platform: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut url = format!("/gateway/v1/routing/queues?platform={platform}&page_size=25");
    loop {
        let r = s
            .http
            .get(s.gateway_url(&url))
            .header("x-api-key", KEY)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().unwrap();
        pages += 1;
        items.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(v["has_more"], true);
                url = format!("/gateway/v1/routing/queues?platform={platform}&cursor={c}");
            }
            None => {
                assert_eq!(v["has_more"], false);
                return (items, pages);
            }
        }
        assert!(pages < 10);
    }
}

#[test]
fn three_page_listings_from_each_platform_come_back_complete() {
    let s = stack();
    for platform in ["GENESYS", "CXONE"] {
        let (items, pages) = list_all(&s, platform);
        assert_eq!(pages, 3, "{platform}");
        assert_eq!(items.len(), 60, "{platform}");
        let mut ids: Vec<String> = items
            .iter()
            .map(|i| i["queue_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 60, "{platform}: no duplicates, nothing skipped");
        assert!(items.iter().all(|i| i.get("selfUri").is_none()));
    }
    assert!(!s.envoy_log().contains("PAGINATION_MISMATCH"));
}
