//! Checking a model definition before anything is sent: the JSON Schema
//! (`schemas/llm-model.schema.json`), then what a schema cannot say. Every finding has its
//! JSON pointer. A literal API key is refused before the schema runs, and no message ever
//! quotes a credential.

use crate::config::SecretSource;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

pub const SCHEMA: &str = include_str!("../../../schemas/llm-model.schema.json");

/// One error or warning, at its pointer in the definition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub pointer: String,
    pub message: String,
}

fn finding(pointer: impl Into<String>, message: impl Into<String>) -> Finding {
    Finding {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// A definition that passed, with its warnings.
#[derive(Debug, Clone)]
pub struct Checked {
    pub definition: Value,
    pub warnings: Vec<Finding>,
}

fn validator() -> Result<&'static jsonschema::Validator, String> {
    static V: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    V.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).map_err(|e| e.to_string())?;
        jsonschema::validator_for(&schema).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| format!("the model schema does not compile: {e}"))
}

/// Checks a definition: every error at once, or the definition and its warnings.
pub fn check(def: &Value) -> Result<Checked, Vec<Finding>> {
    let mut errors = Vec::new();
    let key = def.pointer("/credentials/apiKey");
    if key.is_some_and(|k| !k.is_object()) {
        errors.push(finding(
            "/credentials/apiKey",
            r#"a literal API key is not accepted: give a reference, {"env": "NAME"} or {"file": "/path"}"#,
        ));
    }
    match validator() {
        Ok(v) => {
            for e in v.iter_errors(def) {
                let pointer = e.instance_path().to_string();
                // Messages quote the value they refuse: not for credentials.
                if pointer.starts_with("/credentials") {
                    if !errors.iter().any(|f| f.pointer == pointer) {
                        errors.push(finding(pointer, "must be a reference {env} or {file}"));
                    }
                    continue;
                }
                errors.push(finding(pointer, e.to_string()));
            }
        }
        Err(e) => errors.push(finding("", e)),
    }
    if let Some(t) = def.get("promptTemplate").and_then(Value::as_str) {
        errors.extend(check_template(t));
    }
    if let Some(s) = def.get("responseSchema").filter(|s| s.is_object())
        && let Err(e) = jsonschema::meta::validate(s)
    {
        let at = format!("/responseSchema{}", e.instance_path());
        errors.push(finding(at, format!("not a valid JSON Schema: {e}")));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut warnings = Vec::new();
    let temperature = def
        .pointer("/configuration/temperature")
        .and_then(Value::as_f64);
    let max_tokens = def
        .pointer("/configuration/maxTokens")
        .and_then(Value::as_u64);
    if temperature.is_some_and(|t| t > 0.7) && max_tokens.is_some_and(|m| m > 4000) {
        warnings.push(finding(
            "/configuration",
            "temperature above 0.7 with maxTokens above 4000 gives long, varied answers",
        ));
    }
    Ok(Checked {
        definition: def.clone(),
        warnings,
    })
}

/// At least one of `{input}` and `{context}`, no other placeholder, no stray brace.
pub fn check_template(t: &str) -> Vec<Finding> {
    const AT: &str = "/promptTemplate";
    let mut errors = Vec::new();
    let mut known = 0;
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        let after = rest.get(open..).unwrap_or("");
        if after.starts_with('}') {
            errors.push(finding(AT, "a '}' closes no placeholder"));
            break;
        }
        let Some(close) = after.find('}') else {
            errors.push(finding(AT, "a '{' is never closed"));
            break;
        };
        let name = after.get(1..close).unwrap_or("");
        match name {
            "input" | "context" => known += 1,
            other => errors.push(finding(
                AT,
                format!("unknown placeholder {{{other}}}: only {{input}} and {{context}}"),
            )),
        }
        rest = after.get(close + 1..).unwrap_or("");
    }
    if known == 0 && errors.is_empty() {
        errors.push(finding(AT, "needs at least one of {input} and {context}"));
    }
    errors
}

/// The definition's secret sources (today: the API key).
pub fn api_key_source(def: &Value) -> Option<SecretSource> {
    let k = def.pointer("/credentials/apiKey")?;
    serde_json::from_value(k.clone()).ok()
}

/// `def` with `credentials.apiKey` replaced by the secret, for the platform only.
pub fn with_secret(def: &Value, secret: &str) -> Value {
    let mut out = def.clone();
    if let Some(c) = out.get_mut("credentials").and_then(Value::as_object_mut) {
        c.insert("apiKey".into(), Value::String(secret.to_string()));
    }
    out
}

/// Canonical JSON: keys sorted at every level, no spaces. Stable whatever order the file had.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let items: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), canonical(v)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// sha256 (hex) of the canonical definition without its credentials: the same definition
/// hashes the same in every environment, whatever its key says.
pub fn payload_hash(def: &Value) -> String {
    let mut d = def.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("credentials");
    }
    let digest = Sha256::digest(canonical(&d).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `id` looks like one of `provider`'s model ids (a warning only: platforms add models
/// faster than any list here).
pub fn model_id_looks_right(provider: &str, id: &str) -> bool {
    let lower = id.to_ascii_lowercase();
    match provider {
        "openai" => ["gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-"]
            .iter()
            .any(|p| lower.starts_with(p)),
        "anthropic" => lower.starts_with("claude-"),
        // e.g. anthropic.claude-3-5-sonnet-20240620-v1:0
        "bedrock" => lower.split_once('.').is_some_and(|(vendor, model)| {
            !vendor.is_empty()
                && !model.is_empty()
                && vendor
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
        }),
        // Azure names deployments freely.
        _ => true,
    }
}

/// The key's shape for its provider; never says what the key is.
pub fn key_format(provider: &str, key: &str) -> Result<(), String> {
    let ok = match provider {
        "openai" => key.starts_with("sk-") && key.len() >= 20,
        "anthropic" => key.starts_with("sk-ant-") && key.len() >= 20,
        "azure" => {
            (key.len() == 32 && key.chars().all(|c| c.is_ascii_hexdigit())) || key.len() >= 64
        }
        _ => key.len() >= 16,
    };
    let expected = match provider {
        "openai" => "sk-… and at least 20 characters",
        "anthropic" => "sk-ant-… and at least 20 characters",
        "azure" => "32 hexadecimal characters (or a 64+ character key)",
        _ => "at least 16 characters",
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the key ({} characters) does not look like a {provider} key: expected {expected}",
            key.chars().count()
        ))
    }
}

/// Deployment checks beyond the definition itself: the model id's format (warning) and the
/// API key behind the reference (an error when it is there but malformed, a warning when it
/// cannot be read here).
pub fn deployment(def: &Value) -> (Vec<Finding>, Vec<Finding>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let provider = def.get("provider").and_then(Value::as_str).unwrap_or("");
    if let Some(id) = def.get("modelId").and_then(Value::as_str)
        && !model_id_looks_right(provider, id)
    {
        warnings.push(finding(
            "/modelId",
            format!("{id:?} does not look like a {provider} model id"),
        ));
    }
    match api_key_source(def).map(|s| s.resolve("credentials.apiKey")) {
        Some(Ok(key)) => {
            if let Err(e) = key_format(provider, key.expose()) {
                errors.push(finding("/credentials/apiKey", e));
            }
        }
        Some(Err(e)) => warnings.push(finding(
            "/credentials/apiKey",
            format!("cannot check the key here: {e}"),
        )),
        None => {}
    }
    (errors, warnings)
}
