//! Layer 3: coexistence routing with the shipped configs: real Envoy running the
//! pipeline, the sidecar syncing the roster from the mock Genesys users and the shipped legacy
//! roster, and for calls a real Kamailio (`sip/kamailio.cfg`) between a sipp carrier and two
//! sipp platforms that refuse calls without the coexistence headers.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_e2e::services::{
    Call, CallResult, SipRoutes, place_call, start_kamailio, start_platform_uas,
};
use cxgate_e2e::{SIDECAR_KEY, Stack, StackOptions, free_port, repo_root};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SIP_KEY: &str = "demo-key-sip";
const DECISION: &str = "/coexistence/v1/decision";
/// The mock Genesys user ids (`uuid(0x05e5, i)`).
const AGENT001_ID: &str = "000005e5-0000-4000-8000-000000000001";

fn run_dir(tag: &str) -> PathBuf {
    let d = repo_root()
        .join("target/e2e-runs")
        .join(format!("{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn decide_as(s: &Stack, key: &str, body: &Value) -> (u16, Value) {
    let r = s
        .http
        .post(s.gateway_url(DECISION))
        .header("x-api-key", key)
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn decide(s: &Stack, body: Value) -> Value {
    let (status, v) = decide_as(s, SIP_KEY, &body);
    assert_eq!(status, 200, "a well-formed request is answered: {v}");
    v
}

/// Asks until `ok` holds (the roster reaches the filters through the sidecar and the sync).
fn decide_until(s: &Stack, body: Value, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let v = decide(s, body.clone());
        if ok(&v) {
            return v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: still {v} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reconcile(s: &Stack) -> Value {
    s.http
        .post(format!(
            "http://127.0.0.1:{}/v1/coexistence/reconcile",
            s.ports.sidecar
        ))
        .header("x-cxgate-sidecar-key", SIDECAR_KEY)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn sidecar_log(s: &Stack) -> String {
    s.sidecar
        .as_ref()
        .map(|x| std::fs::read_to_string(&x.log).unwrap_or_default())
        .unwrap_or_default()
}

fn agent(user: &str, dnis: &str) -> Value {
    json!({"dnis": dnis, "ani": "+4930123456", "target_user": user})
}

fn fresh(v: &Value) -> bool {
    v["state"] == "fresh"
}

fn start(tag: &str) -> (Stack, PathBuf) {
    let dir = run_dir(tag);
    let roster = dir.join("legacy-roster.csv");
    std::fs::copy(repo_root().join("sip/legacy-roster.csv"), &roster).unwrap();
    let s = Stack::start(StackOptions {
        run_dir: Some(dir),
        legacy_roster: Some(roster.clone()),
        ..StackOptions::default()
    })
    .unwrap();
    decide_until(
        &s,
        agent("agent000@example.com", "15550102"),
        "first sync",
        fresh,
    );
    (s, roster)
}

#[test]
fn decisions_follow_the_roster_suspend_zombies_and_fail_safe() {
    let (mut s, roster) = start("coex-http");
    // The demo roster, one agent per status (README, "Coexistence").
    let cases = [
        (
            "agent000@example.com",
            "15550102",
            "CLOUD",
            "agent_status",
            "cloud",
        ),
        (
            "agent003@example.com",
            "15550102",
            "CLOUD",
            "agent_status",
            "cloud",
        ),
        (
            "lee.legacy@example.com",
            "15550101",
            "LEGACY",
            "agent_status",
            "legacy",
        ),
        (
            "agent001@example.com",
            "15550102",
            "CLOUD",
            "agent_status",
            "transitioning:INTERACTING",
        ),
        (
            "agent007@example.com",
            "15550101",
            "LEGACY",
            "agent_status",
            "transitioning:OFF_QUEUE",
        ),
        (
            "agent002@example.com",
            "15550101",
            "LEGACY",
            "agent_suspended",
            "active on both platforms",
        ),
    ];
    for (user, dnis, platform, reason, rule) in cases {
        let v = decide(&s, agent(user, dnis));
        assert_eq!(
            (
                v["platform"].as_str(),
                v["reason"].as_str(),
                v["rule"].as_str()
            ),
            (Some(platform), Some(reason), Some(rule)),
            "{user}: {v}"
        );
    }
    let v = decide(&s, agent("lee.legacy@example.com", "15550101"));
    assert_eq!(v["sip_uri"], "sip:4100@pbx.cxgate.invalid");
    assert_eq!(v["emergency_address_id"], "erl-munich-4100");
    let v = decide(&s, agent("agent000@example.com", "15550102"));
    assert_eq!(
        v["emergency_address_id"], "genesys-location-berlin",
        "the site's cloud address"
    );
    // No agent: the seed's DNIS split, then the default.
    for (dnis, platform) in [
        ("15550101", "CLOUD"),
        ("15550102", "LEGACY"),
        ("15550155", "LEGACY"),
    ] {
        let v = decide(&s, json!({"dnis": dnis}));
        assert_eq!(v["platform"], platform, "{dnis}: {v}");
    }

    // Scopes and bad input.
    let (status, _) = decide_as(&s, "demo-key-analytics", &json!({"dnis": "15550101"}));
    assert_eq!(status, 403);
    let (status, v) = decide_as(&s, SIP_KEY, &json!({"dnis": "call-me"}));
    assert_eq!(
        (status, v["errors"][0]["pointer"].as_str()),
        (400, Some("/dnis")),
        "{v}"
    );
    let (status, _) = decide_as(
        &s,
        SIP_KEY,
        &json!({"dnis": "15550101", "ani": "9".repeat(5000)}),
    );
    assert_eq!(status, 413);

    // The zombie is suspended once, logged once, and counted in Envoy's gauge.
    let log = sidecar_log(&s);
    assert_eq!(log.matches("ZOMBIE_AGENT_SUSPENDED").count(), 1, "{log}");
    assert!(log.contains("agent002@example.com"));
    let started = Instant::now();
    while s.envoy_stat("cxgate_coexistence.zombies") != Some(1) {
        assert!(started.elapsed() < Duration::from_secs(15), "zombie gauge");
        std::thread::sleep(Duration::from_millis(250));
    }
    // An administrator deactivates the legacy account: the next reconciliation releases it.
    let text = std::fs::read_to_string(&roster).unwrap().replace(
        "agent002@example.com,4002,ACTIVE",
        "agent002@example.com,4002,INACTIVE",
    );
    std::fs::write(&roster, text).unwrap();
    let r = reconcile(&s);
    assert_eq!(r["suspended"], json!({}), "{r}");
    assert!(sidecar_log(&s).contains("ZOMBIE_AGENT_RELEASED"));
    decide_until(
        &s,
        agent("agent002@example.com", "15550102"),
        "released",
        |v| v["platform"] == "CLOUD" && v["reason"] == "agent_status",
    );

    // A transitioning agent goes off queue in Genesys (through the gateway, as a consumer
    // would): the next roster fetch sends its calls to legacy.
    let r = s
        .http
        .put(s.gateway_url(&format!(
            "/genesys/api/v2/users/{AGENT001_ID}/routingstatus"
        )))
        .header("x-api-key", "demo-key-omnichannel")
        .json(&json!({"status": "OFF_QUEUE"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    reconcile(&s);
    decide_until(
        &s,
        agent("agent001@example.com", "15550101"),
        "off queue",
        |v| v["platform"] == "LEGACY" && v["rule"] == "transitioning:OFF_QUEUE",
    );

    // Genesys failing: the last roster still decides, said to be stale.
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"status": 503, "ratio": 1.0}))
        .send()
        .unwrap();
    let r = reconcile(&s);
    assert_eq!(r["stale"], true, "{r}");
    let v = decide_until(
        &s,
        agent("agent000@example.com", "15550102"),
        "stale",
        |v| v["reason"] == "stale_state",
    );
    assert_eq!(v["platform"], "CLOUD");
    assert_eq!(v["rule"], "agent_status:cloud");
    s.http
        .delete(s.mock_url("genesys", "/__mock/faults"))
        .send()
        .unwrap();
    reconcile(&s);
    decide_until(
        &s,
        agent("agent000@example.com", "15550102"),
        "fresh again",
        fresh,
    );

    // The sidecar dies: decisions go on from the last state, marked stale, never a 5xx.
    if let Some(mut sidecar) = s.sidecar.take() {
        sidecar.stop();
    }
    let v = decide_until(
        &s,
        agent("agent000@example.com", "15550102"),
        "sidecar down",
        |v| v["reason"] == "stale_state",
    );
    assert_eq!(v["platform"], "CLOUD");
    for i in 0..20 {
        let (status, v) = decide_as(&s, SIP_KEY, &json!({"dnis": format!("155501{i:02}")}));
        assert_eq!(status, 200, "{v}");
    }
}

/// Kamailio in front of the gateway, with a carrier and two platforms.
struct Sip {
    stack: Stack,
    routes: SipRoutes,
    kamailio: cxgate_e2e::Service,
    cloud: Option<cxgate_e2e::Service>,
    _legacy: cxgate_e2e::Service,
}

impl Sip {
    fn call(&self, dnis: &str, target: &str, corr: &str, hop: &str, from: &str) -> CallResult {
        let c = Call {
            dnis: dnis.into(),
            target_user: target.into(),
            correlation_id: corr.into(),
            hop: hop.into(),
            from_platform: from.into(),
        };
        let r = place_call(&self.stack.run_dir, self.routes.listen, &c).unwrap();
        assert!(
            r.completed,
            "the carrier's call {c:?} did not complete:\n{}\nkamailio:\n{}",
            r.trace,
            self.kamailio.log_tail(30)
        );
        r
    }
}

fn uuid_like(s: Option<&str>) -> bool {
    s.is_some_and(|s| s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4)
}

#[test]
fn calls_through_kamailio_reach_the_decided_platform_with_their_headers_and_fail_over() {
    let (stack, _) = start("coex-sip");
    let routes = SipRoutes {
        listen: free_port(),
        decision_url: stack.gateway_url(DECISION),
        cloud: free_port(),
        legacy: free_port(),
        defines: vec![],
    };
    let dir = stack.run_dir.clone();
    let cloud = start_platform_uas(&dir, "CLOUD", routes.cloud).unwrap();
    let legacy = start_platform_uas(&dir, "LEGACY", routes.legacy).unwrap();
    let kamailio = start_kamailio(&dir, &routes).unwrap();
    let mut sip = Sip {
        stack,
        routes,
        kamailio,
        cloud: Some(cloud),
        _legacy: legacy,
    };

    // The platforms really refuse a call without the headers (straight to the UAS).
    let bare = place_call(
        &dir,
        sip.routes.legacy,
        &Call {
            dnis: "15550102".into(),
            ..Call::default()
        },
    )
    .unwrap();
    assert_eq!(bare.status, Some(403), "{}", bare.trace);

    // The DNIS split, with every header the platforms need.
    let r = sip.call("15550101", "", "", "", "");
    assert_eq!(r.status, Some(200), "{}", r.trace);
    assert_eq!(r.answered_by(), Some("CLOUD"));
    assert_eq!(
        r.provisional.first(),
        Some(&100),
        "100 Trying first: {:?}",
        r.provisional
    );
    assert!(r.provisional.contains(&180));
    assert_eq!(
        r.header("x-request-uri"),
        Some("sip:15550101@cloud.cxgate.invalid")
    );
    assert_eq!(r.header("x-recording-platform"), Some("CLOUD"));
    assert_eq!(r.header("x-coexistence-hop"), Some("1"));
    assert_eq!(
        r.header("x-emergency-address-id"),
        Some("genesys-location-hq")
    );
    let corr = r.header("x-migration-correlation-id").map(str::to_string);
    assert!(
        uuid_like(corr.as_deref()),
        "a minted correlation id: {corr:?}"
    );
    assert_eq!(
        r.header("x-recording-tag").map(str::to_string),
        corr.as_ref().map(|c| format!("cloud:{c}"))
    );
    assert!(r.header("record-route").is_some(), "Kamailio record-routes");
    for (dnis, platform) in [("15550102", "LEGACY"), ("15550177", "LEGACY")] {
        let r = sip.call(dnis, "", "", "", "");
        assert_eq!(r.answered_by(), Some(platform), "{dnis}: {}", r.trace);
        assert_eq!(r.header("x-emergency-address-id"), Some("erl-hq"));
    }

    // Per agent: status beats the DNIS rule; the legacy agent rings its extension with its ERL.
    let agents = [
        ("agent000@example.com", "15550102", "CLOUD"),
        ("lee.legacy@example.com", "15550101", "LEGACY"),
        ("agent001@example.com", "15550102", "CLOUD"),
        ("agent007@example.com", "15550101", "LEGACY"),
        ("agent002@example.com", "15550101", "LEGACY"),
    ];
    for (user, dnis, platform) in agents {
        let r = sip.call(dnis, user, "", "", "");
        assert_eq!(r.answered_by(), Some(platform), "{user}: {}", r.trace);
    }
    let r = sip.call("15550101", "lee.legacy@example.com", "", "", "");
    assert_eq!(
        r.header("x-request-uri"),
        Some("sip:4100@pbx.cxgate.invalid")
    );
    assert_eq!(r.header("x-emergency-address-id"), Some("erl-munich-4100"));

    // A caller's correlation id is kept; a transfer back is never routed where it came from,
    // and past the hop limit the call is refused with 482.
    let kept = "0b6a3c52-8f1e-4d2a-9c7b-1f2e3d4c5b6a";
    let r = sip.call("15550101", "", kept, "", "");
    assert_eq!(r.header("x-migration-correlation-id"), Some(kept));
    let r = sip.call("15550101", "", kept, "1", "CLOUD");
    assert_eq!(r.answered_by(), Some("LEGACY"), "{}", r.trace);
    assert_eq!(r.header("x-coexistence-hop"), Some("2"));
    let r = sip.call("15550101", "", kept, "2", "LEGACY");
    assert_eq!(r.status, Some(482), "{}", r.trace);
    assert_eq!(r.answered_by(), None);

    // Fail-safe 2: the roster is stale (Genesys failing): calls still follow the last state.
    let s = &sip.stack;
    s.http
        .post(s.mock_url("genesys", "/__mock/faults"))
        .json(&json!({"status": 503, "ratio": 1.0}))
        .send()
        .unwrap();
    reconcile(s);
    decide_until(s, json!({"dnis": "15550101"}), "stale", |v| {
        v["reason"] == "stale_state"
    });
    let r = sip.call("15550102", "agent000@example.com", "", "", "");
    assert_eq!(r.answered_by(), Some("CLOUD"), "{}", r.trace);

    // Fail-safe 3: the cloud platform does not answer: Kamailio fails over to legacy.
    if let Some(mut c) = sip.cloud.take() {
        c.stop();
    }
    let r = sip.call("15550101", "", kept, "", "");
    assert_eq!(r.answered_by(), Some("LEGACY"), "{}", r.trace);
    assert_eq!(r.header("x-recording-platform"), Some("LEGACY"));
    assert_eq!(r.header("x-migration-correlation-id"), Some(kept));
    assert!(sip.kamailio.log_tail(200).contains("COEXISTENCE_FAILOVER"));

    // Whatever the decision cannot be trusted for goes to the legacy default: a URI outside
    // the allow-list, a refused query (a key without the scope), a brain that never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!(
        "http://{}/coexistence/v1/decision",
        hung.local_addr().unwrap()
    );
    let variants = [
        ("uri_not_allowed", None, vec!["CLOUD_HOST=\"cloud.elsewhere.invalid\"".to_string()]),
        (
            "decision_status status=403",
            None,
            vec!["DECISION_HEADERS=\"Content-Type: application/json\\r\\nx-api-key: demo-key-analytics\"".to_string()],
        ),
        ("decision_status", Some(hung_url), vec![]),
    ];
    for (why, url, defines) in variants {
        let routes = SipRoutes {
            listen: free_port(),
            defines,
            decision_url: url.unwrap_or_else(|| sip.routes.decision_url.clone()),
            ..sip.routes.clone()
        };
        let other = start_kamailio(&dir, &routes).unwrap();
        let c = Call {
            dnis: "15550101".into(),
            correlation_id: kept.into(),
            ..Call::default()
        };
        let r = place_call(&dir, routes.listen, &c).unwrap();
        assert_eq!(r.answered_by(), Some("LEGACY"), "{why}: {}", r.trace);
        assert_eq!(r.header("x-migration-correlation-id"), Some(kept));
        let log = other.log_tail(100);
        assert!(
            log.contains(&format!("COEXISTENCE_FALLBACK reason={why}")),
            "{why}: {log}"
        );
    }
    drop(hung);

    // Fail-safe 1: the gateway is down: calls go to the legacy default within the timeout.
    if let Some(mut e) = sip.stack.envoy.take() {
        e.stop();
    }
    let started = Instant::now();
    let r = sip.call("15550101", "", "", "", "");
    assert_eq!(r.answered_by(), Some("LEGACY"), "{}", r.trace);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        uuid_like(r.header("x-migration-correlation-id")),
        "minted by Kamailio"
    );
    assert_eq!(r.header("x-emergency-address-id"), Some("erl-hq"));
    assert!(sip.kamailio.log_tail(200).contains("COEXISTENCE_FALLBACK"));
}
