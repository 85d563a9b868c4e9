//! Layer 2: the pipeline's access-log fields. On Envoy they are stream properties (filter
//! state `wasm.cxgate_*`, which the shipped access log reads) set before the response
//! leaves, for forwarded requests and for the pipeline's own replies alike; on Kong, which
//! refuses unknown properties, none is set.

use cxgate_abi_host::fixtures::shipped_host;
use cxgate_abi_host::{Action, Host, Profile, Stream};

fn host(profile: Profile) -> Host {
    shipped_host(profile).unwrap()
}

fn request(h: &mut Host, consumer: &str, method: &str, path: &str, body: Option<&str>) -> Stream {
    let s = h.new_stream(0).unwrap();
    let len = body.map(|b| b.len().to_string());
    let mut headers = vec![
        (":method", method),
        (":path", path),
        (":authority", "gateway"),
        ("x-cxgate-consumer", consumer),
    ];
    if let Some(len) = &len {
        headers.push(("content-type", "application/json"));
        headers.push(("content-length", len.as_str()));
    }
    let a = h.request_headers(s, &headers, body.is_none()).unwrap();
    if let Some(b) = body
        && a == Action::Pause
        && h.local_reply(s).is_none()
    {
        h.request_body(s, b.as_bytes(), true).unwrap();
    }
    s
}

/// A raw Genesys read, which the pipeline forwards.
fn raw_read(h: &mut Host) -> Stream {
    request(
        h,
        "omnichannel-app-prod",
        "GET",
        "/genesys/api/v2/users",
        None,
    )
}

/// A write by the read-only consumer, which the pipeline answers itself (403).
fn write_refused_by_scope(h: &mut Host) -> Stream {
    let path = "/genesys/api/v2/routing/queues/q-1";
    request(h, "analytics-batch", "DELETE", path, None)
}

fn fields(h: &Host, s: Stream) -> Vec<(String, String)> {
    let mut f = h.properties(s);
    f.sort();
    f
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = expected
        .iter()
        .map(|(k, v)| (format!("cxgate_{k}"), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn envoy_gets_each_requests_decisions_before_the_response_leaves() {
    let mut h = host(Profile::Envoy);
    // Forwarded: written when the response headers pass.
    let s = raw_read(&mut h);
    assert!(h.local_reply(s).is_none());
    assert!(h.properties(s).is_empty(), "nothing before the response");
    h.response_headers(s, &[(":status", "200")], true).unwrap();
    let read = [
        ("consumer", "omnichannel-app-prod"),
        ("route", "genesys-read"),
        ("platform", "genesys"),
        ("cost", "1"),
        ("transform", "none"),
    ];
    assert_eq!(fields(&h, s), pairs(&read));
    h.finish(s).unwrap();

    // Refused by scope: written before the pipeline's own reply.
    let s = write_refused_by_scope(&mut h);
    assert_eq!(h.local_reply(s).map(|r| r.status), Some(403));
    let refused = [
        ("consumer", "analytics-batch"),
        ("route", "genesys-write"),
        ("platform", "genesys"),
    ];
    assert_eq!(
        fields(&h, s),
        pairs(&refused),
        "only the stages that ran add theirs"
    );
    h.finish(s).unwrap();

    // A consumer body the transform refuses: its status and the route's cost.
    let s = request(
        &mut h,
        "omnichannel-app-prod",
        "POST",
        "/gateway/v1/routing/queues/update",
        Some(r#"{"target_platform": "GENESYS"}"#),
    );
    assert_eq!(h.local_reply(s).map(|r| r.status), Some(400));
    let f = fields(&h, s);
    assert!(
        f.contains(&("cxgate_transform".into(), "rejected".into())),
        "{f:?}"
    );
    assert!(f.contains(&("cxgate_cost".into(), "5".into())), "{f:?}");
    assert!(
        f.contains(&("cxgate_route".into(), "queue-update".into())),
        "{f:?}"
    );
    h.finish(s).unwrap();

    // No route: the fields still say who asked, and that nothing matched.
    let s = request(&mut h, "omnichannel-app-prod", "GET", "/nowhere", None);
    assert_eq!(h.local_reply(s).map(|r| r.status), Some(404));
    let f = fields(&h, s);
    assert!(f.contains(&("cxgate_route".into(), "-".into())), "{f:?}");
    h.finish(s).unwrap();
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}

#[test]
fn kong_is_never_asked_for_a_property_it_does_not_know() {
    let mut h = host(Profile::Kong);
    let s = raw_read(&mut h);
    h.response_headers(s, &[(":status", "200")], true).unwrap();
    h.finish(s).unwrap();
    let s = write_refused_by_scope(&mut h);
    assert_eq!(h.local_reply(s).map(|r| r.status), Some(403));
    assert!(h.properties(s).is_empty());
    h.finish(s).unwrap();
    assert_eq!(
        h.host_calls()
            .get("proxy_set_property")
            .copied()
            .unwrap_or(0),
        0
    );
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}
