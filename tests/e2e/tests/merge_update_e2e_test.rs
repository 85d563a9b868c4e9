//! Layer 3: the real Genesys queue update through real Envoy 1.40: the
//! transform reads the queue, merges the consumer's fields, and writes the whole queue back
//! with its version, by callouts the platform cluster's token filter authenticates. The mock
//! keeps every field and refuses a stale version with 409, as the real API does.

use cxgate_e2e::{Stack, StackOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const UPDATE: &str = "/gateway/v1/routing/queues/update";

fn stack() -> Stack {
    let mut doc = cxgate_e2e::unlimited_pipeline();
    doc["transform"]["routes"]["queue-update"]["platforms"]["genesys"] = json!("genesys-real");
    let s = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        pipeline: Some(doc),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // The map is in the filters' shared data once a name it lacks is a 422, not a 503.
    let started = Instant::now();
    while update(&s, json!({"queue_name": "No_Such_Queue"})).0 != 422 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the queue map never synced"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// A token of the mock's own, for reading and writing the queue behind the gateway's back.
fn token(s: &Stack) -> String {
    let v: Value = s
        .http
        .post(s.mock_url("genesys", "/oauth/token"))
        .basic_auth("demo-genesys-client", Some("demo-genesys-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

fn premium(s: &Stack, token: &str) -> (String, Value) {
    let list: Value = s
        .http
        .get(s.mock_url("genesys", "/api/v2/routing/queues?name=Premium_Support"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["entities"][0]["id"].as_str().unwrap().to_string();
    let q = s
        .http
        .get(s.mock_url("genesys", &format!("/api/v2/routing/queues/{id}")))
        .bearer_auth(token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    (id, q)
}

fn update(s: &Stack, payload: Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.gateway_url(UPDATE))
        .header("x-api-key", KEY)
        .json(&json!({"target_platform": "GENESYS", "payload": payload}))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// (method, path, version sent) of what reached the queue through the gateway.
fn queue_calls(s: &Stack, id: &str) -> Vec<(String, Option<u64>)> {
    s.gateway_requests("genesys")
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(id)))
        .map(|r| {
            assert!(
                r["headers"]["authorization"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("Bearer ")),
                "the token filter authenticated the callout: {r}"
            );
            (
                r["method"].as_str().unwrap_or_default().to_string(),
                r["body_json"]["version"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn an_enabled_only_update_leaves_every_other_field_of_a_rich_queue_as_it_was() {
    let s = stack();
    let t = token(&s);
    let (id, before) = premium(&s, &t);
    assert!(
        !before["routingRules"].as_array().unwrap().is_empty(),
        "{before}"
    );
    let (status, body) = update(
        &s,
        json!({"queue_name": "Premium_Support", "enabled": false}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queue_id"], id.as_str());
    let (_, after) = premium(&s, &t);
    let mut expected = before.clone();
    expected["version"] = json!(before["version"].as_u64().unwrap() + 1);
    assert_eq!(after, expected, "only the version moved");
    assert_eq!(
        queue_calls(&s, &id),
        [
            ("GET".to_string(), None),
            ("PUT".to_string(), before["version"].as_u64())
        ]
    );
    // A mapped field changes that field alone.
    let (status, body) = update(
        &s,
        json!({"queue_name": "Premium_Support", "max_wait_time_ms": 45000}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_wait_time_ms"], 45000);
    let (_, again) = premium(&s, &t);
    expected["version"] = json!(again["version"]);
    expected["mediaSettings"]["call"]["serviceLevel"]["durationMs"] = json!(45000);
    assert_eq!(again, expected);
}

#[test]
fn a_write_between_the_read_and_the_put_is_kept_and_the_update_retried_once() {
    let s = stack();
    let t = token(&s);
    let (id, before) = premium(&s, &t);
    s.http
        .delete(s.mock_url("genesys", "/__mock/requests"))
        .send()
        .unwrap();
    // The gateway's PUT is held at the mock long enough for another writer to go first.
    let held = json!({"latency_ms": 1500, "count": 1, "method": "PUT", "path_prefix": "/api/v2/routing/queues/"});
    let r = s
        .http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&held)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    std::thread::scope(|scope| {
        let gateway = scope.spawn(|| {
            update(
                &s,
                json!({"queue_name": "Premium_Support", "max_wait_time_ms": 9000}),
            )
        });
        let started = Instant::now();
        while !queue_calls(&s, &id).iter().any(|(m, _)| m == "PUT") {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the gateway never wrote"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut theirs = before.clone();
        theirs["description"] = json!("changed by someone else");
        let w = s
            .http
            .put(s.mock_url("genesys", &format!("/api/v2/routing/queues/{id}")))
            .bearer_auth(&t)
            .json(&theirs)
            .send()
            .unwrap();
        assert_eq!(w.status(), 200);
        let (status, body) = gateway.join().unwrap();
        assert_eq!(status, 200, "{body}");
    });
    let v = before["version"].as_u64().unwrap();
    assert_eq!(
        queue_calls(&s, &id),
        [
            ("GET".to_string(), None),
            ("PUT".to_string(), Some(v)),
            ("GET".to_string(), None),
            ("PUT".to_string(), Some(v + 1)),
        ],
        "the stale write was refused, the queue read again and written once more"
    );
    let (_, after) = premium(&s, &t);
    assert_eq!(
        after["description"], "changed by someone else",
        "their write is kept"
    );
    assert_eq!(
        after["mediaSettings"]["call"]["serviceLevel"]["durationMs"],
        9000
    );
    assert_eq!(after["version"], v + 2);
}
