//! Pure tests of the kit; they run natively and under wasmtime (wasm32-wasip1).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::config;
use cxgate_kit::fakes::{FakeClock, FakeEntropy, FakeHeaders, FakeStore};
use cxgate_kit::host::{CasDialect, Expect, Headers, SharedStore};
use cxgate_kit::ids::{TraceParent, is_valid_gateway_trace_id, random_hex};
use cxgate_kit::problem::Problem;
use cxgate_kit::shared::{Lease, LeaseState, Stamped, Update, UpdateError, update};
use cxgate_kit::wire::{deserialize_pairs, serialize_pairs};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Cfg {
    #[serde(default)]
    version: u64,
    upstream: String,
    #[serde(default)]
    routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Route {
    path: String,
    cost: u32,
}

#[test]
fn config_errors_name_the_field() {
    let e = config::parse::<Cfg>(br#"{"upstream":"a","routes":[{"path":"/x","cost":"high"}]}"#)
        .unwrap_err();
    assert_eq!(e.field, "/routes/0/cost");
    let e = config::parse::<Cfg>(br#"{"upstream":"a","bogus":1}"#).unwrap_err();
    assert_eq!(e.field, "/bogus");
    let e = config::parse::<Cfg>(br#"{}"#).unwrap_err();
    assert!(e.message.contains("upstream"), "{e}");
    let e = config::parse::<Cfg>(br#"{"version":2,"upstream":"a"}"#).unwrap_err();
    assert_eq!(e.field, "/version");
    let e = config::parse::<Cfg>(b"{not json").unwrap_err();
    assert_eq!(e.field, "");
    assert!(config::parse::<Cfg>(br#"{"version":1,"upstream":"a"}"#).is_ok());
}

#[test]
fn envoy_and_kong_cas_rules_differ_but_expect_means_the_same() {
    for dialect in [CasDialect::Envoy, CasDialect::Kong] {
        let mut store = FakeStore::new(dialect);
        store.set("k", b"1", Expect::Absent).unwrap();
        // A second insert must fail on both hosts.
        assert_eq!(
            store.set("k", b"2", Expect::Absent),
            Err(cxgate_kit::HostError::CasMismatch)
        );
        let v = store.get("k").unwrap().unwrap();
        store.set("k", b"3", Expect::Cas(v.cas)).unwrap();
        // A stale CAS fails.
        assert!(store.set("k", b"4", Expect::Cas(v.cas)).is_err());
        assert_eq!(store.get("k").unwrap().unwrap().value, b"3");
    }
    // The raw difference the dialects encode: cas 0 on an existing key.
    let envoy = FakeStore::new(CasDialect::Envoy);
    envoy.raw_set("k", b"a", 0).unwrap();
    assert!(envoy.raw_set("k", b"b", 0).is_ok());
    let kong = FakeStore::new(CasDialect::Kong);
    kong.raw_set("k", b"a", 0).unwrap();
    assert!(kong.raw_set("k", b"b", 0).is_err());
}

fn increment(store: &mut FakeStore, attempts: u32) -> Result<u64, UpdateError> {
    update(store, "counter", attempts, |current| {
        let n = current
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0)
            + 1;
        Update::Write(n.to_le_bytes().to_vec(), n)
    })
}

#[test]
fn update_retries_on_lost_races_and_gives_up_when_bounded() {
    let mut store = FakeStore::new(CasDialect::Envoy);
    assert_eq!(increment(&mut store, 3).unwrap(), 1);
    store.race_next_writes(2);
    assert_eq!(increment(&mut store, 3).unwrap(), 2, "third attempt wins");
    store.race_next_writes(5);
    assert_eq!(
        increment(&mut store, 3),
        Err(UpdateError::Contention { attempts: 3 })
    );
    let (_, mismatches) = store.stats();
    assert_eq!(mismatches, 5);
}

#[test]
fn two_workers_never_both_spend_the_same_value() {
    // Worker A reads, worker B writes in between: A's write must fail.
    let mut a = FakeStore::new(CasDialect::Kong);
    let mut b = a.clone();
    a.set("k", b"0", Expect::Absent).unwrap();
    let seen_by_a = a.get("k").unwrap().unwrap();
    let seen_by_b = b.get("k").unwrap().unwrap();
    b.set("k", b"b", Expect::Cas(seen_by_b.cas)).unwrap();
    assert!(a.set("k", b"a", Expect::Cas(seen_by_a.cas)).is_err());
    assert_eq!(a.get("k").unwrap().unwrap().value, b"b");
}

#[test]
fn a_lease_stamped_before_the_clock_stepped_back_lasts_its_ttl_not_the_step() {
    let mut store = FakeStore::new(CasDialect::Kong);
    let w1 = Lease::new("cxgate/lease/sync", 1, 5_000);
    let w2 = Lease::new("cxgate/lease/sync", 2, 5_000);
    w1.acquire(&mut store, &FakeClock::at(1_000_000)).unwrap();
    // Ten minutes back: w1's expiry (1_005_000) is 605 s away, more than a ttl; w1 stopped.
    assert_eq!(
        w2.acquire(&mut store, &FakeClock::at(400_000)).unwrap(),
        LeaseState::Held {
            expires_ms: 405_000
        }
    );
}

#[test]
fn lease_has_one_holder_and_lapses_when_the_holder_stops() {
    let clock = FakeClock::at(1_000);
    let mut store = FakeStore::new(CasDialect::Envoy);
    let w1 = Lease::new("cxgate/lease/sync", 1, 5_000);
    let w2 = Lease::new("cxgate/lease/sync", 2, 5_000);
    assert_eq!(
        w1.acquire(&mut store, &clock).unwrap(),
        LeaseState::Held { expires_ms: 6_000 }
    );
    assert_eq!(
        w2.acquire(&mut store, &clock).unwrap(),
        LeaseState::Busy {
            holder: 1,
            expires_ms: 6_000
        }
    );
    clock.advance(4_000);
    // Renewal by the holder extends it.
    assert_eq!(
        w1.acquire(&mut store, &clock).unwrap(),
        LeaseState::Held { expires_ms: 10_000 }
    );
    clock.advance(4_999);
    assert!(matches!(
        w2.acquire(&mut store, &clock).unwrap(),
        LeaseState::Busy { .. }
    ));
    clock.advance(1);
    // w1 stopped renewing: w2 takes over exactly at expiry.
    assert_eq!(
        w2.acquire(&mut store, &clock).unwrap(),
        LeaseState::Held { expires_ms: 15_000 }
    );
    assert!(matches!(
        w1.acquire(&mut store, &clock).unwrap(),
        LeaseState::Busy { holder: 2, .. }
    ));
    w2.release(&mut store).unwrap();
    assert!(matches!(
        w1.acquire(&mut store, &clock).unwrap(),
        LeaseState::Held { .. }
    ));
}

#[test]
fn stamped_values_round_trip_and_age() {
    let s = Stamped {
        version: 7,
        written_ms: 1_000,
        payload: b"{}".to_vec(),
    };
    let back = Stamped::decode(&s.encode()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.age_ms(1_500), 500);
    assert_eq!(Stamped::decode(b"short"), None);
}

#[test]
fn traceparent_parsing_follows_w3c() {
    let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tp = TraceParent::parse(ok).unwrap();
    assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.render(), ok);
    for bad in [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ] {
        assert_eq!(TraceParent::parse(bad), None, "{bad}");
    }
    // A future version may carry more fields after a dash.
    assert!(TraceParent::parse(&format!("01{}-future", &ok[2..])).is_some());
}

#[test]
fn gateway_trace_ids_are_bounded_and_plain() {
    assert!(is_valid_gateway_trace_id("req_8f3a2c9d1e4b"));
    assert!(!is_valid_gateway_trace_id(""));
    assert!(!is_valid_gateway_trace_id("a b"));
    assert!(!is_valid_gateway_trace_id(&"x".repeat(129)));
    let mut e = FakeEntropy::seeded(1);
    let id = random_hex(&mut e, 16).unwrap();
    assert!(TraceParent::is_trace_id(&id));
    assert_ne!(id, random_hex(&mut e, 16).unwrap());
}

#[test]
fn problem_renders_rfc9457_with_every_field_error() {
    let reply = Problem::new(400, "validation", "Invalid request", "2 fields are invalid")
        .with_trace_id(Some("t-1"))
        .with_error("/payload/queue_name", "is required")
        .with_error("/payload/max_wait_time_ms", "must be an integer")
        .with_header("retry-after", "3")
        .into_reply();
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.headers[0],
        ("content-type".into(), "application/problem+json".into())
    );
    assert_eq!(reply.headers[1], ("retry-after".into(), "3".into()));
    assert_eq!(
        reply.headers[2],
        ("x-cxgate-problem".into(), "validation".into()),
        "marks the gateway's own answers"
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "urn:cxgate:problem:validation");
    assert_eq!(body["status"], 400);
    assert_eq!(body["trace_id"], "t-1");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    assert_eq!(body["errors"][1]["pointer"], "/payload/max_wait_time_ms");
}

#[test]
fn header_wire_format_round_trips_and_rejects_garbage() {
    let bytes = serialize_pairs(&[(":path", "/a"), ("x-k", "")]);
    assert_eq!(
        deserialize_pairs(&bytes).unwrap(),
        vec![
            (":path".to_string(), "/a".to_string()),
            ("x-k".to_string(), String::new())
        ]
    );
    assert_eq!(deserialize_pairs(&[0xff, 0xff, 0xff, 0x0f]), None);
    assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]), None);
}

#[test]
fn fake_headers_are_case_insensitive() {
    let mut h = FakeHeaders::from(&[("X-A", "1"), ("x-a", "2")]);
    assert_eq!(h.get("x-a").unwrap().as_deref(), Some("1"));
    h.set("X-A", "3").unwrap();
    assert_eq!(h.all("x-a"), vec!["3"]);
}

#[test]
fn rfc3339_stamps_match_known_dates() {
    use cxgate_kit::time::rfc3339_ms;
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    // 2000-02-29 (a leap day of a year divisible by 400) and the day after.
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
    assert_eq!(rfc3339_ms(951_868_800_000), "2000-03-01T00:00:00.000Z");
    // 2100 is not a leap year.
    assert_eq!(rfc3339_ms(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
    assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_796_392_319_123), "2026-12-04T13:51:59.123Z");
}

#[test]
fn uuids_are_version_4_and_well_formed() {
    use cxgate_kit::ids::{is_uuid, uuid_v4};
    let id = uuid_v4([0xff; 16]);
    assert!(is_uuid(&id), "{id}");
    assert_eq!(&id[14..15], "4", "version nibble");
    assert!(
        matches!(&id[19..20], "8" | "9" | "a" | "b"),
        "variant bits: {id}"
    );
    assert!(!is_uuid("not-a-uuid"));
}

#[test]
fn a_call_credential_comes_from_the_synced_token_never_an_expired_or_rejected_one() {
    use cxgate_kit::credential::{Credential, Unavailable};
    use cxgate_state::TokenState;
    let mut store = FakeStore::new(CasDialect::Kong);
    let c = Credential::new("genesys", None, None).unwrap();
    assert_eq!(c.header(&store, 1_000), Err(Unavailable::Missing));
    let put = |store: &mut FakeStore, t: &TokenState| {
        let v = Stamped {
            version: 1,
            written_ms: 0,
            payload: serde_json::to_vec(t).unwrap(),
        };
        let key = cxgate_state::keys::token("genesys");
        let cas = store.get(&key).unwrap().map(|v| v.cas);
        let expect = cas.map_or(Expect::Absent, Expect::Cas);
        store.set(&key, &v.encode(), expect).unwrap();
    };
    let t = TokenState::new("tok-1".into(), "bearer".into(), 0, 100, 1);
    put(&mut store, &t);
    assert_eq!(
        c.header(&store, 99_000),
        Ok(("authorization".into(), "Bearer tok-1".into())),
        "a stale token (past 95 %) is still served"
    );
    assert_eq!(c.header(&store, 100_000), Err(Unavailable::Expired));
    let raw = Credential::new("genesys", Some("Api-Key"), Some("")).unwrap();
    assert_eq!(
        raw.header(&store, 1_000),
        Ok(("api-key".into(), "tok-1".into())),
        "an empty scheme sends the raw token"
    );
    put(&mut store, &t.rejected_marker());
    assert_eq!(c.header(&store, 1_000), Err(Unavailable::Expired));
    assert!(Credential::new("avaya", None, None).is_err());
}
