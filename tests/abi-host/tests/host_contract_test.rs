//! The ABI host's own contract, proven through the probe filter and cxgate-kit's proxy
//! implementation: shared data and CAS across workers, leases under time travel, callouts
//! (answered, scripted, timed out), and the kong profile's refusals.

use cxgate_abi_host::{CallReply, Host, Profile, Stream, filter_wasm};
use std::time::Duration;

fn probe(profile: Profile, workers: usize, config: &str) -> Host {
    Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(profile)
        .workers(workers)
        .cluster("mock")
        .config(config)
        .start()
        .unwrap()
}

fn upstream(profile: Profile) -> &'static str {
    match profile {
        Profile::Envoy => r#"{"upstream":"mock"}"#,
        Profile::Kong => r#"{"upstream":"127.0.0.1:7101"}"#,
    }
}

fn op(h: &mut Host, worker: usize, op: &str) -> (Stream, Option<String>) {
    let s = h.new_stream(worker).unwrap();
    h.request_headers(s, &[(":path", "/"), ("x-probe-op", op)], true)
        .unwrap();
    let result = h.request_header(s, "x-probe-result");
    (s, result)
}

#[test]
fn kit_detects_each_hosts_cas_dialect() {
    for (profile, dialect) in [(Profile::Envoy, "Envoy"), (Profile::Kong, "Kong")] {
        let h = probe(profile, 2, "");
        let logs = h.logs_containing("CAS_DIALECT");
        assert_eq!(logs.len(), 2, "one per worker");
        assert!(logs.iter().all(|l| l.message.contains(dialect)), "{logs:?}");
    }
}

#[test]
fn cas_increments_are_exact_across_workers_with_injected_races() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = probe(profile, 4, "");
        let mut results = Vec::new();
        for i in 0..40 {
            if i % 3 == 0 {
                h.race_next_writes(2);
            }
            results.push(op(&mut h, i % 4, "incr").1.unwrap());
        }
        let expected: Vec<String> = (1..=40).map(|n| n.to_string()).collect();
        assert_eq!(
            results, expected,
            "{profile:?}: every increment counted once"
        );
        assert!(
            h.cas_mismatches() >= 26,
            "races were injected: {}",
            h.cas_mismatches()
        );
        assert_eq!(
            h.shared_value("cxgate/test/counter").unwrap(),
            40u64.to_le_bytes()
        );
    }
}

#[test]
fn bounded_cas_loop_reports_contention_instead_of_spinning() {
    let mut h = probe(Profile::Envoy, 1, r#"{"cas_attempts":3}"#);
    op(&mut h, 0, "incr");
    h.race_next_writes(10);
    assert_eq!(
        op(&mut h, 0, "incr").1.as_deref(),
        Some("error:Contention { attempts: 3 }")
    );
}

#[test]
fn insert_if_absent_wins_once_on_both_hosts() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = probe(profile, 3, "");
        let outcomes: Vec<String> = (0..3).map(|w| op(&mut h, w, "insert").1.unwrap()).collect();
        assert_eq!(
            outcomes,
            vec!["Ok(())", "Err(CasMismatch)", "Err(CasMismatch)"],
            "{profile:?}"
        );
    }
}

#[test]
fn exactly_one_lease_holder_per_tick_and_takeover_when_it_stops() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = probe(profile, 4, r#"{"tick_ms":1000}"#);
        let start = h.now_ms();
        h.advance(Duration::from_secs(10)).unwrap();
        let holders_at = |h: &Host, t: u64| -> Vec<u64> {
            h.shared_value(&format!("cxgate/test/held/{t}"))
                .map(|v| {
                    v.chunks(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut first_holder = None;
        for s in 1..=10 {
            let holders = holders_at(&h, start + s * 1000);
            assert_eq!(
                holders.len(),
                1,
                "{profile:?} t={s}s: exactly one holder, got {holders:?}"
            );
            first_holder.get_or_insert(holders[0]);
            assert_eq!(
                Some(holders[0]),
                first_holder,
                "the holder renews and keeps it"
            );
        }
        // The holder's worker dies (stops ticking): all workers tick at the same instants, and
        // worker 0 ticks first, so worker 0 is the holder. Another takes over within one lease
        // period (3 s).
        h.advance_skipping(Duration::from_secs(10), &[0]).unwrap();
        let mut takeover = None;
        for s in 11..=20 {
            let holders = holders_at(&h, start + s * 1000);
            assert!(holders.len() <= 1, "never two holders: {holders:?}");
            if let Some(&x) = holders.first() {
                assert_ne!(Some(x), first_holder);
                takeover.get_or_insert(s);
            }
        }
        let takeover = takeover.expect("someone took over");
        assert!(
            takeover <= 13,
            "{profile:?}: takeover at {takeover}s, lease is 3 s after 10 s"
        );
    }
}

#[test]
fn callouts_are_answered_scripted_and_timed_out() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = probe(profile, 2, upstream(profile));
        // Answered by the test.
        let (s, _) = op(&mut h, 1, "callout");
        let calls = h.pending_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].header(":authority"), Some("probe.local"));
        assert_eq!(calls[0].header("x-from"), Some("probe"));
        assert_eq!(calls[0].worker, 1);
        assert_eq!(h.request_continued(s), 0);
        h.reply(calls[0].token, CallReply::json(200, "{\"ok\":true}"))
            .unwrap();
        assert_eq!(
            h.request_header(s, "x-probe-result").as_deref(),
            Some("200:{\"ok\":true}")
        );
        assert_eq!(h.request_continued(s), 1);
        // Answered by a scripted responder, right after dispatch.
        h.respond_with(|call| (call.path() == "/probe").then(|| CallReply::json(503, "down")));
        let (s, _) = op(&mut h, 0, "callout");
        assert_eq!(
            h.request_header(s, "x-probe-result").as_deref(),
            Some("503:down")
        );
        assert!(h.pending_calls().is_empty());
        // Timed out by the virtual clock (the probe asks for 500 ms).
        h.respond_with(|_| None);
        let (s, _) = op(&mut h, 0, "callout");
        h.advance(Duration::from_millis(499)).unwrap();
        assert!(h.local_reply(s).is_none());
        h.advance(Duration::from_millis(1)).unwrap();
        let reply = h.local_reply(s).expect("timeout answered locally");
        assert_eq!(reply.status, 504);
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
    }
}

#[test]
fn upstream_naming_follows_the_profile() {
    // A cluster name is refused by Kong, host:port by Envoy (unless it is a cluster).
    let mut h = probe(Profile::Kong, 1, r#"{"upstream":"mock"}"#);
    assert_eq!(
        op(&mut h, 0, "callout").1.as_deref(),
        Some("dispatch:BadArgument")
    );
    let mut h = probe(Profile::Envoy, 1, r#"{"upstream":"127.0.0.1:7101"}"#);
    assert_eq!(
        op(&mut h, 0, "callout").1.as_deref(),
        Some("dispatch:BadArgument")
    );
}

#[test]
fn metrics_are_shared_across_workers() {
    let mut h = probe(Profile::Kong, 3, "");
    for w in 0..3 {
        op(&mut h, w, "metric");
    }
    assert_eq!(h.metric("probe.requests"), Some(3));
}

#[test]
fn kong_profile_refuses_what_kong_lacks() {
    // (`proxy_get_log_level` is not imported at all: see the load test below.)
    for what in ["grpc", "done", "node"] {
        let mut h = probe(Profile::Kong, 1, "");
        let s = h.new_stream(0).unwrap();
        let err = h
            .request_headers(s, &[(":path", "/"), ("x-probe-op", what)], true)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not supported by Kong"),
            "{what}: {err:#}"
        );
        assert_eq!(h.violations().len(), 1, "{what}");
        // The same filter is fine under the envoy profile (except gRPC, which we never use).
        let mut h = probe(Profile::Envoy, 1, "");
        let s = h.new_stream(0).unwrap();
        h.request_headers(s, &[(":path", "/"), ("x-probe-op", what)], true)
            .unwrap();
    }
    // Pausing in response headers.
    let mut h = probe(Profile::Kong, 1, "");
    let s = h.new_stream(0).unwrap();
    h.request_headers(s, &[(":path", "/"), ("x-probe-op", "pause-response")], true)
        .unwrap();
    let err = h
        .response_headers(s, &[(":status", "200")], false)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("pausing in response headers"),
        "{err:#}"
    );
    let mut h = probe(Profile::Envoy, 1, "");
    let s = h.new_stream(0).unwrap();
    h.request_headers(s, &[(":path", "/"), ("x-probe-op", "pause-response")], true)
        .unwrap();
    assert!(h.response_headers(s, &[(":status", "200")], false).is_ok());
}

#[test]
fn host_counts_calls_per_request() {
    let mut h = Host::builder(filter_wasm("cxgate-trace"))
        .config(r#"{"version":2,"model":{"routes":[{"id":"all","prefix":"/"}]}}"#)
        .start()
        .unwrap();
    h.reset_host_calls();
    let s = h.new_stream(0).unwrap();
    h.request_headers(s, &[(":path", "/")], true).unwrap();
    let calls = h.host_calls();
    // The runner reads the request headers once, as a map; the stage sets its two headers.
    assert_eq!(calls.get("proxy_get_header_map_pairs"), Some(&1));
    assert_eq!(calls.get("proxy_get_header_map_value"), None);
    assert_eq!(calls.get("proxy_replace_header_map_value"), Some(&2));
}
