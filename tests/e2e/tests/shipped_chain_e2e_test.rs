//! Layer 3: the shipped chain as it ships (envoy/envoy.yaml + envoy/cxgate.json: real scopes,
//! real budgets) in real Envoy 1.40, against the mocks with their default limits.

use cxgate_e2e::{Got, Stack, StackOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const APP: &str = "demo-key-omnichannel";
const ANALYTICS: &str = "demo-key-analytics";
const UPDATE: &str = "/gateway/v1/routing/queues/update";
const SEED: &str = include_str!("../../fixtures/queue-update.seed.json");

fn send(s: &Stack, method: &str, path: &str, key: &str, body: Option<&str>) -> Got {
    s.send(method, path, key, body)
}

/// The shipped stack, once tokens and ID maps have reached every worker: a normalized update
/// goes through (its idempotency key is fresh each try).
fn ready() -> Stack {
    let s = Stack::start(StackOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let body = SEED.replace("req_8f3a2c9d1e4b", &format!("warm-{n}"));
        if send(&s, "POST", UPDATE, APP, Some(&body)).status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stack never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in ["genesys", "cxone"] {
        s.http
            .delete(s.mock_url(p, "/__mock/requests"))
            .send()
            .unwrap();
    }
    s
}

#[test]
fn the_read_only_consumer_reads_and_every_write_is_a_403_that_never_reaches_the_platform() {
    let s = ready();
    let del = send(
        &s,
        "DELETE",
        "/genesys/api/v2/routing/queues/00009e0e-0000-4000-8000-000000000000",
        ANALYTICS,
        None,
    );
    assert_eq!(del.status, 403, "{}", del.body);
    assert_eq!(del.header("content-type"), Some("application/problem+json"));
    assert_eq!(del.body["type"], "urn:cxgate:problem:forbidden");
    assert_eq!(
        del.body["missing_scopes"],
        json!(["genesys:passthrough:write"])
    );
    let put = send(
        &s,
        "PUT",
        "/cxone/incontactapi/services/v30.0/skills/11000",
        ANALYTICS,
        Some("{}"),
    );
    assert_eq!(
        (put.status, put.body["missing_scopes"].clone()),
        (403, json!(["cxone:passthrough:write"]))
    );
    let upd = send(&s, "POST", UPDATE, ANALYTICS, Some(SEED));
    assert_eq!(upd.status, 403, "{}", upd.body);
    assert_eq!(upd.body["missing_scopes"], json!(["routing:queue:edit"]));
    assert_eq!(upd.header("x-cxgate-reply"), Some("authz"));
    assert!(
        s.gateway_requests("genesys").is_empty(),
        "nothing reached Genesys"
    );
    assert!(
        s.gateway_requests("cxone").is_empty(),
        "nothing reached CXone"
    );
    // It can still read, raw and normalized.
    let raw = send(&s, "GET", "/genesys/api/v2/routing/queues", ANALYTICS, None);
    assert_eq!(raw.status, 200, "{}", raw.body);
    let list = send(
        &s,
        "GET",
        "/gateway/v1/routing/queues?platform=GENESYS",
        ANALYTICS,
        None,
    );
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body["items"].as_array().is_some_and(|i| !i.is_empty()));
    // The SIP proxy's key may do none of this.
    assert_eq!(
        send(
            &s,
            "GET",
            "/genesys/api/v2/routing/queues",
            "demo-key-sip",
            None
        )
        .status,
        403
    );
    // Unmatched routes are denied.
    let nothing = send(&s, "GET", "/gateway/v1/admin", APP, None);
    assert_eq!(
        (nothing.status, nothing.body["type"].as_str()),
        (404, Some("urn:cxgate:problem:no-route"))
    );
    assert_eq!(s.gateway_requests("genesys").len(), 2, "the two reads");
}

#[test]
fn four_hundred_quick_normalized_reads_stop_at_the_gateways_platform_budget() {
    let s = ready();
    let (mut ok, mut ours, mut theirs) = (0, 0, 0);
    let t0 = Instant::now();
    // Two consumers, so the Genesys budget (270/min), not a consumer's (300/min), is the limit.
    for i in 0..400 {
        let key = if i % 2 == 0 { APP } else { "demo-key-wfm" };
        let g = send(
            &s,
            "GET",
            "/gateway/v1/routing/queues?platform=GENESYS&page_size=1",
            key,
            None,
        );
        match (g.status, g.body["type"].as_str()) {
            (200, _) => ok += 1,
            (429, Some("urn:cxgate:problem:platform-rate-limited")) => ours += 1,
            (429, _) => theirs += 1,
            (other, _) => panic!("{other}: {}", g.body),
        }
    }
    let took = t0.elapsed().as_secs_f64();
    let reached = s.gateway_requests("genesys").len();
    // 270 a minute: the full bucket, plus 4.5 a second of refill while the reads last.
    let budget = 270.0 + 4.5 * took;
    eprintln!(
        "figures: 400 normalized reads in {took:.2} s: {ok} answered, {ours} held by the gateway, {theirs} platform 429s; the mock saw {reached} (budget {budget:.1})"
    );
    assert_eq!(theirs, 0, "no platform-originated 429");
    assert!(ours > 100, "the gateway held the rest: {ours}");
    assert!(
        reached as f64 <= budget.ceil(),
        "the platform saw at most the budget: {reached}"
    );
    assert_eq!(ok, reached);
}

#[test]
fn an_open_breaker_and_a_missing_token_keep_their_own_answers_on_the_normalized_api() {
    let s = ready();
    // Genesys fails every call: raw reads trip its breaker (≥ 20 in the window, > 50 %).
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"status": 503, "scope": "api"}))
        .send()
        .unwrap();
    let started = Instant::now();
    loop {
        let g = send(&s, "GET", "/genesys/api/v2/users", APP, None);
        if g.header("x-cxgate-reply") == Some("breaker") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the breaker never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let upd = send(
        &s,
        "POST",
        UPDATE,
        APP,
        Some(&SEED.replace("req_8f3a2c9d1e4b", "during-outage")),
    );
    assert_eq!(upd.status, 503);
    assert_eq!(
        upd.body["status"], "degraded",
        "the configured fallback, not a platform-error: {}",
        upd.body
    );
    assert_eq!(upd.header("x-cxgate-reply"), Some("breaker"));
    // CXone is fine, but its token endpoint dies and its tokens are revoked: the upstream
    // token filter's 503 reaches the consumer as it is.
    s.http
        .post(s.mock_url("cxone", "/__mock/faults"))
        .json(&json!({"status": 503, "scope": "token"}))
        .send()
        .unwrap();
    s.http
        .post(s.mock_url("cxone", "/__mock/tokens/revoke"))
        .send()
        .unwrap();
    let cx = send(
        &s,
        "POST",
        UPDATE,
        APP,
        Some(
            &SEED
                .replace("GENESYS", "CXONE")
                .replace("req_8f3a2c9d1e4b", "no-token"),
        ),
    );
    assert_eq!(cx.status, 503, "{}", cx.body);
    assert_eq!(cx.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        cx.body["type"], "urn:cxgate:problem:token-unavailable",
        "{}",
        cx.body
    );
    assert!(
        cx.body.get("platform_status").is_none(),
        "not rewritten as the platform's: {}",
        cx.body
    );
}
