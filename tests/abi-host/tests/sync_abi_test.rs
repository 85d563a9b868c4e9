//! Layer 2: the kit's state-sync client inside a compiled filter, 4 workers, virtual clock,
//! both proxy profiles.

use cxgate_abi_host::{CallReply, Host, Profile, filter_wasm};
use serde_json::json;
use std::time::Duration;

const KEY: &str = "abi-test-sidecar-key-000";

fn host(profile: Profile) -> Host {
    let upstream = match profile {
        Profile::Envoy => "sidecar",
        Profile::Kong => "127.0.0.1:7070",
    };
    let config = json!({"tick_ms": 1000, "sync": {"upstream": upstream, "poll_wait_ms": 2000, "lease_ms": 3000, "stale_after_ms": 5000}});
    Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(profile)
        .workers(4)
        .cluster("sidecar")
        .env("CXGATE_SIDECAR_KEY", KEY)
        .config(&config.to_string())
        .start()
        .unwrap()
}

fn snapshot(version: u64, token: &str, generation: u64, now_ms: u64) -> CallReply {
    let body = json!({
        "format": 1, "version": version, "generated_ms": now_ms,
        "tokens": {"genesys": {"access_token": token, "token_type": "bearer", "issued_ms": now_ms,
                               "expires_ms": now_ms + 300_000, "stale_ms": now_ms + 285_000, "generation": generation}},
        "maps": {}, "health": {}
    });
    CallReply::json(200, &body.to_string())
}

fn op(h: &mut Host, worker: usize, op: &str) -> String {
    let s = h.new_stream(worker).unwrap();
    h.request_headers(s, &[(":path", "/"), ("x-probe-op", op)], true)
        .unwrap();
    let out = h.request_header(s, "x-probe-result").unwrap_or_default();
    h.finish(s).unwrap();
    out
}

#[test]
fn exactly_one_worker_polls_the_sidecar() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        for _ in 0..10 {
            h.advance(Duration::from_millis(500)).unwrap();
            let calls = h.pending_calls();
            assert!(calls.len() <= 1, "{profile:?}: {} polls open", calls.len());
        }
        let calls = h.pending_calls();
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.header(":path"), Some("/v1/state?since=0&wait_ms=2000"));
        assert_eq!(c.header("x-cxgate-sidecar-key"), Some(KEY));
        assert_eq!(
            c.upstream,
            if profile == Profile::Envoy {
                "sidecar"
            } else {
                "127.0.0.1:7070"
            }
        );
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn one_sync_makes_the_state_visible_in_every_worker() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        h.advance(Duration::from_millis(1000)).unwrap();
        for w in 0..4 {
            assert_eq!(op(&mut h, w, "token"), "none");
        }
        let call = h.pending_calls().remove(0);
        let now = h.now_ms();
        h.reply(call.token, snapshot(77, "tok-A", 1, now)).unwrap();
        for w in 0..4 {
            assert_eq!(op(&mut h, w, "token"), "tok-A", "{profile:?} worker {w}");
        }
        assert_eq!(h.metric("cxgate_sync.applied"), Some(1));
        // The holder polls again for anything newer than 77.
        h.advance(Duration::from_millis(1000)).unwrap();
        let next = h.pending_calls();
        assert_eq!(next.len(), 1);
        assert_eq!(
            next[0].header(":path"),
            Some("/v1/state?since=77&wait_ms=2000")
        );
    }
}

#[test]
fn another_worker_takes_over_when_the_holder_stops_ticking() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        h.advance(Duration::from_millis(1000)).unwrap();
        let holder = h.pending_calls()[0].worker;
        let dead_at = h.now_ms();
        // The holder dies: it never ticks again, its poll is never answered.
        let mut new_poll = None;
        for _ in 0..8 {
            h.advance_skipping(Duration::from_millis(500), &[holder])
                .unwrap();
            if let Some(c) = h.pending_calls().into_iter().find(|c| c.worker != holder) {
                new_poll = Some((c, h.now_ms()));
                break;
            }
        }
        let (call, at) = new_poll.expect("a takeover");
        assert!(
            at - dead_at <= 3_000,
            "{profile:?}: took over after {} ms, lease is 3000",
            at - dead_at
        );
        let now = h.now_ms();
        h.reply(call.token, snapshot(5, "tok-B", 2, now)).unwrap();
        let alive: Vec<usize> = (0..4).filter(|w| *w != holder).collect();
        for w in alive {
            assert_eq!(op(&mut h, w, "token"), "tok-B");
        }
    }
}

#[test]
fn a_down_sidecar_keeps_the_last_state_visibly_stale_until_it_returns() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        h.advance(Duration::from_millis(1000)).unwrap();
        let call = h.pending_calls().remove(0);
        let now = h.now_ms();
        h.reply(call.token, snapshot(9, "tok-C", 3, now)).unwrap();
        // The sidecar goes away: every poll fails.
        for _ in 0..8 {
            h.advance(Duration::from_millis(1000)).unwrap();
            for c in h.pending_calls() {
                h.fail(c.token).unwrap();
            }
        }
        assert_eq!(op(&mut h, 2, "token"), "tok-C", "last state kept");
        let status = op(&mut h, 3, "sync-status");
        let failures: u32 = status.rsplit('/').next().unwrap().parse().unwrap();
        assert!(failures >= 7, "{status}");
        assert_eq!(h.metric("cxgate_sync.stale"), Some(1));
        assert!(h.metric("cxgate_sync.failures").unwrap() >= 7);
        assert_eq!(
            h.logs_containing("SIDECAR_UNREACHABLE").len(),
            1,
            "logged once per streak, not per tick or worker"
        );
        // It comes back.
        h.advance(Duration::from_millis(1000)).unwrap();
        let c = h.pending_calls().remove(0);
        h.reply(
            c.token,
            CallReply::Response {
                status: 304,
                headers: vec![],
                body: vec![],
            },
        )
        .unwrap();
        h.advance(Duration::from_millis(1000)).unwrap();
        assert_eq!(h.metric("cxgate_sync.stale"), Some(0));
        assert_eq!(h.logs_containing("SIDECAR_SYNC_RESUMED").len(), 1);
        assert!(op(&mut h, 0, "sync-status").ends_with("/0"));
    }
}

#[test]
fn a_missing_sidecar_key_is_a_config_error_naming_the_field() {
    let config = json!({"tick_ms": 1000, "sync": {"upstream": "sidecar"}});
    let err = Host::builder(filter_wasm("cxgate-probe-filter"))
        .config(&config.to_string())
        .start()
        .err()
        .unwrap();
    let text = format!("{err:#}");
    assert!(
        text.contains("/sync/key_env") && text.contains("CXGATE_SIDECAR_KEY"),
        "{text}"
    );
}
