//! Layer 3: the consumer key store reloads in a running Envoy (ECDS from a file): a removed
//! consumer is refused within 2 s, and nobody's request in flight is dropped.

use cxgate_e2e::keystore::write_key_store;
use cxgate_e2e::{Stack, StackOptions, consumers, repo_root};
use serde_json::json;
use std::time::{Duration, Instant};

const REMOVED: &str = "demo-key-omnichannel";
const KEPT: &str = "demo-key-wfm";

fn whoami(s: &Stack, key: &str) -> u16 {
    s.http
        .get(s.gateway_url("/gateway/v1/whoami"))
        .header("x-api-key", key)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Polls until `key` gets `want`; how long that took.
fn until(s: &Stack, key: &str, want: u16) -> Duration {
    let t0 = Instant::now();
    while whoami(s, key) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{key} never got {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

#[test]
fn a_removed_consumer_gets_401_within_2_s_while_requests_in_flight_complete() {
    let s = Stack::start(StackOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let store = s.run_dir.join("keys/envoy-consumer-keys.json");
    let all = consumers(&repo_root()).unwrap();
    assert_eq!(whoami(&s, REMOVED), 200);
    assert_eq!(whoami(&s, KEPT), 200);

    // Three reads held 2.5 s at the platform: in flight across the reload, one of them the
    // removed consumer's own.
    let slow = json!({"latency_ms": 2_500, "count": 3, "path_prefix": "/api/v2/users"});
    let r = s
        .http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&slow)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let url = s.gateway_url("/genesys/api/v2/users");
    let (statuses, took) = std::thread::scope(|scope| {
        let flights: Vec<_> = [KEPT, KEPT, REMOVED]
            .into_iter()
            .map(|key| {
                let url = url.clone();
                scope.spawn(move || {
                    let client = cxgate_e2e::reqwest_client_without_pooling().unwrap();
                    client
                        .get(url)
                        .header("x-api-key", key)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let kept: Vec<_> = all.iter().filter(|c| c.key != REMOVED).cloned().collect();
        write_key_store(&store, &kept).unwrap();
        let took = until(&s, REMOVED, 401);
        let statuses: Vec<u16> = flights.into_iter().map(|f| f.join().unwrap()).collect();
        (statuses, took)
    });
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    assert_eq!(statuses, [200, 200, 200], "in flight when the keys changed");
    let held = s.gateway_requests("genesys");
    assert_eq!(held.len(), 3, "each read reached the platform once");
    assert_eq!(whoami(&s, KEPT), 200, "the others are unaffected");

    // A broken key store is refused: the last good one stays in force.
    let aside = store.with_file_name(".broken");
    std::fs::write(&aside, "{\"resources\": [{\"@type\": 1").unwrap();
    std::fs::rename(&aside, &store).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(whoami(&s, KEPT), 200, "a bad key store changes nothing");
    assert_eq!(whoami(&s, REMOVED), 401);

    // Back in the store, back in: the same way, without a restart.
    write_key_store(&store, &all).unwrap();
    let back = until(&s, REMOVED, 200);
    assert!(back < Duration::from_secs(2), "readmitted after {back:?}");
    println!(
        "figures: refused {took:?}, readmitted {back:?} after the key store changed; in flight: {statuses:?}"
    );
}
