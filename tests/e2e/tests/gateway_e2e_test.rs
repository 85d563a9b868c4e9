//! Layer 3: real Envoy 1.40 + the trace filter + mock platforms, over real HTTP.

use cxgate_e2e::keystore::write_key_store;
use cxgate_e2e::{
    Ports, Stack, StackOptions, Vars, consumers, envoy_bin, render_envoy, repo_root,
    shipped_pipeline, wasm_dir,
};
use serde_json::Value;
use std::process::Command;

fn stack() -> Stack {
    Stack::start(StackOptions::default()).unwrap_or_else(|e| panic!("stack did not start: {e}"))
}

const KEY: &str = "demo-key-omnichannel";

#[test]
fn every_shipped_envoy_config_validates() {
    let dir = repo_root().join("envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let template = std::fs::read_to_string(&path).unwrap();
        let keys =
            std::env::temp_dir().join(format!("cxgate-validate-keys-{}", std::process::id()));
        let key_store = keys.join("consumer-keys.json");
        write_key_store(&key_store, &consumers(&repo_root()).unwrap()).unwrap();
        let rendered = render_envoy(
            &template,
            &Vars {
                ports: Ports::free(),
                wasm_dir: wasm_dir(),
                pipeline: shipped_pipeline(&repo_root()).unwrap(),
                access_log: "/dev/stdout".into(),
                key_store,
            },
        )
        .unwrap();
        // Nothing secret in the proxy config: no consumer key (they are in the key store).
        for c in consumers(&repo_root()).unwrap() {
            assert!(
                !rendered.contains(&c.key),
                "{} is in the rendered config",
                c.id
            );
        }
        // The filters' own keys come from Envoy's environment, never from its config.
        for secret in [cxgate_e2e::SIDECAR_KEY, cxgate_e2e::CURSOR_KEY] {
            assert!(
                !rendered.contains(secret),
                "a filter key is in the rendered config"
            );
        }
        let out_path = std::env::temp_dir().join(format!(
            "cxgate-validate-{}-{}",
            std::process::id(),
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&out_path, rendered).unwrap();
        // Validation configures the Wasm VMs, so it needs the keys in the environment,
        // exactly as a deployment does.
        let out = Command::new(envoy_bin())
            .env("CXGATE_SIDECAR_KEY", cxgate_e2e::SIDECAR_KEY)
            .env("CXGATE_CURSOR_KEY", cxgate_e2e::CURSOR_KEY)
            .args(["--mode", "validate", "-c"])
            .arg(&out_path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_dir_all(&keys);
        assert!(
            out.status.success(),
            "{} failed validation:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
        checked += 1;
    }
    assert!(checked >= 1, "no shipped envoy config found");
}

#[test]
fn trace_headers_reach_the_platform_and_come_back() {
    let s = stack();
    let resp = s
        .http
        .get(s.gateway_url("/genesys/api/v2/routing/skills"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the token filter injected a platform token"
    );
    let trace_id = resp.headers()["x-gateway-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(trace_id.len(), 32);
    let received = s.gateway_requests("genesys");
    assert_eq!(received.len(), 1, "{received:?}");
    let r = &received[0];
    assert_eq!(
        r["path"], "/api/v2/routing/skills",
        "route prefix rewritten"
    );
    assert_eq!(r["headers"]["x-gateway-trace-id"], trace_id.as_str());
    let tp = r["headers"]["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{trace_id}-")) && tp.len() == 55,
        "{tp}"
    );
    assert!(
        r["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer genesys-tok-")
    );
    // Neither the consumer's key nor the internal consumer header reaches a platform.
    assert!(r["headers"].get("x-api-key").is_none(), "{r}");
    assert!(r["headers"].get("x-cxgate-consumer").is_none(), "{r}");
}

#[test]
fn consumer_trace_values_are_kept_end_to_end() {
    let s = stack();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = s
        .http
        .get(s.gateway_url("/cxone/incontactapi/services/v30.0/skills"))
        .header("x-api-key", KEY)
        .header("x-gateway-trace-id", "req_8f3a2c9d1e4b")
        .header("traceparent", tp)
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-gateway-trace-id"], "req_8f3a2c9d1e4b");
    let received = s.gateway_requests("cxone");
    assert_eq!(
        received[0]["headers"]["x-gateway-trace-id"],
        "req_8f3a2c9d1e4b"
    );
    assert_eq!(received[0]["headers"]["traceparent"], tp);
}

#[test]
fn unknown_or_missing_key_gets_401_problem_and_nothing_is_forwarded() {
    let s = stack();
    for key in [Some("not-a-key"), None] {
        let mut req = s.http.get(s.gateway_url("/genesys/api/v2/users"));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["type"], "urn:cxgate:problem:unauthenticated");
        assert_eq!(body["status"], 401);
        assert!(body["detail"].as_str().unwrap().contains("x-api-key"));
    }
    assert!(
        s.gateway_requests("genesys").is_empty(),
        "nothing may reach the platform"
    );
}

#[test]
fn the_chain_sees_the_verified_consumer_never_a_spoofed_one() {
    let s = stack();
    for (key, consumer) in [
        ("demo-key-omnichannel", "omnichannel-app-prod"),
        ("demo-key-wfm", "wfm-sync"),
    ] {
        let body: Value = s
            .http
            .get(s.gateway_url("/gateway/v1/whoami"))
            .header("x-api-key", key)
            .header("x-cxgate-consumer", "evil-spoofed-id")
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(body["consumer"], consumer);
        assert_eq!(body["trace_id"].as_str().unwrap().len(), 32);
    }
}

#[test]
fn unrouted_paths_get_a_404_problem() {
    let s = stack();
    let resp = s
        .http
        .get(s.gateway_url("/nowhere"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().unwrap();
    assert_eq!(body["type"], "urn:cxgate:problem:no-route");
}

#[test]
fn a_platform_that_is_down_gets_a_503_problem_with_the_trace_id() {
    let mut s = stack();
    s.mocks.stop();
    let resp = s
        .http
        .get(s.gateway_url("/genesys/api/v2/users"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    let trace_id = resp.headers()["x-gateway-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["type"], "urn:cxgate:problem:upstream-unavailable");
    assert_eq!(body["trace_id"], trace_id.as_str());
}

#[test]
fn the_filter_runs_in_every_envoy_worker_and_counts() {
    let s = stack();
    for _ in 0..20 {
        s.http
            .get(s.gateway_url("/gateway/v1/whoami"))
            .header("x-api-key", KEY)
            .send()
            .unwrap();
    }
    let generated = s.counter("cxgate_trace.generated");
    assert_eq!(generated, Some(20));
}

#[test]
fn the_llm_route_carries_the_sidecars_api_key_never_the_consumers() {
    let s = stack();
    let mut status = 0;
    for _ in 0..100 {
        status = s
            .http
            .get(s.gateway_url("/llm/v1/models"))
            .header("x-api-key", KEY)
            .header("authorization", "Bearer sk-consumer-own")
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(status, 200, "the mock LLM accepts only its API key");
    let received = s.gateway_requests("llm");
    let auth = received.last().unwrap()["headers"]["authorization"].clone();
    assert_eq!(auth, "Bearer demo-llm-key");
    assert!(
        received
            .iter()
            .all(|r| r["headers"]["authorization"] != "Bearer sk-consumer-own")
    );
}

#[test]
fn a_consumer_cannot_raise_its_own_retries_or_timeouts_nor_send_internal_headers() {
    let s = stack();
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&serde_json::json!({"status": 500, "scope": "api"}))
        .send()
        .unwrap();
    let before = s.gateway_requests("genesys").len();
    let r = s
        .http
        .get(s.gateway_url("/genesys/api/v2/users"))
        .header("x-api-key", KEY)
        .header("x-envoy-max-retries", "10")
        .header("x-envoy-retry-on", "5xx")
        .header("x-envoy-upstream-rq-per-try-timeout-ms", "60000")
        .header("x-cxgate-reply", "1")
        .header("x-cxgate-breaker", "closed")
        .send()
        .unwrap();
    assert_eq!(r.status(), 500, "the platform's failure, not retried");
    let calls: Vec<Value> = s.gateway_requests("genesys").split_off(before);
    assert_eq!(
        calls.len(),
        1,
        "the route retries a 401 once and nothing else: {calls:#?}"
    );
    let headers = calls[0]["headers"].as_object().unwrap();
    for sent in [
        "x-envoy-max-retries",
        "x-envoy-retry-on",
        "x-envoy-upstream-rq-per-try-timeout-ms",
        "x-cxgate-reply",
        "x-cxgate-breaker",
    ] {
        assert!(!headers.contains_key(sent), "{sent} reached the platform");
    }
}
