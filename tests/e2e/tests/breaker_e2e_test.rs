//! Layer 3: the circuit breaker against real Envoy 1.40 and the mocks, with the shipped
//! settings (30 s window, 20 requests minimum, 50 %, one probe per 15 s).

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_e2e::{Stack, StackOptions, unlimited_pipeline};
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const GENESYS: &str = "/genesys/api/v2/routing/queues";
const CXONE: &str = "/cxone/incontactapi/services/v30.0/skills";

/// The stack with Genesys's own rate limit off and no consumer budget: these tests send far
/// more than a consumer's budget, and are not about rate limits.
fn unlimited_stack() -> Stack {
    Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        pipeline: Some(unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// One consumer request: (status, served by the breaker's fallback).
fn get(s: &Stack, path: &str) -> (u16, bool) {
    match s
        .http
        .get(s.gateway_url(path))
        .header("x-api-key", KEY)
        .send()
    {
        Ok(r) => (
            r.status().as_u16(),
            r.headers().contains_key("x-cxgate-breaker"),
        ),
        Err(_) => (0, false),
    }
}

fn state(s: &Stack) -> u64 {
    s.envoy_stat("cxgate_breaker.state.genesys").unwrap_or(99)
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The issue's scenario, with a timeline: Genesys fails 100 %, the breaker opens, consumers get
/// the fallback while the mock only sees probes, clearing the fault closes it after the next
/// probe, and CXone is served throughout.
#[test]
fn genesys_outage_opens_the_breaker_probes_every_15_s_and_recovery_closes_it() {
    let s = unlimited_stack();
    wait_until("tokens", Duration::from_secs(10), || {
        get(&s, GENESYS).0 == 200 && get(&s, CXONE).0 == 200
    });
    let t0 = Instant::now();
    let stop = AtomicBool::new(false);
    // (seconds since t0, path is genesys, status, fallback)
    let log: Mutex<Vec<(f64, bool, u16, bool)>> = Mutex::new(Vec::new());
    let timeline: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        // 4 consumers on Genesys and 1 on CXone, ~10 requests/s each.
        for i in 0..5 {
            let (s, stop, log) = (&s, &stop, &log);
            scope.spawn(move || {
                let genesys = i < 4;
                while !stop.load(Ordering::Relaxed) {
                    let (status, fallback) = get(s, if genesys { GENESYS } else { CXONE });
                    let at = t0.elapsed().as_secs_f64();
                    log.lock().unwrap().push((at, genesys, status, fallback));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        // Sample once a second: requests that reached the mock Genesys, and the breaker state.
        {
            let (s, stop, timeline) = (&s, &stop, &timeline);
            scope.spawn(move || {
                let mut last = s.gateway_requests("genesys").len();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let now = s.gateway_requests("genesys").len();
                    timeline.lock().unwrap().push(format!(
                        "t={:>4.1}s  mock genesys +{:<3} breaker state {}",
                        t0.elapsed().as_secs_f64(),
                        now - last,
                        state(s)
                    ));
                    last = now;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        s.http
            .post(s.mock_url("genesys", "/__mock/faults"))
            .json(&serde_json::json!({"status": 503, "scope": "api"}))
            .send()
            .unwrap();
        let fault_at = t0.elapsed();
        let took = wait_until("the breaker opens", Duration::from_secs(10), || {
            state(&s) == 1
        });
        let opened_at = fault_at + took;
        eprintln!(
            "figures: opened {} ms after the fault began",
            took.as_millis()
        );
        // Let requests admitted before the trip drain, then count what still reaches Genesys.
        std::thread::sleep(Duration::from_millis(500));
        let before = s.gateway_requests("genesys").len();
        // Through the first probe (15 s after opening), which fails: re-opened.
        let probe_1 = opened_at + Duration::from_secs(15);
        std::thread::sleep((probe_1 + Duration::from_secs(1)).saturating_sub(t0.elapsed()));
        let during = s.gateway_requests("genesys").len() - before;
        assert_eq!(during, 1, "only the probe reaches the failing platform");
        assert_eq!(s.counter("cxgate_breaker.probes.genesys"), Some(1));
        assert_eq!(state(&s), 1, "the failed probe re-opened it");
        // The platform recovers; the next probe (15 s after the first) closes the breaker.
        s.http
            .delete(s.mock_url("genesys", "/__mock/faults"))
            .send()
            .unwrap();
        let cleared_at = t0.elapsed();
        let took = wait_until("the breaker closes", Duration::from_secs(17), || {
            state(&s) == 0
        });
        eprintln!(
            "figures: closed {} ms after the fault cleared",
            took.as_millis()
        );
        let closed_at = cleared_at + took;
        wait_until("genesys served again", Duration::from_secs(2), || {
            get(&s, GENESYS) == (200, false)
        });
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        let log = log.lock().unwrap();
        let window = |from: Duration, to: Duration| {
            log.iter().filter(move |(at, g, _, _)| {
                *g && *at > from.as_secs_f64() && *at < to.as_secs_f64()
            })
        };
        // While open, consumers got the fallback (the degradation document), never the 503s.
        let open_span = window(
            opened_at + Duration::from_millis(500),
            closed_at - Duration::from_millis(200),
        );
        let (mut fallbacks, mut other) = (0, Vec::new());
        for (at, _, status, fallback) in open_span {
            if *fallback && *status == 503 {
                fallbacks += 1;
            } else {
                other.push((*at, *status));
            }
        }
        assert!(fallbacks > 100, "{fallbacks} fallbacks");
        // The two probes' consumers got the platform's own answer.
        assert!(other.len() <= 2, "{other:?}");
        // CXone was served throughout.
        let cxone: Vec<u16> = log.iter().filter(|(_, g, _, _)| !g).map(|e| e.2).collect();
        assert!(
            cxone.len() > 100 && cxone.iter().all(|s| *s == 200),
            "{cxone:?}"
        );
        eprintln!(
            "figures: fault at {:.1}s, open at {:.1}s, cleared at {:.1}s, closed at {:.1}s; {} fallbacks; cxone {} x 200",
            fault_at.as_secs_f64(),
            opened_at.as_secs_f64(),
            cleared_at.as_secs_f64(),
            closed_at.as_secs_f64(),
            fallbacks,
            cxone.len()
        );
    });
    let events: Vec<Value> = s
        .envoy_log()
        .lines()
        .filter_map(|l| l.find("{\"event\":\"BREAKER").map(|i| &l[i..]))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "BREAKER_OPENED",
            "BREAKER_PROBE",
            "BREAKER_REOPENED",
            "BREAKER_PROBE",
            "BREAKER_CLOSED"
        ],
        "each change logged once, not once per worker"
    );
    eprintln!("timeline:\n{}", timeline.lock().unwrap().join("\n"));
}

/// Every metric the shipped alert rules and Grafana dashboard query is one the running stack
/// exports: `cxgate_sidecar_*` on the sidecar's /metrics, the rest on Envoy's
/// /stats/prometheus (after one request to each platform, so Envoy's per-cluster response
/// classes exist). A renamed metric fails here, not silently in production.
#[test]
fn the_shipped_alert_rules_and_dashboard_name_metrics_the_stack_exports() {
    let s = unlimited_stack();
    wait_until("tokens", Duration::from_secs(10), || {
        get(&s, GENESYS).0 == 200 && get(&s, CXONE).0 == 200
    });
    let fetch = |url: String, key: bool| {
        let mut r = s.http.get(url);
        if key {
            r = r.header("x-cxgate-sidecar-key", cxgate_e2e::SIDECAR_KEY);
        }
        r.send().unwrap().text().unwrap()
    };
    let envoy = fetch(
        format!("http://127.0.0.1:{}/stats/prometheus", s.ports.admin),
        false,
    );
    let sidecar = fetch(
        format!("http://127.0.0.1:{}/metrics", s.ports.sidecar),
        true,
    );
    let read = |f: &str| std::fs::read_to_string(cxgate_e2e::repo_root().join(f)).unwrap();
    let rules = read("envoy/prometheus-alerts.yml");
    let dashboard: Value = serde_json::from_str(&read("envoy/grafana-dashboard.json")).unwrap();
    let mut exprs: Vec<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    // Label names share the prefixes; everything else that starts with one is a metric.
    let labels = [
        "cxgate_platform",
        "envoy_cluster_name",
        "envoy_response_code_class",
        "envoy_http_conn_manager_prefix",
    ];
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("cxgate_") || w.starts_with("envoy_"))
        .filter(|w| !labels.contains(w))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    // A sample, or the family's TYPE line: a counter family with no label set yet (no grant
    // has failed) has only that, named without `_total` (OpenMetrics).
    let exported = |text: &str, name: &str| {
        let family = format!("# TYPE {} ", name.strip_suffix("_total").unwrap_or(name));
        text.lines().any(|l| {
            l.starts_with(&family)
                || l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
    };
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            let text = if n.starts_with("cxgate_sidecar_") {
                &sidecar
            } else {
                &envoy
            };
            !exported(text, n)
        })
        .collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    assert!(names.len() >= 15, "found only {names:?}");
    assert!(envoy.contains(r#"cxgate_breaker_state{cxgate_platform="genesys"}"#));
    eprintln!("{} metric names checked: {names:?}", names.len());
}

/// A platform (or anything in front of it) answering with the gateway's own reply marker must
/// not hide its failures: the marker is dropped in the platform cluster before the chain sees
/// it, so the breaker still counts the 503s and opens.
#[test]
fn a_platform_cannot_pass_its_failures_off_as_gateway_replies() {
    let s = unlimited_stack();
    wait_until("tokens", Duration::from_secs(10), || {
        get(&s, GENESYS).0 == 200
    });
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&serde_json::json!({"status": 503, "scope": "api",
            "headers": {"x-cxgate-reply": "token", "x-cxgate-problem": "1"}}))
        .send()
        .unwrap();
    let r = s
        .http
        .get(s.gateway_url(GENESYS))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        !r.headers().contains_key("x-cxgate-reply"),
        "{:?}",
        r.headers()
    );
    // 20 requests is the shipped minimum volume; all fail: the breaker opens.
    for _ in 0..30 {
        get(&s, GENESYS);
    }
    wait_until("the breaker opens", Duration::from_secs(5), || {
        state(&s) == 1
    });
}
