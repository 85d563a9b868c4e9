//! Layer 3: the gateway's access log as shipped (envoy/envoy.yaml): one JSON line per request
//! with Envoy's facts and the pipeline's decisions (filter state `wasm.cxgate_*`).

use cxgate_e2e::{Stack, StackOptions};
use reqwest::blocking::RequestBuilder;
use serde_json::Value;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const READ_ONLY_KEY: &str = "demo-key-analytics";
const SEED: &str = include_str!("../../fixtures/queue-update.seed.json");

/// The log's lines once it holds at least `n` (Envoy flushes file logs about once a second).
fn lines(s: &Stack, n: usize) -> Vec<Value> {
    let path = s.run_dir.join("envoy-access.log");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if all.len() >= n || started.elapsed() > Duration::from_secs(10) {
            return all;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one request; notes its status and trace id. Requests go one at a time, so the
/// log's lines come in the same order.
fn go(sent: &mut Vec<(u16, Option<String>)>, req: RequestBuilder) -> u16 {
    let r = req.send().unwrap();
    let trace = r
        .headers()
        .get("x-gateway-trace-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = r.status().as_u16();
    sent.push((status, trace));
    status
}

#[test]
fn one_json_line_per_request_with_the_documented_fields() {
    let s = Stack::start(StackOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut sent = Vec::new();
    let users = s.gateway_url("/genesys/api/v2/users");
    let update = s.gateway_url("/gateway/v1/routing/queues/update");
    go(&mut sent, s.http.get(&users).header("x-api-key", KEY));
    go(&mut sent, s.http.get(&users));
    let queue = s.gateway_url("/genesys/api/v2/routing/queues/q-1");
    go(
        &mut sent,
        s.http.delete(queue).header("x-api-key", READ_ONLY_KEY),
    );
    let bad = s.http.post(&update).header("x-api-key", KEY);
    go(
        &mut sent,
        bad.header("content-type", "application/json")
            .body(r#"{"target_platform": "GENESYS"}"#),
    );
    go(
        &mut sent,
        s.http
            .get(s.gateway_url("/nowhere"))
            .header("x-api-key", KEY),
    );
    // The update waits for the ID maps to sync: the last try is the one that went through.
    let started = Instant::now();
    loop {
        let req = s.http.post(&update).header("x-api-key", KEY);
        if go(
            &mut sent,
            req.header("content-type", "application/json").body(SEED),
        ) == 200
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{sent:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let log = lines(&s, sent.len());
    assert_eq!(log.len(), sent.len(), "one line per request: {log:?}");
    for ((status, _), l) in sent.iter().zip(&log) {
        assert_eq!(l["status"], *status, "{l}");
        assert!(l["duration_ms"].as_u64().is_some(), "{l}");
        assert!(l["time"].as_str().is_some_and(|t| t.contains('T')), "{l}");
        assert_eq!(l["request_id"].as_str().map(str::len), Some(36), "{l}");
    }
    let field = |i: usize, k: &str| log[i][k].clone();
    let text = |v: &str| Value::String(v.into());

    // A raw read, forwarded: who, which route, which platform, what it cost.
    assert_eq!(field(0, "consumer"), text("omnichannel-app-prod"));
    assert_eq!(field(0, "route"), text("genesys-read"));
    assert_eq!(field(0, "platform"), text("genesys"));
    assert_eq!(field(0, "cost"), text("1"));
    assert_eq!(field(0, "transform"), text("none"));
    assert_eq!(field(0, "upstream_cluster"), text("genesys"));
    let trace = sent[0].1.clone().expect("a trace id on the response");
    assert_eq!(trace.len(), 32);
    assert_eq!(field(0, "trace_id"), text(&trace));
    // No key: Envoy refused it before the pipeline; nothing of the pipeline's is there.
    assert_eq!(field(1, "status"), 401);
    assert_eq!(field(1, "consumer"), Value::Null);
    // A write the consumer's scopes lack: refused by the pipeline, which still says who.
    assert_eq!(field(2, "status"), 403);
    assert_eq!(field(2, "consumer"), text("analytics-batch"));
    assert_eq!(field(2, "route"), text("genesys-write"));
    // A body the transform refuses, and a path no route matches.
    assert_eq!(field(3, "status"), 400);
    assert_eq!(field(3, "transform"), text("rejected"));
    assert_eq!(field(3, "cost"), text("5"));
    assert_eq!(field(4, "status"), 404);
    assert_eq!(field(4, "route"), text("-"));
    // The normalized update: transformed, for the platform it named.
    let last = sent.len() - 1;
    assert_eq!(field(last, "transform"), text("transformed"));
    assert_eq!(field(last, "platform"), text("genesys"));
    assert_eq!(field(last, "route"), text("queue-update"));
    // No secret reaches the log: neither a consumer's key nor a platform token.
    let raw = std::fs::read_to_string(s.run_dir.join("envoy-access.log")).unwrap();
    assert!(
        !raw.contains("demo-key") && !raw.contains("Bearer"),
        "{raw}"
    );
}
