//! The bot webhook route through the pipeline flow (authz + guard) on the shipped section:
//! the seed shape reads CXone's history and streams from the LLM, Custom Exchange keeps the
//! conversation in `botSessionState`, and every failure ends in the fallback within budget.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{SHIPPED, host, pipeline};
use cxgate_kit::fakes::RecordedCall;
use cxgate_model::authz;
use cxgate_model::fakes::TestHost;
use cxgate_model::{CallAnswer, Pipeline, Request, Step};
use serde_json::{Value, json};

const PATH: &str = "/gateway/v1/bots/cxone";

fn start(h: &mut TestHost, p: &Pipeline, body: &Value) -> (Request, Step) {
    let headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), PATH.to_string()),
        ("x-cxgate-consumer".to_string(), "cxone-bot-hub".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let (mut r, step) = Request::start(p, headers, &mut h.io());
    assert_eq!(step, Step::Pause);
    let step = r.on_body(body.to_string().into_bytes(), &mut h.io());
    (r, step)
}

fn last_call(h: &TestHost) -> RecordedCall {
    h.callout.calls.last().cloned().unwrap()
}

fn answer(h: &mut TestHost, r: &mut Request, a: CallAnswer) -> Step {
    let token = last_call(h).token;
    r.on_call_response(token, &a, &mut h.io()).unwrap()
}

fn ok_json(body: &Value) -> CallAnswer {
    CallAnswer {
        status: Some(200),
        headers: vec![(":status".into(), "200".into())],
        body: body.to_string().into_bytes(),
    }
}

/// An SSE chat stream of `text` in 3-character deltas, with the usage chunk.
fn sse(text: &str) -> CallAnswer {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(3) {
        let p: String = piece.iter().collect();
        out.push_str(&format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]})
        ));
    }
    out.push_str(&format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ));
    out.push_str(&format!("data: {}\n\n", json!({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}})));
    out.push_str("data: [DONE]\n\n");
    CallAnswer {
        status: Some(200),
        headers: vec![
            (":status".into(), "200".into()),
            ("content-type".into(), "text/event-stream".into()),
        ],
        body: out.into_bytes(),
    }
}

fn status(code: u16, retry_after: Option<&str>) -> CallAnswer {
    let mut headers = vec![(":status".to_string(), code.to_string())];
    if let Some(r) = retry_after {
        headers.push(("retry-after".into(), r.into()));
    }
    CallAnswer {
        status: Some(code),
        headers,
        body: br#"{"error": {"message": "no"}}"#.to_vec(),
    }
}

fn reply(step: &Step) -> (u32, Vec<(String, String)>, Value) {
    match step {
        Step::Reply(r) => (
            r.status,
            r.headers.clone(),
            serde_json::from_slice(&r.body).unwrap(),
        ),
        other => panic!("{other:?}"),
    }
}

fn history(entities: &[(&str, &str)], page_count: u64) -> CallAnswer {
    let e: Vec<Value> = entities
        .iter()
        .map(|(f, t)| json!({"from": f, "text": t}))
        .collect();
    ok_json(&json!({"entities": e, "pageCount": page_count}))
}

#[test]
fn the_seed_shape_reads_the_history_streams_the_answer_and_redacts_it() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (mut r, step) = start(&mut h, &p, &json!({"botId": "bot-1", "sessionId": "s-9"}));
    assert_eq!(step, Step::Pause);
    let call = last_call(&h);
    assert_eq!(call.upstream, "cxone");
    assert_eq!(call.method, "GET");
    assert_eq!(
        call.path,
        "/api/v2/bot/bots/bot-1/sessions/s-9/messages?pageSize=10&pageNumber=1"
    );
    assert_eq!(call.timeout_ms, 4_000, "the webhook's whole budget is left");
    h.clock.advance(50);
    let step = answer(
        &mut h,
        &mut r,
        history(
            &[("customer", "I was charged twice"), ("bot", "Which card?")],
            2,
        ),
    );
    assert_eq!(step, Step::Pause);
    assert!(
        last_call(&h).path.ends_with("pageNumber=2"),
        "the next page"
    );
    let step = answer(
        &mut h,
        &mut r,
        history(&[("customer", "The Visa, please refund")], 2),
    );
    assert_eq!(step, Step::Pause);
    let llm = last_call(&h);
    assert_eq!(llm.upstream, "llm");
    assert_eq!(llm.timeout_ms, 4_000 - 50);
    let sent: Value = serde_json::from_slice(llm.body.as_ref().unwrap()).unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["model"], "mock-gpt");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    h.clock.advance(200);
    let step = answer(
        &mut h,
        &mut r,
        sse("Refund started to card 4111 1111 1111 1111; mail me at a@b.co."),
    );
    let (code, headers, v) = reply(&step);
    assert_eq!(code, 200);
    assert!(!headers.iter().any(|(k, _)| k == "x-cxgate-fallback"));
    let text = v["messages"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "Refund started to card [CARD REDACTED]; mail me at [EMAIL REDACTED]."
    );
    assert_eq!(v["source"], "llm_gateway");
    assert_eq!(v["metrics"]["prompt_tokens"], 30);
    assert_eq!(v["metrics"]["total_tokens"], 39);
    assert_eq!(v["metrics"]["latency_ms"], 250);
    assert_eq!(v["metrics"]["model"], "mock-gpt");
    assert_eq!(v["metrics"]["temperature"], 0.7);
    r.on_done(&mut h.io());
    assert_eq!(h.metrics.value("cxgate_llm.redactions.type_card"), 1);
    assert_eq!(
        h.metrics
            .value("cxgate_llm.tokens.kind_prompt.model_mock-gpt.consumer_cxone-bot-hub"),
        30
    );
    assert!(h.logged("4111").is_empty() && h.logged("Visa").is_empty());
}

#[test]
fn custom_exchange_keeps_the_conversation_in_bot_session_state() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let state = json!({"cxgate": {"v": 1, "turns": [["u", "Hi"], ["a", "Hello, how can I help?"]]}, "scriptVar": 3});
    let (mut r, step) = start(
        &mut h,
        &p,
        &json!({"virtualAgentId": "va", "botConfig": {}, "userInput": "Where is my parcel?",
                "userInputType": "TEXT", "executionInfo": {"contactId": 77},
                "botSessionState": state, "customPayload": {"lang": "en"}, "mediaType": "chat"}),
    );
    assert_eq!(step, Step::Pause);
    let sent: Value = serde_json::from_slice(last_call(&h).body.as_ref().unwrap()).unwrap();
    let contents: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents[1..],
        ["Hi", "Hello, how can I help?", "Where is my parcel?"]
    );
    let (code, _, v) = reply(&answer(&mut h, &mut r, sse("It arrives tomorrow.")));
    assert_eq!(code, 200);
    assert_eq!(v["branchName"], "PromptAndCollectNextResponse");
    assert_eq!(
        v["nextPromptSequence"]["prompts"][0]["transcript"],
        "It arrives tomorrow."
    );
    assert_eq!(v["intentInfo"]["lastUserUtterance"], "Where is my parcel?");
    assert_eq!(v["customPayload"], json!({"lang": "en"}));
    assert_eq!(v["botSessionState"]["scriptVar"], 3);
    assert_eq!(
        v["botSessionState"]["cxgate"]["turns"],
        json!([
            ["u", "Hi"],
            ["a", "Hello, how can I help?"],
            ["u", "Where is my parcel?"],
            ["a", "It arrives tomorrow."]
        ])
    );
    assert!(v["errorDetails"].is_null());
}

#[test]
fn llm_failures_end_in_the_fallback_in_each_shape_never_a_5xx() {
    for (failure, reason) in [
        (status(503, None), "upstream_error"),
        (status(429, Some("3")), "rate_limited"),
        (status(401, None), "upstream_rejected"),
        (CallAnswer::default(), "upstream_unreachable"),
    ] {
        let mut h = host();
        let p = pipeline(&mut h, |_| {});
        let (mut r, _) = start(&mut h, &p, &json!({"userInput": "hello"}));
        let (code, headers, v) = reply(&answer(&mut h, &mut r, failure.clone()));
        assert_eq!(code, 200, "{reason}");
        assert!(headers.contains(&("x-cxgate-fallback".into(), reason.into())));
        assert_eq!(v["branchName"], "ReturnControlToScript");
        assert_eq!(v["errorDetails"]["errorMessage"], reason);
        assert_eq!(
            v["nextPromptSequence"]["prompts"][0]["transcript"],
            cxgate_guard::config::DEFAULT_FALLBACK
        );
        r.on_done(&mut h.io());
        assert_eq!(
            h.metrics
                .value(&format!("cxgate_llm.fallbacks.reason_{reason}")),
            1
        );

        let mut h = host();
        let p = pipeline(&mut h, |_| {});
        let (mut r, _) = start(&mut h, &p, &json!({"botId": "b", "sessionId": "s"}));
        answer(&mut h, &mut r, history(&[("customer", "hi")], 1));
        let (code, _, v) = reply(&answer(&mut h, &mut r, failure));
        assert_eq!(code, 200);
        assert_eq!(v["source"], "fallback");
        assert_eq!(v["reason"], reason);
    }
}

#[test]
fn a_dead_llm_falls_back_with_timeout_at_the_budget() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (mut r, _) = start(&mut h, &p, &json!({"userInput": "hello"}));
    h.clock.advance(4_000);
    let (code, _, v) = reply(&answer(&mut h, &mut r, CallAnswer::default()));
    assert_eq!(code, 200);
    assert_eq!(v["errorDetails"]["errorMessage"], "timeout");
}

#[test]
fn unsafe_output_and_missing_history_fall_back_too() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (mut r, _) = start(&mut h, &p, &json!({"botId": "b", "sessionId": "s"}));
    answer(&mut h, &mut r, history(&[("customer", "hi")], 1));
    let (code, _, v) = reply(&answer(
        &mut h,
        &mut r,
        sse("Here is how to bypass security on the account."),
    ));
    assert_eq!(code, 200);
    assert_eq!(v["reason"], "unsafe_output");
    assert!(!v.to_string().contains("bypass"));

    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (mut r, _) = start(&mut h, &p, &json!({"botId": "b", "sessionId": "missing-1"}));
    let (code, _, v) = reply(&answer(&mut h, &mut r, status(404, None)));
    assert_eq!(code, 200);
    assert_eq!(v["reason"], "history_unavailable");
    assert_eq!(
        h.callout.calls.len(),
        1,
        "no model call without the history"
    );
}

#[test]
fn bad_input_falls_back_in_its_shape_and_an_unknown_shape_is_a_400_problem() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (_r, step) = start(
        &mut h,
        &p,
        &json!({"botId": "b", "sessionId": "../../etc/passwd"}),
    );
    let (code, _, v) = reply(&step);
    assert_eq!(code, 200);
    assert_eq!(v["reason"], "malformed_input");
    let (_r, step) = start(&mut h, &p, &json!({"userInput": 42}));
    let (code, _, v) = reply(&step);
    assert_eq!(code, 200);
    assert_eq!(v["branchName"], "ReturnControlToScript");
    let (_r, step) = start(&mut h, &p, &json!({"hello": "world"}));
    let (code, headers, v) = reply(&step);
    assert_eq!(code, 400);
    assert!(headers.contains(&("content-type".into(), "application/problem+json".into())));
    assert_eq!(v["type"], "urn:cxgate:problem:invalid-request");
    assert!(h.callout.calls.is_empty());
}

#[test]
fn no_input_is_reprompted_without_a_model_call() {
    let mut h = host();
    let p = pipeline(&mut h, |_| {});
    let (_r, step) = start(
        &mut h,
        &p,
        &json!({"userInput": "", "userInputType": "NO_INPUT", "botSessionState": null}),
    );
    let (code, _, v) = reply(&step);
    assert_eq!(code, 200);
    assert_eq!(v["branchName"], "PromptAndCollectNextResponse");
    assert!(
        v["nextPromptSequence"]["prompts"][0]["transcript"]
            .as_str()
            .unwrap()
            .starts_with("Sorry, I did not catch that")
    );
    assert!(h.callout.calls.is_empty());
}

/// A stage after the guard that refuses every request as an open breaker would.
mod refuser {
    use cxgate_kit::ConfigError;
    use cxgate_kit::problem::Problem;
    use cxgate_model::{Build, Exchange, Flow, Io, Stage, StageKind, StageStream};
    use serde_json::Value;

    pub const KIND: StageKind = StageKind {
        name: "refuser",
        build,
    };
    struct Refuser;
    fn build(_: Value, _: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
        Ok(Box::new(Refuser))
    }
    impl Stage for Refuser {
        fn name(&self) -> &'static str {
            "refuser"
        }
        fn stream(&self) -> Box<dyn StageStream> {
            Box::new(Refuser)
        }
    }
    impl StageStream for Refuser {
        fn on_platform(&mut self, x: &mut Exchange, _io: &mut Io<'_>) -> Flow {
            let p = Problem::new(
                503,
                "platform-unavailable",
                "Unavailable",
                "the llm breaker is open",
            )
            .with_header("retry-after", "15");
            Flow::Reply(x.reply(p))
        }
    }
}

#[test]
fn a_later_stage_refusing_still_answers_in_the_routes_shape() {
    let s: Value = serde_json::from_str(SHIPPED).unwrap();
    let kinds = [authz::KIND, cxgate_guard::stage::KIND, refuser::KIND];
    let doc = json!({"version": 2, "stages": ["authz", "guard", "refuser"], "model": s["model"], "guard": s["guard"]});
    let mut h = host();
    let p = h.pipeline(&doc.to_string(), &kinds).unwrap();
    let headers = |path: &str, consumer: &str| {
        vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), path.to_string()),
            ("x-cxgate-consumer".to_string(), consumer.to_string()),
        ]
    };
    // A bot webhook: the body was not read, so the fallback carries both shapes.
    let (_r, step) = Request::start(&p, headers(PATH, "cxone-bot-hub"), &mut h.io());
    let (code, hdrs, v) = reply(&step);
    assert_eq!(code, 200);
    assert!(hdrs.contains(&("x-cxgate-fallback".into(), "unavailable".into())));
    assert_eq!(v["source"], "fallback");
    assert_eq!(
        v["messages"][0]["text"],
        cxgate_guard::config::DEFAULT_FALLBACK
    );
    assert_eq!(v["branchName"], "ReturnControlToScript");
    // The chain: its error shape, with the refusal's status and Retry-After.
    let (_r, step) = Request::start(
        &p,
        headers("/gateway/v1/llm/pipeline", "omnichannel-app-prod"),
        &mut h.io(),
    );
    let (code, hdrs, v) = reply(&step);
    assert_eq!(code, 503);
    assert!(hdrs.contains(&("retry-after".into(), "15".into())));
    assert!(hdrs.contains(&("content-type".into(), "application/json".into())));
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"], "unavailable");
    assert_eq!(v["message"], "the llm breaker is open");
    assert_eq!(v["metadata"]["pipelineStage"], "failed");
    assert!(cxgate_kit::ids::is_uuid(
        v["metadata"]["requestId"].as_str().unwrap()
    ));
}
