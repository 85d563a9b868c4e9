//! Layer 2: the wall clock steps back 10 minutes (an NTP correction, a restored VM) in the
//! middle of traffic, both profiles, 4 workers. Every time a stage stored is then in the
//! future; pulled back to now when first seen, the rate-limit bucket keeps refilling and an
//! open breaker still probes after its interval, instead of both freezing for the 10 minutes.

use cxgate_abi_host::{Action, Host, Profile, filter_wasm};
use serde_json::json;
use std::time::Duration;

const PROFILES: [Profile; 2] = [Profile::Envoy, Profile::Kong];
const STEP: Duration = Duration::from_secs(600);

fn start(profile: Profile, module: &str, doc: serde_json::Value) -> Host {
    Host::builder(filter_wasm(module))
        .profile(profile)
        .workers(4)
        .config(&doc.to_string())
        .start()
        .unwrap()
}

/// One GET on `worker`, answered `status` if forwarded; `Err(status)` of the local reply.
fn get(h: &mut Host, worker: usize, path: &str, status: u16) -> Result<(), u32> {
    let s = h.new_stream(worker).unwrap();
    let headers = [
        (":method", "GET"),
        (":path", path),
        ("x-cxgate-consumer", "app"),
    ];
    if h.request_headers(s, &headers, true).unwrap() == Action::Pause {
        return Err(h.local_reply(s).map_or(0, |r| r.status));
    }
    h.response_headers(s, &[(":status", &status.to_string())], false)
        .unwrap();
    h.finish(s).unwrap();
    Ok(())
}

#[test]
fn a_rate_limit_bucket_keeps_refilling_after_the_clock_steps_back() {
    for profile in PROFILES {
        let doc = json!({"version": 2,
            "model": {"default_consumer": {"limit": {"capacity": 10, "per_minute": 60}},
                      "routes": [{"id": "read", "prefix": "/genesys/", "platform": "genesys"}]},
            "ratelimit": {}});
        let mut h = start(profile, "cxgate-ratelimit", doc);
        for i in 0..10 {
            assert_eq!(get(&mut h, i % 4, "/genesys/x", 200), Ok(()), "{profile:?}");
        }
        assert_eq!(get(&mut h, 0, "/genesys/x", 200), Err(429));
        h.step_back(STEP);
        // The first request after the step still finds the bucket empty, and pulls its
        // stamp back to now; from there one unit per second: 5 s later, 5 units.
        assert_eq!(get(&mut h, 3, "/genesys/x", 200), Err(429));
        h.advance(Duration::from_secs(5)).unwrap();
        let admitted = (0..8)
            .filter(|i| get(&mut h, i % 4, "/genesys/x", 200).is_ok())
            .count();
        assert_eq!(admitted, 5, "{profile:?}");
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn an_open_breaker_still_probes_after_its_interval_when_the_clock_steps_back() {
    for profile in PROFILES {
        let doc = json!({"version": 2,
            "model": {"unmatched": "pass",
                      "routes": [{"id": "genesys", "prefix": "/genesys/", "platform": "genesys"}]},
            "breaker": {}});
        let mut h = start(profile, "cxgate-breaker", doc);
        h.advance(Duration::from_secs(20)).unwrap();
        for i in 0..20 {
            let _ = get(&mut h, i % 4, "/genesys/x", 503);
        }
        h.tick_all().unwrap();
        assert_eq!(
            get(&mut h, 1, "/genesys/x", 200),
            Err(503),
            "{profile:?}: open"
        );
        h.step_back(STEP);
        // The first request after the step gets the fallback and pulls the next probe to one
        // interval (15 s) from now; then one probe goes out, and its success closes the
        // breaker for everyone.
        assert_eq!(get(&mut h, 0, "/genesys/x", 200), Err(503));
        h.advance(Duration::from_secs(16)).unwrap();
        let outcomes: Vec<Result<(), u32>> =
            (0..4).map(|w| get(&mut h, w, "/genesys/x", 200)).collect();
        assert_eq!(outcomes, vec![Ok(()); 4], "{profile:?}");
        h.tick_all().unwrap();
        assert_eq!(h.metric("cxgate_breaker.probes.genesys"), Some(1));
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}
