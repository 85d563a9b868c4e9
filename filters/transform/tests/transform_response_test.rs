//! Pure tests of the transform stage's response side with the shipped profiles: normalized
//! answers, paging cursors, idempotency claims and config errors; native and under wasmtime.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;

fn returned<'a>(status: u16, body: &'a [u8], include_metadata: bool) -> Returned<'a> {
    Returned {
        status,
        body,
        content_type: Some("application/json; charset=UTF-8"),
        correlation_id: Some("corr-7"),
        include_metadata,
        trace_id: Some("t-9"),
        cursor_key: b"cursor-key-0123456789",
        now_ms: NOW_MS,
    }
}

#[test]
fn responses_are_normalized_metadata_stripped_unless_asked_and_errors_become_problems() {
    let c = cfg();
    let f = forward(update(&c, &seed("GENESYS")));
    let platform = json!({"id": "q-premium-1", "name": "Premium_Support", "enabled": true, "version": 3,
        "selfUri": "/api/v2/routing/queues/q-premium-1",
        "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing"], "maxWaitTime": "PT2M"}})
    .to_string();
    let n = on_response(&c, &f, &returned(200, platform.as_bytes(), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v,
        json!({"platform": "GENESYS", "queue_id": "q-premium-1", "queue_name": "Premium_Support", "enabled": true,
               "routing_strategy": "LONGEST_IDLE_AGENT", "skill_requirements": ["billing"], "max_wait_time_ms": 120000})
    );
    let n = on_response(&c, &f, &returned(200, platform.as_bytes(), true));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v["platform_metadata"],
        json!({"selfUri": "/api/v2/routing/queues/q-premium-1", "version": 3})
    );
    // A platform error keeps its status and correlation id.
    let err = json!({"message": "queue is locked", "code": "conflict", "status": 409}).to_string();
    let n = on_response(&c, &f, &returned(409, err.as_bytes(), false));
    assert_eq!(
        (n.status, n.content_type.as_str()),
        (409, "application/problem+json")
    );
    let p: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:platform-error");
    assert_eq!(p["detail"], "queue is locked");
    assert_eq!(p["correlation_id"], "corr-7");
    assert_eq!(p["platform_status"], 409);
    assert_eq!(p["trace_id"], "t-9");
}

#[test]
fn a_2xx_the_consumer_cannot_use_is_a_502_problem_never_a_success() {
    let c = cfg();
    let f = forward(update(&c, &seed("GENESYS")));
    let unusable = |body: &[u8], content_type: Option<&str>| {
        let mut r = returned(200, body, false);
        r.content_type = content_type;
        let n = on_response(&c, &f, &r);
        let p: Value = serde_json::from_slice(&n.body).unwrap_or(Value::Null);
        (n.status, n.content_type, p, n.event.is_some())
    };
    let good = json!({"id": "q-1", "name": "Q", "enabled": true}).to_string();
    for (body, ct, why) in [
        (
            &br#"{"id": "q-1", "name": "Prem"#[..],
            Some("application/json"),
            "not JSON (truncated?)",
        ),
        (
            &b"<html>maintenance</html>"[..],
            Some("text/html"),
            "a text/html body, not JSON",
        ),
        (
            good.as_bytes(),
            Some("text/plain"),
            "a text/plain body, not JSON",
        ),
        (
            &br#"{"message": "internal", "code": "server.error", "status": 500}"#[..],
            Some("application/json"),
            "none of the fields read from it",
        ),
    ] {
        let (status, ct_out, p, event) = unusable(body, ct);
        assert_eq!(
            (status, ct_out.as_str()),
            (502, "application/problem+json"),
            "{p}"
        );
        assert_eq!(p["type"], "urn:cxgate:problem:platform-invalid-response");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(why) && detail.contains("may or may not have been applied"),
            "{detail}"
        );
        assert_eq!(
            (p["platform_status"].clone(), p["correlation_id"].clone()),
            (json!(200), json!("corr-7"))
        );
        assert!(event, "the operator is told");
    }
    // Usable: JSON (declared or not), an empty object, an empty body, a JSON media type.
    for (body, ct) in [
        (good.as_bytes(), Some("application/json")),
        (good.as_bytes(), None),
        (good.as_bytes(), Some("application/vnd.genesys+json")),
        (&b"{}"[..], Some("application/json")),
        (&b""[..], None),
    ] {
        let (status, _, _, event) = unusable(body, ct);
        assert_eq!(
            (status, event),
            (200, false),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    // A listing without its list is not an empty last page.
    let lf = forward(send(
        &c,
        "/gateway/v1/routing/queues?platform=GENESYS",
        None,
        b"",
    ));
    let n = on_response(
        &c,
        &lf,
        &returned(200, br#"{"message": "busy", "status": 503}"#, false),
    );
    assert_eq!(n.status, 502);
    assert!(String::from_utf8_lossy(&n.body).contains("no list at /entities"));
}

fn genesys_page(number: u64, count: u64, total: u64) -> Vec<u8> {
    let entities: Vec<Value> = (0..count).map(|i| json!({"id": format!("q-{number}-{i}"), "name": format!("Q{number}{i}"), "enabled": true, "selfUri": "/x"})).collect();
    let mut v = json!({"entities": entities, "pageSize": 25, "pageNumber": number, "total": total, "pageCount": total.div_ceil(25)});
    if number < total.div_ceil(25) {
        v["nextUri"] = json!("/api/v2/routing/queues?pageNumber=2");
    }
    v.to_string().into_bytes()
}

#[test]
fn listings_page_through_an_opaque_signed_cursor_and_flag_mismatches() {
    let c = cfg();
    let f = forward(send(
        &c,
        "/gateway/v1/routing/queues?platform=GENESYS",
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/genesys/api/v2/routing/queues?pageNumber=1&pageSize=25"
    );
    let n = on_response(&c, &f, &returned(200, &genesys_page(1, 25, 60), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 25);
    assert_eq!(
        v["items"][0],
        json!({"queue_id": "q-1-0", "queue_name": "Q10", "enabled": true})
    );
    assert_eq!(v["has_more"], true);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let f2 = forward(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=GENESYS&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(
        f2.path,
        "/genesys/api/v2/routing/queues?pageNumber=2&pageSize=25"
    );
    // A cursor for another platform, or altered, is refused.
    let (s, _) = problem(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=CXONE&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(s, 400);
    let mut forged = cursor.clone().into_bytes();
    forged[3] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    let (s, p) = problem(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=GENESYS&cursor={forged}"),
        None,
        b"",
    ));
    assert_eq!(
        (s, p["type"].as_str().unwrap()),
        (400, "urn:cxgate:problem:invalid-cursor")
    );
    // Another consumer's cursor is refused; an old one is told apart so a client can restart.
    let key = b"cursor-key-0123456789";
    let theirs = Cursor {
        consumer: "wfm-sync".into(),
        ..f2.cursor.clone().unwrap()
    }
    .encode(key, NOW_MS + 60_000);
    let old = f2.cursor.clone().unwrap().encode(key, NOW_MS);
    for (text, want) in [(theirs, "invalid-cursor"), (old, "cursor-expired")] {
        let (s, p) = problem(send(
            &c,
            &format!("/gateway/v1/routing/queues?platform=GENESYS&cursor={text}"),
            None,
            b"",
        ));
        assert_eq!(
            (s, p["type"].as_str().unwrap()),
            (400, format!("urn:cxgate:problem:{want}").as_str())
        );
    }
    // The last page: no cursor; the platform said 60 but 59 came: PAGINATION_MISMATCH.
    let mut last = f2.clone();
    last.cursor = Some(Cursor {
        next: 3,
        seen: 50,
        ..f2.cursor.clone().unwrap()
    });
    let n = on_response(&c, &last, &returned(200, &genesys_page(3, 9, 60), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        (v["has_more"].clone(), v["next_cursor"].clone()),
        (json!(false), Value::Null)
    );
    assert!(n.event.unwrap().render().contains("PAGINATION_MISMATCH"));
    // CXone skip/top.
    let f = forward(send(
        &c,
        "/gateway/v1/routing/queues?platform=CXONE&page_size=2",
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/cxone/incontactapi/services/v30.0/skills?skip=0&top=2"
    );
    let page = json!({"totalRecords": 3, "skills": [{"skillId": 11000, "skillName": "billing", "isActive": true}, {"skillId": 11001, "skillName": "tier2", "isActive": true}]}).to_string();
    let n = on_response(&c, &f, &returned(200, page.as_bytes(), false));
    let v: Value = serde_json::from_slice(&n.body).unwrap();
    assert_eq!(
        v["items"][0],
        json!({"queue_id": "11000", "queue_name": "billing", "enabled": true})
    );
    let cursor = v["next_cursor"].as_str().unwrap();
    let f = forward(send(
        &c,
        &format!("/gateway/v1/routing/queues?platform=CXONE&cursor={cursor}"),
        None,
        b"",
    ));
    assert_eq!(
        f.path,
        "/cxone/incontactapi/services/v30.0/skills?skip=2&top=2"
    );
    let (s, _) = problem(send(
        &c,
        "/gateway/v1/routing/queues?platform=CXONE&page_size=1000",
        None,
        b"",
    ));
    assert_eq!(s, 400);
}

#[test]
fn only_a_keyed_request_is_deduplicated_and_the_key_comes_from_the_header_or_the_body() {
    let body = json!({"idempotency_key": "k1", "x": 1});
    let bare = json!({"x": 1});
    assert_eq!(idem::request_key(None, &bare), Ok(None), "no key, no dedup");
    assert_eq!(idem::request_key(None, &body), Ok(Some("k1")));
    assert_eq!(idem::request_key(Some("h-7"), &bare), Ok(Some("h-7")));
    assert_eq!(
        idem::request_key(Some("\"h-7\""), &bare),
        Ok(Some("h-7")),
        "the draft's quoted form"
    );
    assert_eq!(idem::request_key(Some("k1"), &body), Ok(Some("k1")));
    assert_eq!(
        idem::request_key(Some("k2"), &body),
        Err(idem::KeyError::Conflict)
    );
    for bad in ["", "has space", &"x".repeat(256), "caf\u{e9}"] {
        assert_eq!(
            idem::request_key(Some(bad), &bare),
            Err(idem::KeyError::Invalid),
            "{bad:?}"
        );
    }
    // Through the core: the seed without a key is forwarded with no fingerprint at all.
    let c = cfg();
    let mut v: Value = serde_json::from_str(SEED).unwrap();
    v.as_object_mut().unwrap().remove("idempotency_key");
    assert_eq!(forward(update(&c, &v.to_string())).idempotency, None);
    let keyed = forward(update(&c, SEED)).idempotency.unwrap();
    assert_eq!(
        keyed.fingerprint,
        idem::fingerprint(
            "omnichannel-app-prod",
            "POST",
            "queue-update",
            "req_8f3a2c9d1e4b"
        )
    );
}

#[test]
fn idempotency_fingerprints_claims_replays_reuse_and_bounds() {
    let a = json!({"x": 1, "y": [1, 2]});
    let b: Value = serde_json::from_str(r#"{"y": [1, 2], "x": 1}"#).unwrap();
    assert_eq!(
        idem::body_digest(&a),
        idem::body_digest(&b),
        "canonical JSON"
    );
    let fp = idem::fingerprint("app", "POST", "queue-update", "k1");
    assert_ne!(fp, idem::fingerprint("other", "POST", "queue-update", "k1"));
    assert_ne!(fp, idem::fingerprint("app", "POST", "queue-update", "k2"));
    assert_ne!(idem::key("app", &fp, 64), idem::key("other", &fp, 64));
    let (da, dc) = (idem::body_digest(&a), idem::body_digest(&json!({"x": 2})));
    let mut store = FakeStore::new(CasDialect::Kong);
    let k = idem::key("app", &fp, 64);
    assert_eq!(
        idem::begin(&mut store, &k, &da, 0, 900_000).unwrap(),
        Begin::Claimed
    );
    assert_eq!(
        idem::begin(&mut store, &k, &da, 10, 900_000).unwrap(),
        Begin::InFlight
    );
    assert_eq!(
        idem::begin(&mut store, &k, &dc, 11, 900_000).unwrap(),
        Begin::Reused,
        "the key held by another body, in flight"
    );
    let stored = Stored {
        status: 200,
        content_type: "application/json".into(),
        body: "{\"ok\":true}".into(),
    };
    idem::finish(&mut store, &k, &da, stored.clone(), 20, 2, 1 << 20).unwrap();
    assert_eq!(
        idem::begin(&mut store, &k, &da, 30, 900_000).unwrap(),
        Begin::Replay(stored.clone())
    );
    assert_eq!(
        idem::begin(&mut store, &k, &dc, 31, 900_000).unwrap(),
        Begin::Reused,
        "a finished key reused for another body is refused, not replayed"
    );
    // After the TTL the fingerprint is fresh again.
    assert_eq!(
        idem::begin(&mut store, &k, &dc, 900_021, 900_000).unwrap(),
        Begin::Claimed
    );
    idem::abandon(&mut store, &k).unwrap();
    assert_eq!(
        idem::begin(&mut store, &k, &da, 900_030, 900_000).unwrap(),
        Begin::Claimed
    );
    // Bounded count: a third entry evicts the oldest.
    for (i, key) in ["cxgate/idem/a/1", "cxgate/idem/a/2", "cxgate/idem/a/3"]
        .iter()
        .enumerate()
    {
        idem::begin(&mut store, key, &da, 1_000_000 + i as u64, 900_000).unwrap();
        idem::finish(
            &mut store,
            key,
            &da,
            stored.clone(),
            1_000_000 + i as u64,
            2,
            1 << 20,
        )
        .unwrap();
    }
    assert_eq!(
        idem::begin(&mut store, "cxgate/idem/a/1", &da, 1_000_010, 900_000).unwrap(),
        Begin::Claimed,
        "evicted"
    );
    assert!(matches!(
        idem::begin(&mut store, "cxgate/idem/a/3", &da, 1_000_010, 900_000).unwrap(),
        Begin::Replay(_)
    ));
}

#[test]
fn an_idempotency_entry_stamped_before_the_clock_stepped_back_lives_its_own_span() {
    let mut store = FakeStore::new(CasDialect::Envoy);
    let k = "cxgate/idem/app/step";
    assert_eq!(
        idem::begin(&mut store, k, "d", 1_000_000, 900_000).unwrap(),
        Begin::Claimed
    );
    // Ten minutes back: the claim's stamp is ahead; it is pulled to now and still in flight.
    assert_eq!(
        idem::begin(&mut store, k, "d", 400_000, 900_000).unwrap(),
        Begin::InFlight
    );
    // An abandoned claim lapses one in-flight span after that, not 10 minutes later.
    assert_eq!(
        idem::begin(&mut store, k, "d", 400_000 + idem::IN_FLIGHT_MS, 900_000).unwrap(),
        Begin::Claimed
    );
}

#[test]
fn the_idempotency_store_also_stays_under_its_byte_bound() {
    let mut store = FakeStore::new(CasDialect::Envoy);
    let stored = Stored {
        status: 200,
        content_type: "application/json".into(),
        body: "x".repeat(400),
    };
    // Room for 100 entries by count, but only ~2 by bytes (each entry is ~460 bytes).
    let keys: Vec<String> = (0..6).map(|i| format!("cxgate/idem/a/{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        idem::begin(&mut store, k, "d", i as u64, 900_000).unwrap();
        let held = idem::finish(&mut store, k, "d", stored.clone(), i as u64, 100, 1000).unwrap();
        // What the gauges report: within the byte bound once the first eviction ran.
        assert!(
            held.entries >= 1 && held.entries <= (i as u64 + 1),
            "{held:?}"
        );
        assert!(held.bytes <= 1000 || held.entries == 1, "{held:?}");
    }
    let live: Vec<bool> = keys
        .iter()
        .map(|k| {
            matches!(
                idem::begin(&mut store, k, "d", 10, 900_000).unwrap(),
                Begin::Replay(_)
            )
        })
        .collect();
    assert!(live.iter().filter(|l| **l).count() <= 2, "{live:?}");
    assert!(live[5], "the newest stays");
}

#[test]
fn bad_config_names_the_field() {
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"]["genesys"] = json!("nope");
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queue-update/platforms/genesys");
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"]["avaya"] = json!("genesys-seed");
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queue-update/platforms/avaya");
    let mut v = shipped();
    v["routes"]["queues-delete"] = json!({"platforms": {"genesys": "genesys-seed"}});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/routes/queues-delete", "{e}");
    let mut v = shipped();
    v["routes"]["genesys-read"] = json!({"platforms": {"genesys": "genesys-seed"}});
    let e = compile(v).unwrap_err();
    assert!(e.message.contains("exact path and one method"), "{e}");
    let mut v = shipped();
    v["profiles"]["genesys-seed"]["body"]["name"] = json!({"$from": "/x", "$frobnicate": 1});
    let e = compile(v).unwrap_err();
    assert_eq!(
        e.field,
        "/transform/profiles/genesys-seed/body/name/$frobnicate"
    );
    let mut v = shipped();
    v["schemas"]["queue-update"] = json!({"type": 12});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/schemas/queue-update");
    let mut v = shipped();
    v["profiles"]["genesys-seed"]["params"] = json!({});
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/profiles/genesys-seed/params");
}

/// HMAC-SHA256 as RFC 2104 defines it, written out over sha2 to check the cursor's tag
/// independently of the `hmac` crate.
fn rfc2104(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn a_cursor_is_hmac_sha256_signed_bound_to_its_consumer_and_expires() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use cxgate_transform::page::Refused;
    let key = b"a-cursor-key-of-32-characters-00";
    let c = Cursor::first("queues-list", "genesys", "app-a", 2, 25);
    let text = c.encode(key, 1_000);
    let (payload, tag) = text.split_once('.').unwrap();
    let payload = URL_SAFE_NO_PAD.decode(payload).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(tag).unwrap(), rfc2104(key, &payload));
    let back = Cursor::decode(&text, key, "app-a", 999).unwrap();
    assert_eq!((back.next, back.exp_ms), (2, 1_000));
    assert_eq!(
        Cursor::decode(&text, key, "app-b", 999),
        Err(Refused::Invalid)
    );
    assert_eq!(
        Cursor::decode(&text, key, "app-a", 1_000),
        Err(Refused::Expired)
    );
    assert_eq!(
        Cursor::decode(&text, b"another-key-another-key-another!", "app-a", 999),
        Err(Refused::Invalid)
    );
}
