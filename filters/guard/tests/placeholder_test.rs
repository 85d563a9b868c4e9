//! Reversible prompt redaction: the model sees tokens, the consumer gets the values back,
//! whole or streamed, whatever the chunk boundaries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{host, pipeline};
use cxgate_guard::pii::{Kind, Scanner};
use cxgate_guard::placeholder::{Placeholders, Restorer};
use cxgate_model::{Request, Step};
use serde_json::{Value, json};

const PROMPT: &str =
    "I am jane.doe@example.com, card 4111 1111 1111 1111; again jane.doe@example.com";

#[test]
fn each_value_gets_one_token_and_comes_back() {
    let s = Scanner::new(&Kind::DEFAULT);
    let mut p = Placeholders::default();
    let (text, kinds) = p.substitute(&s, PROMPT);
    assert_eq!(text, "I am [EMAIL_A], card [CARD_A]; again [EMAIL_A]");
    assert_eq!(kinds.len(), 3);
    let (more, _) = p.substitute(&s, "and bob@example.org");
    assert_eq!(more, "and [EMAIL_B]");
    assert_eq!(
        p.restore("Dear [EMAIL_A] ([EMAIL_B]), card [CARD_A] [UNKNOWN_A] [x"),
        "Dear jane.doe@example.com (bob@example.org), card 4111 1111 1111 1111 [UNKNOWN_A] [x"
    );
    assert!(
        s.find("[EMAIL_A] [CARD_AB] [PHONE_Z]").is_empty(),
        "tokens are no entities"
    );
}

#[test]
fn a_stream_gets_its_values_back_across_any_split() {
    let s = Scanner::new(&Kind::DEFAULT);
    let mut p = Placeholders::default();
    let _ = p.substitute(&s, PROMPT);
    let answer = "Sent to [EMAIL_A]; charged [CARD_A]. [Note] done [EMAIL_";
    let want = "Sent to jane.doe@example.com; charged 4111 1111 1111 1111. [Note] done [EMAIL_";
    for n in 1..=12 {
        let mut r = Restorer::default();
        let chars: Vec<char> = answer.chars().collect();
        let mut out: String = chars
            .chunks(n)
            .map(|c| r.push(&p, &c.iter().collect::<String>()))
            .collect();
        out.push_str(&r.finish(&p));
        assert_eq!(out, want, "pieces of {n}");
    }
}

fn through(
    h: &mut cxgate_model::fakes::TestHost,
    p: &cxgate_model::Pipeline,
    path: &str,
    body: Value,
) -> Request {
    let headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (
            "x-cxgate-consumer".to_string(),
            "omnichannel-app-prod".to_string(),
        ),
    ];
    let (mut r, _) = Request::start(p, headers, &mut h.io());
    assert_eq!(
        r.on_body(body.to_string().into_bytes(), &mut h.io()),
        Step::Continue
    );
    r
}

#[test]
fn through_the_pipeline_whole_and_streamed() {
    let mut h = host();
    let p = pipeline(&mut h, |g| g["routes"]["llm"]["placeholders"] = json!(true));
    // Whole chat answer.
    h.stream.request_body = None;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": PROMPT}]});
    let mut r = through(&mut h, &p, "/llm/v1/chat/completions", body);
    let sent: Value = serde_json::from_slice(h.stream.request_body.as_ref().unwrap()).unwrap();
    let seen = sent["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(!seen.contains("jane") && !seen.contains("4111"), "{seen}");
    let json_ct = || {
        vec![
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ]
    };
    assert!(r.on_response_headers(json_ct, &mut h.io()).is_none());
    let answer = json!({"choices": [{"index": 0, "message": {"content": "I emailed [EMAIL_A] about 123-45-6789."}}]});
    let out = r
        .on_response_body(answer.to_string().into_bytes(), &mut h.io())
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "I emailed jane.doe@example.com about [SSN REDACTED]."
    );
    r.on_done(&mut h.io());
    assert!(
        !h.logged("jane").iter().any(|_| true),
        "the mapping is never logged"
    );

    // A Responses stream split at every byte: deltas and the whole-text events restored.
    let body = json!({"model": "m", "input": PROMPT, "stream": true});
    let mut r = through(&mut h, &p, "/llm/v1/responses", body);
    let sse_ct = || {
        vec![
            (":status".to_string(), "200".to_string()),
            ("content-type".to_string(), "text/event-stream".to_string()),
        ]
    };
    assert!(r.on_response_headers(sse_ct, &mut h.io()).is_none());
    let mut stream = String::new();
    for (n, d) in ["Mail [EM", "AIL_A] and [CA", "RD_A] ok"]
        .iter()
        .enumerate()
    {
        let e = json!({"type": "response.output_text.delta", "sequence_number": n, "item_id": "m1",
            "output_index": 0, "content_index": 0, "delta": d});
        stream.push_str(&format!("event: response.output_text.delta\ndata: {e}\n\n"));
    }
    let done = json!({"type": "response.output_text.done", "sequence_number": 3, "item_id": "m1",
        "output_index": 0, "content_index": 0, "text": "Mail [EMAIL_A] and [CARD_A] ok"});
    stream.push_str(&format!(
        "event: response.output_text.done\ndata: {done}\n\n"
    ));
    let mut out = Vec::new();
    let bytes = stream.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let end = i + 1 == bytes.len();
        out.extend(
            r.on_response_chunk(vec![*b], end, &mut h.io())
                .unwrap_or_default(),
        );
    }
    let text = String::from_utf8(out).unwrap();
    let mut deltas = String::new();
    let mut whole = None;
    for block in text.split("\n\n") {
        let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let v: Value = serde_json::from_str(data).unwrap();
        match v["type"].as_str() {
            Some("response.output_text.delta") => deltas.push_str(v["delta"].as_str().unwrap()),
            Some("response.output_text.done") => whole = v["text"].as_str().map(str::to_string),
            _ => {}
        }
    }
    let want = "Mail jane.doe@example.com and 4111 1111 1111 1111 ok";
    assert_eq!(deltas, want);
    assert_eq!(whole.as_deref(), Some(want));
}

#[test]
fn placeholders_need_redact_prompts_and_a_proxied_route() {
    let mut h = host();
    let s: Value = serde_json::from_str(common::SHIPPED).unwrap();
    let guard = json!({"routes": {"llm": {"placeholders": true}}});
    let doc =
        json!({"version": 2, "stages": ["authz", "guard"], "model": s["model"], "guard": guard});
    let e = h.pipeline(&doc.to_string(), &common::KINDS).err().unwrap();
    assert_eq!(e.field, "/guard/routes/llm/placeholders");
}
