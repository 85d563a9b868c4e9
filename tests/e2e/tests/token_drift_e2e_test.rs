//! Layer 3: token drift (a platform 401) against real Envoy 1.40, the sidecar and the mocks.
//! The token filter runs as an upstream filter of each platform cluster and the route replays
//! a 401 once, so the consumer sees 200 while the gateway swaps the token. One at a time.

use cxgate_e2e::{Stack, StackOptions, unlimited_pipeline};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const KEYS: [&str; 3] = ["demo-key-omnichannel", "demo-key-wfm", "demo-key-analytics"];
const GENESYS: &str = "/genesys/api/v2/users";
const CXONE: &str = "/cxone/incontactapi/services/v30.0/skills";

fn stack() -> Stack {
    Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        // Not about rate limits: this test sends far more than a consumer's budget.
        pipeline: Some(unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn get(s: &Stack, key: &str, path: &str) -> (u16, String) {
    match s
        .http
        .get(s.gateway_url(path))
        .header("x-api-key", key)
        .send()
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let trace = r
                .headers()
                .get("x-gateway-trace-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (status, trace)
        }
        Err(e) => (0, e.to_string()),
    }
}

fn ready(s: &Stack) {
    let started = Instant::now();
    while get(s, KEYS[0], GENESYS).0 != 200 || get(s, KEYS[0], CXONE).0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(10), "no tokens");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn revoke(s: &Stack, platform: &str) {
    let v: Value = s
        .http
        .post(s.mock_url(platform, "/__mock/tokens/revoke"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(v["revoked"].as_u64().unwrap() >= 1, "{v}");
}

fn drift_events(s: &Stack) -> Vec<Value> {
    s.envoy_log()
        .lines()
        .filter_map(|l| l.find("{\"").map(|i| &l[i..]))
        .filter_map(|j| serde_json::from_str::<Value>(j).ok())
        .filter(|v| v["event"] == "TOKEN_DRIFT_RECOVERY")
        .collect()
}

#[test]
fn a_revoked_token_is_replayed_once_with_a_fresh_one_and_the_consumer_sees_200() {
    let _serial = serial();
    let s = stack();
    ready(&s);
    let before = s.mock_grants("genesys");
    revoke(&s, "genesys");
    s.http
        .delete(s.mock_url("genesys", "/__mock/requests"))
        .send()
        .unwrap();
    let started = Instant::now();
    let (status, trace) = get(&s, KEYS[1], GENESYS);
    let took = started.elapsed();
    assert_eq!(status, 200, "the consumer never sees the platform's 401");
    // The platform saw the original (old token) and exactly one replay (a new token).
    let seen: Vec<Value> = s
        .gateway_requests("genesys")
        .into_iter()
        .filter(|r| r["headers"]["x-gateway-trace-id"] == trace.as_str())
        .collect();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    let tokens: Vec<&str> = seen
        .iter()
        .map(|r| r["headers"]["authorization"].as_str().unwrap())
        .collect();
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(s.mock_grants("genesys") - before, 1);
    let events = drift_events(&s);
    assert!(
        events
            .iter()
            .any(|e| e["trace_id"] == trace.as_str() && e["platform"] == "genesys"),
        "{events:?}"
    );
    let log = s.envoy_log();
    for t in &tokens {
        let secret = t.trim_start_matches("Bearer ");
        assert!(!log.contains(secret), "a token in Envoy's log");
    }
    assert_eq!(s.counter("cxgate_token.drift_recoveries"), Some(1));
    assert_eq!(s.counter("cxgate_token.replays_failed"), Some(0));
    eprintln!(
        "figures: recovered request took {} ms end to end",
        took.as_millis()
    );
}

#[test]
fn a_401_to_the_replay_goes_back_to_the_consumer_as_it_is() {
    let _serial = serial();
    let s = stack();
    ready(&s);
    let before = s.mock_grants("genesys");
    // The platform refuses twice, whatever the token.
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"status": 401, "count": 2, "path_prefix": "/api/v2/users"}))
        .send()
        .unwrap();
    let (status, trace) = get(&s, KEYS[0], GENESYS);
    assert_eq!(status, 401);
    let seen = s
        .gateway_requests("genesys")
        .into_iter()
        .filter(|r| r["headers"]["x-gateway-trace-id"] == trace.as_str())
        .count();
    assert_eq!(seen, 2, "exactly one replay");
    assert_eq!(s.counter("cxgate_token.replays_failed"), Some(1));
    // The fault is spent: the next request is served with the token the replay fetched.
    assert_eq!(get(&s, KEYS[0], GENESYS).0, 200);
    assert_eq!(
        s.mock_grants("genesys") - before,
        1,
        "only the first 401 refreshes"
    );
}

/// The scenario: 20 consumers for 10 s; Genesys revokes every token at 3 s, CXone at
/// 6 s. Every request the platform would accept is answered 2xx, and each revocation costs one
/// grant, not one per request.
#[test]
fn revocation_under_20_concurrent_consumers_never_shows_a_401_and_costs_one_grant() {
    let _serial = serial();
    let s = stack();
    ready(&s);
    let (g0, c0) = (s.mock_grants("genesys"), s.mock_grants("cxone"));
    let started = Instant::now();
    let run_for = Duration::from_secs(10);
    let statuses: BTreeMap<u16, u64> = std::thread::scope(|scope| {
        let consumers: Vec<_> = (0..20)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let mut seen = BTreeMap::new();
                    let mut n = 0usize;
                    while started.elapsed() < run_for {
                        let path = if (i + n).is_multiple_of(2) {
                            GENESYS
                        } else {
                            CXONE
                        };
                        *seen.entry(get(s, KEYS[i % 3], path).0).or_insert(0u64) += 1;
                        n += 1;
                    }
                    seen
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        revoke(&s, "genesys");
        std::thread::sleep(Duration::from_secs(3));
        revoke(&s, "cxone");
        let mut all = BTreeMap::new();
        for c in consumers {
            for (status, n) in c.join().unwrap() {
                *all.entry(status).or_insert(0) += n;
            }
        }
        all
    });
    let total: u64 = statuses.values().sum();
    eprintln!(
        "figures: {total} requests by 20 consumers in 10 s, statuses {statuses:?}, drift recoveries {:?}",
        s.counter("cxgate_token.drift_recoveries")
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{statuses:?}"
    );
    assert!(total > 200, "too little traffic to mean anything: {total}");
    assert_eq!(s.mock_grants("genesys") - g0, 1, "one Genesys grant");
    assert_eq!(s.mock_grants("cxone") - c0, 1, "one CXone grant");
    let events = drift_events(&s);
    for platform in ["genesys", "cxone"] {
        assert_eq!(
            events
                .iter()
                .filter(|e| e["platform"] == platform && e["invalidated"] == true)
                .count(),
            1,
            "{platform}: one request marks the token; the others find it marked"
        );
    }
    assert_eq!(s.counter("cxgate_token.replays_failed"), Some(0));
}
