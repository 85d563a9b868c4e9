//! Pure tests of the token filter core (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fakes::{FakeClock, FakeEntropy, FakeHeaders, FakeStore};
use cxgate_kit::host::Clock;
use cxgate_kit::host::{CasDialect, Headers};
use cxgate_kit::problem::LocalReply;
use cxgate_kit::sync::SyncConfig;
use cxgate_kit::sync::{read_token, write_token};
use cxgate_model::Model;
use cxgate_state::TokenState;
use cxgate_token::core::{
    Answer, Config, Decision, RequestInfo, Sent, TokenCache, on_request, on_response,
    on_wait_answer, wait_call, waits_too_long,
};
use serde_json::{Value, json};

fn model() -> Model {
    Model::compile(json!({"routes": [{"id": "all", "prefix": "/"}]})).unwrap()
}

fn sync() -> SyncConfig {
    serde_json::from_value(json!({"upstream": "sidecar"})).unwrap()
}

fn compile(section: Value) -> Result<Config, cxgate_kit::ConfigError> {
    Config::compile(section, &model(), Some(&sync()))
}

fn cfg() -> Config {
    compile(json!({"platforms": {"llm": {"header": "api-key", "scheme": ""}}})).unwrap()
}

/// What the token stage does for a request whose path names its platform (`/genesys/...`), as
/// the request model resolves it: the worker's cached token, then the core.
fn on_path(
    c: &Config,
    h: &mut FakeHeaders,
    store: &FakeStore,
    clock: &FakeClock,
    entropy: &mut FakeEntropy,
    info: &mut RequestInfo,
) -> Decision {
    let path = h.get(":path").unwrap().unwrap_or_default();
    let platform = path.trim_start_matches('/').split('/').next().unwrap();
    let route = c.route_index(platform).unwrap();
    let token = TokenCache::default().read(store, platform).unwrap();
    on_request(c, route, h, token.as_ref(), clock.now_ms(), entropy, info).unwrap()
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
        on_path(
            &cfg(),
            headers,
            &self.store,
            &self.clock,
            &mut self.entropy,
            &mut info,
        )
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
fn every_model_platform_gets_a_credential_route_and_bad_config_names_the_field() {
    let c = cfg();
    let platforms: Vec<&str> = c.routes.iter().map(|r| r.platform.as_str()).collect();
    assert_eq!(platforms, ["genesys", "cxone", "llm"]);
    assert_eq!(c.routes[2].header, "api-key");
    assert_eq!(c.routes[0].header, "authorization");
    for (section, field) in [
        (
            json!({"platforms": {"avaya": {}}}),
            "/token/platforms/avaya",
        ),
        (
            json!({"platforms": {"genesys": {"header": ":path"}}}),
            "/token/platforms/genesys/header",
        ),
        (
            json!({"platforms": {"genesys": {"token": "x"}}}),
            "/token/platforms/genesys/token",
        ),
        (json!({"wait_ms": 0}), "/token/wait_ms"),
    ] {
        let e = compile(section.clone()).unwrap_err();
        assert_eq!(e.field, field, "{section}: {e}");
    }
    let e = Config::compile(json!({}), &model(), None).unwrap_err();
    assert_eq!(e.field, "/sync", "{e}");
}

#[test]
fn the_worker_decodes_a_token_once_per_shared_data_version() {
    let mut w = world();
    w.token("genesys", "g-1", 1_000_000, 300, 1);
    let mut cache = TokenCache::default();
    let a = cache.read(&w.store, "genesys").unwrap().unwrap();
    // Corrupt the payload but keep the CAS: the cached decode is what a request sees.
    let b = cache.read(&w.store, "genesys").unwrap().unwrap();
    assert_eq!(a, b);
    w.token("genesys", "g-2", 1_000_000, 300, 2);
    let c = cache.read(&w.store, "genesys").unwrap().unwrap();
    assert_eq!(
        (c.access_token.as_str(), c.generation),
        ("g-2", 2),
        "a new version is decoded"
    );
    assert!(cache.read(&w.store, "cxone").unwrap().is_none());
}

fn replay_cfg() -> Config {
    compile(json!({"on_unauthorized": "replay"})).unwrap()
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
    assert_eq!(v["path"], "/genesys/api/v2/users");
    assert_eq!(v["trace_id"], "t-1");
    assert_eq!(v["action"], "replay");
    assert!(!line.contains("g-old"), "{line}");
    // The replay (same worker or any other) finds the marker and tells the sidecar.
    let mut h = FakeHeaders::from(&[(":path", "/genesys/x"), ("authorization", "Bearer g-old")]);
    let mut info = RequestInfo::default();
    let d = on_path(&c, &mut h, &w.store, &w.clock, &mut w.entropy, &mut info);
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
    let e = compile(json!({"on_unauthorized": "ignore"})).unwrap_err();
    assert_eq!(e.field, "/token/on_unauthorized");
}

#[test]
fn a_retry_after_longer_than_the_bound_is_not_waited_out_by_a_retry() {
    assert!(
        !waits_too_long(None, 4),
        "no Retry-After: the route's backoff"
    );
    assert!(!waits_too_long(Some(""), 4));
    assert!(
        !waits_too_long(Some("4"), 4),
        "exactly the bound still fits"
    );
    assert!(!waits_too_long(Some(" 0 "), 0));
    assert!(waits_too_long(Some("5"), 4));
    assert!(waits_too_long(Some("30"), 4));
    assert!(waits_too_long(Some("1"), 0));
    assert!(
        waits_too_long(Some("Wed, 21 Oct 2026 07:28:00 GMT"), 4),
        "a date is not measured: never retried early"
    );
    assert!(waits_too_long(Some("-1"), 4), "garbage is not a short wait");
}

#[test]
fn anthropic_gets_its_raw_key_and_the_version_header_only_when_missing() {
    let model = Model::compile(json!({"platforms": ["anthropic"],
        "routes": [{"id": "all", "prefix": "/", "platform": "anthropic"}]}))
    .unwrap();
    let section = json!({"platforms": {"anthropic": {"header": "x-api-key", "scheme": "",
        "headers": {"anthropic-version": "2023-06-01"}}}});
    let c = Config::compile(section, &model, Some(&sync())).unwrap();
    let mut w = world();
    w.token("anthropic", "sk-ant", 1_000_000, 300, 1);
    let token = TokenCache::default().read(&w.store, "anthropic").unwrap();
    for (sent, want) in [(None, "2023-06-01"), (Some("2026-10-21"), "2026-10-21")] {
        let mut h = FakeHeaders::from(&[(":path", "/v1/messages"), ("x-api-key", "consumer-key")]);
        if let Some(v) = sent {
            h.set("anthropic-version", v).unwrap();
        }
        let mut info = RequestInfo::default();
        let d = on_request(
            &c,
            0,
            &mut h,
            token.as_ref(),
            w.clock.now_ms(),
            &mut w.entropy,
            &mut info,
        );
        assert!(matches!(d, Ok(Decision::Injected { .. })), "{d:?}");
        assert_eq!(h.all("x-api-key"), vec!["sk-ant"]);
        assert_eq!(h.all("anthropic-version"), vec![want]);
    }
    // A required header may not be the credential's own, nor a pseudo-header.
    let bad =
        json!({"platforms": {"anthropic": {"header": "x-api-key", "headers": {"X-Api-Key": "x"}}}});
    let e = Config::compile(bad, &model, Some(&sync())).unwrap_err();
    assert_eq!(e.field, "/token/platforms/anthropic/headers/x-api-key");
}
