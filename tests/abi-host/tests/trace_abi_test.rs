//! Layer 2: the compiled trace filter in the ABI host, under both proxy profiles.

use cxgate_abi_host::{Action, Host, Profile, filter_wasm};
use serde_json::json;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The trace filter's document: one catch-all route, `trace` the stage's settings and
/// `model` extra model settings (the trace header is the model's).
fn document(trace: serde_json::Value, model: serde_json::Value) -> String {
    let mut m = json!({"routes": [{"id": "all", "prefix": "/"}]});
    for (k, v) in model.as_object().unwrap() {
        m[k] = v.clone();
    }
    json!({"version": 2, "model": m, "trace": trace}).to_string()
}

fn host(profile: Profile, workers: usize, trace: serde_json::Value) -> Host {
    Host::builder(filter_wasm("cxgate-trace"))
        .profile(profile)
        .workers(workers)
        .config(&document(trace, json!({})))
        .start()
        .unwrap()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn generates_both_headers_and_echoes_on_every_worker() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile, 4, json!({}));
        let mut seen = std::collections::HashSet::new();
        for worker in 0..4 {
            let s = h.new_stream(worker).unwrap();
            let action = h
                .request_headers(s, &[(":method", "GET"), (":path", "/gateway/v1/x")], true)
                .unwrap();
            assert_eq!(action, Action::Continue);
            let id = h.request_header(s, "x-gateway-trace-id").unwrap();
            assert!(is_hex(&id, 32), "{id}");
            let tp = h.request_header(s, "traceparent").unwrap();
            assert!(
                tp.starts_with(&format!("00-{id}-")) && tp.ends_with("-01"),
                "{tp}"
            );
            assert_eq!(
                h.response_headers(s, &[(":status", "200")], false).unwrap(),
                Action::Continue
            );
            assert_eq!(
                h.response_header(s, "x-gateway-trace-id").as_deref(),
                Some(id.as_str())
            );
            h.finish(s).unwrap();
            assert!(seen.insert(id), "trace ids must differ between requests");
        }
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_trace.generated"), Some(4), "{profile:?}");
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn keeps_valid_consumer_values() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile, 2, json!({}));
        let s = h.new_stream(1).unwrap();
        h.request_headers(
            s,
            &[
                (":path", "/"),
                ("X-Gateway-Trace-Id", "req_8f3a2c9d1e4b"),
                ("traceparent", TP),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            h.request_header(s, "x-gateway-trace-id").as_deref(),
            Some("req_8f3a2c9d1e4b")
        );
        assert_eq!(h.request_header(s, "traceparent").as_deref(), Some(TP));
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_trace.kept"), Some(1));
        assert_eq!(h.metric("cxgate_trace.generated"), Some(0));
    }
}

#[test]
fn replaces_invalid_inbound_values() {
    let mut h = host(Profile::Envoy, 1, json!({}));
    let s = h.new_stream(0).unwrap();
    h.request_headers(
        s,
        &[
            (":path", "/"),
            ("x-gateway-trace-id", "bad id!"),
            ("traceparent", "garbage"),
        ],
        true,
    )
    .unwrap();
    let id = h.request_header(s, "x-gateway-trace-id").unwrap();
    assert!(is_hex(&id, 32));
    assert!(h.request_header(s, "traceparent").unwrap().contains(&id));
}

#[test]
fn custom_header_and_no_echo() {
    let mut h = Host::builder(filter_wasm("cxgate-trace"))
        .profile(Profile::Kong)
        .config(&document(
            json!({"echo_in_response": false}),
            json!({"trace_header": "X-Request-Trace"}),
        ))
        .start()
        .unwrap();
    let s = h.new_stream(0).unwrap();
    h.request_headers(s, &[(":path", "/")], false).unwrap();
    assert!(h.request_header(s, "x-request-trace").is_some());
    assert!(h.request_header(s, "x-gateway-trace-id").is_none());
    h.response_headers(s, &[(":status", "204")], true).unwrap();
    assert!(h.response_header(s, "x-request-trace").is_none());
}

#[test]
fn bad_config_is_rejected_naming_the_field() {
    let with_version = |v: u64| {
        let mut d: serde_json::Value =
            serde_json::from_str(&document(json!({}), json!({}))).unwrap();
        d["version"] = json!(v);
        d.to_string()
    };
    for (config, field) in [
        (
            document(json!({}), json!({"trace_header": "no spaces allowed"})),
            "/model/trace_header",
        ),
        (
            document(json!({"echo_in_response": 1}), json!({})),
            "/trace/echo_in_response",
        ),
        (with_version(9), "/version"),
        (
            document(json!({"unknown": true}), json!({})),
            "/trace/unknown",
        ),
        (
            r#"{"model":{"routes":[{"id":"a","prefix":"/"}]},"stages":["breaker"]}"#.to_string(),
            "/stages/0",
        ),
    ] {
        let err = Host::builder(filter_wasm("cxgate-trace"))
            .config(&config)
            .start()
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(text.contains("on_configure returned false"), "{text}");
        assert!(
            text.contains(&format!(r#"\"field\":\"{field}\""#)),
            "{text}"
        );
    }
}
