//! JSON out of what models really write: fences with and without a language, prose before
//! and after, braces in prose and in strings, nested objects, answers cut off, and plain
//! refusals. Each case says what must come out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_guard::extract::{Malformed, first_object};
use serde_json::{Value, json};

fn ok(text: &str, want: Value) {
    let got = first_object(text).unwrap_or_else(|e| panic!("{e:?} for {text:?}"));
    assert_eq!(Value::Object(got), want, "for {text:?}");
}

fn bad(text: &str, want: Malformed) {
    assert_eq!(first_object(text), Err(want), "for {text:?}");
}

const FLIGHT: &str = r#"{"action": "modify_flight", "date": "next Tuesday", "seat": "14A"}"#;

fn flight() -> Value {
    json!({"action": "modify_flight", "date": "next Tuesday", "seat": "14A"})
}

#[test]
fn bare_json_as_asked() {
    ok(FLIGHT, flight());
    ok(&format!("\n\n  {FLIGHT}  \n"), flight());
    ok(&format!("\u{feff}{FLIGHT}"), flight());
}

#[test]
fn json_in_a_fence_with_a_language_tag() {
    ok(&format!("```json\n{FLIGHT}\n```"), flight());
    ok(&format!("```JSON\n{FLIGHT}\n```\n"), flight());
    ok(&format!("```javascript\n{FLIGHT}\n```"), flight());
}

#[test]
fn json_in_a_plain_or_tilde_fence() {
    ok(&format!("```\n{FLIGHT}\n```"), flight());
    ok(&format!("~~~\n{FLIGHT}\n~~~"), flight());
    // Some models put the fence and the object on one line.
    ok(&format!("```json {FLIGHT}```"), flight());
}

#[test]
fn prose_before_and_after() {
    ok(
        &format!(
            "Sure! Here is the extracted information:\n\n{FLIGHT}\n\nLet me know if you need anything else."
        ),
        flight(),
    );
    ok(
        &format!(
            "Here's the JSON you asked for:\n```json\n{FLIGHT}\n```\nI assumed 'next Tuesday' is relative to today."
        ),
        flight(),
    );
}

#[test]
fn braces_in_prose_before_the_object_are_skipped() {
    ok(
        &format!("The template {{action}} was filled in as follows: {FLIGHT}"),
        flight(),
    );
    ok(
        &format!("Note: {{ this is not json }} — result: {FLIGHT}"),
        flight(),
    );
}

#[test]
fn braces_and_quotes_inside_strings_do_not_confuse_the_balance() {
    ok(
        r#"{"reason": "the customer wrote \"change {seat}\" in braces", "isValid": true, "nextSteps": ["confirm }"]}"#,
        json!({"reason": "the customer wrote \"change {seat}\" in braces", "isValid": true, "nextSteps": ["confirm }"]}),
    );
}

#[test]
fn nested_objects_and_arrays_come_out_whole() {
    ok(
        "Result:\n{\"isValid\": false, \"reason\": \"Fare class does not allow changes\", \"nextSteps\": [{\"step\": 1, \"action\": \"offer_upgrade\"}, {\"step\": 2, \"action\": \"transfer_to_agent\"}], \"meta\": {\"policy\": {\"id\": \"FC-7\"}}}\nThanks.",
        json!({"isValid": false, "reason": "Fare class does not allow changes", "nextSteps": [{"step": 1, "action": "offer_upgrade"}, {"step": 2, "action": "transfer_to_agent"}], "meta": {"policy": {"id": "FC-7"}}}),
    );
}

#[test]
fn the_first_object_wins_when_there_are_two() {
    ok(
        "Option A: {\"seat\": \"14A\"}\nOption B: {\"seat\": \"15C\"}",
        json!({"seat": "14A"}),
    );
}

#[test]
fn a_fenced_object_wins_over_an_example_in_the_prose_after_a_broken_one() {
    // The prose object is invalid (single quotes); the fenced one is what the model meant.
    ok(
        &format!(
            "I would normally answer {{'seat': '14A'}} but here it is properly:\n```json\n{FLIGHT}\n```"
        ),
        flight(),
    );
}

#[test]
fn an_unclosed_fence_still_yields_its_object() {
    ok(&format!("```json\n{FLIGHT}\n"), flight());
}

#[test]
fn a_top_level_array_is_not_an_object_but_an_object_inside_it_is_found() {
    ok("[{\"seat\": \"14A\"}]", json!({"seat": "14A"}));
}

#[test]
fn unicode_and_escapes_survive() {
    ok(
        r#"{"name": "Zoë Müller", "note": "Flug ändern \u2013 Sitz 14A", "emoji": "✈️"}"#,
        json!({"name": "Zoë Müller", "note": "Flug ändern – Sitz 14A", "emoji": "✈️"}),
    );
}

#[test]
fn prose_only_is_no_object() {
    bad(
        "I'm sorry, but I can't help with changing flights.",
        Malformed::NoObject,
    );
    bad("", Malformed::NoObject);
}

#[test]
fn an_answer_cut_off_by_max_tokens_is_unbalanced() {
    bad(
        r#"```json
{"action": "modify_flight", "date": "next Tuesday", "seat": "#,
        Malformed::Unbalanced,
    );
}

#[test]
fn balanced_but_not_json_is_invalid() {
    bad("{action: modify_flight, seat: 14A}", Malformed::Invalid);
    bad(r#"{"action": "modify_flight",}"#, Malformed::Invalid);
    bad("{'seat': '14A'}", Malformed::Invalid);
}

#[test]
fn a_huge_answer_is_cut_and_braces_in_prose_are_bounded() {
    let prose = "{x} ".repeat(10_000);
    assert!(first_object(&prose).is_err());
    let long = format!("{}{FLIGHT}", " ".repeat(100));
    ok(&long, flight());
}

#[test]
fn a_fence_marker_inside_a_json_string_is_text_not_a_fence() {
    // Found by the fuzz target model_json: `~~~` in a key opened a "fence" holding `{}`.
    ok(r#"{"~~~{}": 0}"#, json!({"~~~{}": 0}));
    ok(
        r#"{"note": "wrap it in ``` or ~~~ fences", "seat": "14A"}"#,
        json!({"note": "wrap it in ``` or ~~~ fences", "seat": "14A"}),
    );
    // A fence after prose on the same line is not a fence either; the object is still found.
    ok(&format!("Here it is: ```json\n{FLIGHT}\n```"), flight());
}
