//! Pure tests of the transform stage with the shipped profiles (envoy/cxgate.json and the
//! schemas it names), native and under wasmtime.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fakes::FakeStore;
use cxgate_kit::host::CasDialect;
use cxgate_kit::problem::LocalReply;
use cxgate_model::Model;
use cxgate_model::body::parse_json;
use cxgate_model::model::{PlatformSource, Resolved, query_param};
use cxgate_transform::config::Config;
use cxgate_transform::core::{Forward, Incoming, Outcome, Returned, on_request, on_response};
use cxgate_transform::idem::{self, Begin, Stored};
use cxgate_transform::page::Cursor;
use cxgate_transform::template::{Found, Lookup, iso8601_to_ms, ms_to_iso8601};
use serde_json::{Value, json};
use std::collections::BTreeMap;

include!("../../../tests/fixtures/shipped.rs");

/// The shipped document's request model.
fn model() -> Model {
    let v: Value = serde_json::from_str(SHIPPED).unwrap();
    Model::compile(v["model"].clone()).unwrap()
}

/// The shipped transform section, schemas inlined.
fn shipped() -> Value {
    shipped_document()["transform"].clone()
}

fn compile(v: Value) -> Result<Config, cxgate_kit::ConfigError> {
    Config::compile(v, &model())
}

fn cfg() -> Config {
    compile(shipped()).unwrap()
}

/// The shipped config, with the update route sent to the real-API profiles.
fn real_cfg() -> Config {
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"] =
        json!({"genesys": "genesys-real", "cxone": "cxone-real"});
    compile(v).unwrap()
}

struct Maps(BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>);

impl Lookup for Maps {
    fn lookup(&self, map: &str, name: &str) -> Found {
        match self.0.get(map) {
            None => Found::NoMap,
            Some(m) => m
                .get(name)
                .map_or(Found::Unknown, |id| Found::Id(id.to_string())),
        }
    }
}

fn maps() -> Maps {
    let mut m = BTreeMap::new();
    m.insert(
        "genesys/queues",
        BTreeMap::from([("Premium_Support", "q-premium-1")]),
    );
    m.insert(
        "genesys/skills",
        BTreeMap::from([("billing", "gs-1"), ("tier2", "gs-2")]),
    );
    m.insert(
        "cxone/queues",
        BTreeMap::from([("Premium_Support", "cxq-0001")]),
    );
    m.insert(
        "cxone/skills",
        BTreeMap::from([
            ("billing", "skill_billing_001"),
            ("tier2", "skill_tier2_002"),
            ("Premium_Support", "11007"),
        ]),
    );
    Maps(m)
}

/// The seed document's example request (seed 000, section 2).
const SEED: &str = include_str!("../../../tests/fixtures/queue-update.seed.json");

fn seed(platform: &str) -> String {
    SEED.replace("GENESYS", platform)
}

/// A request as the pipeline hands it to the transform: the model resolves the route, parses
/// the body once (its problems answer first) and resolves the platform.
fn send_with(
    c: &Config,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    lookup: &dyn Lookup,
) -> Outcome {
    let m = model();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let Resolved::Route(i) = m.resolve(method, path) else {
        panic!("no model route for {method} {path}");
    };
    let json = if body.is_empty() {
        Value::Null
    } else {
        match parse_json(m.max_body_bytes, content_type, body) {
            Ok(v) => v,
            Err(p) => return Outcome::Reply((*p).into_reply()),
        }
    };
    let said = match &m.routes[i].platform {
        PlatformSource::Body(ptr) => json
            .pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default(),
        PlatformSource::Query(q) => query_param(path, q).unwrap_or_default(),
        _ => "",
    };
    let platform = m
        .known_platform(said)
        .expect("a platform the model knows")
        .to_string();
    on_request(
        c,
        &Incoming {
            route: c.route_for(i).unwrap(),
            path,
            body: &json,
            platform: &platform,
            consumer: "omnichannel-app-prod",
            trace_id: Some("t-1"),
            cursor_key: b"cursor-key-0123456789",
        },
        lookup,
    )
}

fn send(c: &Config, path: &str, content_type: Option<&str>, body: &[u8]) -> Outcome {
    send_with(c, path, content_type, body, &maps())
}

fn update(c: &Config, body: &str) -> Outcome {
    send(
        c,
        "/gateway/v1/routing/queues/update",
        Some("application/json"),
        body.as_bytes(),
    )
}

fn forward(o: Outcome) -> Forward {
    match o {
        Outcome::Forward(f) => f,
        Outcome::Reply(r) => panic!(
            "expected a forward, got {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }
}

fn problem(o: Outcome) -> (u32, Value) {
    match o {
        Outcome::Reply(LocalReply {
            status,
            body,
            headers,
        }) => {
            assert!(headers.contains(&("content-type".into(), "application/problem+json".into())));
            (status, serde_json::from_slice(&body).unwrap())
        }
        Outcome::Forward(f) => panic!("expected a problem, got a forward to {}", f.path),
    }
}

fn body(f: &Forward) -> Value {
    serde_json::from_slice(f.body.as_ref().unwrap()).unwrap()
}

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
    assert!(f.fingerprint.is_some());
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
fn the_real_api_profiles_send_a_whole_queue_request_and_a_cxone_skill_update() {
    let c = real_cfg();
    let f = forward(update(&c, &seed("GENESYS")));
    assert_eq!(
        (f.method.as_str(), f.path.as_str()),
        ("PUT", "/genesys/api/v2/routing/queues/q-premium-1")
    );
    assert_eq!(
        body(&f),
        json!({"name": "Premium_Support", "skillEvaluationMethod": "ALL", "scoringMethod": "TimestampAndPriority",
               "lastAgentRoutingMode": "Disabled", "acwSettings": {"wrapupPrompt": "OPTIONAL"},
               "mediaSettings": {"call": {"alertingTimeoutSeconds": 8, "serviceLevel": {"durationMs": 120000, "percentage": 0.8}}}})
    );
    let mut b: Value = serde_json::from_str(&seed("GENESYS")).unwrap();
    b["payload"]["routing_strategy"] = json!("MOST_SKILLED");
    assert_eq!(
        body(&forward(update(&c, &b.to_string())))["skillEvaluationMethod"],
        "BEST"
    );
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

fn returned<'a>(status: u16, body: &'a [u8], include_metadata: bool) -> Returned<'a> {
    Returned {
        status,
        body,
        correlation_id: Some("corr-7"),
        include_metadata,
        trace_id: Some("t-9"),
        cursor_key: b"cursor-key-0123456789",
    }
}

#[test]
fn responses_are_normalized_metadata_stripped_unless_asked_and_errors_become_problems() {
    let c = cfg();
    let f = forward(update(&c, &seed("GENESYS")));
    let platform = json!({"id": "q-premium-1", "name": "Premium_Support", "enabled": true, "version": 3,
        "selfUri": "/api/v2/routing/queues/q-premium-1",
        "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing"], "maxWaitTime": "PT2M"}})
    .to_string();
    let n = on_response(&c, &f, &returned(200, platform.as_bytes(), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v,
        json!({"platform": "GENESYS", "queue_id": "q-premium-1", "queue_name": "Premium_Support", "enabled": true,
               "routing_strategy": "LONGEST_IDLE_AGENT", "skill_requirements": ["billing"], "max_wait_time_ms": 120000})
    );
    let n = on_response(&c, &f, &returned(200, platform.as_bytes(), true));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v["platform_metadata"],
        json!({"selfUri": "/api/v2/routing/queues/q-premium-1", "version": 3})
    );
    // A platform error keeps its status and correlation id.
    let err = json!({"message": "queue is locked", "code": "conflict", "status": 409}).to_string();
    let n = on_response(&c, &f, &returned(409, err.as_bytes(), false));
    assert_eq!(
        (n.status, n.content_type.as_str()),
        (409, "application/problem+json")
    );
    let p: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:platform-error");
    assert_eq!(p["detail"], "queue is locked");
    assert_eq!(p["correlation_id"], "corr-7");
    assert_eq!(p["platform_status"], 409);
    assert_eq!(p["trace_id"], "t-9");
}

fn genesys_page(number: u64, count: u64, total: u64) -> Vec<u8> {
    let entities: Vec<Value> = (0..count).map(|i| json!({"id": format!("q-{number}-{i}"), "name": format!("Q{number}{i}"), "enabled": true, "selfUri": "/x"})).collect();
    let mut v = json!({"entities": entities, "pageSize": 25, "pageNumber": number, "total": total, "pageCount": total.div_ceil(25)});
    if number < total.div_ceil(25) {
        v["nextUri"] = json!("/api/v2/routing/queues?pageNumber=2");
    }
    v.to_string().into_bytes()
}

#[test]
fn listings_page_through_an_opaque_signed_cursor_and_flag_mismatches() {
    let c = cfg();
    let f = forward(send(
        &c,
        "/gateway/v1/routing/queues?platform=GENESYS",
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/genesys/api/v2/routing/queues?pageNumber=1&pageSize=25"
    );
    let n = on_response(&c, &f, &returned(200, &genesys_page(1, 25, 60), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 25);
    assert_eq!(
        v["items"][0],
        json!({"queue_id": "q-1-0", "queue_name": "Q10", "enabled": true})
    );
    assert_eq!(v["has_more"], true);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let f2 = forward(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=GENESYS&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(
        f2.path,
        "/genesys/api/v2/routing/queues?pageNumber=2&pageSize=25"
    );
    // A cursor for another platform, or altered, is refused.
    let (s, _) = problem(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=CXONE&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(s, 400);
    let mut forged = cursor.clone().into_bytes();
    forged[3] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    let (s, p) = problem(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=GENESYS&cursor={forged}"),
        None,
        b"",
    ));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (400, "urn:cxgate:problem:invalid-cursor")
    );
    // The last page: no cursor; the platform said 60 but 59 came: PAGINATION_MISMATCH.
    let mut last = f2.clone();
    last.cursor = Some(Cursor {
        next: 3,
        seen: 50,
        ..f2.cursor.clone().unwrap()
    });
    let n = on_response(&c, &last, &returned(200, &genesys_page(3, 9, 60), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        (v["has_more"].clone(), v["next_cursor"].clone()),
        (json!(false), Value::Null)
    );
    assert!(n.event.unwrap().render().contains("PAGINATION_MISMATCH"));
    // CXone skip/top.
    let f = forward(send(
        &c,
        "/gateway/v1/routing/queues?platform=CXONE&page_size=2",
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/cxone/incontactapi/services/v30.0/skills?skip=0&top=2"
    );
    let page = json!({"totalRecords": 3, "skills": [{"skillId": 11000, "skillName": "billing", "isActive": true}, {"skillId": 11001, "skillName": "tier2", "isActive": true}]}).to_string();
    let n = on_response(&c, &f, &returned(200, page.as_bytes(), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v["items"][0],
        json!({"queue_id": "11000", "queue_name": "billing", "enabled": true})
    );
    let cursor = v["next_cursor"].as_str().unwrap();
    let f = forward(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=CXONE&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/cxone/incontactapi/services/v30.0/skills?skip=2&top=2"
    );
    let (s, _) = problem(send(
        &c,
        "/gateway/v1/routing/queues?platform=CXONE&page_size=1000",
        None,
        b"",
    ));
    assert_eq!(s, 400);
}

#[test]
fn idempotency_fingerprints_claims_replays_and_bounds() {
    let a = json!({"x": 1, "y": [1, 2]});
    let b: Value = serde_json::from_str(r#"{"y": [1, 2], "x": 1}"#).unwrap();
    let fp = idem::fingerprint("app", "POST", "queue-update", &a, Some("k1"));
    assert_eq!(
        fp,
        idem::fingerprint("app", "POST", "queue-update", &b, Some("k1")),
        "canonical JSON"
    );
    assert_ne!(
        fp,
        idem::fingerprint("other", "POST", "queue-update", &a, Some("k1")),
        "per consumer"
    );
    assert_ne!(
        fp,
        idem::fingerprint("app", "POST", "queue-update", &a, Some("k2")),
        "per key"
    );
    assert_ne!(idem::key("app", &fp), idem::key("other", &fp));
    let mut store = FakeStore::new(CasDialect::Kong);
    let k = idem::key("app", &fp);
    assert_eq!(
        idem::begin(&mut store, &k, 0, 900_000).unwrap(),
        Begin::Claimed
    );
    assert_eq!(
        idem::begin(&mut store, &k, 10, 900_000).unwrap(),
        Begin::InFlight
    );
    let stored = Stored {
        status: 200,
        content_type: "application/json".into(),
        body: "{\"ok\":true}".into(),
    };
    idem::finish(&mut store, &k, stored.clone(), 20, 2, 1 << 20).unwrap();
    assert_eq!(
        idem::begin(&mut store, &k, 30, 900_000).unwrap(),
        Begin::Replay(stored.clone())
    );
    // After the TTL the fingerprint is fresh again.
    assert_eq!(
        idem::begin(&mut store, &k, 900_021, 900_000).unwrap(),
        Begin::Claimed
    );
    idem::abandon(&mut store, &k).unwrap();
    assert_eq!(
        idem::begin(&mut store, &k, 900_030, 900_000).unwrap(),
        Begin::Claimed
    );
    // Bounded count: a third entry evicts the oldest.
    for (i, key) in ["cxgate/idem/a/1", "cxgate/idem/a/2", "cxgate/idem/a/3"]
        .iter()
        .enumerate()
    {
        idem::begin(&mut store, key, 1_000_000 + i as u64, 900_000).unwrap();
        idem::finish(
            &mut store,
            key,
            stored.clone(),
            1_000_000 + i as u64,
            2,
            1 << 20,
        )
        .unwrap();
    }
    assert_eq!(
        idem::begin(&mut store, "cxgate/idem/a/1", 1_000_010, 900_000).unwrap(),
        Begin::Claimed,
        "evicted"
    );
    assert!(matches!(
        idem::begin(&mut store, "cxgate/idem/a/3", 1_000_010, 900_000).unwrap(),
        Begin::Replay(_)
    ));
}

#[test]
fn the_idempotency_store_also_stays_under_its_byte_bound() {
    let mut store = FakeStore::new(CasDialect::Envoy);
    let stored = Stored {
        status: 200,
        content_type: "application/json".into(),
        body: "x".repeat(400),
    };
    // Room for 100 entries by count, but only ~2 by bytes (each entry is ~460 bytes).
    let keys: Vec<String> = (0..6).map(|i| format!("cxgate/idem/a/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        idem::begin(&mut store, k, i as u64, 900_000).unwrap();
        idem::finish(&mut store, k, stored.clone(), i as u64, 100, 1000).unwrap();
    }
    let live: Vec<bool> = keys
        .iter()
        .map(|k| {
            matches!(
                idem::begin(&mut store, k, 10, 900_000).unwrap(),
                Begin::Replay(_)
            )
        })
        .collect();
    assert!(live.iter().filter(|l| **l).count() <= 2, "{live:?}");
    assert!(live[5], "the newest stays");
}

#[test]
fn bad_config_names_the_field() {
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"]["genesys"] = json!("nope");
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queue-update/platforms/genesys");
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"]["avaya"] = json!("genesys-seed");
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queue-update/platforms/avaya");
    let mut v = shipped();
    v["routes"]["queues-delete"] = json!({"platforms": {"genesys": "genesys-seed"}});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queues-delete", "{e}");
    let mut v = shipped();
    v["routes"]["genesys-read"] = json!({"platforms": {"genesys": "genesys-seed"}});
    let e = compile(v).unwrap_err();
    assert!(e.message.contains("exact path and one method"), "{e}");
    let mut v = shipped();
    v["profiles"]["genesys-seed"]["body"]["name"] = json!({"$from": "/x", "$frobnicate": 1});
    let e = compile(v).unwrap_err();
    assert_eq!(
        e.field,
        "/transform/profiles/genesys-seed/body/name/$frobnicate"
    );
    let mut v = shipped();
    v["schemas"]["queue-update"] = json!({"type": 12});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/schemas/queue-update");
    let mut v = shipped();
    v["profiles"]["genesys-seed"]["params"] = json!({});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/profiles/genesys-seed/params");
}
