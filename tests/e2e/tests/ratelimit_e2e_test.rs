//! Layer 3: the rate limiter against real Envoy 1.40 and the mocks; the distributed mode with
//! two Envoy instances, one sidecar and a real redis-server.

use cxgate_e2e::{
    Service, Stack, StackOptions, repo_root, shipped_pipeline, start_redis, start_redis_on,
};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const APP: &str = "demo-key-omnichannel";
const WFM: &str = "demo-key-wfm";
const READ: &str = "/genesys/api/v2/users";
const WRITE: &str = "/genesys/api/v2/analytics/conversations/details/jobs";

/// The shipped pipeline with every consumer's budget set to `limit`.
fn with_budget(limit: Value) -> Value {
    let mut doc = shipped_pipeline(&repo_root()).unwrap();
    doc["model"]["default_consumer"]["limit"] = limit.clone();
    for c in doc["model"]["consumers"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        c["limit"] = limit.clone();
    }
    doc
}

/// The shipped pipeline and costs (reads 1, writes 5) at 20 units per minute per consumer;
/// wfm-sync may write too, so two writers can be compared.
fn budget_20() -> Value {
    let mut doc = with_budget(json!({"capacity": 20, "per_minute": 20}));
    doc["model"]["consumers"]["wfm-sync"]["scopes"]
        .as_array_mut()
        .unwrap()
        .push(json!("genesys:passthrough:write"));
    doc
}

struct Answer {
    status: u16,
    /// Our own 429 (not the platform's).
    limited: bool,
    retry_after: Option<String>,
    remaining: Option<String>,
}

fn call(s: &Stack, gateway: u16, key: &str, write: bool) -> Answer {
    let url = format!(
        "http://127.0.0.1:{gateway}{}",
        if write { WRITE } else { READ }
    );
    let req = if write {
        s.http
            .post(url)
            .json(&json!({"interval": "2026-11-01T00:00:00Z/2026-11-02T00:00:00Z"}))
    } else {
        s.http.get(url)
    };
    let r = req.header("x-api-key", key).send().unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Answer {
        status: r.status().as_u16(),
        limited: h("x-cxgate-problem").is_some_and(|p| p.contains("rate-limited")),
        retry_after: h("retry-after"),
        remaining: h("ratelimit-remaining"),
    }
}

#[test]
fn weighted_costs_admit_what_the_budget_holds_with_exact_retry_after_and_consumers_apart() {
    let s = Stack::start(StackOptions {
        pipeline: Some(budget_20()),
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let g = s.ports.gateway;
    // Wait for the first token without spending the budget under test (analytics-batch).
    let started = Instant::now();
    while call(&s, g, "demo-key-analytics", false).status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    s.http
        .delete(s.mock_url("genesys", "/__mock/requests"))
        .send()
        .unwrap();
    let t0 = Instant::now();
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let a = call(&s, g, APP, true);
        assert!(!a.limited && a.status < 300, "write admitted: {}", a.status);
        remaining.push(a.remaining.unwrap());
    }
    assert_eq!(remaining, ["15", "10", "5", "0"]);
    let write = call(&s, g, APP, true);
    let read = call(&s, g, APP, false);
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "the math below assumes < 1 s: {elapsed:?}"
    );
    assert!(write.limited && write.status == 429);
    assert_eq!(
        write.retry_after.as_deref(),
        Some("15"),
        "5 units at 20/min"
    );
    assert!(read.limited);
    assert_eq!(read.retry_after.as_deref(), Some("3"), "1 unit at 20/min");
    // Nothing refused reached the platform: exactly the 4 writes did.
    assert_eq!(s.gateway_requests("genesys").len(), 4);
    // Another consumer's budget is its own.
    for i in 0..4 {
        assert!(!call(&s, g, WFM, true).limited, "wfm write {i}");
    }
    // 3 s later one read fits again (one unit per 3 s).
    std::thread::sleep(
        Duration::from_secs(3).saturating_sub(t0.elapsed()) + Duration::from_millis(100),
    );
    assert!(!call(&s, g, APP, false).limited);
    assert!(call(&s, g, APP, false).limited);
    eprintln!(
        "figures: 4 writes admitted of 20 units, 5th write Retry-After 15, read Retry-After 3"
    );
}

#[test]
fn the_platforms_429_with_retry_after_3_makes_the_gateway_answer_429_for_about_3_s() {
    let s = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let g = s.ports.gateway;
    let started = Instant::now();
    while call(&s, g, APP, false).status != 200 {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"status": 429, "retry_after": 3, "count": 1}))
        .send()
        .unwrap();
    let first = call(&s, g, WFM, false);
    let t0 = Instant::now();
    assert_eq!(
        (first.status, first.limited),
        (429, false),
        "the platform's own 429"
    );
    s.http
        .delete(s.mock_url("genesys", "/__mock/requests"))
        .send()
        .unwrap();
    let mut local = 0;
    let held = loop {
        let a = call(&s, g, APP, false);
        if a.status == 200 {
            break t0.elapsed();
        }
        assert!(a.limited, "a local 429, not another platform call");
        let ra: u64 = a.retry_after.unwrap().parse().unwrap();
        assert!((1..=3).contains(&ra), "{ra}");
        local += 1;
        assert!(t0.elapsed() < Duration::from_secs(6));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        held >= Duration::from_millis(2_500) && held <= Duration::from_millis(4_000),
        "{held:?}"
    );
    assert!(local >= 20);
    assert_eq!(
        s.gateway_requests("genesys").len(),
        1,
        "the platform saw only the request after the hold"
    );
    eprintln!(
        "figures: held {} ms after the platform's 429 (Retry-After: 3), {local} local 429s",
        held.as_millis()
    );
}

/// Two instances share one budget: 100 units, 600 per minute.
fn shared_budget() -> Value {
    let mut doc = with_budget(json!({"capacity": 100, "per_minute": 600}));
    doc["ratelimit"] = json!({"distributed": {"sync_ms": 200, "instances": 2}});
    doc
}

/// Hammers both gateways with 3 threads each for `run_for`; returns admitted counts.
fn hammer(s: &Stack, gateways: [u16; 2], run_for: Duration) -> ([u64; 2], Duration) {
    let admitted = [AtomicU64::new(0), AtomicU64::new(0)];
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for (i, g) in gateways.iter().enumerate() {
            for _ in 0..3 {
                let admitted = &admitted;
                scope.spawn(move || {
                    while t0.elapsed() < run_for {
                        let a = call(s, *g, APP, false);
                        if a.status == 200 {
                            admitted[i].fetch_add(1, Ordering::Relaxed);
                        } else {
                            assert!(a.limited, "{}", a.status);
                        }
                    }
                });
            }
        }
    });
    (
        [
            admitted[0].load(Ordering::Relaxed),
            admitted[1].load(Ordering::Relaxed),
        ],
        t0.elapsed(),
    )
}

#[test]
fn two_instances_share_one_budget_through_redis_and_fall_back_when_it_dies() {
    let dir = std::env::temp_dir().join(format!("cxgate-redis-{}", std::process::id()));
    let (mut redis, url): (Service, String) = start_redis(&dir).unwrap();
    let s = Stack::start(StackOptions {
        pipeline: Some(shared_budget()),
        redis: Some(url.clone()),
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (_second, ports2) = s.start_another_envoy("envoy-2", shared_budget()).unwrap();
    let gateways = [s.ports.gateway, ports2.gateway];
    // Tokens first, through a consumer outside the test.
    for g in gateways {
        let started = Instant::now();
        while call(&s, g, "demo-key-analytics", false).status != 200 {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (admitted, took) = hammer(&s, gateways, Duration::from_secs(10));
    let total = admitted[0] + admitted[1];
    // The budget over the run: the full bucket plus 10 units per second.
    let budget = 100.0 + 10.0 * took.as_secs_f64();
    let error = (total as f64 - budget) / budget;
    eprintln!(
        "figures: admitted {} + {} = {total} in {:.2} s; shared budget {budget:.1}; error {:+.2} %",
        admitted[0],
        admitted[1],
        took.as_secs_f64(),
        error * 100.0
    );
    assert!(error.abs() <= 0.05, "{total} vs {budget:.1}");
    assert!(
        admitted[0] > 20 && admitted[1] > 20,
        "both instances drew from it: {admitted:?}"
    );
    for admin in [s.ports.admin, ports2.admin] {
        assert_eq!(
            s.envoy_stat_at(admin, "cxgate_ratelimit.distributed_fallback"),
            Some(0)
        );
    }
    // Redis dies: each instance falls back to half the budget, and says so.
    redis.stop();
    let started = Instant::now();
    while [s.ports.admin, ports2.admin]
        .iter()
        .any(|a| s.envoy_stat_at(*a, "cxgate_ratelimit.distributed_fallback") != Some(1))
    {
        // Traffic keeps the syncs going.
        call(&s, gateways[0], APP, false);
        call(&s, gateways[1], APP, false);
        assert!(started.elapsed() < Duration::from_secs(5), "no fallback");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (admitted, took) = hammer(&s, gateways, Duration::from_secs(4));
    // Each at 300/min with a 50-unit bucket: at most 50 + 5/s each (the first burst included).
    let cap = 2.0 * (50.0 + 5.0 * took.as_secs_f64()) * 1.05;
    eprintln!(
        "figures: fallback admitted {admitted:?} in {:.2} s (cap {cap:.0})",
        took.as_secs_f64()
    );
    assert!(
        admitted[0] > 0 && admitted[1] > 0,
        "local limits still admit: {admitted:?}"
    );
    assert!(((admitted[0] + admitted[1]) as f64) <= cap, "{admitted:?}");
    assert!(s.envoy_log().contains("RATE_LIMIT_FALLBACK"));
    // Redis comes back where it was: both instances return to the shared budget.
    let port: u16 = url
        .trim_end_matches("/0")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    let (_redis, _) = start_redis_on(&dir, port).unwrap();
    let started = Instant::now();
    while [s.ports.admin, ports2.admin]
        .iter()
        .any(|a| s.envoy_stat_at(*a, "cxgate_ratelimit.distributed_fallback") != Some(0))
    {
        call(&s, gateways[0], APP, false);
        call(&s, gateways[1], APP, false);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never back on the shared budget"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "figures: back on the shared budget {} ms after Redis returned",
        started.elapsed().as_millis()
    );
}
