//! The sidecar's tokens against the mock platforms over real HTTP: grants, refresh cycles,
//! invalidation, singleflight and caps, backoff that never gives up.

mod common;
use common::*;

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
