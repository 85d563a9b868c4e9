//! The config document every cxgate module reads (Envoy: the plugin `configuration`; Kong: the
//! filter `config`). One format for the pipeline and for each standalone filter:
//!
//! ```json
//! {"version": 2, "stages": ["trace", "authz", "ratelimit"], "sync": {...},
//!  "model": {"consumers": {...}, "routes": [...]}, "ratelimit": {...}}
//! ```
//!
//! Each stage's settings sit under its own name; a section for a stage that is not listed is
//! refused, so a typo cannot silently switch a stage off.

use crate::model::Model;
use crate::stage::StageKind;
use cxgate_kit::ConfigError;
use cxgate_kit::config::{from_value, pointer_token};
use cxgate_kit::sync::SyncConfig;
use serde_json::Value;

/// The format this release reads.
pub const VERSION: u64 = 2;

pub struct Document {
    pub model: Model,
    pub sync: Option<SyncConfig>,
    /// In order, each with its section (`Null` when absent).
    pub stages: Vec<(StageKind, Value)>,
}

/// Parses a document for a module hosting `available` stages; `default` is used when the
/// document lists none (a standalone filter's own stage).
pub fn parse(
    bytes: &[u8],
    available: &[StageKind],
    default: &[&str],
) -> Result<Document, ConfigError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ConfigError::at("", "config is not valid UTF-8"))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::at("", format!("config is not valid JSON: {e}")))?;
    let Value::Object(mut doc) = value else {
        return Err(ConfigError::at("", "config must be a JSON object"));
    };
    match doc.remove("version") {
        None => {}
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) if v.as_u64() == Some(1) => {
            return Err(ConfigError::at(
                "/version",
                "version 1 was the per-filter format; version 2 puts the routes and consumers in /model (schemas/filters/cxgate.config.schema.json)",
            ));
        }
        Some(v) => {
            return Err(ConfigError::at(
                "/version",
                format!("unsupported config version {v}; this module reads version {VERSION}"),
            ));
        }
    }
    let names: Vec<String> = match doc.remove("stages") {
        None => default.iter().map(|s| s.to_string()).collect(),
        Some(v) => from_value(v, "/stages")?,
    };
    if names.is_empty() {
        return Err(ConfigError::at("/stages", "at least one stage"));
    }
    let mut stages: Vec<(StageKind, Value)> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(kind) = available.iter().find(|k| k.name == name) else {
            let hosted: Vec<&str> = available.iter().map(|k| k.name).collect();
            return Err(ConfigError::at(
                format!("/stages/{i}"),
                format!("{name:?} is not a stage of this module; it hosts {hosted:?}"),
            ));
        };
        if stages.iter().any(|(k, _)| k.name == kind.name) {
            return Err(ConfigError::at(
                format!("/stages/{i}"),
                format!("{name:?} is listed twice"),
            ));
        }
        stages.push((*kind, Value::Null));
    }
    let model = match doc.remove("model") {
        Some(m) => Model::compile(m)?,
        None => return Err(ConfigError::at("/model", "missing field `model`")),
    };
    let sync = match doc.remove("sync") {
        Some(s) => Some(from_value::<SyncConfig>(s, "/sync")?),
        None => None,
    };
    for (key, section) in doc {
        let Some(slot) = stages.iter_mut().find(|(k, _)| k.name == key) else {
            let field = format!("/{}", pointer_token(&key));
            return Err(if available.iter().any(|k| k.name == key) {
                ConfigError::at(
                    field,
                    format!("settings for stage {key:?}, which /stages does not list"),
                )
            } else {
                ConfigError::at(field, format!("unknown field `{key}`"))
            });
        };
        slot.1 = section;
    }
    Ok(Document {
        model,
        sync,
        stages,
    })
}
