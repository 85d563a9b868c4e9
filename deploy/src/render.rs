//! Renders the shipped config templates: `{{NAME}}` placeholders become ports and paths.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub admin: u16,
    pub sidecar: u16,
    pub genesys: u16,
    pub cxone: u16,
    pub llm: u16,
}

impl Ports {
    /// The demo's documented ports.
    pub fn demo() -> Ports {
        Ports {
            gateway: 8080,
            admin: 9901,
            sidecar: 7070,
            genesys: 7101,
            cxone: 7102,
            llm: 7103,
        }
    }

    /// Six distinct free loopback ports.
    pub fn free() -> Ports {
        let next = crate::free_port;
        Ports {
            gateway: next(),
            admin: next(),
            sidecar: next(),
            genesys: next(),
            cxone: next(),
            llm: next(),
        }
    }
}

pub struct Vars {
    pub ports: Ports,
    pub wasm_dir: PathBuf,
    /// The pipeline's config document (JSON, schemas inlined).
    pub pipeline: serde_json::Value,
    /// Where the gateway's access log goes (a file, or `/dev/stdout`).
    pub access_log: PathBuf,
    /// The consumer key store file ([`crate::keystore`]); its directory is watched.
    pub key_store: PathBuf,
}

/// The shipped pipeline config (`envoy/cxgate.json`) with the schema files its transform
/// section names (under `schemas/`) inlined: the document Envoy gets.
pub fn shipped_pipeline(repo: &Path) -> Result<serde_json::Value, String> {
    pipeline_document(repo, Path::new("envoy/cxgate.json"))
}

/// A pipeline config document at `base/path`, with the schema files its transform section
/// names (relative to `base`) inlined.
pub fn pipeline_document(base: &Path, path: &Path) -> Result<serde_json::Value, String> {
    let path = base.join(path);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(transform) = doc.get_mut("transform") {
        cxgate_transform::config::inline_schema_files(transform, &|p| {
            std::fs::read_to_string(base.join(p)).map_err(|e| format!("{p}: {e}"))
        })?;
    }
    Ok(doc)
}

/// Writes a rendered file; the error names it.
pub fn write_file(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A pipeline config whose budgets never limit: for tests about other things that send a lot.
pub fn unlimited(mut doc: serde_json::Value) -> serde_json::Value {
    let huge = serde_json::json!({"capacity": 1_000_000_000u64, "per_second": 1_000_000_000u64});
    doc["model"]["default_consumer"]["limit"] = huge.clone();
    if let Some(consumers) = doc["model"]["consumers"].as_object_mut() {
        for c in consumers.values_mut() {
            c["limit"] = huge.clone();
        }
    }
    doc["ratelimit"]["platforms"] = serde_json::json!({});
    doc
}

#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub id: String,
    pub key: String,
}

#[derive(Deserialize)]
struct ConsumersFile {
    consumers: Vec<Consumer>,
}

/// The demo consumers (`envoy/consumers.json`).
pub fn consumers(repo: &Path) -> Result<Vec<Consumer>, String> {
    let path = repo.join("envoy/consumers.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: ConsumersFile =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.consumers)
}

/// Fills every placeholder; fails if one is left (a typo would otherwise reach Envoy).
pub fn render_envoy(template: &str, vars: &Vars) -> Result<String, String> {
    let p = &vars.ports;
    let key_store_dir = vars.key_store.parent().unwrap_or(Path::new("/"));
    let mut out = template.to_string();
    for (name, value) in [
        ("GATEWAY_PORT", p.gateway.to_string()),
        ("ADMIN_PORT", p.admin.to_string()),
        ("SIDECAR_PORT", p.sidecar.to_string()),
        ("GENESYS_PORT", p.genesys.to_string()),
        ("CXONE_PORT", p.cxone.to_string()),
        ("LLM_PORT", p.llm.to_string()),
        ("WASM_DIR", vars.wasm_dir.display().to_string()),
        ("ACCESS_LOG", vars.access_log.display().to_string()),
        ("KEY_STORE", vars.key_store.display().to_string()),
        ("KEY_STORE_DIR", key_store_dir.display().to_string()),
        // Inside a single-quoted YAML scalar: a quote is written twice.
        (
            "PIPELINE_CONFIG",
            vars.pipeline.to_string().replace('\'', "''"),
        ),
        (
            "OPENAPI_JSON",
            crate::openapi::render_openapi(&crate::repo_root())?
                .to_string()
                .replace('\'', "''"),
        ),
    ] {
        out = out.replace(&format!("{{{{{name}}}}}"), &value);
    }
    if let Some(pos) = out.find("{{") {
        let rest = &out[pos..];
        let end = rest.find("}}").map(|e| e + 2).unwrap_or(rest.len().min(40));
        return Err(format!(
            "unknown placeholder {} in envoy template",
            &rest[..end]
        ));
    }
    Ok(out)
}
