//! The sidecar skeleton: loopback only, and nothing without the shared key.

use cxgate_stack::{Service, free_port, wait_ready};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const KEY: &str = "test-sidecar-key-0123456789";

#[test]
fn every_call_needs_the_shared_key() {
    let port = free_port();
    let dir =
        std::env::temp_dir().join(format!("cxgate-sidecar-test-{}-{port}", std::process::id()));
    let args = vec!["--listen".to_string(), format!("127.0.0.1:{port}")];
    let mut svc = Service::spawn(
        "sidecar",
        Path::new(env!("CARGO_BIN_EXE_cxgate-sidecar")),
        &args,
        &[("CXGATE_SIDECAR_KEY", KEY)],
        &dir,
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(
        &mut svc,
        &format!("{base}/health"),
        &[("x-cxgate-sidecar-key", KEY)],
        Duration::from_secs(20),
    )
    .unwrap();
    let http = reqwest::blocking::Client::new();
    for path in ["/health", "/metrics", "/v1/state"] {
        let denied = http
            .get(format!("{base}{path}"))
            .header("x-cxgate-sidecar-key", "wrong-key-wrong-key")
            .send()
            .unwrap();
        assert_eq!(denied.status(), 401, "{path}");
        assert_eq!(denied.headers()["content-type"], "application/problem+json");
        assert_eq!(
            http.get(format!("{base}{path}")).send().unwrap().status(),
            401,
            "{path}"
        );
        let ok = http
            .get(format!("{base}{path}"))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
    }
    let state: serde_json::Value = http
        .get(format!("{base}/v1/state"))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(state["version"].is_u64());
    // The timer for filters that must wait (Kong): keyed like the rest, answers after the wait.
    let delay = |q: &str, key: &str| {
        let t = std::time::Instant::now();
        let r = http
            .get(format!("{base}/cxgate/delay?{q}"))
            .header("x-cxgate-sidecar-key", key)
            .send()
            .unwrap();
        (r.status().as_u16(), t.elapsed())
    };
    assert_eq!(delay("ms=10", "wrong-key-wrong-key").0, 401);
    let (status, took) = delay("ms=300", KEY);
    assert_eq!(status, 204);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(delay("ms=soon", KEY).0, 400);
    // The key never appears in the sidecar's log.
    drop(http);
    let log = svc.log_tail(1000);
    assert!(!log.contains(KEY), "{log}");
}

#[test]
fn refuses_non_loopback_and_weak_or_missing_keys() {
    let bin = env!("CARGO_BIN_EXE_cxgate-sidecar");
    let out = Command::new(bin)
        .args(["--listen", "0.0.0.0:0"])
        .env("CXGATE_SIDECAR_KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .env("CXGATE_SIDECAR_KEY", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("CXGATE_SIDECAR_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
