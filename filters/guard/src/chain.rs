//! The two-stage chain as config and pure shapes: an extraction model turns the
//! consumer's input into JSON, a specialist model gets that JSON in its prompt and answers
//! JSON with the configured fields, and the consumer gets one aggregated document. The calls
//! themselves are made by [`crate::run`].

use crate::chat::quoted;
use crate::completion::ModelCall;
use crate::extract::{self, Malformed};
use crate::meter::Usage;
use crate::retry::RetryPolicy;
use cxgate_kit::ConfigError;
use cxgate_kit::fields::Fields;
use serde_json::{Map, Value};

/// One model call of a chain: the model and its prompt templates.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub call: ModelCall,
    pub system: Option<String>,
    pub user: String,
}

impl Prompt {
    /// The messages with `placeholder` replaced by `value` (once, never re-read).
    pub fn messages(&self, placeholder: &str, value: &str) -> Vec<crate::completion::Message> {
        let mut out = Vec::with_capacity(2);
        if let Some(s) = &self.system {
            out.push(crate::completion::Message::new(
                "system",
                s.replace(placeholder, value),
            ));
        }
        out.push(crate::completion::Message::new(
            "user",
            self.user.replace(placeholder, value),
        ));
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: String,
    pub extraction: Prompt,
    pub specialist: Prompt,
    /// Fields the specialist's JSON must have.
    pub required: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChainConfig {
    pub pipelines: Vec<Pipeline>,
    /// Index of the pipeline a request that names none runs.
    pub default: usize,
    /// The whole chain, retries and waits included.
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    pub max_input_chars: usize,
}

pub const INPUT: &str = "{input}";
pub const EXTRACTION: &str = "{extraction}";

/// The seed's specialist instructions.
pub const SEED_SPECIALIST: &str = "You are a domain specialist. Validate the extracted request against business rules. Return a JSON object with \"isValid\", \"reason\", and \"nextSteps\".";

impl ChainConfig {
    pub fn pipeline(&self, name: Option<&str>) -> Option<(usize, &Pipeline)> {
        match name {
            None => self.pipelines.get(self.default).map(|p| (self.default, p)),
            Some(n) => self.pipelines.iter().enumerate().find(|(_, p)| p.name == n),
        }
    }

    pub fn compile(mut f: Fields<'_>) -> Result<ChainConfig, ConfigError> {
        let timeout_ms = f.u64("timeout_ms")?.unwrap_or(30_000);
        if !(1_000..=300_000).contains(&timeout_ms) {
            return Err(ConfigError::at(
                f.at("timeout_ms"),
                "must be between 1000 and 300000",
            ));
        }
        let retry = RetryPolicy::compile(f.object("retry")?, RetryPolicy::default())?;
        let max_input_chars = f.u64("max_input_chars")?.unwrap_or(4_000);
        let pipelines = f
            .entries("pipelines", |name, mut p| {
                let extraction = prompt(p.object("extraction")?, &p.at("extraction"), 0.1, 500)?;
                let specialist = prompt(p.object("specialist")?, &p.at("specialist"), 0.2, 300)?;
                let required = p.strings("required")?.unwrap_or_else(|| {
                    ["isValid", "reason", "nextSteps"]
                        .map(String::from)
                        .to_vec()
                });
                let placed = |pr: &Prompt, ph: &str| {
                    pr.user.contains(ph) || pr.system.as_deref().is_some_and(|s| s.contains(ph))
                };
                if !placed(&extraction, INPUT) {
                    return Err(ConfigError::at(
                        p.at("extraction"),
                        "a prompt template must hold {input}",
                    ));
                }
                if !placed(&specialist, EXTRACTION) {
                    return Err(ConfigError::at(
                        p.at("specialist"),
                        "a prompt template must hold {extraction}",
                    ));
                }
                p.done()?;
                Ok(Pipeline {
                    name: name.to_string(),
                    extraction,
                    specialist,
                    required,
                })
            })?
            .unwrap_or_default();
        let pipelines: Vec<Pipeline> = pipelines.into_iter().map(|(_, p)| p).collect();
        if pipelines.is_empty() {
            return Err(ConfigError::at(
                f.at("pipelines"),
                "name at least one pipeline",
            ));
        }
        let default = match f.str("default")? {
            None => 0,
            Some(d) => pipelines.iter().position(|p| p.name == d).ok_or_else(|| {
                ConfigError::at(f.at("default"), format!("no pipeline named {d:?}"))
            })?,
        };
        f.done()?;
        Ok(ChainConfig {
            pipelines,
            default,
            timeout_ms,
            retry,
            max_input_chars: usize::try_from(max_input_chars).unwrap_or(usize::MAX),
        })
    }
}

/// `{model, temperature?, max_tokens?, system?, user?}`.
fn prompt(
    f: Option<Fields<'_>>,
    at: &str,
    temperature: f64,
    max_tokens: u64,
) -> Result<Prompt, ConfigError> {
    let mut f = f.ok_or_else(|| ConfigError::at(at, "missing"))?;
    let call = model_call(&mut f, temperature, max_tokens)?;
    let system = f.str("system")?.map(str::to_string);
    let user = f.str("user")?.unwrap_or(INPUT).to_string();
    f.done()?;
    Ok(Prompt { call, system, user })
}

/// `model`, `temperature` (0..=2) and `max_tokens` (1..=32768) of a model call.
pub fn model_call(
    f: &mut Fields<'_>,
    temperature: f64,
    max_tokens: u64,
) -> Result<ModelCall, ConfigError> {
    let model = f.required_str("model")?.to_string();
    let temperature = f.f64("temperature")?.unwrap_or(temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ConfigError::at(
            f.at("temperature"),
            "must be between 0 and 2",
        ));
    }
    let max_tokens = f.u64("max_tokens")?.unwrap_or(max_tokens);
    if !(1..=32_768).contains(&max_tokens) {
        return Err(ConfigError::at(
            f.at("max_tokens"),
            "must be between 1 and 32768",
        ));
    }
    Ok(ModelCall {
        model,
        temperature,
        max_tokens,
    })
}

/// The chain's two stages, as the reply names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Extraction,
    Specialization,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Extraction => "extraction",
            Phase::Specialization => "specialization",
        }
    }
}

/// How much of a model's text an error reply carries.
pub const OUTPUT_EXCERPT: usize = 500;

/// A failed chain, as the consumer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainError {
    pub status: u16,
    /// `invalid_request`, `prompt_rejected`, `malformed_json`, `missing_fields`, `unsafe_output`,
    /// `upstream_error`, `upstream_rejected`, `invalid_response`, `timeout`.
    pub code: &'static str,
    pub message: String,
    /// `extraction`, `specialization`, or `failed` when no stage is to blame.
    pub stage: &'static str,
    /// The model's text; the reply carries it redacted and cut to [`OUTPUT_EXCERPT`] bytes.
    pub output: Option<String>,
    pub errors: Vec<(String, String)>,
    pub retry_after_s: Option<u64>,
}

impl ChainError {
    pub fn new(status: u16, code: &'static str, stage: &'static str, message: String) -> Self {
        ChainError {
            status,
            code,
            message,
            stage,
            output: None,
            errors: Vec::new(),
            retry_after_s: None,
        }
    }

    pub fn bad_input(pointer: &str, message: &str) -> Self {
        let mut e = ChainError::new(400, "invalid_request", "failed", message.to_string());
        e.errors.push((pointer.to_string(), message.to_string()));
        e
    }
}

/// The consumer's request: `{input, pipeline?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub input: String,
    pub pipeline: Option<String>,
}

pub fn parse_input(v: &Value, max_chars: usize) -> Result<Input, Box<ChainError>> {
    let Some(o) = v.as_object() else {
        return Err(Box::new(ChainError::bad_input(
            "",
            "the body must be a JSON object",
        )));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "input" | "pipeline"))
    {
        let at = format!("/{}", cxgate_kit::config::pointer_token(k));
        return Err(Box::new(ChainError::bad_input(
            &at,
            "unknown field: use input and pipeline",
        )));
    }
    let input = match o.get("input") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(Box::new(ChainError::bad_input(
                "/input",
                "must not be empty",
            )));
        }
        Some(_) => {
            return Err(Box::new(ChainError::bad_input(
                "/input",
                "must be a string",
            )));
        }
        None => return Err(Box::new(ChainError::bad_input("/input", "is required"))),
    };
    if input.chars().count() > max_chars {
        let m = format!("must be at most {max_chars} characters");
        return Err(Box::new(ChainError::bad_input("/input", &m)));
    }
    let pipeline = match o.get("pipeline") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(Box::new(ChainError::bad_input(
                "/pipeline",
                "must be a string",
            )));
        }
    };
    Ok(Input { input, pipeline })
}

/// A stage's JSON out of its model's text; `required` fields must all be there.
pub fn stage_output(
    phase: Phase,
    text: &str,
    required: &[String],
) -> Result<Map<String, Value>, Box<ChainError>> {
    let obj = extract::first_object(text).map_err(|m: Malformed| {
        let mut e = ChainError::new(502, "malformed_json", phase.as_str(), m.describe().into());
        e.output = Some(text.to_string());
        Box::new(e)
    })?;
    let missing: Vec<&str> = required
        .iter()
        .filter(|f| !obj.contains_key(f.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        let mut e = ChainError::new(
            502,
            "missing_fields",
            phase.as_str(),
            format!("the model's JSON lacks {}", missing.join(", ")),
        );
        e.output = Some(text.to_string());
        return Err(Box::new(e));
    }
    Ok(obj)
}

/// What one stage cost: its model, tries and tokens.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StageUsage {
    pub model: String,
    pub attempts: u32,
    pub usage: Usage,
    pub cost_micros: u64,
}

impl StageUsage {
    fn render(&self) -> String {
        format!(
            r#"{{"model":{},"attempts":{},"prompt_tokens":{},"completion_tokens":{},"total_tokens":{},"estimated":{},"cost_usd":{}}}"#,
            quoted(&self.model),
            self.attempts,
            self.usage.prompt,
            self.usage.completion,
            self.usage.total(),
            self.usage.estimated,
            usd(self.cost_micros)
        )
    }
}

/// Micro-dollars as a dollar amount.
pub fn usd(micros: u64) -> Value {
    Value::from(micros as f64 / 1_000_000.0)
}

/// The metadata every reply carries.
pub struct Meta<'a> {
    pub timestamp: &'a str,
    pub stage: &'a str,
    pub request_id: &'a str,
    pub pipeline: &'a str,
    pub trace_id: Option<&'a str>,
    pub latency_ms: u64,
    pub usage: &'a [(Phase, StageUsage)],
}

impl Meta<'_> {
    fn render(&self) -> String {
        let mut usage: Vec<String> = self
            .usage
            .iter()
            .map(|(p, u)| format!("{}:{}", quoted(p.as_str()), u.render()))
            .collect();
        let (mut prompt, mut completion, mut cost) = (0u64, 0u64, 0u64);
        for (_, u) in self.usage {
            prompt += u.usage.prompt;
            completion += u.usage.completion;
            cost += u.cost_micros;
        }
        usage.push(format!(
            r#""total":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{},"cost_usd":{}}}"#,
            prompt + completion,
            usd(cost)
        ));
        format!(
            r#"{{"timestamp":{},"pipelineStage":{},"requestId":{},"pipeline":{},"traceId":{},"latency_ms":{},"usage":{{{}}}}}"#,
            quoted(self.timestamp),
            quoted(self.stage),
            quoted(self.request_id),
            quoted(self.pipeline),
            self.trace_id.map_or("null".into(), quoted),
            self.latency_ms,
            usage.join(",")
        )
    }
}

pub fn success_body(
    extraction: &Map<String, Value>,
    specialization: &Map<String, Value>,
    meta: &Meta<'_>,
) -> Vec<u8> {
    format!(
        r#"{{"status":"success","extraction":{},"specialization":{},"metadata":{}}}"#,
        Value::Object(extraction.clone()),
        Value::Object(specialization.clone()),
        meta.render()
    )
    .into_bytes()
}

pub fn error_body(e: &ChainError, meta: &Meta<'_>) -> Vec<u8> {
    let errors: Vec<String> = e
        .errors
        .iter()
        .map(|(p, m)| format!(r#"{{"pointer":{},"message":{}}}"#, quoted(p), quoted(m)))
        .collect();
    let output = e.output.as_deref().map_or("null".into(), quoted);
    format!(
        r#"{{"status":"error","error":{},"message":{},"modelOutput":{},"errors":[{}],"metadata":{}}}"#,
        quoted(e.code),
        quoted(&e.message),
        output,
        errors.join(","),
        meta.render()
    )
    .into_bytes()
}
