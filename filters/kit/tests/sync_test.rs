//! The state-sync client over the fakes: one poller among workers, takeover, applying answers,
//! staleness. (Native and wasmtime.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::Clock;
use cxgate_kit::fakes::{FakeCallout, FakeClock, FakeStore};
use cxgate_kit::host::CasDialect;
use cxgate_kit::sync::{
    Applied, SyncClient, SyncConfig, SyncError, Tick, is_stale, read_map, read_status, read_token,
    reject_token,
};
use cxgate_state::{IdMap, Snapshot, TokenState};

fn config() -> SyncConfig {
    serde_json::from_str(
        r#"{"upstream":"sidecar","poll_wait_ms":1000,"lease_ms":3000,"stale_after_ms":10000}"#,
    )
    .unwrap()
}

fn snapshot(version: u64, generation: u64) -> Vec<u8> {
    let mut s = Snapshot {
        format: 1,
        version,
        ..Snapshot::default()
    };
    s.tokens.insert(
        "genesys".into(),
        TokenState::new(
            format!("tok-{generation}"),
            "bearer".into(),
            1_000,
            300,
            generation,
        ),
    );
    let mut m = IdMap {
        fetched_ms: 900,
        ..IdMap::default()
    };
    m.entries.insert("Premium_Support".into(), "q-1".into());
    s.maps.insert("genesys/queues".into(), m);
    serde_json::to_vec(&s).unwrap()
}

struct World {
    clock: FakeClock,
    store: FakeStore,
    clients: Vec<SyncClient>,
    callouts: Vec<FakeCallout>,
}

fn world(workers: usize, dialect: CasDialect) -> World {
    World {
        clock: FakeClock::at(1_000_000),
        store: FakeStore::new(dialect),
        clients: (0..workers)
            .map(|i| SyncClient::new(config(), "k".repeat(20), 100 + i as u64))
            .collect(),
        callouts: vec![FakeCallout::default(); workers],
    }
}

impl World {
    fn tick(&mut self, w: usize) -> Tick {
        let mut store = self.store.clone();
        self.clients[w]
            .on_tick(&mut store, &self.clock, &mut self.callouts[w])
            .unwrap()
    }
    fn answer(&mut self, w: usize, status: Option<u16>, body: &[u8]) -> Result<Applied, SyncError> {
        let mut store = self.store.clone();
        self.clients[w].on_response(&mut store, &self.clock, status, body)
    }
}

#[test]
fn exactly_one_worker_polls_and_keeps_the_lease_while_polling() {
    for dialect in [CasDialect::Envoy, CasDialect::Kong] {
        let mut w = world(4, dialect);
        let ticks: Vec<Tick> = (0..4).map(|i| w.tick(i)).collect();
        assert!(matches!(ticks[0], Tick::Sent(_)));
        assert!(ticks[1..].iter().all(|t| *t == Tick::Follower), "{ticks:?}");
        // Within the call's timeout (poll 1 s + 5 s) the open poll is kept, not re-sent.
        for _ in 0..6 {
            w.clock.advance(1_000);
            let ticks: Vec<Tick> = (0..4).map(|i| w.tick(i)).collect();
            assert_eq!(
                ticks,
                vec![
                    Tick::Polling,
                    Tick::Follower,
                    Tick::Follower,
                    Tick::Follower
                ]
            );
        }
        let call = &w.callouts[0].calls[0];
        assert_eq!(call.path, "/v1/state?since=0&wait_ms=1000");
        assert!(
            call.headers
                .iter()
                .any(|(k, v)| k == "x-cxgate-sidecar-key" && v.len() == 20)
        );
        assert!(w.callouts[1..].iter().all(|c| c.calls.is_empty()));
    }
}

#[test]
fn another_worker_takes_over_within_one_lease_period() {
    let mut w = world(4, CasDialect::Envoy);
    w.tick(0);
    // Worker 0 dies: it never ticks again.
    let mut took_over_at = None;
    for step in 1..=5 {
        w.clock.advance(1_000);
        for i in 1..4 {
            if let Tick::Sent(_) = w.tick(i) {
                took_over_at.get_or_insert((step, i));
            }
        }
    }
    let (step, _) = took_over_at.expect("takeover");
    assert_eq!(step, 3, "lease of 3 s taken at t=0 lapses at t=3 s");
}

#[test]
fn an_answer_is_visible_to_every_worker_and_the_next_poll_asks_for_newer() {
    let mut w = world(4, CasDialect::Kong);
    w.tick(0);
    assert_eq!(
        w.answer(0, Some(200), &snapshot(42, 7)).unwrap(),
        Applied::Updated(42)
    );
    for _ in 0..4 {
        let (token, stamp) = read_token(&w.store, "genesys").unwrap().unwrap();
        assert_eq!(token.access_token, "tok-7");
        assert_eq!((stamp.version, stamp.written_ms), (42, 1_000_000));
        assert_eq!(
            read_map(&w.store, "genesys/queues")
                .unwrap()
                .unwrap()
                .entries["Premium_Support"],
            "q-1"
        );
    }
    let status = read_status(&w.store).unwrap();
    assert_eq!(
        (status.version, status.synced_ms, status.failures),
        (42, 1_000_000, 0)
    );
    w.clock.advance(1_000);
    assert!(matches!(w.tick(0), Tick::Sent(_)));
    assert_eq!(
        w.callouts[0].calls[1].path,
        "/v1/state?since=42&wait_ms=1000"
    );
}

#[test]
fn an_older_token_never_replaces_a_newer_one() {
    let mut w = world(1, CasDialect::Envoy);
    w.tick(0);
    w.answer(0, Some(200), &snapshot(10, 9)).unwrap();
    w.tick(0);
    w.answer(0, Some(200), &snapshot(11, 8)).unwrap();
    assert_eq!(
        read_token(&w.store, "genesys")
            .unwrap()
            .unwrap()
            .0
            .generation,
        9
    );
}

#[test]
fn a_rejected_generation_is_marked_once_and_the_sync_cannot_restore_it() {
    for dialect in [CasDialect::Envoy, CasDialect::Kong] {
        let mut w = world(1, dialect);
        w.tick(0);
        w.answer(0, Some(200), &snapshot(10, 9)).unwrap();
        let mut store = w.store.clone();
        // A stale report (another generation) changes nothing.
        assert!(!reject_token(&mut store, "genesys", 8, 2_000).unwrap());
        // The first report of generation 9 wins; the next ones find it already rejected.
        store.race_next_writes(1);
        assert!(reject_token(&mut store, "genesys", 9, 2_000).unwrap());
        assert!(!reject_token(&mut store, "genesys", 9, 2_000).unwrap());
        let (t, _) = read_token(&w.store, "genesys").unwrap().unwrap();
        assert!(t.rejected && t.access_token.is_empty() && t.generation == 9);
        // A snapshot still carrying generation 9 does not bring the token back ...
        w.tick(0);
        w.answer(0, Some(200), &snapshot(11, 9)).unwrap();
        assert!(read_token(&w.store, "genesys").unwrap().unwrap().0.rejected);
        // ... the next generation replaces the marker.
        w.tick(0);
        w.answer(0, Some(200), &snapshot(12, 10)).unwrap();
        let (t, _) = read_token(&w.store, "genesys").unwrap().unwrap();
        assert_eq!(
            (t.rejected, t.generation, t.access_token.as_str()),
            (false, 10, "tok-10")
        );
    }
}

#[test]
fn a_failing_sidecar_leaves_the_last_state_and_marks_it_stale() {
    let mut w = world(2, CasDialect::Envoy);
    w.tick(0);
    w.answer(0, Some(200), &snapshot(5, 1)).unwrap();
    for (status, body) in [
        (None, &b""[..]),
        (Some(503), &b"down"[..]),
        (Some(200), &b"not json"[..]),
    ] {
        w.clock.advance(4_000);
        w.tick(0);
        assert!(w.answer(0, status, body).is_err());
    }
    let status = read_status(&w.store).unwrap();
    assert_eq!(status.failures, 3);
    assert!(is_stale(&status, w.clock.now_ms(), 10_000));
    assert_eq!(
        read_token(&w.store, "genesys")
            .unwrap()
            .unwrap()
            .0
            .access_token,
        "tok-1",
        "last state kept"
    );
    // The sidecar returns: a 304 clears the failure streak.
    w.tick(0);
    assert_eq!(w.answer(0, Some(304), b"").unwrap(), Applied::Unchanged);
    let status = read_status(&w.store).unwrap();
    assert_eq!(status.failures, 0);
    assert!(!is_stale(&status, w.clock.now_ms(), 10_000));
}

#[test]
fn a_refused_dispatch_counts_as_a_failure() {
    let mut w = world(1, CasDialect::Envoy);
    w.callouts[0].refuse = Some(cxgate_kit::HostError::BadArgument);
    let mut store = w.store.clone();
    let out = w.clients[0].on_tick(&mut store, &w.clock, &mut w.callouts[0]);
    assert!(matches!(out, Err(SyncError::Unreachable(_))));
    assert_eq!(read_status(&w.store).unwrap().failures, 1);
}

#[test]
fn a_poll_the_host_never_answers_is_sent_again_after_its_timeout() {
    let mut w = world(1, CasDialect::Envoy);
    assert!(matches!(w.tick(0), Tick::Sent(1)));
    w.clock.advance(6_999);
    assert_eq!(w.tick(0), Tick::Polling);
    w.clock.advance(1);
    assert!(matches!(w.tick(0), Tick::Sent(2)));
    assert!(!w.clients[0].owns(1) && w.clients[0].owns(2));
}
