//! Pure tests of the breaker: window arithmetic, trips, the state machine (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_breaker::core::{
    Admit, Config, Pending, Served, Transition, admit, fallback, probe_abandoned, probe_answered,
    record, record_batch,
};
use cxgate_breaker::window::{Breaker, Phase, Trip};
use cxgate_kit::fakes::FakeStore;
use cxgate_kit::host::{CasDialect, SharedStore};
use cxgate_model::Model;
use serde_json::{Value, json};

/// The model's platforms: genesys, cxone, llm (one breaker each, in that order).
fn model() -> Model {
    Model::compile(json!({"routes": [{"id": "all", "prefix": "/"}]})).unwrap()
}

/// `extra` is the rest of the `breaker` object (`,"key":value...`).
fn section(extra: &str) -> Value {
    serde_json::from_str(&format!("{{\"window_s\":30{extra}}}")).unwrap()
}

fn cfg_with(extra: &str) -> Config {
    Config::compile(section(extra), &model()).unwrap()
}

fn cfg() -> Config {
    cfg_with("")
}

fn phase(store: &FakeStore, platform: &str) -> Phase {
    store
        .get(&format!("cxgate/cb/{platform}"))
        .unwrap()
        .and_then(|v| Breaker::decode_phase(&v.value))
        .unwrap_or(Phase::Closed)
}

/// `n` outcomes at `at_ms`; returns the transitions they caused.
fn outcomes(
    c: &Config,
    store: &mut FakeStore,
    at_ms: u64,
    n: u32,
    failed: bool,
) -> Vec<Transition> {
    let route = &c.routes[0];
    (0..n)
        .filter_map(|_| record(c, route, store, at_ms, failed, false).unwrap())
        .collect()
}

#[test]
fn defaults_follow_the_seed() {
    let c = cfg();
    assert_eq!(c.window_ms, 30_000);
    assert_eq!(c.rules.buckets, 30);
    assert_eq!(c.rules.min_requests, 20);
    assert_eq!(c.rules.failure_ratio, 0.5);
    assert_eq!(c.rules.probe_interval_ms, 15_000);
    assert!(c.is_failure(500) && c.is_failure(503) && c.is_failure(599) && c.is_failure(0));
    assert!(!c.is_failure(200) && !c.is_failure(404) && !c.is_failure(429));
    let c = cfg_with(r#","failure_statuses":["5xx","429","400-403"]"#);
    assert!(c.is_failure(429) && c.is_failure(401) && !c.is_failure(404));
}

#[test]
fn outcomes_leave_the_window_exactly_at_the_bucket_edge() {
    let c = cfg();
    let mut b = Breaker::closed(c.rules.buckets);
    // Bucket 0 covers [0, 1000) ms; at 30_000 ms the window is [1000, 31000).
    b.add(&c.rules, 999, true, false);
    b.add(&c.rules, 1_000, false, false);
    assert_eq!(b.counts(&c.rules, 29_999).total, 2);
    assert_eq!(
        b.counts(&c.rules, 30_000).total,
        1,
        "bucket 0 left the window"
    );
    assert_eq!(b.counts(&c.rules, 30_999).total, 1);
    assert_eq!(b.counts(&c.rules, 31_000).total, 0);
    // A bucket is recycled when its slot comes round again.
    b.add(&c.rules, 30_500, true, false);
    let counts = b.counts(&c.rules, 30_500);
    assert_eq!((counts.total, counts.failed), (2, 1));
    // The codec round-trips.
    assert_eq!(Breaker::decode(&b.encode()).unwrap(), b);
    assert!(Breaker::decode(b"garbage").is_none());
}

#[test]
fn below_the_minimum_volume_even_all_failures_do_not_trip() {
    let c = cfg();
    let mut store = FakeStore::new(CasDialect::Envoy);
    assert!(outcomes(&c, &mut store, 1_000, 19, true).is_empty());
    assert_eq!(phase(&store, "genesys"), Phase::Closed);
    let t = outcomes(&c, &mut store, 1_000, 1, true);
    assert_eq!(
        t,
        vec![Transition::Opened(Trip::FailureRatio {
            failed: 20,
            total: 20
        })]
    );
}

#[test]
fn the_ratio_must_exceed_the_threshold() {
    let c = cfg();
    let mut store = FakeStore::new(CasDialect::Kong);
    outcomes(&c, &mut store, 5_000, 10, false);
    assert!(
        outcomes(&c, &mut store, 6_000, 10, true).is_empty(),
        "exactly 50 %"
    );
    assert_eq!(
        outcomes(&c, &mut store, 6_000, 1, true).len(),
        1,
        "11/21 > 50 %"
    );
    assert!(matches!(
        phase(&store, "genesys"),
        Phase::Open {
            next_probe_ms: 21_000
        }
    ));
    assert_eq!(phase(&store, "cxone"), Phase::Closed, "per platform");
}

#[test]
fn a_p95_above_the_bound_trips_the_latency_breaker() {
    let c = cfg_with(r#","latency":{"p95_ms":800}"#);
    assert!(c.is_slow(801) && !c.is_slow(800));
    let mut store = FakeStore::new(CasDialect::Envoy);
    let route = &c.routes[0];
    for _ in 0..95 {
        assert_eq!(
            record(&c, route, &mut store, 2_000, false, false).unwrap(),
            None
        );
    }
    for _ in 0..5 {
        assert_eq!(
            record(&c, route, &mut store, 2_000, false, true).unwrap(),
            None,
            "5 % slow: p95 still within"
        );
    }
    assert_eq!(
        record(&c, route, &mut store, 2_000, false, true).unwrap(),
        Some(Transition::Opened(Trip::Latency {
            slow: 6,
            total: 101
        }))
    );
}

#[test]
fn open_half_open_probe_and_close_or_reopen() {
    let c = cfg();
    let g = &c.routes[0];
    let mut store = FakeStore::new(CasDialect::Envoy);
    outcomes(&c, &mut store, 10_000, 20, true);
    // Open: fallback with Retry-After until the probe.
    let (a, t) = admit(&c, g, &mut store, 10_001).unwrap();
    assert_eq!((a, t), (Admit::Fallback { retry_after_s: 15 }, None));
    let (a, _) = admit(&c, g, &mut store, 24_001).unwrap();
    assert_eq!(a, Admit::Fallback { retry_after_s: 1 });
    // At 25 s exactly one request probes; the rest still get the fallback.
    assert_eq!(
        admit(&c, g, &mut store, 25_000).unwrap(),
        (Admit::Probe, Some(Transition::ProbeStarted))
    );
    assert!(matches!(
        admit(&c, g, &mut store, 25_000).unwrap().0,
        Admit::Fallback { .. }
    ));
    // The probe fails: open for another interval.
    assert_eq!(
        probe_answered(&c, g, &mut store, 25_200, true).unwrap(),
        Some(Transition::Reopened)
    );
    assert_eq!(
        phase(&store, "genesys"),
        Phase::Open {
            next_probe_ms: 40_200
        }
    );
    assert!(matches!(
        admit(&c, g, &mut store, 40_199).unwrap().0,
        Admit::Fallback { .. }
    ));
    assert_eq!(admit(&c, g, &mut store, 40_200).unwrap().0, Admit::Probe);
    // This one succeeds: closed, with an empty window (the old failures cannot re-trip it).
    assert_eq!(
        probe_answered(&c, g, &mut store, 40_300, false).unwrap(),
        Some(Transition::Closed {
            open_for_ms: 30_300
        })
    );
    assert_eq!(
        admit(&c, g, &mut store, 40_301).unwrap(),
        (Admit::Pass, None)
    );
    assert!(outcomes(&c, &mut store, 40_400, 1, true).is_empty());
    // Outcomes of requests admitted before the breaker opened do not count while it is open.
    outcomes(&c, &mut store, 50_000, 20, true);
    assert_eq!(
        record(&c, g, &mut store, 50_001, false, false).unwrap(),
        None
    );
}

#[test]
fn a_probe_that_never_answers_lets_another_request_probe() {
    let c = cfg_with(r#","probe_timeout_ms":5000"#);
    let g = &c.routes[0];
    let mut store = FakeStore::new(CasDialect::Kong);
    outcomes(&c, &mut store, 0, 20, true);
    assert_eq!(admit(&c, g, &mut store, 15_000).unwrap().0, Admit::Probe);
    // Its stream is gone (reset): released at once.
    assert_eq!(
        probe_abandoned(&c, g, &mut store, 16_000).unwrap(),
        Some(Transition::ProbeAbandoned)
    );
    assert_eq!(admit(&c, g, &mut store, 16_000).unwrap().0, Admit::Probe);
    // Or its worker died: the lease lapses after probe_timeout_ms.
    assert!(matches!(
        admit(&c, g, &mut store, 20_999).unwrap().0,
        Admit::Fallback { .. }
    ));
    assert_eq!(admit(&c, g, &mut store, 21_000).unwrap().0, Admit::Probe);
}

#[test]
fn two_workers_racing_for_the_probe_produce_one_probe() {
    let c = cfg();
    let g = &c.routes[0];
    let store = FakeStore::new(CasDialect::Envoy);
    let mut s = store.clone();
    outcomes(&c, &mut s, 0, 20, true);
    // The first writer loses its CAS to a concurrent write and must re-read.
    store.race_next_writes(1);
    let mut w1 = store.clone();
    let mut w2 = store.clone();
    let a1 = admit(&c, g, &mut w1, 15_000).unwrap().0;
    let a2 = admit(&c, g, &mut w2, 15_000).unwrap().0;
    assert_eq!(
        [a1, a2].iter().filter(|a| **a == Admit::Probe).count(),
        1,
        "{a1:?} {a2:?}"
    );
}

#[test]
fn fallbacks_problem_static_and_reroute() {
    let c = cfg_with("");
    let Served::Reply(r) = fallback(&c.routes[0], 12, Some("t-1")) else {
        panic!()
    };
    assert_eq!(r.status, 503);
    assert!(r.headers.contains(&("retry-after".into(), "12".into())));
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:breaker-open");
    assert_eq!(p["trace_id"], "t-1");
    let c = Config::compile(
        json!({"fallbacks": {
            "genesys": {"kind": "static", "status": 200,
                        "headers": {"Content-Type": "application/json"}, "body": {"status": "degraded", "queued": true}},
            "cxone": {"kind": "reroute", "header": "x-cxgate-fallback", "value": "legacy"}}}),
        &model(),
    )
    .unwrap();
    let Served::Reply(r) = fallback(&c.routes[0], 3, None) else {
        panic!()
    };
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .contains(&("content-type".into(), "application/json".into()))
    );
    assert!(
        r.headers
            .contains(&("x-cxgate-breaker".into(), "open".into()))
    );
    assert!(
        r.headers.contains(&("retry-after".into(), "3".into())),
        "computed when not configured"
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["status"],
        "degraded"
    );
    assert_eq!(
        fallback(&c.routes[1], 3, None),
        Served::Reroute {
            header: "x-cxgate-fallback".into(),
            value: "legacy".into()
        }
    );
}

#[test]
fn bad_config_names_the_field() {
    for (extra, field) in [
        (r#","bucket_s":7"#, "/breaker/bucket_s"),
        (r#","failure_ratio":1.5"#, "/breaker/failure_ratio"),
        (
            r#","failure_statuses":["6xx"]"#,
            "/breaker/failure_statuses/0",
        ),
        (r#","probe_interval_s":0"#, "/breaker/probe_interval_s"),
        (r#","latency":{"p95_ms":0}"#, "/breaker/latency/p95_ms"),
        (r#","latency":{"p99_ms":5}"#, "/breaker/latency/p99_ms"),
        (r#","window":30"#, "/breaker/window"),
        (
            r#","fallbacks":{"genesys":{"kind":"static","status":99}}"#,
            "/breaker/fallbacks/genesys/status",
        ),
        (
            r#","fallbacks":{"avaya":{"kind":"problem"}}"#,
            "/breaker/fallbacks/avaya",
        ),
    ] {
        let e = Config::compile(section(extra), &model()).unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e:?}");
    }
    let e = Config::compile(
        section(r#","fallbacks":{"genesys":{"kind":"mirror"}}"#),
        &model(),
    )
    .unwrap_err();
    assert!(e.field.starts_with("/breaker/fallbacks/genesys"), "{e:?}");
}

#[test]
fn outcomes_batched_by_a_worker_trip_the_breaker_like_one_by_one() {
    // 11 failures of 21 in one 30 s window open the breaker, whether each outcome is written
    // at once or a worker's batch is flushed on its tick.
    let c = cfg();
    let g = &c.routes[0];
    let mut one = FakeStore::new(CasDialect::Envoy);
    let mut opened_at = None;
    for i in 0..21u64 {
        if record(&c, g, &mut one, 10_000 + i * 100, i % 2 == 0, false)
            .unwrap()
            .is_some()
        {
            opened_at = Some(i);
        }
    }
    assert_eq!(opened_at, Some(20), "the 21st outcome trips it");
    let mut batched = FakeStore::new(CasDialect::Envoy);
    let mut pending = Pending::default();
    for i in 0..21u64 {
        pending.add(&c.rules, 10_000 + i * 100, i % 2 == 0, false);
    }
    assert_eq!(
        pending.buckets.len(),
        3,
        "one entry per 1 s bucket, not per outcome"
    );
    let t = record_batch(&c, g, &mut batched, 12_100, &pending).unwrap();
    assert!(
        matches!(
            t,
            Some(Transition::Opened(Trip::FailureRatio {
                failed: 11,
                total: 21
            }))
        ),
        "{t:?}"
    );
    assert!(matches!(phase(&batched, "genesys"), Phase::Open { .. }));
    // A batch that arrives while open changes nothing (only the probe decides).
    assert_eq!(
        record_batch(&c, g, &mut batched, 12_200, &pending).unwrap(),
        None
    );
    // A batch older than its bucket's window is dropped, not mixed into a newer bucket.
    let mut b = Breaker::closed(c.rules.buckets);
    b.add_counts(&c.rules, 40_000, 1, 0, 0);
    b.add_counts(&c.rules, 10_000, 0, 5, 0);
    assert_eq!(b.counts(&c.rules, 40_000).failed, 0);
}
