//! Layer 2: the compiled breaker filter, 4 workers, virtual clock, both profiles. Each worker
//! batches its outcomes and flushes them on its tick (`tick_all` here, without moving the
//! clock); probes are written at once.

use cxgate_abi_host::{Action, Host, Profile, Stream, filter_wasm};
use serde_json::{Value, json};
use std::time::Duration;

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];

fn host(profile: Profile) -> Host {
    let config = json!({
        "version": 2,
        "model": {"unmatched": "pass", "routes": [
            {"id": "genesys", "prefix": "/genesys/", "platform": "genesys"},
            {"id": "cxone", "prefix": "/cxone/", "platform": "cxone"}
        ]},
        "breaker": {"fallbacks": {
            "genesys": {"kind": "static", "status": 200, "headers": {"content-type": "application/json"},
                        "body": {"status": "degraded", "detail": "Genesys is unavailable; the request was queued."}}
        }}
    });
    Host::builder(filter_wasm("cxgate-breaker"))
        .profile(profile)
        .workers(4)
        .config(&config.to_string())
        .start()
        .unwrap()
}

/// One request on `worker`: `None` if the breaker answered it (fallback), else the stream,
/// which is then answered with `status`.
fn request(h: &mut Host, worker: usize, path: &str, status: u16) -> Option<Stream> {
    let s = h.new_stream(worker).unwrap();
    let action = h.request_headers(s, &[(":path", path)], true).unwrap();
    if action == Action::Pause {
        assert!(h.local_reply(s).is_some(), "paused without a reply");
        return None;
    }
    let action = h
        .response_headers(s, &[(":status", &status.to_string())], false)
        .unwrap();
    assert_eq!(action, Action::Continue, "never pauses in response headers");
    Some(s)
}

fn advance_to(h: &mut Host, start: u64, at_ms: u64) {
    let now = h.now_ms() - start;
    h.advance(Duration::from_millis(at_ms - now)).unwrap();
}

fn opened_events(h: &Host) -> Vec<Value> {
    h.logs_containing("BREAKER_OPENED")
        .iter()
        .map(|l| serde_json::from_str(&l.message).unwrap())
        .collect()
}

#[test]
fn opens_at_the_exact_second_the_ratio_is_exceeded_with_enough_volume() {
    for profile in PROFILES {
        let mut h = host(profile);
        let t0 = h.now_ms();
        // 10 successes at t=0, then one 503 per second, round-robin over the workers.
        for w in 0..10 {
            request(&mut h, w % 4, "/genesys/x", 200).unwrap();
        }
        for second in 1..=10u64 {
            advance_to(&mut h, t0, second * 1000);
            let w = second as usize % 4;
            assert!(
                request(&mut h, w, "/genesys/x", 503).is_some(),
                "{profile:?} t={second}"
            );
        }
        h.tick_all().unwrap();
        assert!(opened_events(&h).is_empty(), "10 of 20 is not above 50 %");
        // t=11: 11 failures of 21 → open, by whichever worker flushes the deciding batch.
        advance_to(&mut h, t0, 11_000);
        request(&mut h, 3, "/genesys/x", 503).unwrap();
        h.tick_all().unwrap();
        let events = opened_events(&h);
        assert_eq!(events.len(), 1, "{profile:?}: logged once, not per worker");
        assert_eq!(events[0]["platform"], "genesys");
        assert_eq!(events[0]["reason"], "failure-ratio");
        assert_eq!(
            (events[0]["failed"].as_u64(), events[0]["total"].as_u64()),
            (Some(11), Some(21))
        );
        assert_eq!(h.metric("cxgate_breaker.trips.genesys"), Some(1));
        assert_eq!(h.metric("cxgate_breaker.state.genesys"), Some(1));
        // Every worker now serves the fallback, not the platform.
        advance_to(&mut h, t0, 11_500);
        for w in 0..4 {
            assert!(
                request(&mut h, w, "/genesys/x", 200).is_none(),
                "{profile:?} worker {w}"
            );
        }
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_breaker.fallbacks.genesys"), Some(4));
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn failures_spread_thinner_than_the_window_never_trip() {
    for profile in PROFILES {
        let mut h = host(profile);
        let t0 = h.now_ms();
        for w in 0..10 {
            request(&mut h, w % 4, "/genesys/x", 200).unwrap();
        }
        // One failure every 3 s: by the time 11 have failed, the successes left the window,
        // and 10 failures in 30 s is below the minimum volume of 20.
        for k in 1..=20u64 {
            advance_to(&mut h, t0, k * 3000);
            assert!(
                request(&mut h, k as usize % 4, "/genesys/x", 503).is_some(),
                "{profile:?} k={k}"
            );
            h.tick_all().unwrap();
        }
        assert!(opened_events(&h).is_empty());
    }
}

/// Opens genesys at t0 + 20 s (20 failures); returns the open time offset.
fn open_genesys(h: &mut Host, t0: u64) -> u64 {
    advance_to(h, t0, 20_000);
    for i in 0..20 {
        request(h, i % 4, "/genesys/x", 503).unwrap();
    }
    h.tick_all().unwrap();
    assert_eq!(opened_events(h).len(), 1);
    20_000
}

#[test]
fn exactly_one_probe_per_interval_across_workers_then_reopen_or_close() {
    for profile in PROFILES {
        let mut h = host(profile);
        let t0 = h.now_ms();
        let opened = open_genesys(&mut h, t0);
        // Before the interval: fallback, with Retry-After counting down to the probe.
        advance_to(&mut h, t0, opened + 14_000);
        let s = h.new_stream(2).unwrap();
        assert_eq!(
            h.request_headers(s, &[(":path", "/genesys/x")], true)
                .unwrap(),
            Action::Pause
        );
        let reply = h.local_reply(s).unwrap();
        assert_eq!(reply.status, 200, "the configured degradation response");
        assert_eq!(reply.header("x-cxgate-breaker"), Some("open"));
        assert_eq!(
            serde_json::from_slice::<Value>(&reply.body).unwrap()["status"],
            "degraded"
        );
        // At the interval, all four workers race; a CAS mismatch is injected into the first.
        advance_to(&mut h, t0, opened + 15_000);
        h.race_next_writes(1);
        let streams: Vec<Stream> = (0..4).map(|w| h.new_stream(w).unwrap()).collect();
        let actions: Vec<Action> = streams
            .iter()
            .map(|s| {
                h.request_headers(*s, &[(":path", "/genesys/x")], true)
                    .unwrap()
            })
            .collect();
        let probes: Vec<Stream> = streams
            .iter()
            .zip(&actions)
            .filter(|(_, a)| **a == Action::Continue)
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(probes.len(), 1, "{profile:?}: {actions:?}");
        assert!(h.cas_mismatches() >= 1, "the race happened");
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_breaker.probes.genesys"), Some(1));
        // While the probe is out, everyone else still gets the fallback.
        advance_to(&mut h, t0, opened + 16_000);
        for w in 0..4 {
            assert!(request(&mut h, w, "/genesys/x", 200).is_none());
        }
        // The probe fails: open for another 15 s.
        h.response_headers(probes[0], &[(":status", "503")], false)
            .unwrap();
        assert_eq!(h.logs_containing("BREAKER_REOPENED").len(), 1);
        advance_to(&mut h, t0, opened + 16_000 + 14_999);
        assert!(request(&mut h, 1, "/genesys/x", 200).is_none());
        advance_to(&mut h, t0, opened + 31_000);
        let probe = request(&mut h, 3, "/genesys/x", 200);
        assert!(probe.is_some(), "the next probe, answered 200");
        let closed: Vec<Value> = h
            .logs_containing("BREAKER_CLOSED")
            .iter()
            .map(|l| serde_json::from_str(&l.message).unwrap())
            .collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0]["open_for_ms"], 31_000);
        h.tick_all().unwrap();
        assert_eq!(
            h.metric("cxgate_breaker.open_ms_total.genesys"),
            Some(31_000)
        );
        assert_eq!(h.metric("cxgate_breaker.state.genesys"), Some(0));
        assert_eq!(h.metric("cxgate_breaker.probes.genesys"), Some(2));
        for w in 0..4 {
            assert!(
                request(&mut h, w, "/genesys/x", 200).is_some(),
                "closed on every worker"
            );
        }
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_probe_whose_stream_dies_hands_the_probe_to_the_next_request() {
    for profile in PROFILES {
        let mut h = host(profile);
        let t0 = h.now_ms();
        let opened = open_genesys(&mut h, t0);
        advance_to(&mut h, t0, opened + 15_000);
        let s = h.new_stream(0).unwrap();
        assert_eq!(
            h.request_headers(s, &[(":path", "/genesys/x")], true)
                .unwrap(),
            Action::Continue
        );
        h.finish(s).unwrap(); // reset before any response
        assert_eq!(h.logs_containing("BREAKER_PROBE_ABANDONED").len(), 1);
        assert!(
            request(&mut h, 1, "/genesys/x", 200).is_some(),
            "{profile:?}: the next request probes"
        );
    }
}

#[test]
fn a_genesys_breaker_never_affects_cxone_and_the_default_fallback_is_a_503_problem() {
    for profile in PROFILES {
        let mut h = host(profile);
        let t0 = h.now_ms();
        let opened = open_genesys(&mut h, t0);
        for w in 0..4 {
            assert!(
                request(&mut h, w, "/cxone/skills", 200).is_some(),
                "{profile:?}"
            );
            assert!(request(&mut h, w, "/other", 200).is_some(), "unrouted");
        }
        // Open cxone too (4 successes so far: the 16th 502 makes 16 of 20), and its fallback
        // is the default problem with Retry-After.
        for i in 0..16 {
            request(&mut h, i % 4, "/cxone/skills", 502).unwrap();
        }
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_breaker.trips.cxone"), Some(1));
        advance_to(&mut h, t0, opened + 3_000);
        let s = h.new_stream(1).unwrap();
        h.request_headers(
            s,
            &[
                (":path", "/cxone/skills"),
                ("x-gateway-trace-id", "trace-cb"),
            ],
            true,
        )
        .unwrap();
        let reply = h.local_reply(s).unwrap();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("12"));
        let p = reply.problem().unwrap();
        assert_eq!(p["type"], "urn:cxgate:problem:breaker-open");
        assert_eq!(p["trace_id"], "trace-cb");
        assert_eq!(h.metric("cxgate_breaker.trips.cxone"), Some(1));
        assert_eq!(h.metric("cxgate_breaker.trips.genesys"), Some(1));
    }
}

#[test]
fn the_gateways_own_503s_are_not_platform_failures() {
    for profile in PROFILES {
        let mut h = host(profile);
        for i in 0..40 {
            let s = h.new_stream(i % 4).unwrap();
            h.request_headers(s, &[(":path", "/genesys/x")], true)
                .unwrap();
            h.response_headers(
                s,
                &[
                    (":status", "503"),
                    ("x-cxgate-problem", "token-unavailable"),
                ],
                false,
            )
            .unwrap();
        }
        h.tick_all().unwrap();
        assert!(opened_events(&h).is_empty(), "{profile:?}");
        assert!(request(&mut h, 0, "/genesys/x", 200).is_some());
    }
}

#[test]
fn a_closed_breaker_costs_one_read_per_request_and_one_cas_write_per_worker_tick() {
    for profile in PROFILES {
        let mut h = host(profile);
        h.reset_host_calls();
        let s = h.new_stream(0).unwrap();
        h.request_headers(s, &[(":path", "/genesys/x")], true)
            .unwrap();
        let calls = h.host_calls();
        assert_eq!(
            calls.get("proxy_get_shared_data"),
            Some(&1),
            "{profile:?}: {calls:?}"
        );
        assert_eq!(calls.get("proxy_set_shared_data"), None);
        h.reset_host_calls();
        h.response_headers(s, &[(":status", "200")], false).unwrap();
        for _ in 0..9 {
            request(&mut h, 0, "/genesys/x", 200).unwrap();
        }
        let calls = h.host_calls();
        assert_eq!(
            calls.get("proxy_set_shared_data"),
            None,
            "responses only count: {calls:?}"
        );
        h.reset_host_calls();
        h.tick_all().unwrap();
        let calls = h.host_calls();
        assert_eq!(
            calls.get("proxy_set_shared_data"),
            Some(&1),
            "one flush for ten: {calls:?}"
        );
    }
}

#[test]
fn bad_config_is_rejected_naming_the_field() {
    let err = Host::builder(filter_wasm("cxgate-breaker"))
        .config(r#"{"model":{"routes":[{"id":"g","prefix":"/g/","platform":"genesys"}]},"breaker":{"failure_ratio":2}}"#)
        .start()
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains(r#"\"field\":\"/breaker/failure_ratio\""#),
        "{err:#}"
    );
}
