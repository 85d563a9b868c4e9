//! What the mock LLM answers the chain, deterministically: an extraction prompt
//! (a system message asking to extract) gets the request as JSON, a specialist prompt (one
//! holding `Extracted request: {...}`) gets a verdict with `isValid`, `reason` and
//! `nextSteps`. Real models wrap JSON in fences and prose, or stop half way: the format of an
//! answer is chosen per request (`x-mock-format`) or by the script posted to
//! `/__mock/llm/script` (`{"formats": ["fenced", "json"]}`, one per chat call, in order).

use serde_json::{Value, json};

/// The answer text for a chain prompt, or `None` when the messages are not one.
pub fn answer(messages: &[Value]) -> Option<String> {
    let texts: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    if let Some(at) = texts.iter().find_map(|t| {
        t.find("Extracted request:")
            .map(|i| &t[i + "Extracted request:".len()..])
    }) {
        let extracted = first_object(at).unwrap_or(Value::Null);
        return Some(verdict(&extracted).to_string());
    }
    let extracting = messages.iter().any(|m| {
        m["role"] == "system"
            && m["content"]
                .as_str()
                .is_some_and(|c| c.to_ascii_lowercase().contains("extract"))
    });
    if !extracting {
        return None;
    }
    let input = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    Some(extract(input).to_string())
}

fn first_object(text: &str) -> Option<Value> {
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// The request in `input` as JSON: an action, a date and a seat when it names them.
fn extract(input: &str) -> Value {
    let lower = input.to_ascii_lowercase();
    let action = if lower.contains("flight")
        && ["change", "modify", "move", "rebook"]
            .iter()
            .any(|w| lower.contains(w))
    {
        "modify_flight"
    } else if lower.contains("cancel") {
        "cancel_booking"
    } else if lower.contains("seat") {
        "change_seat"
    } else {
        "general_inquiry"
    };
    let words: Vec<&str> = input
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .collect();
    let date = words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("next"))
        .map(|w| format!("next {}", w[1]))
        .or_else(|| {
            words
                .iter()
                .find(|w| w.eq_ignore_ascii_case("tomorrow") || w.eq_ignore_ascii_case("today"))
                .map(|w| w.to_ascii_lowercase())
        });
    let seat = words.iter().find(|w| {
        // A seat ends in one ASCII letter; any other last character is not one.
        let Some((digits, row)) = w.split_at_checked(w.len().saturating_sub(1)) else {
            return false;
        };
        (1..=2).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && row.bytes().all(|b| (b'A'..=b'K').contains(&b))
    });
    json!({"action": action, "date": date, "seat": seat})
}

fn verdict(extracted: &Value) -> Value {
    let action = extracted["action"].as_str().unwrap_or("general_inquiry");
    if action == "general_inquiry" {
        return json!({"isValid": false, "reason": "No actionable request was found.",
                      "nextSteps": ["ask_clarifying_question"]});
    }
    match extracted["date"].as_str() {
        Some(date) => json!({"isValid": true,
            "reason": format!("{action} for {date} is allowed by the fare rules."),
            "nextSteps": ["confirm_with_customer", "apply_change", "send_confirmation"]}),
        None => json!({"isValid": false, "reason": "The request names no date.",
                       "nextSteps": ["ask_for_date"]}),
    }
}

/// `text` as a model might really write it.
pub fn shape(format: &str, text: &str) -> String {
    match format {
        "fenced" => format!("```json\n{text}\n```"),
        "prose" => {
            format!("Sure! Here is the result:\n\n{text}\n\nLet me know if you need anything else.")
        }
        // Cut off half way, as at max_tokens.
        "broken" => text.chars().take(text.chars().count() / 2).collect(),
        "none" => "I'm sorry, I can't help with that request.".to_string(),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn seats_are_read_from_ascii_words_and_any_other_text_is_no_seat() {
        assert_eq!(extract("move me to 12C next friday")["seat"], "12C");
        // Found by schemathesis: a word ending in a two-byte character.
        assert!(
            extract("O\u{1a963}KR\u{ad}\u{23a}\u{100}p\u{102}\u{f5}\u{c6}\u{2b417}\u{b2}")["seat"]
                .is_null()
        );
        assert!(extract("²")["seat"].is_null());
    }
}
