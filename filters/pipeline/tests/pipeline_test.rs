//! The real stages together in the pure pipeline, on the shipped config (native and wasmtime):
//! what one stage's answer means for the others.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::host::CasDialect;
use cxgate_kit::shared::Stamped;
use cxgate_model::fakes::TestHost;
use cxgate_model::{Pipeline, Request, Step};
use cxgate_pipeline::STAGES;
use serde_json::{Value, json};

include!("../../../tests/fixtures/shipped.rs");

const NOW: u64 = 1_700_000_000_000;

fn host() -> TestHost {
    let mut h = TestHost::new(CasDialect::Envoy, NOW);
    h.env
        .insert("CXGATE_SIDECAR_KEY".into(), "k-0123456789".into());
    h.env.insert("CXGATE_CURSOR_KEY".into(), "c".repeat(32));
    let map = json!({"entries": {"Premium_Support": "q-1"}, "fetched_ms": 1, "stale": false, "last_error": null});
    let stamped = Stamped {
        version: 1,
        written_ms: NOW,
        payload: map.to_string().into_bytes(),
    };
    h.store
        .raw_set("cxgate/map/genesys/queues", &stamped.encode(), 0)
        .unwrap();
    h
}

fn pipeline(h: &mut TestHost, edit: impl FnOnce(&mut Value)) -> Pipeline {
    let mut doc = shipped_document();
    edit(&mut doc);
    h.pipeline(&doc.to_string(), &STAGES).unwrap()
}

fn request(method: &str, path: &str, consumer: &str) -> Vec<(String, String)> {
    [
        (":method", method),
        (":path", path),
        ("x-cxgate-consumer", consumer),
        ("content-type", "application/json"),
        ("authorization", "Bearer the-consumers-own"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn update(h: &mut TestHost, p: &Pipeline, body: &Value) -> Step {
    let (mut r, step) = Request::start(
        p,
        request("POST", "/gateway/v1/routing/queues/update", "wfm-sync"),
        &mut h.io(),
    );
    assert_eq!(step, Step::Pause, "waits for the body");
    r.on_body(body.to_string().into_bytes(), &mut h.io())
}

fn status(step: &Step) -> u32 {
    match step {
        Step::Reply(r) => r.status,
        Step::Continue => 200,
        Step::Pause => 0,
    }
}

#[test]
fn a_request_the_gateway_answers_itself_gives_its_platform_unit_back() {
    let mut h = host();
    let p = pipeline(&mut h, |d| {
        d["ratelimit"]["platforms"]["genesys"] = json!({"capacity": 2, "per_minute": 2});
    });
    let invalid = json!({"target_platform": "GENESYS", "payload": {"queue_name": ""}});
    for _ in 0..5 {
        let step = update(&mut h, &p, &invalid);
        assert_eq!(status(&step), 400, "{step:?}");
    }
    // The platform never saw those five: its two requests a minute are all still there.
    let listing = "/gateway/v1/routing/queues?platform=GENESYS";
    let got: Vec<u32> = (0..3)
        .map(|_| status(&Request::start(&p, request("GET", listing, "wfm-sync"), &mut h.io()).1))
        .collect();
    assert_eq!(got, [200, 200, 429]);
}

#[test]
fn a_429_carries_the_quota_and_the_trace_id_and_nothing_after_it_runs() {
    let mut h = host();
    let p = pipeline(&mut h, |d| {
        d["model"]["consumers"]["analytics-batch"]["limit"] =
            json!({"capacity": 1, "per_minute": 1});
    });
    let path = "/genesys/api/v2/routing/queues";
    assert_eq!(
        status(&Request::start(&p, request("GET", path, "analytics-batch"), &mut h.io()).1),
        200
    );
    let (r, step) = Request::start(&p, request("GET", path, "analytics-batch"), &mut h.io());
    let Step::Reply(reply) = step else {
        panic!("{step:?}")
    };
    assert_eq!(reply.status, 429);
    let header = |n: &str| {
        reply
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("retry-after").as_deref(), Some("60"));
    assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(
        header("x-gateway-trace-id"),
        r.x.trace_id,
        "the trace stage tags it"
    );
    assert_eq!(header("x-cxgate-reply").as_deref(), Some("ratelimit"));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["trace_id"].as_str(), r.x.trace_id.as_deref());
}

#[test]
fn the_token_stage_touches_only_requests_that_reach_a_platform() {
    let mut h = host();
    let p = pipeline(&mut h, |d| {
        d["stages"] = json!(["trace", "authz", "token"]);
        for s in ["ratelimit", "transform", "guard", "breaker", "coexistence"] {
            d.as_object_mut().unwrap().remove(s);
        }
    });
    let (_, step) = Request::start(
        &p,
        request("GET", "/gateway/v1/whoami", "wfm-sync"),
        &mut h.io(),
    );
    assert_eq!(step, Step::Continue);
    assert_eq!(
        h.stream.request_write("authorization"),
        None,
        "whoami has no platform"
    );
    // A platform route: the consumer's credential goes, and with no token yet it waits.
    let (_, step) = Request::start(
        &p,
        request("GET", "/genesys/api/v2/users", "wfm-sync"),
        &mut h.io(),
    );
    assert_eq!(step, Step::Pause);
    assert_eq!(h.stream.request_write("authorization"), Some(None));
    assert!(
        h.callout.calls[0]
            .path
            .starts_with("/v1/tokens/genesys?after=0")
    );
}

#[test]
fn the_demo_consumers_have_exactly_their_documented_rights() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let can = |h: &mut TestHost, consumer: &str, method: &str, path: &str| {
        let (_, step) = Request::start(&p, request(method, path, consumer), &mut h.io());
        !matches!(step, Step::Reply(r) if r.status == 403)
    };
    let cases = [
        ("GET", "/gateway/v1/routing/queues?platform=GENESYS"),
        ("POST", "/gateway/v1/routing/queues/update"),
        ("GET", "/genesys/api/v2/routing/queues"),
        ("DELETE", "/genesys/api/v2/routing/queues/q-1"),
        ("GET", "/cxone/incontactapi/services/v30.0/skills"),
        ("PUT", "/cxone/incontactapi/services/v30.0/skills/1"),
        ("POST", "/llm/v1/chat/completions"),
        ("GET", "/gateway/v1/whoami"),
    ];
    let rights = |h: &mut TestHost, consumer: &str| -> Vec<bool> {
        cases
            .iter()
            .map(|(m, path)| can(h, consumer, m, path))
            .collect()
    };
    let (t, f) = (true, false);
    assert_eq!(
        rights(&mut h, "omnichannel-app-prod"),
        [t, t, t, t, t, t, t, t]
    );
    assert_eq!(rights(&mut h, "wfm-sync"), [t, t, t, f, t, f, f, t]);
    assert_eq!(rights(&mut h, "analytics-batch"), [t, f, t, f, t, f, f, t]);
    assert_eq!(rights(&mut h, "sip-proxy"), [f, f, f, f, f, f, f, t]);
    assert_eq!(rights(&mut h, "anonymous"), [f, f, f, f, f, f, f, t]);
}
