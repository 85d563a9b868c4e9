//! Layer 2: the compiled transform filter, 4 workers, both profiles: the request rewrite, and
//! idempotency across workers (concurrent duplicates make one upstream call).

use cxgate_abi_host::fixtures::{shipped_pipeline, start_synced};
use cxgate_abi_host::{Action, Host, Profile, Stream, filter_wasm};
use serde_json::{Value, json};
const SEED: &str = r#"{"idempotency_key": "k-1", "target_platform": "GENESYS",
  "payload": {"queue_name": "Premium_Support", "routing_strategy": "LONGEST_IDLE_AGENT",
              "skill_requirements": ["billing", "tier2"], "max_wait_time_ms": 120000}}"#;

/// The shipped document (schemas inlined) with only the transform stage, as a platform team
/// would load the standalone transform module; the sync brings the ID maps.
fn config(profile: Profile) -> Value {
    let mut doc = shipped_pipeline(profile);
    doc["stages"] = json!(["transform"]);
    for stage in ["trace", "ratelimit", "guard", "breaker", "coexistence"] {
        doc.as_object_mut().unwrap().remove(stage);
    }
    doc
}

fn host(profile: Profile) -> Host {
    start_synced(
        &filter_wasm("cxgate-transform"),
        profile,
        4,
        &config(profile),
    )
    .unwrap()
}

fn post(h: &mut Host, w: usize, consumer: &str, body: &str) -> (Stream, Action) {
    post_with(h, w, consumer, body, &[])
}

fn post_with(
    h: &mut Host,
    w: usize,
    consumer: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> (Stream, Action) {
    let s = h.new_stream(w).unwrap();
    let len = body.len().to_string();
    let mut headers = vec![
        (":method", "POST"),
        (":path", "/gateway/v1/routing/queues/update"),
        ("content-type", "application/json"),
        ("content-length", &len),
        ("x-cxgate-consumer", consumer),
    ];
    headers.extend_from_slice(extra);
    let a = h.request_headers(s, &headers, false).unwrap();
    assert_eq!(a, Action::Pause, "waits for the body");
    let a = h.request_body(s, body.as_bytes(), true).unwrap();
    (s, a)
}

fn answer(h: &mut Host, s: Stream, status: u16, body: &Value) {
    let text = body.to_string();
    let len = text.len().to_string();
    h.response_headers(
        s,
        &[
            (":status", &status.to_string()),
            ("content-type", "application/json"),
            ("content-length", &len),
        ],
        false,
    )
    .unwrap();
    h.response_body(s, text.as_bytes(), true).unwrap();
}

#[test]
fn the_request_is_rewritten_to_the_platform_route_and_the_response_normalized() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let (s, a) = post(&mut h, 1, "app", SEED);
        assert_eq!(a, Action::Continue, "{profile:?}: {:?}", h.local_reply(s));
        assert_eq!(h.request_header(s, ":method").as_deref(), Some("PUT"));
        assert_eq!(
            h.request_header(s, ":path").as_deref(),
            Some("/genesys/api/v2/routing/queues/q-1")
        );
        let sent: Value = serde_json::from_slice(&h.request_body_bytes(s)).unwrap();
        assert_eq!(sent["routingConfig"]["maxWaitTime"], "PT2M");
        assert_eq!(
            h.request_header(s, "content-length"),
            Some(h.request_body_bytes(s).len().to_string())
        );
        let cleared = h
            .host_calls()
            .get("clear_route_cache")
            .copied()
            .unwrap_or(0);
        assert_eq!(
            cleared,
            u64::from(profile == Profile::Envoy),
            "{profile:?}: Envoy picks the route again"
        );
        answer(
            &mut h,
            s,
            200,
            &json!({"id": "q-1", "name": "Premium_Support", "enabled": true, "selfUri": "/x",
            "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": [], "maxWaitTime": "PT2M"}}),
        );
        let out: Value = serde_json::from_slice(&h.response_body_bytes(s)).unwrap();
        assert_eq!(out["queue_id"], "q-1");
        assert!(out.get("selfUri").is_none());
        assert_eq!(
            h.response_header(s, "content-length"),
            None,
            "the length changed"
        );
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn concurrent_duplicates_on_4_workers_make_one_upstream_call() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        h.race_next_writes(2);
        let sent: Vec<(Stream, Action)> = (0..4).map(|w| post(&mut h, w, "app", SEED)).collect();
        let forwarded: Vec<Stream> = sent
            .iter()
            .filter(|(_, a)| *a == Action::Continue)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(forwarded.len(), 1, "{profile:?}: one upstream call");
        for (s, a) in &sent {
            if *a != Action::Continue {
                let r = h.local_reply(*s).unwrap();
                assert_eq!(r.status, 409, "in flight");
                assert_eq!(
                    r.problem().unwrap()["type"],
                    "urn:cxgate:problem:idempotent-request-in-flight"
                );
            }
        }
        answer(
            &mut h,
            forwarded[0],
            200,
            &json!({"id": "q-1", "name": "Premium_Support", "enabled": true,
            "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": [], "maxWaitTime": "PT2M"}}),
        );
        let first = h.response_body_bytes(forwarded[0]);
        // Once answered, any worker replays it without a platform call.
        for w in 0..4 {
            let (s, a) = post(&mut h, w, "app", SEED);
            assert_eq!(a, Action::Pause, "{profile:?} worker {w}");
            let r = h.local_reply(s).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("idempotent-replayed"), Some("true"));
            // Kong's host appends a newline to every local-reply body (measured).
            let mut expected = first.clone();
            if profile == Profile::Kong {
                expected.push(b'\n');
            }
            assert_eq!(r.body, expected);
        }
        // Another consumer's identical request is not a duplicate.
        let (_, a) = post(&mut h, 2, "other-app", SEED);
        assert_eq!(a, Action::Continue);
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_transform.idempotent_replays"), Some(4));
        assert!(h.cas_mismatches() >= 1);
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_platform_failure_is_not_replayed_and_a_retry_goes_through() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let (s, a) = post(&mut h, 0, "app", SEED);
        assert_eq!(a, Action::Continue);
        answer(&mut h, s, 503, &json!({"message": "down", "status": 503}));
        let p: Value = serde_json::from_slice(&h.response_body_bytes(s)).unwrap();
        assert_eq!(p["type"], "urn:cxgate:problem:platform-error");
        assert_eq!(
            h.response_header(s, "content-type").as_deref(),
            Some("application/problem+json")
        );
        let (_, a) = post(&mut h, 3, "app", SEED);
        assert_eq!(
            a,
            Action::Continue,
            "{profile:?}: the retry reaches the platform"
        );
        // A stream that dies before its response gives its claim up too.
        let body = SEED.replace("k-1", "k-2");
        let (s, a) = post(&mut h, 1, "app", &body);
        assert_eq!(a, Action::Continue);
        h.finish(s).unwrap();
        let (_, a) = post(&mut h, 2, "app", &body);
        assert_eq!(a, Action::Continue);
    }
}

/// The normalized update for `enabled`, with the key in the body or not.
fn toggle(enabled: bool, key: Option<&str>) -> String {
    let mut v = json!({"target_platform": "GENESYS",
        "payload": {"queue_name": "Premium_Support", "enabled": enabled,
                    "routing_strategy": "LONGEST_IDLE_AGENT", "skill_requirements": ["billing"],
                    "max_wait_time_ms": 120000}});
    if let Some(k) = key {
        v["idempotency_key"] = json!(k);
    }
    v.to_string()
}

fn problem_type(h: &Host, s: Stream) -> (u32, String) {
    let r = h.local_reply(s).expect("a local reply");
    let p = r.problem().unwrap();
    (r.status, p["type"].as_str().unwrap_or_default().to_string())
}

#[test]
fn without_a_key_enable_disable_enable_are_three_changes_and_a_reused_key_is_422() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let ok = json!({"id": "q-1", "name": "Premium_Support", "enabled": true,
            "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": [], "maxWaitTime": "PT2M"}});
        // Equal bodies without a key are not duplicates: the third request must reach the
        // platform, or the queue would stay disabled.
        for (i, enabled) in [true, false, true].into_iter().enumerate() {
            let (s, a) = post(&mut h, i % 4, "app", &toggle(enabled, None));
            assert_eq!(
                a,
                Action::Continue,
                "{profile:?} #{i}: {:?}",
                h.local_reply(s)
            );
            answer(&mut h, s, 200, &ok);
            h.finish(s).unwrap();
        }
        // The Idempotency-Key header makes a retry a duplicate, on any worker.
        let key = [("idempotency-key", "hdr-key-1")];
        let (s, a) = post_with(&mut h, 0, "app", &toggle(false, None), &key);
        assert_eq!(a, Action::Continue, "{profile:?}");
        answer(&mut h, s, 200, &ok);
        h.finish(s).unwrap();
        let (s, _) = post_with(&mut h, 3, "app", &toggle(false, None), &key);
        let r = h.local_reply(s).expect("a replay");
        assert_eq!(r.header("idempotent-replayed"), Some("true"), "{profile:?}");
        // The same key for another change is refused, never replayed or forwarded.
        let (s, a) = post_with(&mut h, 2, "app", &toggle(true, None), &key);
        assert_eq!(a, Action::Pause);
        assert_eq!(
            problem_type(&h, s),
            (422, "urn:cxgate:problem:idempotency-key-reused".into())
        );
        // Header and body naming different keys: 400.
        let (s, _) = post_with(&mut h, 1, "app", &toggle(true, Some("body-key")), &key);
        assert_eq!(
            problem_type(&h, s),
            (400, "urn:cxgate:problem:idempotency-key-invalid".into())
        );
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

/// The `i`-th request of the bulk run: the same change, its own idempotency key.
fn bulk(h: &mut Host, i: usize) -> (Stream, Action) {
    let key = format!("bulk-{i}");
    post_with(
        h,
        i % 4,
        "app",
        &toggle(true, None),
        &[("idempotency-key", &key)],
    )
}

#[test]
fn a_hundred_thousand_keyed_requests_leave_a_bounded_number_of_shared_data_keys() {
    let profile = Profile::Envoy;
    let mut doc = config(profile);
    doc["transform"]["idempotency"] = json!({"max_entries": 500});
    let mut h = start_synced(&filter_wasm("cxgate-transform"), profile, 4, &doc).unwrap();
    let ok = json!({"id": "q-1", "name": "Premium_Support", "enabled": true,
        "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": [], "maxWaitTime": "PT2M"}});
    let before = h.shared_keys().len();
    const N: usize = 100_000;
    for i in 0..N {
        let (s, a) = bulk(&mut h, i);
        assert_eq!(a, Action::Continue, "#{i}: {:?}", h.local_reply(s));
        answer(&mut h, s, 200, &ok);
        h.finish(s).unwrap();
    }
    let idem: Vec<String> = h
        .shared_keys()
        .into_iter()
        .filter(|k| k.starts_with("cxgate/idem/"))
        .collect();
    // 2 × 500 buckets + 500 ring slots + the ring record.
    assert!(idem.len() <= 3 * 500 + 1, "{} idempotency keys", idem.len());
    assert!(h.shared_keys().len() - before <= 3 * 500 + 1);
    // Within the capacity, duplicates are still caught; past it, the oldest are gone.
    for i in (N - 400)..N {
        let (s, a) = bulk(&mut h, i);
        assert_eq!(a, Action::Pause, "#{i} is a duplicate");
        assert_eq!(
            h.local_reply(s).unwrap().header("idempotent-replayed"),
            Some("true")
        );
    }
    let (_, a) = post_with(
        &mut h,
        0,
        "app",
        &toggle(true, None),
        &[("idempotency-key", "bulk-0")],
    );
    assert_eq!(a, Action::Continue, "evicted long ago");
}
