//! The coexistence stage through the pipeline flow (authz + coexistence), on the shipped
//! config section and route, with the roster written by the real sync code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_coexistence::config::Config;
use cxgate_kit::Clock;
use cxgate_kit::host::CasDialect;
use cxgate_model::authz;
use cxgate_model::fakes::TestHost;
use cxgate_model::{Pipeline, Request, Step};
use cxgate_state::{Agent, CloudAgent, LegacyAgent, Migration, Roster, Site, Snapshot, Suspension};
use serde_json::{Value, json};

const SHIPPED: &str = include_str!("../../../envoy/cxgate.json");
const KINDS: [cxgate_model::StageKind; 2] = [authz::KIND, cxgate_coexistence::stage::KIND];
const NOW: u64 = 1_800_000_000_000;
const PATH: &str = "/coexistence/v1/decision";

fn shipped() -> Value {
    serde_json::from_str(SHIPPED).unwrap()
}

fn doc(section: Value) -> String {
    let s = shipped();
    json!({"version": 2, "stages": ["authz", "coexistence"], "sync": s["sync"],
           "model": s["model"], "coexistence": section})
    .to_string()
}

fn host() -> TestHost {
    let mut h = TestHost::new(CasDialect::Envoy, NOW);
    h.env.insert("CXGATE_SIDECAR_KEY".into(), "test-key".into());
    h
}

fn agent(migration: Migration, cloud: Option<(bool, &str)>, legacy: Option<bool>) -> Agent {
    Agent {
        migration,
        cloud: cloud.map(|(active, status)| CloudAgent {
            id: "c-1".into(),
            active,
            routing_status: Some(status.into()),
            queues: vec![],
        }),
        legacy: legacy.map(|active| LegacyAgent {
            extension: "4711".into(),
            active,
            site: Some("berlin".into()),
            e911_id: Some("erl-agent".into()),
        }),
    }
}

fn roster(fetched_ms: u64) -> Roster {
    let mut r = Roster {
        fetched_ms,
        ..Roster::default()
    };
    r.agents.insert(
        "cloud@x".into(),
        agent(Migration::Cloud, Some((true, "IDLE")), Some(false)),
    );
    r.agents.insert(
        "legacy@x".into(),
        agent(Migration::Legacy, None, Some(true)),
    );
    r.agents.insert(
        "moving-on@x".into(),
        agent(
            Migration::Transitioning,
            Some((true, "INTERACTING")),
            Some(false),
        ),
    );
    r.agents.insert(
        "moving-off@x".into(),
        agent(
            Migration::Transitioning,
            Some((true, "OFF_QUEUE")),
            Some(false),
        ),
    );
    r.agents.insert(
        "gone@x".into(),
        agent(Migration::Cloud, Some((false, "OFF_QUEUE")), Some(false)),
    );
    r.agents.insert(
        "zombie@x".into(),
        agent(Migration::Cloud, Some((true, "IDLE")), Some(true)),
    );
    r.suspended.insert(
        "zombie@x".into(),
        Suspension {
            since_ms: fetched_ms,
            reason: "active on both platforms".into(),
        },
    );
    r.sites.insert(
        "berlin".into(),
        Site {
            cloud_e911_id: Some("genesys-loc-berlin".into()),
            legacy_e911_id: Some("erl-berlin".into()),
        },
    );
    r
}

/// Publishes a roster through the sync client's own apply (as a sidecar answer would).
fn publish(h: &mut TestHost, r: Roster) {
    let snap = Snapshot {
        version: 7,
        roster: Some(r),
        ..Snapshot::default()
    };
    let now = h.clock.now_ms();
    cxgate_kit::sync::apply(&mut h.store, now, &snap).unwrap();
}

fn ask_as(h: &mut TestHost, p: &Pipeline, consumer: &str, body: &[u8]) -> (u32, Value) {
    let headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), PATH.to_string()),
        ("x-cxgate-consumer".to_string(), consumer.to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let (mut r, step) = Request::start(p, headers, &mut h.io());
    let step = match step {
        Step::Pause => r.on_body(body.to_vec(), &mut h.io()),
        other => other,
    };
    let Step::Reply(reply) = step else {
        panic!("no local reply: {step:?}");
    };
    r.on_done(&mut h.io());
    (reply.status, serde_json::from_slice(&reply.body).unwrap())
}

fn ask(h: &mut TestHost, p: &Pipeline, body: Value) -> Value {
    let (status, v) = ask_as(h, p, "sip-proxy", body.to_string().as_bytes());
    assert_eq!(status, 200, "{v}");
    v
}

fn shipped_pipeline(h: &mut TestHost) -> Pipeline {
    h.pipeline(&doc(shipped()["coexistence"].clone()), &KINDS)
        .unwrap()
}

#[test]
fn the_shipped_dnis_split_decides_calls_for_no_known_agent() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let cases = [
        ("15550101", "CLOUD", "dnis_rule", "cloud-batch-01"),
        ("+15550102", "LEGACY", "dnis_rule", "legacy-02"),
        ("15550199", "LEGACY", "default", "default"),
    ];
    for (dnis, platform, reason, rule) in cases {
        let v = ask(
            &mut h,
            &p,
            json!({"dnis": dnis, "ani": "+4930123", "target_user": "stranger@x"}),
        );
        assert_eq!(v["platform"], platform, "{dnis}: {v}");
        assert_eq!(v["reason"], reason, "{dnis}");
        assert_eq!(v["rule"], rule, "{dnis}");
        assert_eq!(v["state"], "fresh");
        assert_eq!(v["hop"], 1);
        let digits = dnis.trim_start_matches('+');
        let host = if platform == "CLOUD" {
            "cloud.cxgate.invalid"
        } else {
            "pbx.cxgate.invalid"
        };
        assert_eq!(v["sip_uri"], format!("sip:{digits}@{host}"));
    }
}

#[test]
fn calls_bound_for_a_cloud_whose_breaker_is_open_go_to_legacy() {
    use cxgate_breaker::window::{Breaker, Phase};
    use cxgate_kit::host::{Expect, SharedStore};
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let call = json!({"dnis": "15550101", "ani": "+4930123", "target_user": "stranger@x"});
    let set = |h: &mut TestHost, phase: Phase| {
        let b = Breaker {
            phase,
            ..Breaker::closed(4)
        };
        let key = cxgate_breaker::core::key("genesys");
        let expect = match h.store.get(&key).unwrap() {
            Some(v) => Expect::Cas(v.cas),
            None => Expect::Absent,
        };
        h.store.set(&key, &b.encode(), expect).unwrap();
    };
    for (phase, platform, reason) in [
        (
            Phase::Open {
                next_probe_ms: NOW + 15_000,
            },
            "LEGACY",
            "cloud_unavailable",
        ),
        (
            Phase::HalfOpen {
                probe_until_ms: NOW + 5_000,
            },
            "LEGACY",
            "cloud_unavailable",
        ),
        (Phase::Closed, "CLOUD", "dnis_rule"),
    ] {
        set(&mut h, phase);
        let v = ask(&mut h, &p, call.clone());
        assert_eq!(
            (v["platform"].as_str(), v["reason"].as_str()),
            (Some(platform), Some(reason)),
            "{phase:?}: {v}"
        );
        if reason == "cloud_unavailable" {
            assert_eq!(v["sip_uri"], "sip:15550101@pbx.cxgate.invalid");
            assert_eq!(
                v["rule"],
                "dnis_rule:cloud-batch-01: the cloud's breaker is open"
            );
        }
    }
    // Bound for legacy anyway: unchanged.
    set(
        &mut h,
        Phase::Open {
            next_probe_ms: NOW + 15_000,
        },
    );
    let v = ask(&mut h, &p, json!({"dnis": "15550102"}));
    assert_eq!(
        (v["platform"].as_str(), v["reason"].as_str()),
        (Some("LEGACY"), Some("dnis_rule"))
    );
}

#[test]
fn agent_rules_come_before_dnis_rules_and_follow_the_migration_status() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    // DNIS 02 would say LEGACY, 01 CLOUD: the agent's own status wins either way.
    let cases = [
        ("cloud@x", "15550102", "CLOUD", "agent_status", "cloud"),
        ("legacy@x", "15550101", "LEGACY", "agent_status", "legacy"),
        (
            "moving-on@x",
            "15550102",
            "CLOUD",
            "agent_status",
            "transitioning:INTERACTING",
        ),
        (
            "moving-off@x",
            "15550101",
            "LEGACY",
            "agent_status",
            "transitioning:OFF_QUEUE",
        ),
        (
            "gone@x",
            "15550101",
            "LEGACY",
            "agent_status",
            "cloud_but_not_active_in_cloud",
        ),
        (
            "ZOMBIE@x",
            "15550101",
            "LEGACY",
            "agent_suspended",
            "active on both platforms",
        ),
    ];
    for (user, dnis, platform, reason, rule) in cases {
        let v = ask(&mut h, &p, json!({"dnis": dnis, "target_user": user}));
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
    // A legacy agent is reached on its extension; the emergency address is the agent's own
    // legacy ERL there, and the site's cloud address for the same site on the cloud side.
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "target_user": "legacy@x"}),
    );
    assert_eq!(v["sip_uri"], "sip:4711@pbx.cxgate.invalid");
    assert_eq!(v["emergency_address_id"], "erl-agent");
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550102", "target_user": "cloud@x"}),
    );
    assert_eq!(v["emergency_address_id"], "genesys-loc-berlin");
    // No agent: the platform target's default address, never the other platform's.
    let v = ask(&mut h, &p, json!({"dnis": "15550101"}));
    assert_eq!(v["emergency_address_id"], "genesys-location-hq");
    let v = ask(&mut h, &p, json!({"dnis": "15550102"}));
    assert_eq!(v["emergency_address_id"], "erl-hq");
}

#[test]
fn a_call_never_goes_back_where_it_came_from_and_a_loop_is_refused() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "from_platform": "cloud", "hop": 1}),
    );
    assert_eq!(v["platform"], "LEGACY", "{v}");
    assert_eq!(v["reason"], "loop_guard");
    assert_eq!(v["hop"], 2);
    assert_eq!(
        v["recording_tag"],
        format!("legacy:{}", v["correlation_id"].as_str().unwrap())
    );
    // At the hop limit (2 in the shipped config) the call is refused, not relayed.
    let v = ask(&mut h, &p, json!({"dnis": "15550101", "hop": 2}));
    assert_eq!(v["platform"], Value::Null, "{v}");
    assert_eq!(v["sip_uri"], Value::Null);
    assert_eq!(v["sip_status"], 482);
    assert_eq!(v["reason"], "loop_detected");
    assert_eq!(h.metrics.value("cxgate_coexistence.loops_refused"), 1);
}

#[test]
fn a_valid_correlation_id_is_kept_and_a_missing_or_invalid_one_is_minted() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let kept = "0b6a3c52-8f1e-4d2a-9c7b-1f2e3d4c5b6a";
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "correlation_id": kept}),
    );
    assert_eq!(v["correlation_id"], kept);
    assert_eq!(v["recording_tag"], format!("cloud:{kept}"));
    let mut minted = Vec::new();
    for c in [
        json!(null),
        json!("not-a-uuid"),
        json!("0b6a3c52-8f1e-4d2a-9c7b-1f2e3d4c5b6"),
    ] {
        let v = ask(&mut h, &p, json!({"dnis": "15550101", "correlation_id": c}));
        let id = v["correlation_id"].as_str().unwrap().to_string();
        assert!(cxgate_coexistence::decide::is_uuid(&id), "{id}");
        assert_eq!(id.as_bytes()[14], b'4', "a version 4 UUID: {id}");
        assert_ne!(id, kept);
        minted.push(id);
    }
    minted.dedup();
    assert_eq!(minted.len(), 3, "each minted id is new");
}

#[test]
fn stale_state_is_used_and_said_expired_or_missing_state_goes_to_the_safe_default() {
    // No roster at all.
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "target_user": "cloud@x"}),
    );
    assert_eq!(
        (v["platform"].as_str(), v["reason"].as_str()),
        (Some("LEGACY"), Some("no_state"))
    );
    assert_eq!(v["state"], "none");
    assert_eq!(
        h.metrics.value("cxgate_coexistence.safe_default_decisions"),
        1
    );

    // A source failed: the last state still decides, marked stale.
    let mut r = roster(NOW);
    r.stale = true;
    publish(&mut h, r);
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550102", "target_user": "cloud@x"}),
    );
    assert_eq!(v["platform"], "CLOUD", "{v}");
    assert_eq!(v["reason"], "stale_state");
    assert_eq!(v["rule"], "agent_status:cloud");

    // Fresh again, then the roster ages past stale_after_ms (180 s) ...
    publish(&mut h, roster(NOW));
    assert_eq!(
        ask(
            &mut h,
            &p,
            json!({"dnis": "15550102", "target_user": "cloud@x"})
        )["state"],
        "fresh"
    );
    h.clock.advance(180_001);
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550102", "target_user": "cloud@x"}),
    );
    assert_eq!(
        (v["platform"].as_str(), v["reason"].as_str()),
        (Some("CLOUD"), Some("stale_state"))
    );
    // ... and past expire_after_ms (1 h): no longer trusted at all.
    h.clock.advance(3_600_000);
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "target_user": "cloud@x"}),
    );
    assert_eq!(
        (v["platform"].as_str(), v["reason"].as_str()),
        (Some("LEGACY"), Some("state_expired"))
    );
    assert_eq!(v["state"], "expired");
}

#[test]
fn a_failing_sidecar_poll_marks_fresh_state_stale() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let key = "test-key".to_string();
    let sync = cxgate_kit::sync::SyncConfig {
        upstream: "sidecar".into(),
        authority: None,
        key_env: "CXGATE_SIDECAR_KEY".into(),
        poll_wait_ms: 20_000,
        lease_ms: 5_000,
        stale_after_ms: 30_000,
    };
    let mut client = cxgate_kit::sync::SyncClient::new(sync, key, 1);
    let clock = h.clock.clone();
    client
        .on_tick(&mut h.store, &clock, &mut h.callout)
        .unwrap();
    let _ = client.on_response(&mut h.store, &clock, None, b"");
    let v = ask(
        &mut h,
        &p,
        json!({"dnis": "15550101", "target_user": "legacy@x"}),
    );
    assert_eq!(
        (v["platform"].as_str(), v["reason"].as_str()),
        (Some("LEGACY"), Some("stale_state")),
        "{v}"
    );
}

#[test]
fn bad_requests_get_a_clear_4xx_and_other_consumers_a_403() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    let cases: [(&[u8], u32, &str); 8] = [
        (br#"{"ani": "123"}"#, 400, "/dnis"),
        (br#"{"dnis": "555-0101"}"#, 400, "/dnis"),
        (br#"{"dnis": ""}"#, 400, "/dnis"),
        (br#"{"dnis": 15550101}"#, 400, "/dnis"),
        (br#"{"dnis": "123456789012345678901"}"#, 400, "/dnis"),
        (br#"{"dnis": "15550101", "hop": -1}"#, 400, "/hop"),
        (
            br#"{"dnis": "15550101", "from_platform": "MARS"}"#,
            400,
            "/from_platform",
        ),
        (br#"["dnis"]"#, 400, ""),
    ];
    for (body, status, pointer) in cases {
        let (got, v) = ask_as(&mut h, &p, "sip-proxy", body);
        assert_eq!(got, status, "{}: {v}", String::from_utf8_lossy(body));
        assert_eq!(v["errors"][0]["pointer"], pointer, "{v}");
        assert_eq!(v["status"], status);
    }
    let (got, v) = ask_as(&mut h, &p, "sip-proxy", b"dnis=15550101");
    assert_eq!(
        (got, v["type"].as_str()),
        (400, Some("urn:cxgate:problem:invalid-json"))
    );
    let big = format!(r#"{{"dnis": "15550101", "ani": "{}"}}"#, " ".repeat(5000));
    let (got, v) = ask_as(&mut h, &p, "sip-proxy", big.as_bytes());
    assert_eq!(got, 413, "{v}");
    assert_eq!(h.metrics.value("cxgate_coexistence.invalid_requests"), 10);
    // Only a consumer with coexistence:decide may ask.
    let (got, v) = ask_as(&mut h, &p, "analytics-batch", br#"{"dnis": "15550101"}"#);
    assert_eq!(got, 403, "{v}");
}

#[test]
fn the_zombie_gauge_follows_the_roster_on_the_tick() {
    let mut h = host();
    let p = shipped_pipeline(&mut h);
    publish(&mut h, roster(NOW));
    for s in &p.stages {
        s.on_tick(&mut h.root_io());
    }
    assert_eq!(h.metrics.value("cxgate_coexistence.zombies"), 1);
    let mut r = roster(NOW + 1);
    r.suspended.clear();
    publish(&mut h, r);
    for s in &p.stages {
        s.on_tick(&mut h.root_io());
    }
    assert_eq!(h.metrics.value("cxgate_coexistence.zombies"), 0);
}

#[test]
fn config_errors_name_the_field() {
    let base = Config::example();
    let cases = [
        (
            "/coexistence/cloud/sip_uri",
            json!({"cloud": {"sip_uri": "http://x"}}),
        ),
        (
            "/coexistence/legacy/sip_uri",
            json!({"legacy": {"sip_uri": "sip:{user}@pbx"}}),
        ),
        (
            "/coexistence/dnis_rules/0",
            json!({"dnis_rules": [{"suffix": "01", "prefix": "1", "platform": "CLOUD"}]}),
        ),
        (
            "/coexistence/dnis_rules/0/suffix",
            json!({"dnis_rules": [{"suffix": "0x", "platform": "CLOUD"}]}),
        ),
        (
            "/coexistence/dnis_rules/0/platform",
            json!({"dnis_rules": [{"any": true, "platform": "MARS"}]}),
        ),
        ("/coexistence/hop_limit", json!({"hop_limit": 0})),
        (
            "/coexistence/expire_after_ms",
            json!({"stale_after_ms": 10, "expire_after_ms": 5}),
        ),
        ("/coexistence/routes/0", json!({"routes": ["nope"]})),
        ("/coexistence/colour", json!({"colour": "blue"})),
        (
            "/coexistence/legacy/breaker",
            json!({"legacy": {"sip_uri": "sip:{dnis}@pbx", "breaker": "genesys"}}),
        ),
        (
            "/coexistence/cloud/breaker",
            json!({"cloud": {"sip_uri": "sip:{dnis}@cloud", "breaker": " "}}),
        ),
    ];
    for (field, change) in cases {
        let mut section = base.clone();
        for (k, v) in change.as_object().unwrap() {
            section[k] = v.clone();
        }
        let mut h = host();
        let err = h.pipeline(&doc(section), &KINDS).err().unwrap();
        assert_eq!(err.field, field, "{change}: {}", err.message);
    }
    let mut h = host();
    assert!(
        h.pipeline(&doc(Value::Null), &KINDS).is_err(),
        "the section is required"
    );
}
