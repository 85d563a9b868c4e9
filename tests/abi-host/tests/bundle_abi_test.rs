//! Layer 2: the one-module bundle. Each plugin's root id picks the filter it becomes, under
//! both proxy profiles; a root id that names no filter is refused at configure time.

use cxgate_abi_host::{Action, Host, Profile, filter_wasm};
use serde_json::json;

fn bundle(profile: Profile, root_id: &str, config: &str) -> Result<Host, String> {
    Host::builder(filter_wasm("cxgate-bundle"))
        .profile(profile)
        .workers(2)
        .property("plugin_root_id", root_id.as_bytes())
        .config(config)
        .start()
        .map_err(|e| format!("{e:#}"))
}

#[test]
fn root_id_cxgate_trace_makes_the_trace_filter() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = bundle(profile, "cxgate.trace", r#"{"version":1}"#).unwrap();
        let s = h.new_stream(1).unwrap();
        let a = h
            .request_headers(s, &[(":method", "GET"), (":path", "/x")], true)
            .unwrap();
        assert_eq!(a, Action::Continue);
        let id = h.request_header(s, "x-gateway-trace-id").unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(h.metric("cxgate_trace.generated"), Some(1), "{profile:?}");
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn root_id_cxgate_ratelimit_makes_the_rate_limiter() {
    let config = json!({"version": 1, "consumer": {"capacity": 2, "per_minute": 2},
        "routes": [{"prefix": "/genesys/", "platform": "genesys", "cost": 1}]})
    .to_string();
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = bundle(profile, "cxgate.ratelimit", &config).unwrap();
        let mut statuses = Vec::new();
        for worker in [0, 1, 0] {
            let s = h.new_stream(worker).unwrap();
            let a = h
                .request_headers(
                    s,
                    &[
                        (":method", "GET"),
                        (":path", "/genesys/api/v2/users"),
                        ("x-cxgate-consumer", "app"),
                    ],
                    true,
                )
                .unwrap();
            statuses.push(match a {
                Action::Continue => 200,
                _ => h.local_reply(s).map_or(0, |r| r.status),
            });
        }
        assert_eq!(statuses, [200, 200, 429], "{profile:?}");
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_root_id_naming_no_filter_is_refused_with_the_valid_names() {
    for root_id in ["", "cxgate.nope", "trace"] {
        let err = bundle(Profile::Envoy, root_id, "{}").err().unwrap();
        let text = err;
        assert!(text.contains("on_configure returned false"), "{text}");
        assert!(
            text.contains("/root_id") && text.contains("cxgate.ratelimit"),
            "{text}"
        );
    }
}
