//! The sidecar against the mock platforms over real HTTP: grants, refresh cycles, invalidation,
//! singleflight and caps, backoff that never gives up, metadata maps, and the long poll.

use cxgate_e2e::{Service, bin, free_port, wait_ready};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "test-sidecar-key-0123456789";
const GENESYS_SECRET: &str = "demo-genesys-secret";
const CXONE_KEY_SECRET: &str = "demo-access-key-secret";

struct Rig {
    // Drop order: sidecar first.
    sidecar: Service,
    _mocks: Service,
    genesys: String,
    cxone: String,
    side: String,
    http: Client,
    dir: PathBuf,
}

fn start(mock_args: &[&str], refresh: Value) -> Rig {
    start_with(mock_args, refresh, 300)
}

fn start_with(mock_args: &[&str], refresh: Value, metadata_interval_s: u64) -> Rig {
    let (g, c, l, s) = (free_port(), free_port(), free_port(), free_port());
    let dir =
        std::env::temp_dir().join(format!("cxgate-sidecar-tokens-{}-{s}", std::process::id()));
    let mut args: Vec<String> = vec![
        "--genesys".into(),
        format!("127.0.0.1:{g}"),
        "--cxone".into(),
        format!("127.0.0.1:{c}"),
        "--llm".into(),
        format!("127.0.0.1:{l}"),
    ];
    args.extend(mock_args.iter().map(|a| a.to_string()));
    let mut mocks = Service::spawn("mocks", &bin("cxgate-mocks"), &args, &[], &dir).unwrap();
    for p in [g, c] {
        wait_ready(
            &mut mocks,
            &format!("http://127.0.0.1:{p}/__mock/health"),
            &[],
            Duration::from_secs(20),
        )
        .unwrap();
    }
    let genesys = format!("http://127.0.0.1:{g}");
    let cxone = format!("http://127.0.0.1:{c}");
    let config = json!({
        "version": 1,
        "listen": format!("127.0.0.1:{s}"),
        "refresh": refresh,
        "metadata": {"interval_s": metadata_interval_s, "page_size": 25},
        "genesys": {"login_url": genesys, "api_url": genesys,
                    "client_id": {"env": "T_GENESYS_ID"}, "client_secret": {"env": "T_GENESYS_SECRET"}},
        "cxone": {"issuer": cxone, "tenant_id": "tenant-1",
                  "client_id": {"env": "T_CXONE_ID"}, "client_secret": {"env": "T_CXONE_SECRET"},
                  "access_key_id": {"env": "T_CXONE_AK"}, "access_key_secret": {"file": dir.join("ak-secret").display().to_string()}},
        "llm": {"api_key": {"file": dir.join("llm-key").display().to_string()}, "reread_s": 600}
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("llm-key"), "demo-llm-key\n").unwrap();
    std::fs::write(dir.join("ak-secret"), format!("{CXONE_KEY_SECRET}\n")).unwrap();
    let cfg_path = dir.join("sidecar.json");
    std::fs::write(&cfg_path, config.to_string()).unwrap();
    let env = [
        ("CXGATE_SIDECAR_KEY", KEY),
        ("T_GENESYS_ID", "demo-genesys-client"),
        ("T_GENESYS_SECRET", GENESYS_SECRET),
        ("T_CXONE_ID", "demo-cxone-client"),
        ("T_CXONE_SECRET", "demo-cxone-secret"),
        ("T_CXONE_AK", "demo-access-key"),
    ];
    let mut sidecar = Service::spawn(
        "sidecar",
        Path::new(env!("CARGO_BIN_EXE_cxgate-sidecar")),
        &["--config".into(), cfg_path.display().to_string()],
        &env,
        &dir,
    )
    .unwrap();
    let side = format!("http://127.0.0.1:{s}");
    wait_ready(
        &mut sidecar,
        &format!("{side}/health"),
        &[("x-cxgate-sidecar-key", KEY)],
        Duration::from_secs(20),
    )
    .unwrap();
    Rig {
        sidecar,
        _mocks: mocks,
        genesys,
        cxone,
        side,
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        dir,
    }
}

impl Rig {
    fn state(&self) -> Value {
        self.http
            .get(format!("{}/v1/state", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
    fn grants(&self, base: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{base}/__mock/stats"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["grants"].as_u64().unwrap()
    }
    fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fn invalidate(&self, platform: &str, generation: u64) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/v1/tokens/{platform}/invalidate", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .json(&json!({"generation": generation}))
            .send()
            .unwrap()
    }
    /// What the token filter's replay calls: invalidate, then wait for the newer token.
    fn invalidate_and_wait(&self, platform: &str, generation: u64) -> reqwest::blocking::Response {
        self.http
            .post(format!(
                "{}/v1/tokens/{platform}/invalidate?wait_ms=3000",
                self.side
            ))
            .header("x-cxgate-sidecar-key", KEY)
            .json(&json!({"generation": generation}))
            .send()
            .unwrap()
    }
    fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }
}

fn fast_refresh() -> Value {
    json!({"backoff_initial_ms": 100, "backoff_max_ms": 400})
}

#[test]
fn one_grant_per_refresh_cycle_at_95_percent_of_the_received_lifetime() {
    let r = start(&["--genesys-token-ttl", "2"], fast_refresh());
    let first = r.wait_for("a genesys token", Duration::from_secs(5), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let t = &first["tokens"]["genesys"];
    assert_eq!(
        t["expires_ms"].as_u64().unwrap() - t["issued_ms"].as_u64().unwrap(),
        2000,
        "uses expires_in as received"
    );
    assert_eq!(
        t["stale_ms"].as_u64().unwrap() - t["issued_ms"].as_u64().unwrap(),
        1900
    );
    let g0 = r.grants(&r.genesys);
    std::thread::sleep(Duration::from_millis(4000));
    // Refreshes come at 93..95 % of 2 s: two more in 4 s, not one per request or per reader.
    assert_eq!(r.grants(&r.genesys) - g0, 2);
    assert!(
        r.metrics()
            .contains(r#"cxgate_sidecar_token_refresh_total{platform="genesys"} 3"#),
        "{}",
        r.metrics()
    );
}

#[test]
fn cxone_is_discovered_and_both_platforms_publish_id_maps() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("three id maps", Duration::from_secs(10), |s| {
        ["genesys/queues", "genesys/skills", "cxone/skills"]
            .iter()
            .all(|m| s["maps"][m]["fetched_ms"].as_u64().unwrap_or(0) > 0)
    });
    assert_eq!(
        s["maps"]["genesys/queues"]["entries"]
            .as_object()
            .unwrap()
            .len(),
        60,
        "all 3 pages of 25"
    );
    assert_eq!(
        s["maps"]["genesys/queues"]["entries"]["Premium_Support"],
        "00009e0e-0000-4000-8000-000000000000"
    );
    assert_eq!(
        s["maps"]["genesys/skills"]["entries"]["billing"],
        "00005c11-0000-4000-8000-000000000000"
    );
    assert_eq!(s["maps"]["cxone/skills"]["entries"]["tier2"], "11001");
    assert_eq!(
        s["maps"]["cxone/skills"]["entries"]
            .as_object()
            .unwrap()
            .len(),
        60
    );
    assert!(
        s["tokens"]["cxone"]["access_token"]
            .as_str()
            .unwrap()
            .starts_with("cxone-tok-")
    );
    let cx: Vec<Value> = r
        .http
        .get(format!("{}/__mock/requests", r.cxone))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let grant = cx.iter().find(|q| q["path"] == "/auth/token").unwrap();
    assert!(
        grant["body"]
            .as_str()
            .unwrap()
            .contains("grant_type=password")
    );
    assert!(
        grant["headers"]["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Basic ")
    );
}

#[test]
fn invalidate_after_revocation_gives_a_new_token_within_a_second() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("a genesys token", Duration::from_secs(5), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let old = s["tokens"]["genesys"].clone();
    r.http
        .post(format!("{}/__mock/tokens/revoke", r.genesys))
        .send()
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        r.invalidate("genesys", old["generation"].as_u64().unwrap())
            .status(),
        202
    );
    let s = r.wait_for("a new token", Duration::from_secs(1), |s| {
        s["tokens"]["genesys"]["generation"].as_u64().unwrap_or(0)
            > old["generation"].as_u64().unwrap()
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let token = s["tokens"]["genesys"]["access_token"].as_str().unwrap();
    assert_ne!(token, old["access_token"].as_str().unwrap());
    let ok = r
        .http
        .get(format!("{}/api/v2/users", r.genesys))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn invalidate_with_wait_answers_every_caller_with_the_one_fresh_token() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("a genesys token", Duration::from_secs(5), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let gen0 = s["tokens"]["genesys"]["generation"].as_u64().unwrap();
    let before = r.grants(&r.genesys);
    // 20 replays report the same rejected generation at once, as the token filter does.
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                scope.spawn(|| {
                    let resp = r.invalidate_and_wait("genesys", gen0);
                    (resp.status().as_u16(), resp.json().unwrap())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let generations: std::collections::BTreeSet<u64> = answers
        .iter()
        .map(|(status, t)| {
            assert_eq!(*status, 200, "{t}");
            t["generation"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(generations.len(), 1, "{generations:?}");
    assert!(generations.iter().all(|g| *g > gen0));
    assert_eq!(r.grants(&r.genesys) - before, 1, "one grant for 20 reports");
    // A late report of the old generation gets the current token at once, with no grant.
    let late = r.invalidate_and_wait("genesys", gen0);
    assert_eq!(late.status(), 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.grants(&r.genesys) - before, 1);
}

#[test]
fn the_llm_api_key_is_published_as_a_token_and_a_401_rereads_a_rotated_key() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("the llm key", Duration::from_secs(5), |s| {
        s["tokens"]["llm"].is_object()
    });
    let t = &s["tokens"]["llm"];
    assert_eq!(t["access_token"], "demo-llm-key");
    assert_eq!(t["token_type"], "api-key");
    assert_eq!(
        t["expires_ms"].as_u64().unwrap() - t["issued_ms"].as_u64().unwrap(),
        600_000
    );
    std::fs::write(r.dir.join("llm-key"), "rotated-llm-key\n").unwrap();
    r.invalidate("llm", t["generation"].as_u64().unwrap());
    let s = r.wait_for("the rotated key", Duration::from_secs(3), |s| {
        s["tokens"]["llm"]["access_token"] == "rotated-llm-key"
    });
    assert!(s["tokens"]["llm"]["generation"].as_u64() > t["generation"].as_u64());
}

#[test]
fn concurrent_invalidations_are_one_grant_and_grants_stay_under_the_cap() {
    let r = start(&[], fast_refresh());
    let s = r.wait_for("a genesys token", Duration::from_secs(5), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let gen0 = s["tokens"]["genesys"]["generation"].as_u64().unwrap();
    let before = r.grants(&r.genesys);
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| assert_eq!(r.invalidate("genesys", gen0).status(), 202));
        }
    });
    r.wait_for("the replacement", Duration::from_secs(2), |s| {
        s["tokens"]["genesys"]["generation"].as_u64().unwrap_or(0) > gen0
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        r.grants(&r.genesys) - before,
        1,
        "50 concurrent invalidations of one token: one grant"
    );
    // Demand far above the cap: reject every new token at once, for 2 s.
    let before = r.grants(&r.genesys);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let g = r.state()["tokens"]["genesys"]["generation"]
            .as_u64()
            .unwrap_or(0);
        r.invalidate("genesys", g);
        std::thread::sleep(Duration::from_millis(10));
    }
    let grants = r.grants(&r.genesys) - before;
    assert!(
        (5..=11).contains(&grants),
        "Genesys grants capped at 5/s: {grants} in 2 s"
    );
}

#[test]
fn failed_and_malformed_grants_back_off_and_never_stop() {
    let r = start(&[], fast_refresh());
    r.wait_for("a genesys token", Duration::from_secs(5), |s| {
        s["tokens"]["genesys"].is_object()
    });
    let g = r.state()["tokens"]["genesys"]["generation"]
        .as_u64()
        .unwrap();
    // Three 500s, then two 200s without a token (Envoy's injector gives up on the first).
    r.http
        .post(format!("{}/__mock/faults", r.genesys))
        .json(&json!({"status": 500, "count": 3, "scope": "token"}))
        .send()
        .unwrap();
    r.invalidate("genesys", g);
    let s = r.wait_for("recovery after 3 failures", Duration::from_secs(10), |s| {
        s["tokens"]["genesys"]["generation"].as_u64().unwrap_or(0) > g
    });
    assert_eq!(s["health"]["genesys"]["consecutive_failures"], 0);
    r.http
        .post(format!("{}/__mock/faults", r.genesys))
        .json(&json!({"status": 200, "count": 2, "scope": "token"}))
        .send()
        .unwrap();
    let g = s["tokens"]["genesys"]["generation"].as_u64().unwrap();
    r.invalidate("genesys", g);
    r.wait_for(
        "recovery after 2 malformed responses",
        Duration::from_secs(10),
        |s| s["tokens"]["genesys"]["generation"].as_u64().unwrap_or(0) > g,
    );
    assert!(
        r.metrics()
            .contains(r#"cxgate_sidecar_grant_failures_total{platform="genesys"} 5"#),
        "{}",
        r.metrics()
    );
}

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
fn token_wait_endpoint_is_bounded() {
    let r = start(&[], fast_refresh());
    let resp = r
        .http
        .get(format!("{}/v1/tokens/genesys?after=0&wait_ms=3000", r.side))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t: Value = resp.json().unwrap();
    let started = Instant::now();
    let resp = r
        .http
        .get(format!(
            "{}/v1/tokens/genesys?after={}&wait_ms=300",
            r.side, t["generation"]
        ))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(started.elapsed() >= Duration::from_millis(290));
    let unknown = r
        .http
        .get(format!("{}/v1/tokens/nope", r.side))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 404);
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
