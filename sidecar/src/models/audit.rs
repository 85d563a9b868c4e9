//! The audit log (one JSON line per action, appended, never rewritten) and the config
//! snapshot. Neither ever holds a secret: definitions carry credential references only.

use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

pub const API_VERSION: &str = "v2";
pub const SNAPSHOT_VERSION: &str = "1.0.0";

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[derive(Debug, Clone)]
pub struct Audit {
    pub path: PathBuf,
    pub environment: String,
}

impl Audit {
    /// Appends one line. One `write` of the whole line on an `O_APPEND` file, so lines from
    /// concurrent writers never interleave.
    pub fn record(
        &self,
        action: &str,
        model_id: Option<&str>,
        payload_hash: &str,
        metadata: Value,
    ) -> Result<Value, String> {
        let entry = json!({
            "auditId": uuid::Uuid::new_v4().to_string(),
            "timestamp": now_rfc3339(),
            "action": action,
            "modelId": model_id,
            "payloadHash": payload_hash,
            "environment": self.environment,
            "apiVersion": API_VERSION,
            "metadata": metadata,
        });
        let mut line = entry.to_string();
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("audit log {}: {e}", self.path.display()))?;
        f.write_all(line.as_bytes())
            .map_err(|e| format!("audit log {}: {e}", self.path.display()))?;
        Ok(entry)
    }
}

/// `{version, environment, exportedAt, apiVersion, modelDefinition}`; the definition keeps its
/// credential references, so the snapshot can be committed and applied elsewhere.
pub fn snapshot(environment: &str, definition: &Value) -> Value {
    json!({
        "version": SNAPSHOT_VERSION,
        "environment": environment,
        "exportedAt": now_rfc3339(),
        "apiVersion": API_VERSION,
        "modelDefinition": definition,
    })
}

/// The definition inside a snapshot, or a message saying what is wrong with it.
pub fn from_snapshot(s: &Value) -> Result<&Value, String> {
    match s.get("version").and_then(Value::as_str) {
        Some(SNAPSHOT_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "snapshot version {v:?}: this sidecar reads {SNAPSHOT_VERSION}"
            ));
        }
        None => return Err("not a snapshot: no version".into()),
    }
    s.get("modelDefinition")
        .filter(|d| d.is_object())
        .ok_or_else(|| "not a snapshot: no modelDefinition object".to_string())
}
