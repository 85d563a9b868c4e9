//! Layer 3, the fault matrix (FAULTS.md maps all ten cases to their tests): what a consumer
//! sees and what the platform receives when a platform is slow, answers garbage, loses its
//! token endpoint, or goes away with its neighbour; when a client is slow or sends too much;
//! and when Envoy hot-restarts under traffic. Real Envoy 1.40, the sidecar and the mocks.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_e2e::{Got, Stack, StackOptions, start_sidecar_ready_at};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const UPDATE: &str = "/gateway/v1/routing/queues/update";
const LIST: &str = "/gateway/v1/routing/queues?platform=GENESYS";
const SEED: &str = include_str!("../../fixtures/queue-update.seed.json");

fn send(s: &Stack, method: &str, path: &str, key: &str, body: Option<&str>) -> Got {
    s.send(method, path, key, body)
}

fn fault(s: &Stack, platform: &str, f: Value) {
    let r = s
        .http
        .post(s.mock_url(platform, "/__mock/faults"))
        .json(&f)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{f}");
}

fn clear(s: &Stack, platform: &str) {
    s.http
        .delete(s.mock_url(platform, "/__mock/faults"))
        .send()
        .unwrap();
    s.http
        .delete(s.mock_url(platform, "/__mock/requests"))
        .send()
        .unwrap();
}

fn puts(s: &Stack) -> usize {
    s.gateway_requests("genesys")
        .iter()
        .filter(|r| r["method"] == "PUT")
        .count()
}

fn seed_update(key: &str) -> String {
    SEED.replace("req_8f3a2c9d1e4b", key)
}

/// A stack whose ID maps and tokens have synced (the seed update answers 200).
fn ready() -> Stack {
    let s = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        // Not about rate limits: some cases send more than a consumer's budget.
        pipeline: Some(cxgate_e2e::unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    while send(&s, "POST", UPDATE, KEY, Some(&seed_update("req-warm-up"))).status != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    clear(&s, "genesys");
    s
}

fn assert_problem(g: &Got, status: u16, kind: &str) {
    assert_eq!(g.status, status, "{}", g.body);
    assert_eq!(
        g.headers["content-type"], "application/problem+json",
        "{}",
        g.body
    );
    assert_eq!(
        g.body["type"],
        format!("urn:cxgate:problem:{kind}"),
        "{}",
        g.body
    );
}

// Case 9: a platform answers garbage.
#[test]
fn garbage_from_a_platform_is_a_clear_502_never_a_success_and_frees_the_retry() {
    let s = ready();
    let cases = [
        (
            "PUT",
            json!({"body": "{\"id\": \"00009e0e-0000-4000-8000-0000", "method": "PUT"}),
            "not JSON (truncated?)",
        ),
        (
            "PUT",
            json!({"body": "<html><body>Down for maintenance</body></html>", "content_type": "text/html", "method": "PUT"}),
            "a text/html body, not JSON",
        ),
        (
            "PUT",
            json!({"body": "{\"message\": \"Internal error\", \"code\": \"internal.server.error\", \"status\": 500}", "method": "PUT"}),
            "none of the fields read from it",
        ),
        (
            "GET",
            json!({"body": "{\"message\": \"busy\", \"status\": 503}", "method": "GET", "path_prefix": "/api/v2/routing/queues"}),
            "no list at /entities",
        ),
    ];
    for (n, (method, f, why)) in cases.into_iter().enumerate() {
        let mut f = f;
        f["count"] = json!(1);
        fault(&s, "genesys", f);
        let key = format!("req-garbage-{n}");
        let g = if method == "PUT" {
            send(&s, "POST", UPDATE, KEY, Some(&seed_update(&key)))
        } else {
            send(&s, "GET", LIST, KEY, None)
        };
        assert_problem(&g, 502, "platform-invalid-response");
        let detail = g.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(why), "{detail}");
        assert_eq!(g.body["platform_status"], 200);
        if method == "PUT" {
            assert!(detail.contains("may or may not have been applied"));
            assert_eq!(puts(&s), 1, "the gateway itself never repeats a write");
            // The claim was not kept for a failure: the consumer's retry goes through.
            let again = send(&s, "POST", UPDATE, KEY, Some(&seed_update(&key)));
            assert_eq!(again.status, 200, "{}", again.body);
            assert!(again.headers.get("idempotent-replayed").is_none());
            assert_eq!(again.body["queue_name"], "Premium_Support");
            assert_eq!(puts(&s), 2);
        }
        clear(&s, "genesys");
    }
    assert!(s.envoy_log().contains("PLATFORM_INVALID_RESPONSE"));
}

// Case 2: the platform is slower than the route's timeout.
#[test]
fn a_platform_slower_than_the_route_timeout_is_a_504_one_write_and_a_free_retry() {
    let s = ready();
    // The route's timeout is 10 s (envoy/cxgate.json, queue-update).
    fault(
        &s,
        "genesys",
        json!({"latency_ms": 10_500, "method": "PUT", "count": 1}),
    );
    let started = Instant::now();
    let g = send(&s, "POST", UPDATE, KEY, Some(&seed_update("req-slow")));
    let took = started.elapsed();
    assert_problem(&g, 504, "upstream-unavailable");
    assert!(g.headers.get("x-cxgate-upstream-failure").is_none());
    assert!(
        took >= Duration::from_millis(9_500) && took < Duration::from_secs(12),
        "{took:?}"
    );
    // The platform got the write once (it may still apply it); the gateway did not retry.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(puts(&s), 1);
    // The claim was released: the consumer's retry is a new attempt, not a 409 or a replay.
    let again = send(&s, "POST", UPDATE, KEY, Some(&seed_update("req-slow")));
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_eq!(puts(&s), 2);
    eprintln!("figures: slow platform, 504 after {} ms", took.as_millis());
}

// Case 3: the token endpoint is down when the gateway starts.
#[test]
fn with_the_token_endpoint_down_at_start_requests_wait_a_bounded_time_then_get_503() {
    let mut s = Stack::start(StackOptions {
        start_sidecar: false,
        pipeline: Some(cxgate_e2e::unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    fault(&s, "genesys", json!({"status": 503, "scope": "token"}));
    s.sidecar = Some(start_sidecar_ready_at(&s.ports, &s.run_dir, "/v1/state").unwrap());
    let raw = "/genesys/api/v2/users";
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let g = send(&s, "GET", raw, KEY, None);
        waits.push(started.elapsed());
        assert!(g.status == 503, "{} {}", g.status, g.body);
        assert_eq!(g.headers["retry-after"], "1");
        assert_eq!(g.headers["content-type"], "application/problem+json");
        assert_eq!(g.body["type"], "urn:cxgate:problem:token-unavailable");
    }
    // Bounded: the token filter's wait (2 s), not the route's 10 s.
    assert!(
        waits.iter().all(|w| *w < Duration::from_secs(4)),
        "{waits:?}"
    );
    assert!(
        s.gateway_requests("genesys").is_empty(),
        "nothing reached the platform without a token"
    );
    // The endpoint comes back: the sidecar's backoff finds it, and service resumes.
    s.http
        .delete(s.mock_url("genesys", "/__mock/faults"))
        .send()
        .unwrap();
    let back = Instant::now();
    while send(&s, "GET", raw, KEY, None).status != 200 {
        assert!(back.elapsed() < Duration::from_secs(40), "never resumed");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "figures: token endpoint down, 503 after {:?}; resumed {} ms after it returned",
        waits,
        back.elapsed().as_millis()
    );
}

/// Opens a connection and sends `bytes` (a request, or the start of one).
fn raw_connection(s: &Stack, bytes: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", s.ports.gateway)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(bytes).unwrap();
    c
}

fn read_all(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

// Case 10: slowloris clients and oversize headers, on the shipped config.
#[test]
fn slowloris_and_oversize_headers_hit_the_proxys_limits_and_others_are_served() {
    let s = Stack::start(StackOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let whoami = "/gateway/v1/whoami";
    let started = Instant::now();
    while send(&s, "GET", whoami, KEY, None).status != 200 {
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Oversize: 40 KiB of headers against a 32 KiB limit.
    let big = format!(
        "GET {whoami} HTTP/1.1\r\nhost: gw\r\nx-api-key: {KEY}\r\nx-filler: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let answer = read_all(&mut raw_connection(&s, big.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Slowloris: 20 clients that send their headers a byte at a time and never finish.
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            raw_connection(
                &s,
                format!("GET {whoami} HTTP/1.1\r\nhost: gw\r\n").as_bytes(),
            )
        })
        .collect();
    let opened = Instant::now();
    let trickle = std::thread::spawn(move || {
        let mut slow = slow;
        let mut answers = vec![String::new(); slow.len()];
        for _ in 0..14 {
            for c in slow.iter_mut() {
                let _ = c.write_all(b"x");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        for (c, a) in slow.iter_mut().zip(answers.iter_mut()) {
            *a = read_all(c);
        }
        answers
    });
    // Meanwhile everyone else is served, promptly.
    let mut served = 0;
    while opened.elapsed() < Duration::from_secs(8) {
        let t = Instant::now();
        let g = send(&s, "GET", whoami, "demo-key-wfm", None);
        assert_eq!(g.status, 200, "{}", g.body);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        served += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = trickle.join().unwrap();
    let timed_out = answers
        .iter()
        .filter(|a| a.is_empty() || a.starts_with("HTTP/1.1 408"))
        .count();
    assert_eq!(timed_out, 20, "every slow client was cut off: {answers:?}");
    let cut = s.envoy_stat("http.gateway.downstream_rq_header_timeout");
    assert!(cut.unwrap_or(0) >= 20, "{cut:?}");
    eprintln!(
        "figures: 20 slowloris clients cut off at the 10 s header timeout; {served} requests served meanwhile"
    );
}

fn post_json(s: &Stack, path: &str, key: &str, body: &Value) -> Got {
    send(s, "POST", path, key, Some(&body.to_string()))
}

fn decision(s: &Stack, dnis: &str) -> Value {
    let g = post_json(
        s,
        "/coexistence/v1/decision",
        "demo-key-sip",
        &json!({"dnis": dnis}),
    );
    assert_eq!(g.status, 200, "{}", g.body);
    g.body
}

// Case 8: both platforms (and the LLM: one mock process) go away.
#[test]
fn with_both_platforms_down_every_route_answers_its_fallback_and_calls_go_to_legacy() {
    let mut s = Stack::start(StackOptions {
        pipeline: Some(cxgate_e2e::unlimited_pipeline()),
        ..StackOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    while decision(&s, "15550101")["state"] != "fresh"
        || send(&s, "GET", "/genesys/api/v2/users", KEY, None).status != 200
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(decision(&s, "15550101")["platform"], "CLOUD");
    s.mocks.stop();

    // Raw and normalized platform routes: Envoy's problem, with the trace id.
    for (method, path, body) in [
        ("GET", "/genesys/api/v2/users", None),
        ("GET", "/cxone/incontactapi/services/v30.0/skills", None),
        ("GET", LIST, None),
        ("POST", UPDATE, Some(seed_update("req-both-down"))),
    ] {
        let g = send(&s, method, path, KEY, body.as_deref());
        assert_problem(&g, 503, "upstream-unavailable");
        assert!(g.body["trace_id"].as_str().is_some_and(|t| !t.is_empty()));
    }
    // Enough failures open the Genesys breaker (20 in 30 s, half failed): its static fallback.
    // Workers flush their outcomes to the shared window on their tick.
    let mut last = send(&s, "GET", "/genesys/api/v2/users", KEY, None);
    let failing = Instant::now();
    while !(last.status == 503 && last.body["status"] == "degraded")
        && failing.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        last = send(&s, "GET", "/genesys/api/v2/users", KEY, None);
    }
    assert_eq!(
        (last.status, last.body["status"].as_str()),
        (503, Some("degraded")),
        "{}",
        last.body
    );
    assert!(last.headers.get("retry-after").is_some());
    // The coexistence route sends cloud-bound calls to legacy; the decision itself never fails.
    let d = decision(&s, "15550101");
    assert_eq!(
        (d["platform"].as_str(), d["reason"].as_str()),
        (Some("LEGACY"), Some("cloud_unavailable")),
        "{d}"
    );
    assert_eq!(d["sip_uri"], "sip:15550101@pbx.cxgate.invalid");
    // The LLM chain: its error shape, never a bare 5xx.
    let g = post_json(
        &s,
        "/gateway/v1/llm/pipeline",
        KEY,
        &json!({"input": "Change my flight to Friday"}),
    );
    assert_eq!(g.status, 502, "{}", g.body);
    assert_eq!(
        (
            g.body["status"].as_str(),
            g.body["metadata"]["pipelineStage"].as_str()
        ),
        (Some("error"), Some("extraction"))
    );
    // The bot webhook, both shapes: the configured fallback, with a 200 CXone can use.
    let bot = "demo-key-cxone-bot";
    let g = post_json(
        &s,
        "/gateway/v1/bots/cxone",
        bot,
        &json!({"botId": "b", "sessionId": "s"}),
    );
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body["source"], "fallback");
    assert!(
        g.body["messages"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let exchange = json!({"virtualAgentId": "va-1", "botConfig": {}, "userInput": "hello",
        "userInputType": "TEXT", "executionInfo": {"contactId": 1}, "botSessionState": null,
        "customPayload": {}, "mediaType": "chat"});
    let g = post_json(&s, "/gateway/v1/bots/cxone", bot, &exchange);
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body["branchName"], "ReturnControlToScript");
    // What the gateway answers itself still works.
    assert_eq!(send(&s, "GET", "/gateway/v1/whoami", KEY, None).status, 200);
}

fn server_epoch(s: &Stack) -> Option<u64> {
    s.http
        .get(format!("http://127.0.0.1:{}/server_info", s.ports.admin))
        .send()
        .ok()?
        .json::<Value>()
        .ok()?["command_line_options"]["restart_epoch"]
        .as_u64()
}

// Case 6: Envoy hot-restarts under traffic.
#[test]
fn an_envoy_hot_restart_under_traffic_fails_no_request() {
    let mut s = ready();
    assert_eq!(send(&s, "GET", "/gateway/v1/whoami", KEY, None).status, 200);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (codes, child) = std::thread::scope(|scope| {
        let traffic: Vec<_> = (0..4)
            .map(|i| {
                let (s, stop) = (&s, &stop);
                scope.spawn(move || {
                    let mut codes = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let key = format!("req-restart-{n}");
                        let attempt = || {
                            if i == 0 {
                                send(s, "POST", UPDATE, KEY, Some(&seed_update(&key)))
                            } else {
                                send(s, "GET", "/genesys/api/v2/users", KEY, None)
                            }
                        };
                        let mut g = attempt();
                        let mut resent = None;
                        if g.status == 0 {
                            // A kept-alive connection the draining parent closed as this
                            // request went out: HTTP/1.1 lets a client resend it (RFC 9112
                            // 9.3.1), and the write's idempotency key makes that safe.
                            resent = Some(g.body.to_string());
                            g = attempt();
                        }
                        codes.push((g.status, g.body.to_string(), resent));
                    }
                    codes
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        // The next epoch takes the listeners over and the parent drains. It runs a changed
        // pipeline document (no whoami route): routes and limits change this way.
        let mut doc = cxgate_e2e::unlimited_pipeline();
        if let Some(routes) = doc["model"]["routes"].as_array_mut() {
            routes.retain(|r| r["id"] != "whoami");
        }
        let vars = cxgate_e2e::Vars {
            ports: s.ports.clone(),
            wasm_dir: cxgate_e2e::wasm_dir(),
            pipeline: doc,
            access_log: s.run_dir.join("envoy-epoch-1-access.log"),
            key_store: s.run_dir.join("keys/envoy-consumer-keys.json"),
        };
        let template = std::fs::read_to_string(cxgate_e2e::repo_root().join("envoy/envoy.yaml"));
        let config = cxgate_e2e::render_envoy(&template.unwrap(), &vars).unwrap();
        let child = cxgate_e2e::run_envoy_with(
            "envoy-epoch-1",
            &config,
            &s.run_dir,
            s.ports.admin,
            2,
            "info",
            &[
                "--restart-epoch",
                "1",
                "--drain-time-s",
                "2",
                "--parent-shutdown-time-s",
                "4",
            ],
        )
        .unwrap();
        let started = Instant::now();
        while server_epoch(&s) != Some(1) {
            assert!(started.elapsed() < Duration::from_secs(60), "no epoch 1");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Past the parent's shutdown: only the child serves.
        std::thread::sleep(Duration::from_secs(6));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let codes: Vec<(u16, String, Option<String>)> = traffic
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (codes, child)
    });
    let failed: Vec<_> = codes.iter().filter(|(c, ..)| *c != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        codes.len()
    );
    let resent: Vec<&String> = codes.iter().filter_map(|(.., r)| r.as_ref()).collect();
    // The parent closes each client's connection at most once, and never by a timeout.
    assert!(resent.len() <= 4, "{resent:?}");
    for err in &resent {
        assert!(!err.contains("timed out"), "{err}");
        eprintln!("resent after: {err}");
    }
    assert!(codes.len() > 50, "traffic ran: {}", codes.len());
    // The parent drained and left; the new process serves with state it took from the
    // sidecar (tokens, ID maps).
    let mut child = child;
    assert!(child.alive());
    assert!(!s.envoy.as_mut().unwrap().alive(), "the parent exited");
    let g = send(
        &s,
        "POST",
        UPDATE,
        KEY,
        Some(&seed_update("req-after-restart")),
    );
    assert_eq!(g.status, 200, "{}", g.body);
    // The new document is in force: its routes are the ones that match.
    let g = send(&s, "GET", "/gateway/v1/whoami", KEY, None);
    assert_problem(&g, 404, "no-route");
    eprintln!(
        "figures: hot restart under traffic, {} requests, 0 failed, {} resent",
        codes.len(),
        resent.len()
    );
}
