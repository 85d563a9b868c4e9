//! Pure tests of the token filter core (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fakes::{FakeClock, FakeEntropy, FakeHeaders, FakeStore};
use cxgate_kit::host::{CasDialect, Headers};
use cxgate_kit::problem::LocalReply;
use cxgate_kit::sync::{read_token, write_token};
use cxgate_state::TokenState;
use cxgate_token::core::{
    Answer, Config, Decision, RequestInfo, Sent, on_request, on_response, on_wait_answer, wait_call,
};

fn cfg() -> Config {
    Config::parse(
        br#"{"version":1,"sync":{"upstream":"sidecar"},"routes":[
            {"prefix":"/genesys/","platform":"genesys"},
            {"prefix":"/cxone/","platform":"cxone"},
            {"prefix":"/llm/","platform":"llm","header":"api-key","scheme":""}]}"#,
    )
    .unwrap()
}

/// The index of a platform's route in `cfg()`.
fn r(platform: &str) -> usize {
    cfg()
        .routes
        .iter()
        .position(|r| r.platform == platform)
        .unwrap()
}

struct W {
    clock: FakeClock,
    store: FakeStore,
    entropy: FakeEntropy,
}

fn world() -> W {
    W {
        clock: FakeClock::at(1_000_000),
        store: FakeStore::new(CasDialect::Envoy),
        entropy: FakeEntropy::seeded(3),
    }
}

impl W {
    fn token(&mut self, platform: &str, name: &str, issued: u64, life_s: u64, generation: u64) {
        let t = TokenState::new(name.into(), "bearer".into(), issued, life_s, generation);
        write_token(&mut self.store, platform, &t, 1, issued).unwrap();
    }
    fn request(&mut self, headers: &mut FakeHeaders) -> Decision {
        let mut info = RequestInfo::default();
        on_request(
            &cfg(),
            headers,
            &self.store,
            &self.clock,
            &mut self.entropy,
            &mut info,
        )
        .unwrap()
    }
}

#[test]
fn injects_per_route_and_overwrites_the_consumers_credential() {
    let mut w = world();
    w.token("genesys", "g-tok", 1_000_000, 300, 1);
    w.token("cxone", "c-tok", 1_000_000, 300, 1);
    let mut h = FakeHeaders::from(&[
        (":path", "/genesys/api/v2/users"),
        ("Authorization", "Bearer consumer-own"),
    ]);
    assert_eq!(
        w.request(&mut h),
        Decision::Injected {
            route: r("genesys"),
            stale: false,
            generation: 1,
        }
    );
    assert_eq!(h.all("authorization"), vec!["Bearer g-tok"]);
    let mut h = FakeHeaders::from(&[
        (":path", "/cxone/skills"),
        ("authorization", "Basic Zm9vOmJhcg=="),
    ]);
    w.request(&mut h);
    assert_eq!(h.all("authorization"), vec!["Bearer c-tok"]);
}

#[test]
fn api_key_routes_use_their_own_header_and_strip_authorization() {
    let mut w = world();
    w.token("llm", "sk-1", 1_000_000, 3600, 1);
    let mut h = FakeHeaders::from(&[
        (":path", "/llm/v1/chat/completions"),
        ("authorization", "Bearer mine"),
        ("api-key", "mine"),
    ]);
    w.request(&mut h);
    assert_eq!(h.all("api-key"), vec!["sk-1"]);
    assert!(h.all("authorization").is_empty());
}

#[test]
fn unrouted_requests_are_left_alone() {
    let mut w = world();
    let mut h = FakeHeaders::from(&[
        (":path", "/gateway/v1/whoami"),
        ("authorization", "Bearer x"),
    ]);
    assert_eq!(w.request(&mut h), Decision::Pass);
    assert_eq!(h.all("authorization"), vec!["Bearer x"]);
}

#[test]
fn a_stale_token_is_served_and_an_expired_one_never() {
    let mut w = world();
    w.token("genesys", "g-1", 1_000_000, 100, 4);
    w.clock.advance(94_999);
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x")]);
    assert_eq!(
        w.request(&mut h),
        Decision::Injected {
            route: r("genesys"),
            stale: false,
            generation: 4,
        }
    );
    w.clock.advance(1);
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x")]);
    assert_eq!(
        w.request(&mut h),
        Decision::Injected {
            route: r("genesys"),
            stale: true,
            generation: 4,
        }
    );
    w.clock.advance(5_000);
    let mut h = FakeHeaders::from(&[
        (":path", "/genesys/x"),
        ("authorization", "Bearer consumer"),
    ]);
    assert_eq!(
        w.request(&mut h),
        Decision::Wait {
            route: r("genesys"),
            after: 4,
            rejected: false,
        }
    );
    assert!(
        h.all("authorization").is_empty(),
        "nothing, not the consumer's and not the expired one"
    );
}

#[test]
fn no_token_waits_and_the_answer_is_shared_with_every_worker() {
    let mut w = world();
    let mut h = FakeHeaders::from(&[(":path", "/cxone/x")]);
    assert_eq!(
        w.request(&mut h),
        Decision::Wait {
            route: r("cxone"),
            after: 0,
            rejected: false,
        }
    );
    let call = wait_call(&cfg(), "cxone", 0, false);
    assert_eq!(
        (call.method, call.path.as_str(), call.body),
        ("GET", "/v1/tokens/cxone?after=0&wait_ms=2000", None)
    );
    let fresh = TokenState::new("c-new".into(), "Bearer".into(), 1_000_000, 3600, 9);
    let body = serde_json::to_vec(&fresh).unwrap();
    let mut store = w.store.clone();
    let out = on_wait_answer(
        &cfg(),
        r("cxone"),
        &mut h,
        &mut store,
        &w.clock,
        Some(200),
        &body,
    )
    .unwrap();
    assert!(out.is_ok());
    assert_eq!(h.all("authorization"), vec!["Bearer c-new"]);
    assert_eq!(
        read_token(&w.store, "cxone").unwrap().unwrap().0.generation,
        9
    );
}

#[test]
fn a_wait_that_ends_without_a_token_is_a_503_problem_with_retry_after() {
    let w = world();
    for (status, body) in [
        (None, &b""[..]),
        (Some(503), &b"{}"[..]),
        (Some(200), &b"garbage"[..]),
    ] {
        let mut h = FakeHeaders::from(&[(":path", "/genesys/x"), ("x-gateway-trace-id", "t-9")]);
        let mut store = w.store.clone();
        let reply = on_wait_answer(
            &cfg(),
            r("genesys"),
            &mut h,
            &mut store,
            &w.clock,
            status,
            body,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(reply.status, 503);
        assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
        let p: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(p["type"], "urn:cxgate:problem:token-unavailable");
        assert_eq!(p["trace_id"], "t-9");
    }
    // An already expired token in the answer is refused too.
    w.clock.advance(10_000_000);
    let old = serde_json::to_vec(&TokenState::new("old".into(), "b".into(), 0, 1, 1)).unwrap();
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x")]);
    let mut store = w.store.clone();
    assert!(
        on_wait_answer(
            &cfg(),
            r("genesys"),
            &mut h,
            &mut store,
            &w.clock,
            Some(200),
            &old
        )
        .unwrap()
        .is_err()
    );
}

#[test]
fn trace_id_and_json_content_type_are_ensured() {
    let mut w = world();
    w.token("genesys", "g", 1_000_000, 300, 1);
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x"), ("content-length", "12")]);
    w.request(&mut h);
    assert_eq!(h.get("x-gateway-trace-id").unwrap().unwrap().len(), 32);
    assert_eq!(h.all("content-type"), vec!["application/json"]);
    let mut h = FakeHeaders::from(&[
        (":path", "/genesys/x"),
        ("x-gateway-trace-id", "mine-1"),
        ("content-type", "application/json; charset=utf-8"),
    ]);
    w.request(&mut h);
    assert_eq!(h.all("x-gateway-trace-id"), vec!["mine-1"]);
    assert_eq!(
        h.all("content-type"),
        vec!["application/json; charset=utf-8"]
    );
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x")]);
    w.request(&mut h);
    assert!(h.all("content-type").is_empty(), "no body, no content type");
}

#[test]
fn the_most_specific_route_wins_and_bad_config_names_the_field() {
    let c = Config::parse(br#"{"sync":{"upstream":"s"},"routes":[{"prefix":"/g/","platform":"genesys"},{"prefix":"/g/llm/","platform":"llm"}]}"#).unwrap();
    assert_eq!(c.route_for("/g/llm/v1").unwrap().platform, "llm");
    assert_eq!(c.route_for("/g/x").unwrap().platform, "genesys");
    for (doc, field) in [
        (r#"{"sync":{"upstream":"s"},"routes":[]}"#, "/routes"),
        (
            r#"{"sync":{"upstream":"s"},"routes":[{"prefix":"g","platform":"genesys"}]}"#,
            "/routes/0/prefix",
        ),
        (
            r#"{"sync":{"upstream":"s"},"routes":[{"prefix":"/g","platform":"avaya"}]}"#,
            "/routes/0/platform",
        ),
        (
            r#"{"sync":{"upstream":"s"},"routes":[{"prefix":"/g","platform":"genesys","token":"x"}]}"#,
            "/routes/0/token",
        ),
        (
            r#"{"sync":{"upstream":"s"},"routes":[{"prefix":"/g","platform":"genesys"}],"wait_ms":0}"#,
            "/wait_ms",
        ),
        (r#"{"routes":[{"prefix":"/g","platform":"genesys"}]}"#, ""),
    ] {
        let e = Config::parse(doc.as_bytes()).unwrap_err();
        assert!(
            e.field == field || (field.is_empty() && e.message.contains("sync")),
            "{doc}: {e}"
        );
    }
}

fn replay_cfg() -> Config {
    Config::parse(
        br#"{"sync":{"upstream":"sidecar"},"on_unauthorized":"replay","routes":[
            {"prefix":"/genesys/","platform":"genesys"}]}"#,
    )
    .unwrap()
}

fn sent(generation: u64, attempt: u32) -> Sent {
    Sent {
        route: 0,
        generation,
        attempt,
    }
}

#[test]
fn a_401_marks_the_token_rejected_once_and_the_replay_asks_the_sidecar_for_a_fresh_one() {
    let mut w = world();
    w.token("genesys", "g-old", 1_000_000, 300, 7);
    let c = replay_cfg();
    let mut store = w.store.clone();
    assert_eq!(
        on_response(&c, &sent(7, 1), 200, "/genesys/x", None, &mut store, 1),
        Answer::Accepted
    );
    // Two requests in flight with generation 7 both get 401: one marks it, both replay.
    let first = on_response(
        &c,
        &sent(7, 1),
        401,
        "/genesys/api/v2/users?x=1",
        Some("t-1"),
        &mut store,
        1_000_100,
    );
    let second = on_response(&c, &sent(7, 1), 401, "/genesys/y", None, &mut store, 1);
    let Answer::Replay { invalidated, event } = first else {
        panic!("{first:?}")
    };
    assert!(invalidated);
    assert!(matches!(
        second,
        Answer::Replay {
            invalidated: false,
            ..
        }
    ));
    let line = event.render();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "TOKEN_DRIFT_RECOVERY");
    assert_eq!(v["platform"], "genesys");
    assert_eq!(v["route"], "/genesys/");
    assert_eq!(v["path"], "/genesys/api/v2/users");
    assert_eq!(v["trace_id"], "t-1");
    assert_eq!(v["action"], "replay");
    assert!(!line.contains("g-old"), "{line}");
    // The replay (same worker or any other) finds the marker and tells the sidecar.
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x"), ("authorization", "Bearer g-old")]);
    let mut info = RequestInfo::default();
    let d = on_request(&c, &mut h, &w.store, &w.clock, &mut w.entropy, &mut info).unwrap();
    assert_eq!(info.path, "/genesys/x");
    assert_eq!(info.trace_id.len(), 32, "generated: {info:?}");
    assert_eq!(
        d,
        Decision::Wait {
            route: 0,
            after: 7,
            rejected: true
        }
    );
    assert!(h.all("authorization").is_empty());
    let call = wait_call(&c, "genesys", 7, true);
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/v1/tokens/genesys/invalidate?wait_ms=2000");
    assert_eq!(call.body.as_deref(), Some(&br#"{"generation":7}"#[..]));
    // The fresh token is served again by everyone.
    w.token("genesys", "g-new", 1_000_000, 300, 8);
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x")]);
    w.request(&mut h);
    assert_eq!(h.all("authorization"), vec!["Bearer g-new"]);
}

#[test]
fn a_401_to_the_replay_goes_back_as_it_is_and_keeps_the_fresh_token() {
    let mut w = world();
    w.token("genesys", "g-8", 1_000_000, 300, 8);
    let mut store = w.store.clone();
    let a = on_response(
        &replay_cfg(),
        &sent(8, 2),
        401,
        "/genesys/x",
        None,
        &mut store,
        1,
    );
    let Answer::ReplayFailed { event } = a else {
        panic!("{a:?}")
    };
    assert!(event.render().contains("TOKEN_REPLAY_FAILED"));
    let (t, _) = read_token(&w.store, "genesys").unwrap().unwrap();
    assert!(
        !t.rejected,
        "a consumer's own bad request must not churn tokens"
    );
}

fn problem_of(reply: &LocalReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn where_the_host_cannot_replay_a_401_becomes_a_503_with_retry_after_and_the_token_is_rejected() {
    let mut w = world();
    w.token("genesys", "g-3", 1_000_000, 300, 3);
    let mut store = w.store.clone();
    // retry-later is the default: it never leaks a 401, whatever the host does.
    let a = on_response(
        &cfg(),
        &sent(3, 1),
        401,
        "/genesys/x",
        Some("t-2"),
        &mut store,
        5,
    );
    let Answer::RetryLater {
        invalidated,
        event,
        reply,
    } = a
    else {
        panic!("{a:?}")
    };
    assert!(invalidated);
    assert!(event.render().contains(r#""action":"retry-later""#));
    assert_eq!(reply.status, 503);
    assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
    let p = problem_of(&reply);
    assert_eq!(p["type"], "urn:cxgate:problem:token-rejected");
    assert_eq!(p["trace_id"], "t-2");
    assert!(read_token(&w.store, "genesys").unwrap().unwrap().0.rejected);
}

#[test]
fn on_unauthorized_is_checked_at_configure_time() {
    let e = Config::parse(
        br#"{"sync":{"upstream":"s"},"on_unauthorized":"ignore","routes":[{"prefix":"/g","platform":"genesys"}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field, "/on_unauthorized");
}
