//! Layer 2: the compiled rate-limit filter, 4 workers, virtual clock, both profiles.

use cxgate_abi_host::fixtures::sidecar;
use cxgate_abi_host::{Action, CallReply, Host, Profile, filter_wasm};
use serde_json::{Value, json};
use std::time::Duration;

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];

/// The rate limiter's document: a 20-unit budget refilled at 1/s, reads cost 1 and writes 5.
/// `extra` may set the consumer budget (`consumer`) and any `ratelimit` setting.
fn config(profile: Profile, extra: Value) -> String {
    let consumer = extra
        .get("consumer")
        .cloned()
        .unwrap_or(json!({"capacity": 20, "per_minute": 60}));
    let mut section = extra.clone();
    section.as_object_mut().unwrap().remove("consumer");
    let mut doc = json!({
        "version": 2,
        "model": {
            "default_consumer": {"limit": consumer},
            "routes": [
                {"id": "read", "prefix": "/genesys/", "platform": "genesys", "cost": 1},
                {"id": "write", "prefix": "/genesys/", "methods": ["POST"], "platform": "genesys", "cost": 5}
            ]
        },
        "ratelimit": section
    });
    if extra.get("distributed").is_some() {
        doc["sync"] = json!({"upstream": sidecar(profile), "authority": "sidecar"});
    }
    doc.to_string()
}

fn host(profile: Profile, extra: Value) -> Host {
    Host::builder(filter_wasm("cxgate-ratelimit"))
        .profile(profile)
        .workers(4)
        .cluster("sidecar")
        .env("CXGATE_SIDECAR_KEY", "abi-test-sidecar-key-000")
        .config(&config(profile, extra))
        .start()
        .unwrap()
}

/// One request; `Ok(remaining)` when admitted (answered `status`), `Err(retry-after)` if not.
fn send(h: &mut Host, w: usize, method: &str, consumer: &str, status: u16) -> Result<u64, String> {
    let s = h.new_stream(w).unwrap();
    let a = h
        .request_headers(
            s,
            &[
                (":method", method),
                (":path", "/genesys/api/v2/users"),
                ("x-cxgate-consumer", consumer),
            ],
            true,
        )
        .unwrap();
    if a == Action::Pause {
        let r = h.local_reply(s).expect("a 429");
        assert_eq!(r.status, 429);
        r.problem().unwrap();
        return Err(r.header("retry-after").unwrap_or("none").to_string());
    }
    let status = status.to_string();
    h.response_headers(s, &[(":status", &status)], false)
        .unwrap();
    Ok(h.response_header(s, "ratelimit-remaining")
        .unwrap()
        .parse()
        .unwrap())
}

/// The bucket math, written out independently: 20 units, 1 unit per second.
struct Model {
    level_ms: u64,
    at_ms: u64,
}

impl Model {
    fn take(&mut self, now_ms: u64, cost: u64) -> bool {
        self.level_ms = (self.level_ms + (now_ms - self.at_ms)).min(20_000);
        self.at_ms = now_ms;
        if self.level_ms >= cost * 1000 {
            self.level_ms -= cost * 1000;
            true
        } else {
            false
        }
    }
}

#[test]
fn interleaved_requests_on_4_workers_admit_exactly_the_bucket_math_despite_cas_races() {
    for profile in PROFILES {
        let mut h = host(profile, json!({}));
        let t0 = h.now_ms();
        let mut model = Model {
            level_ms: 20_000,
            at_ms: 0,
        };
        let (mut admitted, mut refused) = (0u64, 0u64);
        for step in 0..120u64 {
            // Every 250 ms each worker sends one request; every third is a cost-5 write.
            if step > 0 {
                h.advance(Duration::from_millis(250)).unwrap();
            }
            h.race_next_writes(2);
            for w in 0..4 {
                let write = (step + w as u64).is_multiple_of(3);
                let cost = if write { 5 } else { 1 };
                let got = send(&mut h, w, if write { "POST" } else { "GET" }, "app", 200);
                let now = h.now_ms() - t0;
                assert_eq!(
                    got.is_ok(),
                    model.take(now, cost),
                    "{profile:?} step {step} worker {w}"
                );
                if got.is_ok() {
                    admitted += cost;
                } else {
                    refused += 1;
                }
            }
        }
        // 20 units at once, then 1 unit per second for 29.75 s: 49 units at most.
        assert!(admitted <= 20 + 29, "{admitted}");
        assert!(admitted >= 45, "the budget was used: {admitted}");
        assert!(
            h.cas_mismatches() > 50,
            "races were injected: {}",
            h.cas_mismatches()
        );
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_ratelimit.limited"), Some(refused as i64));
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn retry_after_is_the_exact_wait_and_consumers_are_separate() {
    for profile in PROFILES {
        let mut h = host(profile, json!({"legacy_headers": true}));
        for w in 0..4 {
            assert_eq!(send(&mut h, w, "POST", "app", 200), Ok(15 - 5 * w as u64));
        }
        assert_eq!(
            send(&mut h, 1, "POST", "app", 200),
            Err("5".into()),
            "5 units at 1/s"
        );
        assert_eq!(send(&mut h, 2, "GET", "app", 200), Err("1".into()));
        assert_eq!(
            send(&mut h, 3, "POST", "other", 200),
            Ok(15),
            "another consumer"
        );
        h.advance(Duration::from_millis(4_500)).unwrap();
        assert_eq!(
            send(&mut h, 0, "POST", "app", 200),
            Err("1".into()),
            "0.5 s left"
        );
        h.advance(Duration::from_millis(500)).unwrap();
        assert_eq!(send(&mut h, 0, "POST", "app", 200), Ok(0));
        let s = h.new_stream(0).unwrap();
        h.request_headers(
            s,
            &[
                (":method", "GET"),
                (":path", "/genesys/x"),
                ("x-cxgate-consumer", "third"),
            ],
            true,
        )
        .unwrap();
        h.response_headers(s, &[(":status", "200")], false).unwrap();
        assert_eq!(
            h.response_header(s, "ratelimit-limit").as_deref(),
            Some("20")
        );
        assert_eq!(
            h.response_header(s, "x-ratelimit-remaining").as_deref(),
            Some("19")
        );
        assert_eq!(
            h.response_header(s, "ratelimit-reset").as_deref(),
            Some("1")
        );
    }
}

#[test]
fn the_platforms_429_makes_every_worker_answer_429_locally_for_its_retry_after() {
    for profile in PROFILES {
        let mut h = host(profile, json!({}));
        let s = h.new_stream(0).unwrap();
        h.request_headers(
            s,
            &[
                (":method", "GET"),
                (":path", "/genesys/x"),
                ("x-cxgate-consumer", "a"),
            ],
            true,
        )
        .unwrap();
        h.response_headers(
            s,
            &[
                (":status", "429"),
                ("retry-after", "3"),
                ("inin-ratelimit-allowed", "300"),
                ("inin-ratelimit-count", "301"),
                ("inin-ratelimit-reset", "40"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(h.logs_containing("PLATFORM_RATE_LIMITED").len(), 1);
        for w in 0..4 {
            assert_eq!(
                send(&mut h, w, "GET", "b", 200),
                Err("3".into()),
                "{profile:?}"
            );
        }
        h.advance(Duration::from_millis(2_500)).unwrap();
        assert_eq!(send(&mut h, 2, "GET", "b", 200), Err("1".into()));
        h.advance(Duration::from_millis(500)).unwrap();
        assert_eq!(
            send(&mut h, 3, "GET", "b", 200),
            Ok(19),
            "held, not charged"
        );
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_ratelimit.limited_platform"), Some(5));
    }
}

fn allot_reply(h: &mut Host, grant_units: u64, scale: u64) -> u32 {
    let call = h
        .pending_calls()
        .into_iter()
        .find(|c| c.path() == "/v1/ratelimit/allot")
        .expect("an allotment call");
    let req: Value = serde_json::from_slice(&call.body).unwrap();
    let n = req["buckets"].as_array().unwrap().len();
    let grants: Vec<u64> = (0..n).map(|_| grant_units * scale).collect();
    h.reply(
        call.token,
        CallReply::json(200, &json!({"grants": grants}).to_string()),
    )
    .unwrap();
    call.worker as u32
}

#[test]
fn distributed_mode_asks_for_allotments_and_falls_back_when_the_budget_is_unreachable() {
    for profile in PROFILES {
        let mut h = host(
            profile,
            json!({"consumer": {"capacity": 600, "per_minute": 600},
                   "distributed": {"sync_ms": 200, "instances": 2}}),
        );
        // A new bucket: the request waits for its first allotment.
        let s = h.new_stream(1).unwrap();
        let a = h
            .request_headers(
                s,
                &[
                    (":method", "GET"),
                    (":path", "/genesys/x"),
                    ("x-cxgate-consumer", "app"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(a, Action::Pause);
        allot_reply(&mut h, 3, 60_000);
        assert_eq!(h.request_continued(s), 1);
        assert_eq!(send(&mut h, 2, "GET", "app", 200), Ok(1));
        assert_eq!(send(&mut h, 3, "GET", "app", 200), Ok(0));
        assert_eq!(
            send(&mut h, 0, "GET", "app", 200),
            Err("1".into()),
            "no local refill"
        );
        // The periodic sync: one worker holds the lease and tops the bucket up.
        h.advance(Duration::from_millis(200)).unwrap();
        let syncs: Vec<_> = h
            .pending_calls()
            .into_iter()
            .filter(|c| c.path() == "/v1/ratelimit/allot")
            .collect();
        assert_eq!(syncs.len(), 1, "{profile:?}: one syncing worker");
        allot_reply(&mut h, 2, 60_000);
        assert_eq!(send(&mut h, 0, "GET", "app", 200), Ok(1));
        // The sidecar answers 503 (Redis down) twice: fallback to budget / instances.
        for _ in 0..2 {
            h.advance(Duration::from_millis(200)).unwrap();
            let call = h
                .pending_calls()
                .into_iter()
                .find(|c| c.path() == "/v1/ratelimit/allot")
                .unwrap();
            h.reply(call.token, CallReply::json(503, "{}")).unwrap();
        }
        assert_eq!(h.logs_containing("RATE_LIMIT_FALLBACK").len(), 1);
        assert_eq!(h.metric("cxgate_ratelimit.distributed_fallback"), Some(1));
        h.advance(Duration::from_millis(200)).unwrap();
        // Every worker now refills locally at 300/min, capacity 300.
        h.advance(Duration::from_millis(10_000)).unwrap();
        let left = send(&mut h, 3, "GET", "app", 200).unwrap();
        assert!((40..=300).contains(&left), "{left}");
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

/// A request under CAS races with the limiter set to fail open: (status, remaining header).
fn raced(h: &mut Host, w: usize, races: u32) -> (u32, Option<String>) {
    h.race_next_writes(races);
    let s = h.new_stream(w).unwrap();
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
    if a == Action::Pause {
        return (h.local_reply(s).unwrap().status, None);
    }
    h.response_headers(s, &[(":status", "200")], false).unwrap();
    (200, h.response_header(s, "ratelimit-remaining"))
}

#[test]
fn cas_contention_is_retried_and_counted_never_a_store_failure_that_fails_open() {
    for profile in PROFILES {
        let mut h = host(profile, json!({"fail_mode": "open"}));
        assert_eq!(raced(&mut h, 0, 0), (200, Some("19".into())));
        // Twenty lost rounds in a row (8 used to be the limit, then the request went out
        // unmetered): still metered.
        assert_eq!(
            raced(&mut h, 1, 20),
            (200, Some("18".into())),
            "{profile:?}"
        );
        // Past the budget: refused with 503, not forwarded unmetered, and not a store error.
        assert_eq!(raced(&mut h, 2, 1_000).0, 503, "{profile:?}");
        h.race_next_writes(0);
        assert_eq!(raced(&mut h, 3, 0), (200, Some("17".into())));
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_ratelimit.contention"), Some(1));
        assert_eq!(h.metric("cxgate_ratelimit.errors"), Some(0));
        assert!(h.logs_containing("RATE_LIMIT_STATE_ERROR").is_empty());
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}
