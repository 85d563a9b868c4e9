//! The real Genesys queue update through the whole pipeline on the shipped
//! config: a GET of the queue, the consumer's fields merged over it, a PUT of the whole queue
//! with the version read, one re-read and retry on a 409, all by callouts; the platform's last
//! answer is normalized and sent as the reply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::host::CasDialect;
use cxgate_kit::shared::Stamped;
use cxgate_model::fakes::TestHost;
use cxgate_model::{CallAnswer, Pipeline, Request, Step};
use cxgate_pipeline::STAGES;
use serde_json::{Value, json};

include!("../../../tests/fixtures/shipped.rs");

const NOW: u64 = 1_700_000_000_000;
const QUEUE: &str = "/api/v2/routing/queues/q-1";

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

/// The shipped document with the update route on the real-API profiles.
fn pipeline(h: &mut TestHost) -> Pipeline {
    let mut doc = shipped_document();
    doc["transform"]["routes"]["queue-update"]["platforms"] =
        json!({"genesys": "genesys-real", "cxone": "cxone-real"});
    h.pipeline(&doc.to_string(), &STAGES).unwrap()
}

/// A queue as Genesys returns it, with everything a blind PUT would wipe.
fn rich(version: u64) -> Value {
    json!({
        "id": "q-1", "name": "Premium_Support", "version": version,
        "description": "VIP callers",
        "skillEvaluationMethod": "BEST", "scoringMethod": "PriorityOnly",
        "lastAgentRoutingMode": "QueueMembersOnly",
        "acwSettings": {"wrapupPrompt": "MANDATORY_TIMEOUT", "timeoutMs": 30000},
        "mediaSettings": {
            "call": {"alertingTimeoutSeconds": 12, "serviceLevel": {"percentage": 0.9, "durationMs": 15000}},
            "chat": {"alertingTimeoutSeconds": 30, "serviceLevel": {"percentage": 0.7, "durationMs": 60000}}
        },
        "bullseye": {"rings": [{"expansionCriteria": [{"type": "TIMEOUT_SECONDS", "threshold": 15}]}]},
        "routingRules": [{"operator": "MEETS_THRESHOLD", "threshold": 9, "waitSeconds": 20}],
        "memberGroups": [{"id": "g-1", "type": "GROUP"}],
        "selfUri": "/api/v2/routing/queues/q-1"
    })
}

fn answer(status: u16, body: &Value) -> CallAnswer {
    CallAnswer {
        status: Some(status),
        headers: vec![
            (":status".into(), status.to_string()),
            ("content-type".into(), "application/json".into()),
            ("content-length".into(), body.to_string().len().to_string()),
            ("inin-correlation-id".into(), "corr-7".into()),
            // A platform cannot pass for the gateway.
            ("x-cxgate-reply".into(), "forged".into()),
        ],
        body: body.to_string().into_bytes(),
    }
}

fn start(h: &mut TestHost, p: &Pipeline, payload: Value) -> Request {
    start_keyed(h, p, payload, None)
}

fn start_keyed(h: &mut TestHost, p: &Pipeline, payload: Value, key: Option<&str>) -> Request {
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/gateway/v1/routing/queues/update"),
        ("x-cxgate-consumer", "wfm-sync"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut r, step) = Request::start(p, headers, &mut h.io());
    assert_eq!(step, Step::Pause, "waits for the body");
    let mut body = json!({"target_platform": "GENESYS", "payload": payload});
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    let step = r.on_body(body.to_string().into_bytes(), &mut h.io());
    assert_eq!(step, Step::Pause, "waits for the read of the queue");
    r
}

/// The last callout: (method, path, body).
fn last_call(h: &TestHost) -> (String, String, Option<Value>) {
    let c = h.callout.calls.last().unwrap();
    assert_eq!(
        c.upstream, "genesys",
        "the cluster whose token filter authenticates it"
    );
    (
        c.method.clone(),
        c.path.clone(),
        c.body.as_ref().map(|b| serde_json::from_slice(b).unwrap()),
    )
}

fn respond(h: &mut TestHost, r: &mut Request, a: &CallAnswer) -> Step {
    let token = h.callout.calls.last().unwrap().token;
    r.on_call_response(token, a, &mut h.io()).unwrap()
}

fn reply(step: Step) -> (u32, Vec<(String, String)>, Value) {
    let Step::Reply(r) = step else {
        panic!("expected a reply, got {step:?}")
    };
    (
        r.status,
        r.headers,
        serde_json::from_slice(&r.body).unwrap(),
    )
}

#[test]
fn an_update_keeps_every_field_it_does_not_map_and_sends_the_version_read() {
    let mut h = host();
    let p = pipeline(&mut h);
    let mut r = start(
        &mut h,
        &p,
        json!({"queue_name": "Premium_Support", "enabled": false, "max_wait_time_ms": 45000}),
    );
    assert_eq!(last_call(&h), ("GET".into(), QUEUE.into(), None));
    for pseudo in [":method", ":path"] {
        assert_eq!(h.stream.request_write(pseudo), None, "nothing is proxied");
    }
    let traced = &h.callout.calls[0].headers;
    assert!(traced.iter().any(|(k, _)| k == "traceparent"), "{traced:?}");
    let step = respond(&mut h, &mut r, &answer(200, &rich(7)));
    assert_eq!(step, Step::Pause, "waits for the write");
    let (method, path, put) = last_call(&h);
    assert_eq!((method.as_str(), path.as_str()), ("PUT", QUEUE));
    let mut expected = rich(7);
    expected["mediaSettings"]["call"]["serviceLevel"]["durationMs"] = json!(45000);
    assert_eq!(
        put.unwrap(),
        expected,
        "the queue read, the one mapped field changed; defaults never replace what it has"
    );
    let mut written = expected.clone();
    written["version"] = json!(8);
    let (status, headers, body) = reply(respond(&mut h, &mut r, &answer(200, &written)));
    assert_eq!(status, 200);
    assert_eq!(body["queue_id"], "q-1");
    assert_eq!(body["max_wait_time_ms"], 45000);
    assert_eq!(body["skill_evaluation"], "BEST");
    let header = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(header("content-type"), ["application/json"]);
    assert_eq!(
        header("content-length"),
        Vec::<&str>::new(),
        "the proxy frames the new body"
    );
    assert_eq!(
        header("x-cxgate-reply"),
        ["transform"],
        "only the gateway's own marker"
    );
    assert_eq!(h.callout.calls.len(), 2);
}

#[test]
fn defaults_fill_only_what_the_queue_lacks() {
    let mut h = host();
    let p = pipeline(&mut h);
    let mut r = start(&mut h, &p, json!({"queue_name": "Premium_Support"}));
    let mut bare = rich(3);
    bare.as_object_mut().unwrap().remove("acwSettings");
    respond(&mut h, &mut r, &answer(200, &bare));
    let put = last_call(&h).2.unwrap();
    assert_eq!(put["acwSettings"], json!({"wrapupPrompt": "OPTIONAL"}));
    assert_eq!(put["scoringMethod"], "PriorityOnly", "not the default's");
    assert_eq!(put["routingRules"], bare["routingRules"]);
}

#[test]
fn a_stale_version_reads_again_and_retries_once_then_answers_the_conflict() {
    let mut h = host();
    let p = pipeline(&mut h);
    let mut r = start(
        &mut h,
        &p,
        json!({"queue_name": "Premium_Support", "max_wait_time_ms": 9000}),
    );
    respond(&mut h, &mut r, &answer(200, &rich(4)));
    let conflict =
        json!({"message": "version mismatch", "code": "version.mismatch", "status": 409});
    // Someone else wrote version 5 meanwhile: the queue is read again and the write redone.
    assert_eq!(
        respond(&mut h, &mut r, &answer(409, &conflict)),
        Step::Pause
    );
    assert_eq!(last_call(&h), ("GET".into(), QUEUE.into(), None));
    let mut theirs = rich(5);
    theirs["routingRules"] = json!([]);
    respond(&mut h, &mut r, &answer(200, &theirs));
    let put = last_call(&h).2.unwrap();
    assert_eq!(put["version"], 5);
    assert_eq!(
        put["routingRules"],
        json!([]),
        "their change is kept, not ours undone"
    );
    // A second conflict is the consumer's to see: no loop.
    let (status, _, body) = reply(respond(&mut h, &mut r, &answer(409, &conflict)));
    assert_eq!(status, 409);
    assert_eq!(body["type"], "urn:cxgate:problem:platform-error");
    assert_eq!(body["detail"], "version mismatch");
    assert_eq!(body["correlation_id"], "corr-7");
    assert_eq!(h.callout.calls.len(), 4, "GET, PUT, GET, PUT");
}

#[test]
fn a_queue_that_cannot_be_read_is_never_written() {
    let mut h = host();
    let p = pipeline(&mut h);
    let mut r = start(&mut h, &p, json!({"queue_name": "Premium_Support"}));
    let missing = json!({"message": "queue q-1 not found", "code": "not.found", "status": 404});
    let (status, _, body) = reply(respond(&mut h, &mut r, &answer(404, &missing)));
    assert_eq!((status, body["platform_status"].clone()), (404, json!(404)));
    let mut r = start(&mut h, &p, json!({"queue_name": "Premium_Support"}));
    let (status, _, body) = reply(respond(
        &mut h,
        &mut r,
        &answer(200, &json!({"id": "q-1", "name": "x"})),
    ));
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "urn:cxgate:problem:platform-invalid-response");
    let mut r = start(&mut h, &p, json!({"queue_name": "Premium_Support"}));
    let token = h.callout.calls.last().unwrap().token;
    let step = r
        .on_call_response(token, &CallAnswer::default(), &mut h.io())
        .unwrap();
    let (status, _, body) = reply(step);
    assert_eq!(status, 502);
    assert_eq!(body["type"], "urn:cxgate:problem:platform-unreachable");
    assert!(
        h.callout.calls.iter().all(|c| c.method == "GET"),
        "no write"
    );
}

#[test]
fn a_keyed_update_is_replayed_from_its_first_answer() {
    let mut h = host();
    let p = pipeline(&mut h);
    let payload = json!({"queue_name": "Premium_Support"});
    let mut r = start_keyed(&mut h, &p, payload.clone(), Some("k-1"));
    respond(&mut h, &mut r, &answer(200, &rich(1)));
    let (status, _, first) = reply(respond(&mut h, &mut r, &answer(200, &rich(2))));
    assert_eq!(status, 200);
    r.on_done(&mut h.io());
    let calls = h.callout.calls.len();
    let headers: Vec<(String, String)> = [
        (":method", "POST"),
        (":path", "/gateway/v1/routing/queues/update"),
        ("x-cxgate-consumer", "wfm-sync"),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (mut again, _) = Request::start(&p, headers, &mut h.io());
    let body = json!({"target_platform": "GENESYS", "payload": payload, "idempotency_key": "k-1"});
    let (status, headers, replayed) =
        reply(again.on_body(body.to_string().into_bytes(), &mut h.io()));
    assert_eq!((status, &replayed), (200, &first));
    assert!(headers.contains(&("idempotent-replayed".into(), "true".into())));
    assert_eq!(
        h.callout.calls.len(),
        calls,
        "the platform is not called again"
    );
}
