//! Layer 3: the sidecar, the state sync and the token filter's waits, against real Envoy 1.40,
//! the sidecar and the mocks (drift recovery: `token_drift_e2e_test.rs`). Timing-sensitive, so the tests run one at a time.

use cxgate_e2e::{Stack, StackOptions, unlimited_pipeline};
use serde_json::{Value, json};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const KEY: &str = "demo-key-omnichannel";

fn stack(mock_args: &[&str], start_sidecar: bool) -> Stack {
    let mut args: Vec<String> = vec!["--genesys-rate-limit".into(), "0".into()];
    args.extend(mock_args.iter().map(|a| a.to_string()));
    Stack::start(StackOptions {
        mock_args: args,
        start_sidecar,
        // Not about rate limits: this test sends far more than a consumer's budget.
        pipeline: Some(unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn get(s: &Stack, path: &str) -> u16 {
    s.http
        .get(s.gateway_url(path))
        .header("x-api-key", KEY)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn wait_for_200(s: &Stack, path: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while get(s, path) != 200 {
        assert!(
            started.elapsed() < within,
            "no 200 on {path} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn last_platform_token(s: &Stack, platform: &str) -> String {
    let r = s.gateway_requests(platform);
    r.last()
        .and_then(|r| r["headers"]["authorization"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn one_grant_per_refresh_cycle_under_traffic_and_a_burst_at_refresh_stays_under_the_cap() {
    let _serial = serial();
    let s = stack(
        &["--genesys-token-ttl", "3", "--cxone-token-ttl", "3"],
        true,
    );
    wait_for_200(&s, "/genesys/api/v2/users", Duration::from_secs(10));
    wait_for_200(
        &s,
        "/cxone/incontactapi/services/v30.0/skills",
        Duration::from_secs(10),
    );
    let token = s.sidecar_state().unwrap()["tokens"]["genesys"].clone();
    let refresh_at = token["issued_ms"].as_u64().unwrap() + 2_850;
    let g0 = s.mock_grants("genesys");
    let c0 = s.mock_grants("cxone");
    let stop_at = Instant::now() + Duration::from_secs(6);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for path in [
            "/genesys/api/v2/users",
            "/genesys/api/v2/users",
            "/cxone/incontactapi/services/v30.0/skills",
            "/cxone/incontactapi/services/v30.0/agents",
        ] {
            let s = &s;
            handles.push(scope.spawn(move || {
                let mut out = Vec::new();
                while Instant::now() < stop_at {
                    out.push(get(s, path));
                }
                out
            }));
        }
        // 200 concurrent requests in flight at refresh time.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        std::thread::sleep(Duration::from_millis(
            refresh_at.saturating_sub(now_ms + 50),
        ));
        let burst: Vec<_> = (0..200)
            .map(|_| scope.spawn(|| get(&s, "/genesys/api/v2/users")))
            .collect();
        let mut all: Vec<u16> = burst.into_iter().map(|h| h.join().unwrap()).collect();
        for h in handles {
            all.extend(h.join().unwrap());
        }
        all
    });
    let cxone_grants = s.mock_grants("cxone") - c0;
    let grants = s.mock_grants("genesys") - g0;
    let ok = statuses.iter().filter(|c| **c == 200).count();
    assert_eq!(
        ok,
        statuses.len(),
        "every request succeeds across refreshes: {:?}",
        statuses.iter().filter(|c| **c != 200).collect::<Vec<_>>()
    );
    assert!(statuses.len() > 400, "traffic flowed: {}", statuses.len());
    // 6 s of a 3 s token refreshed at ~2.85 s: 2 grants, whatever the request count.
    assert!(
        (1..=3).contains(&grants),
        "{grants} grants for {} requests",
        statuses.len()
    );
    assert!(
        (1..=3).contains(&cxone_grants),
        "cxone: {cxone_grants} grants"
    );
    eprintln!(
        "figures: {} requests, {grants} Genesys + {cxone_grants} CXone grants, burst of 200 at refresh",
        statuses.len()
    );
}

#[test]
fn a_dead_sidecar_leaves_the_gateway_serving_and_a_restart_resumes_sync() {
    let _serial = serial();
    let mut s = stack(&[], true);
    wait_for_200(&s, "/genesys/api/v2/users", Duration::from_secs(10));
    let before = last_platform_token(&s, "genesys");
    s.sidecar.as_mut().unwrap().stop();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(
            get(&s, "/genesys/api/v2/users"),
            200,
            "serving on the last token"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last_platform_token(&s, "genesys"), before);
    let log = s.envoy_log();
    assert!(
        log.contains("SIDECAR_UNREACHABLE"),
        "the stale state is reported"
    );
    s.restart_sidecar().unwrap();
    // The new sidecar grants a newer token; the sync picks it up.
    let started = Instant::now();
    loop {
        get(&s, "/genesys/api/v2/users");
        if last_platform_token(&s, "genesys") != before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sync did not resume"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.envoy_log().contains("SIDECAR_SYNC_RESUMED"));
}

#[test]
fn with_the_sidecar_down_past_expiry_requests_get_503_and_nothing_reaches_the_platform() {
    let _serial = serial();
    let mut s = stack(&["--genesys-token-ttl", "2"], true);
    wait_for_200(&s, "/genesys/api/v2/users", Duration::from_secs(10));
    s.sidecar.as_mut().unwrap().stop();
    std::thread::sleep(Duration::from_millis(2_200));
    let forwarded = s.gateway_requests("genesys").len();
    let resp = s
        .http
        .get(s.gateway_url("/genesys/api/v2/users"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().unwrap();
    assert!(
        body["type"] == "urn:cxgate:problem:token-unavailable"
            || body["type"] == "urn:cxgate:problem:gateway-error",
        "{body}"
    );
    assert_eq!(
        s.gateway_requests("genesys").len(),
        forwarded,
        "nothing reached the platform"
    );
}

#[test]
fn at_cold_start_requests_wait_for_the_first_token_and_succeed() {
    let _serial = serial();
    let mut s = stack(&[], false);
    // The token endpoint is slow to issue the first tokens.
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"latency_ms": 800, "count": 1, "scope": "token"}))
        .send()
        .unwrap();
    s.restart_sidecar().unwrap();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..10)
            .map(|_| scope.spawn(|| get(&s, "/genesys/api/v2/users")))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|c| *c == 200), "{statuses:?}");
    let waited = s.counter("cxgate_token.waited").unwrap_or(0);
    assert!(waited >= 1, "requests waited for the first token");
    eprintln!("figures: cold start, {waited} of 10 requests waited, all 200");
}
