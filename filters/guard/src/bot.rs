//! CXone bot webhooks answered by an LLM, as config and pure shapes. Two request
//! shapes are accepted: the seed's `{botId, sessionId}` (the history is read from CXone) and
//! CXone's Custom Exchange Endpoint (the conversation travels in `botSessionState`, which
//! CXone round-trips, so the gateway keeps none). The calls are made by [`crate::run`].

use crate::chain::usd;
use crate::chat::{field, quoted};
use crate::completion::{Message, ModelCall};
use crate::endpoint::Endpoint;
use crate::meter::Usage;
use crate::retry::RetryPolicy;
use cxgate_kit::ConfigError;
use cxgate_kit::fields::Fields;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    pub endpoint: Endpoint,
    /// With `{botId}` and `{sessionId}`.
    pub path: String,
    pub page_size: u64,
    pub max_pages: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BotConfig {
    pub call: ModelCall,
    pub system: String,
    /// Turns (messages) of history sent to the model, the newest kept.
    pub max_turns: usize,
    /// Time to answer CXone in, calls included: the webhook is synchronous.
    pub budget_ms: u64,
    /// The largest `botSessionState` sent back (older turns go first).
    pub max_state_bytes: usize,
    /// Where the seed shape's history is read; without it that shape is refused.
    pub history: Option<History>,
    pub retry: RetryPolicy,
    /// Said when the caller said nothing (`NO_INPUT`): no model call.
    pub reprompt_text: String,
}

pub const SEED_SYSTEM: &str = "You are a helpful customer support assistant. Maintain a professional tone. Never disclose internal procedures.";

impl BotConfig {
    pub fn compile(mut f: Fields<'_>) -> Result<BotConfig, ConfigError> {
        let call = crate::chain::model_call(&mut f, 0.7, 1024)?;
        let system = f.str("system")?.unwrap_or(SEED_SYSTEM).to_string();
        let max_turns = f.u64("max_turns")?.unwrap_or(10);
        if !(1..=100).contains(&max_turns) {
            return Err(ConfigError::at(
                f.at("max_turns"),
                "must be between 1 and 100",
            ));
        }
        let budget_ms = f.u64("budget_ms")?.unwrap_or(4_000);
        if !(100..=60_000).contains(&budget_ms) {
            return Err(ConfigError::at(
                f.at("budget_ms"),
                "must be between 100 and 60000",
            ));
        }
        let max_state_bytes = f.u64("max_state_bytes")?.unwrap_or(8_192);
        if !(256..=65_536).contains(&max_state_bytes) {
            return Err(ConfigError::at(
                f.at("max_state_bytes"),
                "must be between 256 and 65536",
            ));
        }
        let history = match f.object("history")? {
            None => None,
            Some(mut h) => {
                let endpoint = Endpoint::compile(&mut h)?;
                let path = h.required_str("path")?.to_string();
                if !path.contains("{sessionId}") {
                    return Err(ConfigError::at(h.at("path"), "must hold {sessionId}"));
                }
                let page_size = h.u64("page_size")?.unwrap_or(10).clamp(1, 100);
                let max_pages = h.u64("max_pages")?.unwrap_or(5).clamp(1, 20);
                h.done()?;
                Some(History {
                    endpoint,
                    path,
                    page_size,
                    max_pages: u32::try_from(max_pages).unwrap_or(5),
                })
            }
        };
        let retry = RetryPolicy::compile(
            f.object("retry")?,
            RetryPolicy {
                attempts: 1,
                ..RetryPolicy::default()
            },
        )?;
        let reprompt_text = f
            .str("reprompt_text")?
            .unwrap_or("Sorry, I did not catch that. How can I help you?")
            .to_string();
        f.done()?;
        Ok(BotConfig {
            call,
            system,
            max_turns: usize::try_from(max_turns).unwrap_or(10),
            budget_ms,
            max_state_bytes: usize::try_from(max_state_bytes).unwrap_or(8_192),
            history,
            retry,
            reprompt_text,
        })
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// The caller said it (else the bot did).
    pub user: bool,
    pub text: String,
}

/// A webhook as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Webhook {
    /// `{botId, sessionId}`: the history is read from CXone.
    Seed { bot_id: String, session_id: String },
    /// CXone's Custom Exchange Endpoint request.
    Exchange(Exchange),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exchange {
    pub user_input: String,
    pub input_type: String,
    /// The conversation so far, from `botSessionState`.
    pub turns: Vec<Turn>,
    /// `botSessionState` members that are not the gateway's, kept as they came.
    pub other_state: Map<String, Value>,
    pub custom_payload: Value,
}

/// Why a webhook could not be answered by the model (the fallback says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadWebhook {
    pub pointer: &'static str,
    pub message: &'static str,
}

/// Which shape a body is; `None` when it is neither (a 400, there is no shape to answer in).
pub fn shape_of(v: &Value) -> Option<bool> {
    let o = v.as_object()?;
    if o.contains_key("botId") || o.contains_key("sessionId") {
        return Some(true);
    }
    let exchange = [
        "userInput",
        "virtualAgentId",
        "executionInfo",
        "botSessionState",
    ];
    exchange.iter().any(|k| o.contains_key(*k)).then_some(false)
}

/// An id that goes into a URL path: 1–128 of `[A-Za-z0-9._:-]`.
fn path_id(v: &Value) -> Option<String> {
    let s = v.as_str()?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| s.to_string())
}

/// The gateway's part of `botSessionState`.
const STATE_KEY: &str = "cxgate";

pub fn parse(v: &Value) -> Result<Webhook, BadWebhook> {
    let bad = |pointer, message| BadWebhook { pointer, message };
    if shape_of(v) == Some(true) {
        let bot_id = path_id(field(v, &["botId"]))
            .ok_or(bad("/botId", "must be 1-128 of letters, digits, . _ : -"))?;
        let session_id = path_id(field(v, &["sessionId"])).ok_or(bad(
            "/sessionId",
            "must be 1-128 of letters, digits, . _ : -",
        ))?;
        return Ok(Webhook::Seed { bot_id, session_id });
    }
    let user_input = match field(v, &["userInput"]) {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        _ => return Err(bad("/userInput", "must be a string")),
    };
    let input_type = field(v, &["userInputType"])
        .as_str()
        .unwrap_or("TEXT")
        .to_string();
    let (turns, other_state) = match field(v, &["botSessionState"]) {
        Value::Null => (Vec::new(), Map::new()),
        Value::Object(o) => {
            let mut other = o.clone();
            let ours = other.remove(STATE_KEY);
            (ours.as_ref().map(turns_of).unwrap_or_default(), other)
        }
        _ => return Err(bad("/botSessionState", "must be an object or null")),
    };
    Ok(Webhook::Exchange(Exchange {
        user_input,
        input_type,
        turns,
        other_state,
        custom_payload: field(v, &["customPayload"]).clone(),
    }))
}

/// `{"v":1,"turns":[["u","..."],["a","..."]]}`; anything else reads as no turns (a state
/// the gateway did not write starts the conversation afresh).
fn turns_of(v: &Value) -> Vec<Turn> {
    if field(v, &["v"]).as_u64() != Some(1) {
        return Vec::new();
    }
    let Some(items) = field(v, &["turns"]).as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| {
            let pair = t.as_array()?;
            let (who, text) = (pair.first()?.as_str()?, pair.get(1)?.as_str()?);
            Some(Turn {
                user: who == "u",
                text: text.to_string(),
            })
        })
        .collect()
}

/// `botSessionState` to send back: the other members as they came, and the newest turns
/// that fit in `max_bytes` (the oldest go first; if the other members alone are too big,
/// only the gateway's part is kept).
pub fn session_state(other: &Map<String, Value>, turns: &[Turn], max_bytes: usize) -> Value {
    let render = |from: usize, with_other: bool| {
        let kept: Vec<Value> = turns
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|t| Value::from(vec![if t.user { "u" } else { "a" }, t.text.as_str()]))
            .collect();
        let mut o = if with_other {
            other.clone()
        } else {
            Map::new()
        };
        let mut ours = Map::new();
        ours.insert("v".into(), Value::from(1));
        ours.insert("turns".into(), Value::Array(kept));
        o.insert(STATE_KEY.into(), Value::Object(ours));
        Value::Object(o)
    };
    for with_other in [true, false] {
        for from in 0..=turns.len() {
            let v = render(from, with_other);
            if v.to_string().len() <= max_bytes {
                return v;
            }
        }
    }
    render(turns.len(), false)
}

/// The newest `max` turns as chat messages after the system prompt.
pub fn messages(system: &str, turns: &[Turn], max: usize) -> Vec<Message> {
    let from = turns.len().saturating_sub(max);
    let mut out = vec![Message::new("system", system)];
    for t in turns.get(from..).unwrap_or_default() {
        out.push(Message::new(
            if t.user { "user" } else { "assistant" },
            t.text.clone(),
        ));
    }
    out
}

/// A page of the seed's session history: `{entities: [{from, text}], pageCount?}`; the
/// customer's messages are the user's, everything else the bot's.
pub fn history_page(body: &[u8]) -> Option<(Vec<Turn>, Option<u64>)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let entities = v.get("entities")?.as_array()?;
    let turns = entities
        .iter()
        .filter_map(|m| {
            let text = m.get("text")?.as_str()?;
            (!text.is_empty()).then(|| Turn {
                user: m.get("from").and_then(Value::as_str) == Some("customer"),
                text: text.to_string(),
            })
        })
        .collect();
    Some((turns, field(&v, &["pageCount"]).as_u64()))
}

/// What the webhook reply reports of the model call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    pub usage: Usage,
    pub cost_micros: u64,
    pub latency_ms: u64,
    pub model: String,
    pub temperature: f64,
}

/// The seed shape's reply; `reason` only on a fallback.
pub fn seed_reply(text: &str, reason: Option<&str>, m: &Metrics) -> Vec<u8> {
    let source = if reason.is_some() {
        "fallback"
    } else {
        "llm_gateway"
    };
    let reason = reason.map_or(String::new(), |r| format!(r#","reason":{}"#, quoted(r)));
    format!(
        r#"{{"messages":[{{"text":{}}}],"source":{}{},"metrics":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"cost_usd":{},"latency_ms":{},"model":{},"temperature":{}}}}}"#,
        quoted(text),
        quoted(source),
        reason,
        m.usage.prompt,
        m.usage.completion,
        m.usage.total(),
        usd(m.cost_micros),
        m.latency_ms,
        quoted(&m.model),
        Value::from(m.temperature)
    )
    .into_bytes()
}

/// The Custom Exchange reply. A fallback returns control to the CXone script with the
/// fallback text and says why in `errorDetails`.
pub fn exchange_reply(
    text: &str,
    reason: Option<&str>,
    last_utterance: &str,
    state: &Value,
    custom_payload: &Value,
) -> Vec<u8> {
    let (branch, errors) = match reason {
        None => ("PromptAndCollectNextResponse", "null".to_string()),
        Some(r) => (
            "ReturnControlToScript",
            format!(
                r#"{{"errorBehavior":"ReturnControlToScript","errorMessage":{}}}"#,
                quoted(r)
            ),
        ),
    };
    let intent = if reason.is_some() {
        "fallback"
    } else {
        "llm_response"
    };
    format!(
        r#"{{"branchName":{},"nextPromptSequence":{{"prompts":[{{"transcript":{},"textToSpeech":{}}}]}},"intentInfo":{{"intent":{},"intentConfidence":1.0,"lastUserUtterance":{},"slots":{{}}}},"botSessionState":{},"customPayload":{},"errorDetails":{}}}"#,
        quoted(branch),
        quoted(text),
        quoted(text),
        quoted(intent),
        quoted(last_utterance),
        state,
        custom_payload,
        errors
    )
    .into_bytes()
}

/// A fallback for a webhook whose shape is not known yet (a stage answered before the body
/// was read): the seed shape's fields and Custom Exchange's together, each reader takes its own.
pub fn either_reply(text: &str, reason: &str, m: &Metrics) -> Vec<u8> {
    let seed: Value =
        serde_json::from_slice(&seed_reply(text, Some(reason), m)).unwrap_or_default();
    let cx: Value = serde_json::from_slice(&exchange_reply(
        text,
        Some(reason),
        "",
        &Value::Null,
        &Value::Null,
    ))
    .unwrap_or_default();
    let mut out = Map::new();
    for v in [seed, cx] {
        if let Value::Object(o) = v {
            out.extend(o);
        }
    }
    Value::Object(out).to_string().into_bytes()
}
