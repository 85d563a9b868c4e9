//! The request side of a proxied LLM call, for every operation the guard understands: deny
//! phrases screened in the roles the config names (default `user` and `tool`: a tool's result
//! is where an indirect injection arrives), PII redacted in every text field when the route
//! asks (`redact_prompts`), parts the guard cannot read refused, and a stream made to report
//! its usage.

use crate::api::Api;
use crate::chat::field;
use crate::config::{Config, RouteOptions};
use crate::pii::Kind;
use crate::placeholder::Placeholders;
use crate::slots::{self, Slot, Walk};
use crate::verdict::{Verdict, judge};
use cxgate_kit::problem::Problem;
use serde_json::{Value, json};

/// What screening decided about a request that goes on.
#[derive(Debug, PartialEq)]
pub struct Screened {
    pub api: Api,
    /// The body to forward instead, when it changed.
    pub body: Option<Vec<u8>>,
    pub model: String,
    pub stream: bool,
    /// The consumer asked for the usage chunk itself (chat and completions).
    pub consumer_usage: bool,
    /// Characters of every text field, for the estimator.
    pub prompt_chars: u64,
    /// What the screens filtered, one verdict per text field they changed.
    pub filtered: Vec<Verdict>,
    /// PII replaced in the prompt (`redact_prompts`).
    pub redacted: Vec<Kind>,
    /// What each token stands for (`placeholders`); never logged.
    pub placeholders: Placeholders,
}

/// A refused request: the problem, and the verdict when a screen refused it.
pub type Refusal = (Box<Problem>, Option<Verdict>);

fn bad(detail: impl Into<String>, pointer: &str) -> Refusal {
    let p = Problem::new(400, "invalid-request", "Invalid request", detail)
        .with_error(pointer, "invalid");
    (Box::new(p), None)
}

/// Screens a request body of `api`. Bodies that are not UTF-8 or not a JSON object get 400,
/// and so does a part the guard cannot read (`uninspectable-content`).
pub fn screen_request(
    cfg: &Config,
    api: Api,
    route: &RouteOptions,
    body: &[u8],
) -> Result<Screened, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8", ""))?;
    let mut v: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("the body is not JSON: {e}"), ""))?;
    if !v.is_object() {
        return Err(bad("the body must be a JSON object", ""));
    }
    let mut out = Screened {
        api,
        body: None,
        model: field(&v, &["model"])
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        stream: field(&v, &["stream"]) == true,
        consumer_usage: field(&v, &["stream_options", "include_usage"]) == true,
        prompt_chars: 0,
        filtered: Vec::new(),
        redacted: Vec::new(),
        placeholders: Placeholders::default(),
    };
    let mut changed = match slots::request(api, &mut v, route.pass_media) {
        Walk::Slots(list) => screen_slots(cfg, route, list, &mut out)?,
        Walk::Uninspectable { pointer, what } => {
            let p = Problem::new(
                400,
                "uninspectable-content",
                "Content the guard cannot read",
                format!(
                    "The LLM guard screens every prompt it forwards and cannot read {what}; \
                     send text, or use a route that passes media."
                ),
            )
            .with_error(pointer, format!("{what} cannot be screened"));
            return Err((Box::new(p), None));
        }
    };
    if out.stream && !out.consumer_usage && matches!(api, Api::Chat | Api::Completions) {
        force_usage(&mut v)?;
        changed = true;
    }
    if changed {
        out.body = Some(v.to_string().into_bytes());
    }
    Ok(out)
}

/// Screens and redacts each text field; true if any changed.
fn screen_slots(
    cfg: &Config,
    route: &RouteOptions,
    list: Vec<Slot<'_>>,
    out: &mut Screened,
) -> Result<bool, Refusal> {
    let mut changed = false;
    for slot in list {
        let Some(s) = slot.text.as_str() else {
            continue;
        };
        out.prompt_chars += s.chars().count() as u64;
        let mut text = None;
        if cfg.roles.contains(&slot.role) {
            match judge(cfg, route.detector, s) {
                Verdict::Clean => {}
                Verdict::Filtered {
                    text: t,
                    rules,
                    score,
                } => {
                    text = Some(t);
                    out.filtered.push(Verdict::Filtered {
                        text: String::new(),
                        rules,
                        score,
                    });
                }
                blocked @ Verdict::Blocked { .. } => {
                    return Err(rejected(slot.pointer, blocked));
                }
            }
        }
        if route.redact_prompts {
            let input = text.as_deref().unwrap_or(s);
            let (clean, kinds) = if route.placeholders {
                out.placeholders.substitute(&cfg.scanner, input)
            } else {
                cfg.scanner.redact(input)
            };
            if !kinds.is_empty() {
                out.redacted.extend(kinds);
                text = Some(clean);
            }
        }
        if let Some(t) = text {
            *slot.text = Value::String(t);
            changed = true;
        }
    }
    Ok(changed)
}

/// The 400 for a prompt a screen refused, naming the field, the rule and the detector's
/// score and features (never the text).
pub fn rejected(pointer: String, v: Verdict) -> Refusal {
    let Verdict::Blocked {
        rule,
        score,
        features,
    } = &v
    else {
        let p = Problem::new(400, "prompt-rejected", "Prompt rejected", "refused");
        return (Box::new(p), Some(v));
    };
    let mut p = Problem::new(
        400,
        "prompt-rejected",
        "Prompt rejected",
        if rule == "detector" {
            format!("the prompt reads as an injection attempt (score {score})")
        } else {
            format!("the prompt matches the deny rule {rule:?}")
        },
    )
    .with_error(pointer, format!("matches deny rule {rule}"))
    .with_extra("rule", json!(rule));
    if *score > 0 {
        p = p
            .with_extra("score", json!(score))
            .with_extra("features", json!(features));
    }
    (Box::new(p), Some(v))
}

/// A stream that did not ask for its usage is made to (the meter needs it; the guard drops
/// the usage chunk again before the consumer).
fn force_usage(v: &mut Value) -> Result<(), Refusal> {
    let Some(o) = v.as_object_mut() else {
        return Ok(());
    };
    let opts = o.entry("stream_options").or_insert_with(|| json!({}));
    match opts.as_object_mut() {
        Some(opts) => {
            opts.insert("include_usage".into(), json!(true));
            Ok(())
        }
        None => Err(bad("stream_options must be an object", "/stream_options")),
    }
}
