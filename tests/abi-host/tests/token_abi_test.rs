//! Layer 2: the compiled token filter, 4 workers, virtual clock, both profiles.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_abi_host::fixtures::sidecar;
use cxgate_abi_host::{Action, CallReply, Host, Profile, filter_wasm};
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "abi-test-sidecar-key-000";

fn host(profile: Profile) -> Host {
    host_with(profile, json!({}))
}

/// `token` is the stage's section (merged over `wait_ms: 2000`).
fn host_with(profile: Profile, token: Value) -> Host {
    let mut section = json!({"wait_ms": 2000});
    for (k, v) in token.as_object().unwrap() {
        section[k] = v.clone();
    }
    let config = json!({
        "version": 2,
        "model": {"unmatched": "pass", "routes": [
            {"id": "genesys", "prefix": "/genesys/", "platform": "genesys"},
            {"id": "cxone", "prefix": "/cxone/", "platform": "cxone"},
            {"id": "llm", "prefix": "/llm/", "platform": "llm"}
        ]},
        "sync": {"upstream": sidecar(profile), "poll_wait_ms": 2000, "lease_ms": 3000},
        "token": section
    });
    Host::builder(filter_wasm("cxgate-token"))
        .profile(profile)
        .workers(4)
        .cluster("sidecar")
        .env("CXGATE_SIDECAR_KEY", KEY)
        .config(&config.to_string())
        .start()
        .unwrap()
}

/// A counter once the workers flushed their batches (on the tick).
fn metric(h: &mut Host, name: &str) -> Option<i64> {
    h.tick_all().unwrap();
    h.metric(name)
}

fn token_json(name: &str, issued_ms: u64, life_s: u64, generation: u64) -> Value {
    json!({"access_token": name, "token_type": "bearer", "issued_ms": issued_ms, "expires_ms": issued_ms + life_s * 1000,
           "stale_ms": issued_ms + life_s * 950, "generation": generation})
}

/// Delivers one sidecar snapshot through the sync poll.
fn sync_tokens(h: &mut Host, tokens: Value) {
    h.advance(Duration::from_millis(1000)).unwrap();
    let poll = h
        .pending_calls()
        .into_iter()
        .find(|c| c.path().starts_with("/v1/state"))
        .expect("a sync poll");
    let body = json!({"format": 1, "version": 10, "generated_ms": h.now_ms(), "tokens": tokens, "maps": {}, "health": {}});
    h.reply(poll.token, CallReply::json(200, &body.to_string()))
        .unwrap();
}

#[test]
fn injects_per_route_on_every_worker_and_never_leaks_the_consumers_credential() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let now = h.now_ms();
        sync_tokens(
            &mut h,
            json!({"genesys": token_json("g-tok", now, 300, 1), "cxone": token_json("c-tok", now, 3600, 1)}),
        );
        for w in 0..4 {
            for (path, expected) in [
                ("/genesys/api/v2/users", "Bearer g-tok"),
                ("/cxone/skills", "Bearer c-tok"),
            ] {
                let s = h.new_stream(w).unwrap();
                let a = h
                    .request_headers(
                        s,
                        &[(":path", path), ("authorization", "Bearer consumer-secret")],
                        true,
                    )
                    .unwrap();
                assert_eq!(a, Action::Continue);
                let auth: Vec<String> = h
                    .upstream_request_headers(s)
                    .unwrap()
                    .into_iter()
                    .filter(|(k, _)| k == "authorization")
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(auth, vec![expected.to_string()], "{profile:?} worker {w}");
            }
        }
        assert_eq!(metric(&mut h, "cxgate_token.injected.genesys"), Some(4));
        assert_eq!(metric(&mut h, "cxgate_token.injected.cxone"), Some(4));
        assert!(h.violations().is_empty(), "{:?}", h.violations());
    }
}

#[test]
fn a_stale_token_is_served_while_the_refresh_happens() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let now = h.now_ms();
        sync_tokens(&mut h, json!({"genesys": token_json("g-old", now, 100, 1)}));
        h.advance(Duration::from_millis(96_000)).unwrap();
        let s = h.new_stream(1).unwrap();
        assert_eq!(
            h.request_headers(s, &[(":path", "/genesys/x")], true)
                .unwrap(),
            Action::Continue
        );
        assert_eq!(
            h.request_header(s, "authorization").as_deref(),
            Some("Bearer g-old")
        );
        assert_eq!(metric(&mut h, "cxgate_token.stale_served"), Some(1));
    }
}

#[test]
fn no_valid_token_waits_for_the_sidecar_then_continues() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let s = h.new_stream(2).unwrap();
        assert_eq!(
            h.request_headers(s, &[(":path", "/cxone/skills")], true)
                .unwrap(),
            Action::Pause
        );
        let wait = h
            .pending_calls()
            .into_iter()
            .find(|c| c.path().starts_with("/v1/tokens"))
            .unwrap();
        assert_eq!(wait.path(), "/v1/tokens/cxone?after=0&wait_ms=2000");
        assert_eq!(wait.header("x-cxgate-sidecar-key"), Some(KEY));
        h.advance(Duration::from_millis(300)).unwrap();
        let now = h.now_ms();
        h.reply(
            wait.token,
            CallReply::json(200, &token_json("c-fresh", now, 3600, 5).to_string()),
        )
        .unwrap();
        assert_eq!(h.request_continued(s), 1);
        assert_eq!(
            h.request_header(s, "authorization").as_deref(),
            Some("Bearer c-fresh")
        );
        assert!(h.local_reply(s).is_none());
        assert_eq!(metric(&mut h, "cxgate_token.waited"), Some(1));
        assert_eq!(metric(&mut h, "cxgate_token.wait_ms_total"), Some(300));
        // The token fetched by one worker serves the others without another wait.
        let s2 = h.new_stream(0).unwrap();
        assert_eq!(
            h.request_headers(s2, &[(":path", "/cxone/skills")], true)
                .unwrap(),
            Action::Continue
        );
        assert_eq!(
            h.request_header(s2, "authorization").as_deref(),
            Some("Bearer c-fresh")
        );
    }
}

/// Worker 3 holds only an expired token (the sync is down): a request pauses and waits for a
/// newer one from the sidecar. Returns the host, the stream and the pending wait.
fn waiting_on_an_expired_token(
    profile: Profile,
) -> (Host, cxgate_abi_host::Stream, cxgate_abi_host::CallInfo) {
    let mut h = host(profile);
    let now = h.now_ms();
    sync_tokens(
        &mut h,
        json!({"genesys": token_json("g-expired", now, 5, 3)}),
    );
    h.advance(Duration::from_millis(10_000)).unwrap();
    for c in h.pending_calls() {
        h.fail(c.token).unwrap();
    }
    let s = h.new_stream(3).unwrap();
    let headers = [(":path", "/genesys/x"), ("x-gateway-trace-id", "t-1")];
    assert_eq!(h.request_headers(s, &headers, true).unwrap(), Action::Pause);
    let wait = h
        .pending_calls()
        .into_iter()
        .find(|c| c.path().starts_with("/v1/tokens"))
        .unwrap();
    (h, s, wait)
}

#[test]
fn a_wait_past_its_bound_is_a_503_problem_and_nothing_is_forwarded() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let (mut h, s, wait) = waiting_on_an_expired_token(profile);
        assert_eq!(
            wait.path(),
            "/v1/tokens/genesys?after=3&wait_ms=2000",
            "waits for a token newer than the expired one"
        );
        // The host times the call out (wait_ms + 500 ms); the sidecar never answered.
        h.advance_skipping(Duration::from_millis(2500), &[0, 1, 2])
            .unwrap();
        let reply = h.local_reply(s).expect("503 problem");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("1"));
        let body = reply.problem().unwrap();
        assert_eq!(body["type"], "urn:cxgate:problem:token-unavailable");
        assert_eq!(body["trace_id"], "t-1");
        assert_eq!(h.request_continued(s), 0, "nothing forwarded");
        assert_eq!(
            h.request_header(s, "authorization"),
            None,
            "the expired token is never sent"
        );
        assert_eq!(metric(&mut h, "cxgate_token.wait_timeouts"), Some(1));
        assert_eq!(h.logs_containing("TOKEN_WAIT_TIMEOUT").len(), 1);
    }
}

/// A wait whose dispatch fails at once (Kong answers a failed dispatch immediately) is logged
/// as a failure with the real wait, not as a timeout of "0 ms".
#[test]
fn a_wait_that_fails_at_once_is_logged_as_failed_not_timed_out() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let (mut h, s, wait) = waiting_on_an_expired_token(profile);
        h.advance_skipping(Duration::from_millis(3), &[0, 1, 2])
            .unwrap();
        h.fail(wait.token).unwrap();
        assert_eq!(h.local_reply(s).expect("503").status, 503);
        let failed = h.logs_containing("TOKEN_WAIT_FAILED");
        assert_eq!(failed.len(), 1, "{profile:?}");
        assert!(
            failed[0].message.contains("\"waited_ms\":3"),
            "{}",
            failed[0].message
        );
        assert!(h.logs_containing("TOKEN_WAIT_TIMEOUT").is_empty());
    }
}

#[test]
fn unrouted_paths_pass_untouched() {
    let mut h = host(Profile::Kong);
    let s = h.new_stream(0).unwrap();
    assert_eq!(
        h.request_headers(
            s,
            &[
                (":path", "/gateway/v1/whoami"),
                ("authorization", "Bearer x")
            ],
            false
        )
        .unwrap(),
        Action::Continue
    );
    assert_eq!(
        h.request_header(s, "authorization").as_deref(),
        Some("Bearer x")
    );
}

#[test]
fn bad_config_names_the_field() {
    let err = Host::builder(filter_wasm("cxgate-token"))
        .env("CXGATE_SIDECAR_KEY", KEY)
        .config(r#"{"model":{"routes":[{"id":"g","prefix":"/g/","platform":"genesys"}]},"sync":{"upstream":"sidecar"},"token":{"platforms":{"avaya":{}}}}"#)
        .start()
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains(r#"\"field\":\"/token/platforms/avaya\""#),
        "{err:#}"
    );
}

#[test]
fn the_request_path_reads_shared_data_and_never_writes_it() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host(profile);
        let now = h.now_ms();
        sync_tokens(&mut h, json!({"genesys": token_json("g-tok", now, 300, 1)}));
        h.reset_host_calls();
        let s = h.new_stream(0).unwrap();
        h.request_headers(s, &[(":path", "/genesys/x")], true)
            .unwrap();
        let calls = h.host_calls();
        assert_eq!(
            calls.get("proxy_set_shared_data"),
            None,
            "{profile:?}: {calls:?}"
        );
        assert_eq!(
            calls.get("proxy_get_shared_data"),
            Some(&1),
            "{profile:?}: one read, the token"
        );
        assert_eq!(
            calls.get("proxy_http_call"),
            None,
            "no network on the hot path"
        );
    }
}

fn auth(h: &Host, s: cxgate_abi_host::Stream) -> Option<String> {
    h.request_header(s, "authorization")
}

/// Envoy: the filter sits in the cluster's upstream filter chain and the route retries a 401
/// once; each attempt runs the filter again, numbered by `x-envoy-attempt-count`.
#[test]
fn envoy_drift_a_401_marks_the_token_and_the_single_replay_carries_the_fresh_one() {
    let mut h = host_with(Profile::Envoy, json!({"on_unauthorized": "replay"}));
    let now = h.now_ms();
    sync_tokens(&mut h, json!({"genesys": token_json("g-old", now, 300, 7)}));
    // Two requests in flight on two workers, both with generation 7, both refused.
    let a = h.new_stream(0).unwrap();
    let b = h.new_stream(3).unwrap();
    for s in [a, b] {
        h.request_headers(
            s,
            &[
                (":path", "/genesys/api/v2/users"),
                ("x-gateway-trace-id", "trace-a"),
                ("x-envoy-attempt-count", "1"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(auth(&h, s).as_deref(), Some("Bearer g-old"));
    }
    for s in [a, b] {
        let act = h.response_headers(s, &[(":status", "401")], false).unwrap();
        assert_eq!(
            act,
            Action::Continue,
            "the 401 goes on to the router, which replays"
        );
        assert!(h.local_reply(s).is_none());
        assert_eq!(
            h.response_header(s, "x-cxgate-token-replay").as_deref(),
            Some("1"),
            "the route replays a 401 only when the filter marks it"
        );
    }
    let drift = h.logs_containing("TOKEN_DRIFT_RECOVERY");
    assert_eq!(drift.len(), 2, "one event per refused request");
    let first: Value = serde_json::from_str(&drift[0].message).unwrap();
    assert_eq!(first["platform"], "genesys");
    assert_eq!(first["route"], "genesys", "the model route");
    assert_eq!(first["trace_id"], "trace-a");
    assert_eq!(first["invalidated"], true);
    let second: Value = serde_json::from_str(&drift[1].message).unwrap();
    assert_eq!(second["invalidated"], false, "only one request marks it");
    assert!(h.logs().iter().all(|l| !l.message.contains("g-old")));
    assert_eq!(metric(&mut h, "cxgate_token.drift_recoveries"), Some(2));
    // The replay of a: the marker makes it ask the sidecar (invalidate + wait in one call).
    let replay = h.new_stream(0).unwrap();
    let act = h
        .request_headers(
            replay,
            &[
                (":path", "/genesys/api/v2/users"),
                ("authorization", "Bearer g-old"),
                ("x-envoy-attempt-count", "2"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(act, Action::Pause);
    assert_eq!(auth(&h, replay), None, "never the rejected token");
    let call = h
        .pending_calls()
        .into_iter()
        .find(|c| c.path().contains("/invalidate"))
        .expect("the sidecar is told");
    assert_eq!(call.path(), "/v1/tokens/genesys/invalidate?wait_ms=2000");
    assert_eq!(call.header(":method"), Some("POST"));
    assert_eq!(call.header("x-cxgate-sidecar-key"), Some(KEY));
    assert_eq!(
        serde_json::from_slice::<Value>(&call.body).unwrap(),
        json!({"generation": 7})
    );
    let now = h.now_ms();
    h.reply(
        call.token,
        CallReply::json(200, &token_json("g-new", now, 300, 8).to_string()),
    )
    .unwrap();
    assert_eq!(h.request_continued(replay), 1);
    assert_eq!(auth(&h, replay).as_deref(), Some("Bearer g-new"));
    h.response_headers(replay, &[(":status", "200")], false)
        .unwrap();
    // Every worker now serves the fresh token without asking.
    for w in 0..4 {
        let s = h.new_stream(w).unwrap();
        assert_eq!(
            h.request_headers(s, &[(":path", "/genesys/x")], true)
                .unwrap(),
            Action::Continue
        );
        assert_eq!(auth(&h, s).as_deref(), Some("Bearer g-new"));
    }
    // A replay refused again goes back as it is, and the fresh token is kept.
    let again = h.new_stream(1).unwrap();
    h.request_headers(
        again,
        &[(":path", "/genesys/x"), ("x-envoy-attempt-count", "2")],
        true,
    )
    .unwrap();
    assert_eq!(
        h.response_headers(again, &[(":status", "401")], false)
            .unwrap(),
        Action::Continue
    );
    assert!(h.local_reply(again).is_none());
    assert_eq!(
        h.response_header(again, "x-cxgate-token-replay"),
        None,
        "a replay's 401 is never marked: not replayed twice"
    );
    assert_eq!(metric(&mut h, "cxgate_token.replays_failed"), Some(1));
    assert_eq!(h.logs_containing("TOKEN_REPLAY_FAILED").len(), 1);
    let s = h.new_stream(2).unwrap();
    h.request_headers(s, &[(":path", "/genesys/x")], true)
        .unwrap();
    assert_eq!(auth(&h, s).as_deref(), Some("Bearer g-new"));
    assert!(h.violations().is_empty(), "{:?}", h.violations());
}

/// Kong cannot replay (no pausing in response headers): the documented degradation is a 503
/// with Retry-After: 1, never the platform's 401. The same holds in Envoy with this mode.
#[test]
fn kong_drift_degrades_to_503_retry_after_and_the_next_request_gets_a_fresh_token() {
    for profile in [Profile::Kong, Profile::Envoy] {
        let mut h = host(profile);
        let now = h.now_ms();
        sync_tokens(&mut h, json!({"cxone": token_json("c-old", now, 3600, 4)}));
        let s = h.new_stream(1).unwrap();
        h.request_headers(
            s,
            &[
                (":path", "/cxone/skills"),
                ("x-gateway-trace-id", "trace-k"),
            ],
            true,
        )
        .unwrap();
        let act = h
            .response_headers(
                s,
                &[
                    (":status", "401"),
                    ("content-type", "application/json"),
                    ("content-length", "37"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(
            act,
            Action::Continue,
            "{profile:?}: never pauses in response headers"
        );
        // The platform's length would truncate (or hang) Kong's client: it is gone, and the
        // body arrives whole. (Kong appends its newline.)
        assert_eq!(h.local_reply(s).unwrap().header("content-length"), None);
        assert!(h.violations().is_empty(), "{:?}", h.violations());
        let reply = h.local_reply(s).expect("a 503 instead of the 401");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        let p: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(p["type"], "urn:cxgate:problem:token-rejected");
        assert_eq!(p["trace_id"], "trace-k");
        assert_eq!(reply.body.ends_with(b"\n"), profile == Profile::Kong);
        let ev: Value =
            serde_json::from_str(&h.logs_containing("TOKEN_DRIFT_RECOVERY")[0].message).unwrap();
        assert_eq!(ev["action"], "retry-later");
        assert_eq!(metric(&mut h, "cxgate_token.drift_retry_later"), Some(1));
        // The consumer's retry (any worker) tells the sidecar and waits for the fresh token.
        let retry = h.new_stream(2).unwrap();
        assert_eq!(
            h.request_headers(retry, &[(":path", "/cxone/skills")], true)
                .unwrap(),
            Action::Pause
        );
        let call = h
            .pending_calls()
            .into_iter()
            .find(|c| c.path().contains("/invalidate"))
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&call.body).unwrap(),
            json!({"generation": 4})
        );
        let now = h.now_ms();
        h.reply(
            call.token,
            CallReply::json(200, &token_json("c-new", now, 3600, 5).to_string()),
        )
        .unwrap();
        assert_eq!(auth(&h, retry).as_deref(), Some("Bearer c-new"));
        assert!(
            h.violations().is_empty(),
            "{profile:?}: {:?}",
            h.violations()
        );
    }
}

#[test]
fn llm_routes_get_the_api_key_in_their_own_header() {
    for profile in [Profile::Envoy, Profile::Kong] {
        let mut h = host_with(
            profile,
            json!({"platforms": {"llm": {"header": "api-key", "scheme": ""}}}),
        );
        let now = h.now_ms();
        sync_tokens(&mut h, json!({"llm": token_json("sk-live", now, 3600, 1)}));
        let s = h.new_stream(0).unwrap();
        h.request_headers(
            s,
            &[
                (":path", "/llm/v1/chat/completions"),
                ("api-key", "consumer"),
                ("authorization", "Bearer consumer"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(h.request_header(s, "api-key").as_deref(), Some("sk-live"));
        assert_eq!(auth(&h, s), None);
    }
}

/// Envoy: a platform answer asking for a longer wait than the route can give is marked
/// `x-envoy-ratelimited`, so Envoy hands it to the consumer rather than retrying early.
#[test]
fn envoy_a_retry_after_past_the_bound_is_marked_not_to_be_retried() {
    let answer = |h: &mut Host, retry_after: Option<&str>| {
        let s = h.new_stream(0).unwrap();
        h.request_headers(s, &[(":path", "/genesys/api/v2/users")], true)
            .unwrap();
        let mut headers = vec![(":status", "429")];
        if let Some(v) = retry_after {
            headers.push(("retry-after", v));
        }
        h.response_headers(s, &headers, false).unwrap();
        h.response_header(s, "x-envoy-ratelimited")
    };
    let mut h = host_with(
        Profile::Envoy,
        json!({"on_unauthorized": "replay", "retry_wait_max_s": 4}),
    );
    let now = h.now_ms();
    sync_tokens(&mut h, json!({"genesys": token_json("g-1", now, 300, 1)}));
    assert_eq!(answer(&mut h, Some("30")).as_deref(), Some("true"));
    assert_eq!(answer(&mut h, Some("4")), None, "fits: Envoy waits it out");
    assert_eq!(
        answer(&mut h, None),
        None,
        "no Retry-After: the route's backoff"
    );
    assert_eq!(
        answer(&mut h, Some("Wed, 21 Oct 2026 07:28:00 GMT")).as_deref(),
        Some("true")
    );
    assert!(h.violations().is_empty(), "{:?}", h.violations());

    let mut unbound = host_with(Profile::Envoy, json!({"on_unauthorized": "replay"}));
    let now = unbound.now_ms();
    sync_tokens(
        &mut unbound,
        json!({"genesys": token_json("g-1", now, 300, 1)}),
    );
    assert_eq!(
        answer(&mut unbound, Some("30")),
        None,
        "unset: nothing marked"
    );
}
