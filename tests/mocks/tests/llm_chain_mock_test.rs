//! The mock LLM's chain answers (deterministic JSON, shaped on demand) and the mock CXone's
//! bot session history (paged, behind the token), as the chain and bot tests rely on them.

mod common;

use common::{Mocks, cxone_token, start};
use serde_json::{Value, json};

fn chat(m: &Mocks, messages: Value, format: Option<&str>) -> String {
    let mut req = m
        .http
        .post(format!("{}/v1/chat/completions", m.llm))
        .bearer_auth("demo-llm-key");
    if let Some(f) = format {
        req = req.header("x-mock-format", f);
    }
    let v: Value = req
        .json(&json!({"model": "m", "messages": messages}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_chain_prompts_get_json_in_the_format_asked_for() {
    let m = start(&[]);
    let extraction = json!([
        {"role": "system", "content": "Extract the request as JSON."},
        {"role": "user", "content": "I need to change my flight to next Tuesday and update my seat to 14A"}
    ]);
    let text = chat(&m, extraction.clone(), None);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        json!({"action": "modify_flight", "date": "next Tuesday", "seat": "14A"})
    );
    let fenced = chat(&m, extraction.clone(), Some("fenced"));
    assert!(fenced.starts_with("```json\n") && fenced.ends_with("\n```"));
    let broken = chat(&m, extraction.clone(), Some("broken"));
    assert!(serde_json::from_str::<Value>(&broken).is_err());

    // The script applies to the next calls, one format each.
    let r = m
        .http
        .post(format!("{}/__mock/llm/script", m.llm))
        .json(&json!({"formats": ["prose", "none"]}))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    assert!(chat(&m, extraction.clone(), None).starts_with("Sure! Here is the result:"));
    assert!(!chat(&m, extraction.clone(), None).contains('{'));
    assert!(chat(&m, extraction, None).starts_with('{'));

    let verdict = chat(
        &m,
        json!([{"role": "system", "content": "Validate. Extracted request: {\"action\":\"modify_flight\",\"date\":\"next Tuesday\"}"},
               {"role": "user", "content": "Validate and respond."}]),
        None,
    );
    let v: Value = serde_json::from_str(&verdict).unwrap();
    assert_eq!(v["isValid"], true);
    assert!(v["nextSteps"].as_array().is_some() && v["reason"].is_string());
}

#[test]
fn bot_session_history_is_paged_behind_the_token() {
    let m = start(&[]);
    let url = |session: &str, page: u32| {
        format!(
            "{}/api/v2/bot/bots/b1/sessions/{session}/messages?pageSize=2&pageNumber={page}",
            m.cxone
        )
    };
    assert_eq!(m.http.get(url("s1", 1)).send().unwrap().status(), 401);
    let token = cxone_token(&m);
    let set = m
        .http
        .put(format!("{}/__mock/bot/sessions/s1", m.cxone))
        .json(&json!({"messages": [{"from": "customer", "text": "a"}, {"from": "bot", "text": "b"}, {"from": "customer", "text": "c"}]}))
        .send()
        .unwrap();
    assert_eq!(set.status(), 204);
    let get = |session: &str, page: u32| -> (u16, Value) {
        let r = m
            .http
            .get(url(session, page))
            .bearer_auth(&token)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    };
    let (status, p1) = get("s1", 1);
    assert_eq!(status, 200);
    assert_eq!(p1["total"], 3);
    assert_eq!(p1["pageCount"], 2);
    assert_eq!(p1["entities"][0]["text"], "a");
    let (_, p2) = get("s1", 2);
    assert_eq!(p2["entities"].as_array().unwrap().len(), 1);
    assert_eq!(p2["entities"][0]["from"], "customer");
    let (_, default) = get("other", 1);
    assert_eq!(
        default["total"], 3,
        "every session has the default conversation"
    );
    let (status, _) = get("missing-9", 1);
    assert_eq!(status, 404);
}
