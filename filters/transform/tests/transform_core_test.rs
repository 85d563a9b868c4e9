//! Pure tests of the transform stage with the shipped profiles (envoy/cxgate.json and the
//! schemas it names), native and under wasmtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;

#[test]
fn the_seed_example_becomes_exactly_the_seeds_genesys_payload() {
    let f = forward(update(&cfg(), &seed("GENESYS")));
    assert_eq!(f.method, "PUT");
    assert_eq!(f.path, "/genesys/api/v2/routing/queues/q-premium-1");
    assert_eq!(
        body(&f),
        json!({"name": "Premium_Support", "enabled": true,
               "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing", "tier2"], "maxWaitTime": "PT2M"}})
    );
    assert!(f.idempotency.is_some());
    assert!(
        f.headers
            .contains(&("x-envoy-upstream-rq-timeout-ms".into(), "10000".into()))
    );
}

#[test]
fn the_seed_example_becomes_exactly_the_seeds_cxone_payload() {
    let f = forward(update(&cfg(), &seed("CXONE")));
    assert_eq!(f.path, "/cxone/api/v2/routing/queues/cxq-0001");
    assert_eq!(
        body(&f),
        json!({"name": "Premium_Support", "enabled": true,
               "routingStrategy": {"type": "LONGEST_IDLE_AGENT",
                                   "skills": [{"id": "skill_billing_001", "required": true}, {"id": "skill_tier2_002", "required": true}],
                                   "maxWaitTimeSeconds": 120}})
    );
}

#[test]
fn every_strategy_maps_and_missing_fields_get_explicit_defaults() {
    let c = cfg();
    for (consumer, genesys) in [
        ("LONGEST_IDLE_AGENT", "LONGESTIDLEAGENT"),
        ("ROUND_ROBIN", "ROUNDROBIN"),
        ("MOST_SKILLED", "BESTSKILLED"),
        ("RANDOM", "RANDOM"),
    ] {
        let b = json!({"target_platform": "GENESYS", "payload": {"queue_name": "Premium_Support", "routing_strategy": consumer}});
        assert_eq!(
            body(&forward(update(&c, &b.to_string())))["routingConfig"]["strategy"],
            genesys
        );
        let b = json!({"target_platform": "CXONE", "payload": {"queue_name": "Premium_Support", "routing_strategy": consumer}});
        assert_eq!(
            body(&forward(update(&c, &b.to_string())))["routingStrategy"]["type"],
            consumer
        );
    }
    // Only the name: Genesys never falls to RANDOM, CXone never to ROUND_ROBIN.
    let b = json!({"target_platform": "GENESYS", "payload": {"queue_name": "Premium_Support"}});
    assert_eq!(
        body(&forward(update(&c, &b.to_string()))),
        json!({"name": "Premium_Support", "enabled": true,
               "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": [], "maxWaitTime": "PT2M"}})
    );
    let b = json!({"target_platform": "CXONE", "payload": {"queue_name": "Premium_Support", "enabled": false}});
    assert_eq!(
        body(&forward(update(&c, &b.to_string()))),
        json!({"name": "Premium_Support", "enabled": false,
               "routingStrategy": {"type": "LONGEST_IDLE_AGENT", "skills": [], "maxWaitTimeSeconds": 120}})
    );
}

#[test]
fn the_real_api_profiles_merge_into_a_genesys_queue_and_send_a_cxone_skill_update() {
    let c = real_cfg();
    let f = forward(update(&c, &seed("GENESYS")));
    assert_eq!(
        (f.method.as_str(), f.path.as_str()),
        ("PUT", "/genesys/api/v2/routing/queues/q-premium-1")
    );
    // Only the mapped fields: the stage merges them into the queue it reads (defaults fill
    // only what the queue lacks).
    let patch = f.merge.unwrap().patch;
    assert_eq!(
        patch,
        json!({"name": "Premium_Support", "skillEvaluationMethod": "ALL",
               "mediaSettings": {"call": {"serviceLevel": {"durationMs": 120000}}}})
    );
    let mut b: Value = serde_json::from_str(&seed("GENESYS")).unwrap();
    b["payload"]["routing_strategy"] = json!("MOST_SKILLED");
    let f = forward(update(&c, &b.to_string()));
    assert_eq!(f.merge.unwrap().patch["skillEvaluationMethod"], "BEST");
    let f = forward(update(&c, &seed("CXONE")));
    assert_eq!(f.path, "/cxone/incontactapi/services/v30.0/skills/11007");
    assert_eq!(
        body(&f),
        json!({"skillName": "Premium_Support", "isActive": true, "serviceLevelThreshold": 120, "serviceLevelGoal": 80})
    );
}

#[test]
fn every_validation_error_class_is_a_clear_problem() {
    let c = cfg();
    let path = "/gateway/v1/routing/queues/update";
    let (s, p) = problem(send(
        &c,
        path,
        Some("application/json"),
        b"{\"target_platform\": ",
    ));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (400, "urn:cxgate:problem:malformed-json")
    );
    let (s, p) = problem(send(&c, path, Some("text/plain"), SEED.as_bytes()));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (415, "urn:cxgate:problem:unsupported-media-type")
    );
    let (s, p) = problem(send(&c, path, None, SEED.as_bytes()));
    assert_eq!(s, 415, "{p}");
    let (s, p) = problem(send(
        &c,
        path,
        Some("application/json"),
        b"{\"a\": \"\xff\"}",
    ));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (400, "urn:cxgate:problem:invalid-utf8")
    );
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70_000));
    let (s, p) = problem(send(&c, path, Some("application/json"), big.as_bytes()));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (413, "urn:cxgate:problem:body-too-large")
    );
    // Schema: every failing field, not just the first.
    let bad = json!({"target_platform": "GENESYS", "payload": {"queue_name": "", "enabled": "yes",
                     "routing_strategy": "FASTEST", "max_wait_time_ms": 12.5}, "extra": 1});
    let (s, p) = problem(update(&c, &bad.to_string()));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (400, "urn:cxgate:problem:validation")
    );
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for expected in [
        "/payload/queue_name",
        "/payload/enabled",
        "/payload/routing_strategy",
        "/payload/max_wait_time_ms",
        "",
    ] {
        assert!(
            pointers.contains(&expected),
            "{expected} missing from {pointers:?}"
        );
    }
}

#[test]
fn unknown_names_are_422_naming_them_and_never_guessed() {
    let c = cfg();
    let mut b: Value = serde_json::from_str(SEED).unwrap();
    b["payload"]["queue_name"] = json!("Premium_Suport");
    let (s, p) = problem(update(&c, &b.to_string()));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (422, "urn:cxgate:problem:unknown-name")
    );
    assert!(
        p["detail"].as_str().unwrap().contains("\"Premium_Suport\""),
        "{p}"
    );
    let mut b: Value = serde_json::from_str(&seed("CXONE")).unwrap();
    b["payload"]["skill_requirements"] = json!(["billing", "spanish"]);
    let (s, p) = problem(update(&c, &b.to_string()));
    assert_eq!(s, 422);
    assert!(p["detail"].as_str().unwrap().contains("\"spanish\""));
    // A map never synced is not "unknown": 503, retry.
    let o = send_with(
        &c,
        "/gateway/v1/routing/queues/update",
        Some("application/json"),
        SEED.as_bytes(),
        &Maps(BTreeMap::new()),
    );
    let (s, p) = problem(o);
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (503, "urn:cxgate:problem:metadata-unavailable")
    );
}

#[test]
fn a_payload_the_platform_schema_rejects_is_a_500_with_the_diff_and_is_never_sent() {
    let mut v = shipped();
    // A broken profile: no default for the strategy, and a map to a value the platform refuses.
    v["profiles"]["genesys-seed"]["defaults"] = json!({"/enabled": true});
    v["profiles"]["genesys-seed"]["body"]["routingConfig"]["strategy"]["$map"]["RANDOM"] =
        json!("CHAOS");
    let c = compile(v).unwrap();
    let b = json!({"target_platform": "GENESYS", "payload": {"queue_name": "Premium_Support", "routing_strategy": "RANDOM"}});
    let (s, p) = problem(update(&c, &b.to_string()));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (500, "urn:cxgate:problem:transform-invalid")
    );
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/routingConfig/strategy"),
        "{pointers:?}"
    );
    assert!(
        pointers.contains(&"/routingConfig"),
        "missing skillsRequired/maxWaitTime: {pointers:?}"
    );
}

/// A small deterministic generator: every valid consumer payload maps to a payload the
/// platform schema accepts, in all four profiles.
#[test]
fn property_transform_then_validate_never_yields_a_payload_the_platform_rejects() {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let strategies = [
        "LONGEST_IDLE_AGENT",
        "ROUND_ROBIN",
        "MOST_SKILLED",
        "RANDOM",
    ];
    let skills = ["billing", "tier2"];
    for c in [cfg(), real_cfg()] {
        for _ in 0..400 {
            let mut payload = serde_json::Map::new();
            payload.insert("queue_name".into(), json!("Premium_Support"));
            if next(2) == 0 {
                payload.insert("enabled".into(), json!(next(2) == 0));
            }
            if next(2) == 0 {
                payload.insert(
                    "routing_strategy".into(),
                    json!(strategies[next(4) as usize]),
                );
            }
            if next(2) == 0 {
                let n = next(3) as usize;
                payload.insert("skill_requirements".into(), json!(skills[..n.min(2)]));
            }
            if next(2) == 0 {
                payload.insert("max_wait_time_ms".into(), json!(1000 + next(86_399_000)));
            }
            for platform in ["GENESYS", "CXONE"] {
                let b = json!({"target_platform": platform, "payload": payload});
                match update(&c, &b.to_string()) {
                    Outcome::Forward(_) => {}
                    Outcome::Reply(r) => {
                        panic!("{b}: {} {}", r.status, String::from_utf8_lossy(&r.body))
                    }
                }
            }
        }
    }
}

#[test]
fn durations_convert_both_ways() {
    for (ms, iso) in [
        (120_000, "PT2M"),
        (0, "PT0S"),
        (90_500, "PT1M30.5S"),
        (3_600_000, "PT1H"),
        (3_723_000, "PT1H2M3S"),
        (1_000, "PT1S"),
    ] {
        assert_eq!(ms_to_iso8601(ms), iso);
        assert_eq!(iso8601_to_ms(iso), Some(ms), "{iso}");
    }
    assert_eq!(iso8601_to_ms("P1D"), None);
    assert_eq!(iso8601_to_ms("PT"), None);
}
