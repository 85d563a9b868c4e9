//! The shared state format (native and wasmtime).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use cxgate_state::{Freshness, IdMap, Snapshot, TokenState, keys};

#[test]
fn token_soft_and_hard_expiry_follow_the_received_lifetime() {
    let t = TokenState::new("tok".into(), "bearer".into(), 10_000, 300, 1);
    assert_eq!(t.expires_ms, 310_000);
    assert_eq!(t.stale_ms, 295_000, "95 % of 300 s");
    assert_eq!(t.freshness(294_999), Freshness::Fresh);
    assert_eq!(t.freshness(295_000), Freshness::Stale);
    assert_eq!(t.freshness(309_999), Freshness::Stale);
    assert_eq!(t.freshness(310_000), Freshness::Expired);
}

#[test]
fn a_rejected_marker_keeps_the_generation_drops_the_secret_and_is_never_served() {
    let t = TokenState::new("tok".into(), "bearer".into(), 10_000, 300, 4);
    let m = t.rejected_marker();
    assert!(m.rejected);
    assert_eq!(m.generation, 4);
    assert!(m.access_token.is_empty());
    assert_eq!(m.freshness(10_001), Freshness::Expired);
    let json = serde_json::to_string(&m).unwrap();
    assert!(!json.contains("tok\""), "{json}");
    let back: TokenState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    // Tokens from the sidecar never carry the flag on the wire.
    assert!(!serde_json::to_string(&t).unwrap().contains("rejected"));
}

#[test]
fn snapshot_round_trips_as_json() {
    let mut s = Snapshot {
        format: cxgate_state::FORMAT,
        version: 7,
        ..Snapshot::default()
    };
    s.tokens.insert(
        "genesys".into(),
        TokenState::new("t".into(), "bearer".into(), 1, 60, 3),
    );
    let mut m = IdMap {
        fetched_ms: 5,
        ..IdMap::default()
    };
    m.entries.insert("Premium_Support".into(), "q-1".into());
    s.maps.insert("genesys/queues".into(), m);
    let text = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Snapshot>(&text).unwrap(), s);
}

#[test]
fn keys_follow_the_namespace_contract() {
    assert_eq!(keys::token("cxone"), "cxgate/token/cxone");
    assert_eq!(keys::map("genesys/queues"), "cxgate/map/genesys/queues");
    assert!(keys::SYNC.starts_with("cxgate/") && keys::SYNC_LEASE.starts_with("cxgate/lease/"));
}
