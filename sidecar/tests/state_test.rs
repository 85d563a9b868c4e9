//! The sidecar's state against the mock platforms over real HTTP: the long poll, metadata
//! maps that survive a failed sync, secrets kept out of the log, and config errors.

mod common;
use common::*;

#[test]
fn long_poll_answers_at_once_when_newer_and_waits_otherwise() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("tokens and maps", Duration::from_secs(10), |s| {
        ["genesys", "cxone", "llm"]
            .iter()
            .all(|t| s["tokens"][t].is_object())
            && ["genesys/queues", "genesys/skills", "cxone/skills"]
                .iter()
                .all(|m| s["maps"][m]["fetched_ms"].as_u64().unwrap_or(0) > 0)
    });
    // Settled: no change for a whole second (nothing else is due for minutes).
    let mut v = r.state()["version"].as_u64().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = r.state()["version"].as_u64().unwrap();
        if now == v {
            break;
        }
        v = now;
    }
    let get = |since: u64, wait: u64| {
        let started = Instant::now();
        let resp = r
            .http
            .get(format!("{}/v1/state?since={since}&wait_ms={wait}", r.side))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap();
        (resp.status().as_u16(), started.elapsed())
    };
    let (status, took) = get(v - 1, 5000);
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500), "{took:?}");
    let (status, took) = get(v, 400);
    assert_eq!(status, 304);
    assert!(took >= Duration::from_millis(390), "{took:?}");
    // A client ahead of us (it saw an earlier sidecar run) gets the state at once.
    let (status, took) = get(v + 1_000_000, 5000);
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(500));
    // A change wakes a waiting poll.
    let woke = std::thread::scope(|scope| {
        let h = scope.spawn(|| get(v, 5000));
        std::thread::sleep(Duration::from_millis(200));
        r.invalidate(
            "genesys",
            s["tokens"]["genesys"]["generation"].as_u64().unwrap(),
        );
        h.join().unwrap()
    });
    assert_eq!(woke.0, 200);
    assert!(woke.1 < Duration::from_millis(2000), "{:?}", woke.1);
}

#[test]
fn secrets_never_reach_the_log() {
    let r = start(&["--genesys-token-ttl", "1"], fast_refresh());
    r.wait_for("maps", Duration::from_secs(10), |s| {
        s["maps"]["cxone/skills"]["fetched_ms"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    r.http
        .post(format!("{}/__mock/faults", r.genesys))
        .json(&json!({"status": 401, "count": 1, "scope": "token"}))
        .send()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let tokens: Vec<String> = ["genesys", "cxone"]
        .iter()
        .filter_map(|p| {
            r.state()["tokens"][p]["access_token"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let log = std::fs::read_to_string(&r.sidecar.log).unwrap();
    assert!(
        log.contains("TOKEN_REFRESHED") && log.contains("TOKEN_GRANT_FAILED"),
        "{log}"
    );
    for secret in [GENESYS_SECRET, CXONE_KEY_SECRET, "demo-cxone-secret", KEY]
        .iter()
        .map(|s| s.to_string())
        .chain(tokens)
    {
        assert!(!log.contains(&secret), "log leaks a secret");
    }
    let _ = &r.dir;
}

#[test]
fn bad_config_is_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("cxgate-sidecar-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (config, needle) in [
        (
            json!({"genesys": {"client_id": {"env": "X"}, "client_secret": {"env": "Y"}}}),
            "region",
        ),
        (json!({"listen": "0.0.0.0:7070"}), "loopback"),
        (json!({"refresh": {"at": 1.5}}), "refresh"),
        (json!({"cxone": {"issuer": "http://x"}}), "cxone"),
        (
            json!({"genesys": {"region": "mypurecloud.com", "client_id": {"env": "CXGATE_UNSET_VAR"}, "client_secret": {"env": "Y"}}}),
            "genesys.client_id",
        ),
    ] {
        let path = dir.join("c.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cxgate-sidecar"))
            .args(["--config", &path.display().to_string()])
            .env("CXGATE_SIDECAR_KEY", KEY)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{config}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{config}: {err}");
    }
}

#[test]
fn a_failed_metadata_sync_keeps_the_previous_map_and_marks_it_stale() {
    let r = start_with(&[], fast_refresh(), 1);
    let first = r.wait_for("the queue map", Duration::from_secs(10), |s| {
        s["maps"]["genesys/queues"]["fetched_ms"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    let fetched = first["maps"]["genesys/queues"]["fetched_ms"]
        .as_u64()
        .unwrap();
    // Page 2 of the queue listing fails from now on: the fetch is incomplete.
    r.http
        .post(format!("{}/__mock/faults", r.genesys))
        .json(&json!({"status": 500, "path_prefix": "/api/v2/routing/queues"}))
        .send()
        .unwrap();
    let s = r.wait_for("a stale map", Duration::from_secs(10), |s| {
        s["maps"]["genesys/queues"]["stale"] == true
    });
    let m = &s["maps"]["genesys/queues"];
    assert_eq!(
        m["entries"].as_object().unwrap().len(),
        60,
        "the previous map is kept whole"
    );
    assert_eq!(
        m["fetched_ms"].as_u64().unwrap(),
        fetched,
        "its age keeps growing"
    );
    assert!(m["last_error"].as_str().unwrap().contains("HTTP 500"));
    assert_eq!(
        s["maps"]["genesys/skills"]["stale"], false,
        "other maps are unaffected"
    );
    let metrics = r.metrics();
    assert!(
        metrics.contains(r#"cxgate_sidecar_sync_failures_total{map="genesys/queues"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cxgate_sidecar_sync_age_seconds{map="genesys/queues"}"#),
        "{metrics}"
    );
    // The platform recovers: the next complete fetch swaps the map in and clears the flag.
    r.http
        .delete(format!("{}/__mock/faults", r.genesys))
        .send()
        .unwrap();
    let s = r.wait_for("a fresh map", Duration::from_secs(10), |s| {
        s["maps"]["genesys/queues"]["stale"] == false
    });
    assert!(s["maps"]["genesys/queues"]["fetched_ms"].as_u64().unwrap() > fetched);
}

#[test]
fn after_a_restart_behind_the_clock_versions_and_generations_still_move_forward() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("a genesys token", Duration::from_secs(10), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let g = s["tokens"]["genesys"]["generation"].as_u64().unwrap();
    assert!(
        g <= s["version"].as_u64().unwrap(),
        "generations are versions"
    );
    // A filter that saw an earlier run of the sidecar on a clock 10 minutes ahead polls with
    // that run's version: what it holds (versions and generations) is at most that.
    let ahead = s["version"].as_u64().unwrap() + 600_000;
    let resp: Value = r
        .http
        .get(format!("{}/v1/state?since={ahead}&wait_ms=5000", r.side))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(resp["version"].as_u64().unwrap() > ahead, "{resp:#}");
    for p in ["genesys", "cxone", "llm"] {
        let t = &resp["tokens"][p];
        if t.is_object() {
            assert!(t["generation"].as_u64().unwrap() > ahead, "{p}: {t:#}");
        }
    }
    // A fresh grant afterwards is newer still.
    let restamped = resp["tokens"]["genesys"]["generation"].as_u64().unwrap();
    assert_eq!(r.invalidate("genesys", restamped).status(), 202);
    let s = r.wait_for("a new genesys token", Duration::from_secs(10), |s| {
        s["tokens"]["genesys"]["generation"]
            .as_u64()
            .is_some_and(|n| n > restamped)
    });
    assert!(s["version"].as_u64().unwrap() > ahead);
}

#[test]
fn an_invalidate_for_a_generation_never_issued_is_409_and_changes_nothing() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("a genesys token", Duration::from_secs(10), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let g = s["tokens"]["genesys"]["generation"].as_u64().unwrap();
    let grants = r.grants(&r.genesys);
    let forged = r.invalidate("genesys", u64::MAX / 2);
    assert_eq!(forged.status(), 409);
    let p: Value = forged.json().unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:unknown-generation");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.grants(&r.genesys),
        grants,
        "no refresh for a forged number"
    );
    assert_eq!(r.state()["tokens"]["genesys"]["generation"], g);
    // The real generation still invalidates (the short-circuit was not disabled).
    assert_eq!(r.invalidate("genesys", g).status(), 202);
    r.wait_for("a new genesys token", Duration::from_secs(10), |s| {
        s["tokens"]["genesys"]["generation"]
            .as_u64()
            .is_some_and(|n| n > g)
    });
}
