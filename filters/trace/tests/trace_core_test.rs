//! Pure tests of the trace filter core (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fakes::{FakeEntropy, FakeHeaders};
use cxgate_kit::host::Headers;
use cxgate_kit::ids::TraceParent;
use cxgate_trace::core::{Config, on_request, on_response};
use serde_json::{Value, json};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn cfg() -> Config {
    Config::compile("x-gateway-trace-id", Value::Null).unwrap()
}

#[test]
fn absent_headers_are_generated_and_name_one_trace() {
    let mut h = FakeHeaders::from(&[(":path", "/x")]);
    let d = on_request(&cfg(), &mut h, &mut FakeEntropy::seeded(7)).unwrap();
    assert!(d.generated_id && d.generated_traceparent);
    let tp = TraceParent::parse(&h.get("traceparent").unwrap().unwrap()).unwrap();
    assert_eq!(h.get("x-gateway-trace-id").unwrap().unwrap(), d.trace_id);
    assert_eq!(tp.trace_id, d.trace_id);
    assert_eq!(tp.flags, "01");
}

#[test]
fn consumer_values_are_kept() {
    let mut h = FakeHeaders::from(&[
        ("X-Gateway-Trace-Id", "req_8f3a2c9d1e4b"),
        ("traceparent", TP),
    ]);
    let d = on_request(&cfg(), &mut h, &mut FakeEntropy::seeded(7)).unwrap();
    assert!(!d.generated_id && !d.generated_traceparent);
    assert_eq!(h.all("x-gateway-trace-id"), vec!["req_8f3a2c9d1e4b"]);
    assert_eq!(h.all("traceparent"), vec![TP]);
}

#[test]
fn a_valid_traceparent_lends_its_trace_id() {
    let mut h = FakeHeaders::from(&[("traceparent", TP)]);
    let d = on_request(&cfg(), &mut h, &mut FakeEntropy::seeded(7)).unwrap();
    assert_eq!(d.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(d.generated_id && !d.generated_traceparent);
}

#[test]
fn invalid_values_are_replaced_not_forwarded() {
    let mut h = FakeHeaders::from(&[
        ("x-gateway-trace-id", "has spaces<script>"),
        ("traceparent", "00-zz-00f067aa0ba902b7-01"),
    ]);
    let d = on_request(&cfg(), &mut h, &mut FakeEntropy::seeded(7)).unwrap();
    assert!(d.generated_id && d.generated_traceparent);
    assert_eq!(h.all("x-gateway-trace-id"), vec![d.trace_id.as_str()]);
    assert!(TraceParent::parse(&h.get("traceparent").unwrap().unwrap()).is_some());
}

#[test]
fn a_non_hex_consumer_id_still_gets_a_valid_traceparent() {
    let mut h = FakeHeaders::from(&[("x-gateway-trace-id", "order-42")]);
    let d = on_request(&cfg(), &mut h, &mut FakeEntropy::seeded(7)).unwrap();
    assert_eq!(d.trace_id, "order-42");
    assert!(TraceParent::parse(&d.traceparent).is_some());
}

#[test]
fn ids_differ_between_requests() {
    let mut e = FakeEntropy::seeded(1);
    let a = on_request(&cfg(), &mut FakeHeaders::default(), &mut e).unwrap();
    let b = on_request(&cfg(), &mut FakeHeaders::default(), &mut e).unwrap();
    assert_ne!(a.trace_id, b.trace_id);
}

#[test]
fn entropy_failure_is_an_error_not_a_panic() {
    let mut e = FakeEntropy::seeded(1);
    e.fail = true;
    assert!(on_request(&cfg(), &mut FakeHeaders::default(), &mut e).is_err());
}

#[test]
fn response_echo_follows_config() {
    let mut h = FakeHeaders::default();
    on_response(&cfg(), &mut h, "t1").unwrap();
    assert_eq!(h.all("x-gateway-trace-id"), vec!["t1"]);
    let quiet = Config::compile("x-gateway-trace-id", json!({"echo_in_response": false})).unwrap();
    let mut h = FakeHeaders::default();
    on_response(&quiet, &mut h, "t1").unwrap();
    assert!(h.pairs.is_empty());
}

#[test]
fn config_is_checked_and_names_the_field() {
    let c = Config::compile("X-Request-Trace", Value::Null).unwrap();
    assert_eq!(c.trace_header, "x-request-trace");
    let field = |v: Value| Config::compile("x-gateway-trace-id", v).unwrap_err().field;
    assert_eq!(field(json!({"echo": true})), "/trace/echo");
    assert_eq!(
        field(json!({"echo_in_response": "yes"})),
        "/trace/echo_in_response"
    );
}
