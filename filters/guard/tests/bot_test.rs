//! The two webhook shapes, the conversation kept in `botSessionState` (bounded in size), the
//! history pages, and the replies in each shape.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_guard::bot::{
    self, Metrics, Turn, Webhook, exchange_reply, history_page, seed_reply, session_state, shape_of,
};
use cxgate_guard::meter::Usage;
use serde_json::{Map, Value, json};

fn turn(user: bool, text: &str) -> Turn {
    Turn {
        user,
        text: text.into(),
    }
}

#[test]
fn the_seed_shape_needs_path_safe_ids() {
    let w = bot::parse(&json!({"botId": "bot-7", "sessionId": "sess:42"})).unwrap();
    assert_eq!(
        w,
        Webhook::Seed {
            bot_id: "bot-7".into(),
            session_id: "sess:42".into()
        }
    );
    for bad in [
        json!({"botId": "bot-7"}),
        json!({"botId": "bot-7", "sessionId": ""}),
        json!({"botId": "bot-7", "sessionId": "../../admin"}),
        json!({"botId": "b/7", "sessionId": "s"}),
        json!({"botId": 7, "sessionId": "s"}),
        json!({"botId": "b", "sessionId": "s".repeat(129)}),
    ] {
        assert!(bot::parse(&bad).is_err(), "{bad}");
        assert_eq!(shape_of(&bad), Some(true));
    }
}

#[test]
fn custom_exchange_requests_carry_the_conversation_in_bot_session_state() {
    let req = json!({
        "virtualAgentId": "va-1", "botConfig": {}, "userInput": "Where is my parcel?",
        "userInputType": "TEXT", "executionInfo": {"contactId": 123, "busNo": 1},
        "botSessionState": {"cxgate": {"v": 1, "turns": [["u", "Hi"], ["a", "Hello! How can I help?"]]}, "theirs": 5},
        "customPayload": {"lang": "en"}, "mediaType": "chat"
    });
    assert_eq!(shape_of(&req), Some(false));
    let Webhook::Exchange(cx) = bot::parse(&req).unwrap() else {
        panic!()
    };
    assert_eq!(cx.user_input, "Where is my parcel?");
    assert_eq!(
        cx.turns,
        vec![turn(true, "Hi"), turn(false, "Hello! How can I help?")]
    );
    assert_eq!(cx.other_state.get("theirs"), Some(&json!(5)));
    assert_eq!(cx.custom_payload, json!({"lang": "en"}));
}

#[test]
fn a_state_the_gateway_did_not_write_starts_afresh_and_bad_types_are_refused() {
    let foreign =
        json!({"userInput": "hi", "botSessionState": {"cxgate": {"v": 9, "turns": [["u", "x"]]}}});
    let Webhook::Exchange(cx) = bot::parse(&foreign).unwrap() else {
        panic!()
    };
    assert!(cx.turns.is_empty());
    assert!(bot::parse(&json!({"userInput": 5})).is_err());
    assert!(bot::parse(&json!({"userInput": "x", "botSessionState": "opaque"})).is_err());
    assert_eq!(shape_of(&json!({"hello": 1})), None);
    assert_eq!(shape_of(&json!([1])), None);
}

#[test]
fn the_state_sent_back_fits_its_bound_by_dropping_the_oldest_turns() {
    let turns: Vec<Turn> = (0..200)
        .map(|i| turn(i % 2 == 0, &format!("message number {i} with some words")))
        .collect();
    let mut other = Map::new();
    other.insert("theirs".into(), json!("kept"));
    for max in [256usize, 1_000, 8_192] {
        let state = session_state(&other, &turns, max);
        let text = state.to_string();
        assert!(text.len() <= max, "{} > {max}", text.len());
        assert_eq!(state["theirs"], "kept");
        let kept = state["cxgate"]["turns"].as_array().unwrap();
        assert!(!kept.is_empty() || max < 300);
        // The newest turn is always the last one kept.
        if let Some(last) = kept.last() {
            assert_eq!(last[1], "message number 199 with some words");
        }
    }
    // Members of its own too big for the bound: only the gateway's part goes back.
    let mut huge = Map::new();
    huge.insert("blob".into(), json!("x".repeat(10_000)));
    let state = session_state(&huge, &turns, 1_000);
    assert!(state.to_string().len() <= 1_000);
    assert!(state.get("blob").is_none());
    // And it reads back as the same conversation.
    let round = bot::parse(&json!({"userInput": "next", "botSessionState": state})).unwrap();
    let Webhook::Exchange(cx) = round else {
        panic!()
    };
    assert_eq!(
        cx.turns.last().unwrap().text,
        "message number 199 with some words"
    );
}

#[test]
fn history_pages_map_the_customer_to_user_and_the_rest_to_assistant() {
    let page = json!({"entities": [
        {"from": "customer", "text": "I was charged twice"},
        {"from": "bot", "text": "Sorry to hear that."},
        {"from": "agent", "text": "Let me check."},
        {"from": "customer", "text": ""},
        {"from": "customer"}
    ], "pageCount": 3});
    let (turns, pages) = history_page(page.to_string().as_bytes()).unwrap();
    assert_eq!(pages, Some(3));
    assert_eq!(
        turns,
        vec![
            turn(true, "I was charged twice"),
            turn(false, "Sorry to hear that."),
            turn(false, "Let me check.")
        ]
    );
    assert!(history_page(b"not json").is_none());
    assert!(history_page(br#"{"items": []}"#).is_none());
}

#[test]
fn messages_keep_the_newest_turns_after_the_system_prompt() {
    let turns: Vec<Turn> = (0..30).map(|i| turn(i % 2 == 0, &i.to_string())).collect();
    let m = bot::messages("be nice", &turns, 10);
    assert_eq!(m.len(), 11);
    assert_eq!(m[0].role, "system");
    assert_eq!(m[1].content, "20");
    assert_eq!(m[1].role, "user");
    assert_eq!(m[10].content, "29");
    assert_eq!(m[10].role, "assistant");
}

#[test]
fn replies_in_both_shapes() {
    let m = Metrics {
        usage: Usage {
            prompt: 40,
            completion: 10,
            estimated: false,
        },
        cost_micros: 12,
        latency_ms: 321,
        model: "mock-gpt".into(),
        temperature: 0.7,
    };
    let ok: Value = serde_json::from_slice(&seed_reply("Hello", None, &m)).unwrap();
    assert_eq!(ok["messages"][0]["text"], "Hello");
    assert_eq!(ok["source"], "llm_gateway");
    assert!(ok.get("reason").is_none());
    assert_eq!(ok["metrics"]["total_tokens"], 50);
    assert_eq!(ok["metrics"]["cost_usd"], 0.000012);
    assert_eq!(ok["metrics"]["temperature"], 0.7);
    let fb: Value = serde_json::from_slice(&seed_reply("Sorry", Some("timeout"), &m)).unwrap();
    assert_eq!(fb["source"], "fallback");
    assert_eq!(fb["reason"], "timeout");

    let state = json!({"cxgate": {"v": 1, "turns": []}});
    let payload = json!({"k": "v"});
    let cx: Value =
        serde_json::from_slice(&exchange_reply("Hi!", None, "hello", &state, &payload)).unwrap();
    assert_eq!(cx["branchName"], "PromptAndCollectNextResponse");
    assert_eq!(cx["nextPromptSequence"]["prompts"][0]["transcript"], "Hi!");
    assert_eq!(
        cx["nextPromptSequence"]["prompts"][0]["textToSpeech"],
        "Hi!"
    );
    assert_eq!(cx["intentInfo"]["lastUserUtterance"], "hello");
    assert_eq!(cx["botSessionState"], state);
    assert_eq!(cx["customPayload"], payload);
    assert!(cx["errorDetails"].is_null());
    let back: Value = serde_json::from_slice(&exchange_reply(
        "Sorry",
        Some("rate_limited"),
        "hello",
        &state,
        &Value::Null,
    ))
    .unwrap();
    assert_eq!(back["branchName"], "ReturnControlToScript");
    assert_eq!(back["errorDetails"]["errorMessage"], "rate_limited");
}
