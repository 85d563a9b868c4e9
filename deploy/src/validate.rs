//! `cxgate validate`: checks a deployment before anything loads it. Every cxgate document in
//! the rendered `envoy/envoy.yaml` and in `kong/kong.yml` against its schema (the published one;
//! Kong's draft-4 `kong/cxgate.meta.json`) and the pipeline's own parser, the sidecar config
//! against its schema and the sidecar's parser, and the cross-references between them: every
//! route's scopes held by some consumer, rate-limit platforms that routes use, and every ID map
//! a transform template looks up synced by the sidecar. Each finding names the file, the JSON
//! pointer and the reason.

use crate::render::{Ports, Vars, render_envoy, shipped_pipeline};
use cxgate_kit::config::pointer_token;
use cxgate_kit::host::CasDialect;
use cxgate_model::fakes::TestHost;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub pointer: String,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "(document)"
        } else {
            &self.pointer
        };
        write!(f, "{}: {at}: {}", self.file, self.reason)
    }
}

fn finding(file: &str, pointer: impl Into<String>, reason: impl Into<String>) -> Finding {
    Finding {
        file: file.to_string(),
        pointer: pointer.into(),
        reason: reason.into(),
    }
}

/// What to check; `shipped` fills in the repository's own files.
pub struct Deployment {
    pub envoy: Option<PathBuf>,
    pub kong: Option<PathBuf>,
    /// Sidecar configs checked alone (schema and parser).
    pub sidecar: Vec<PathBuf>,
    /// The sidecar config the pipeline documents run against (the ID maps it syncs). `None`:
    /// the demo's.
    pub paired_sidecar: Option<Value>,
}

impl Deployment {
    pub fn shipped(root: &Path) -> Deployment {
        Deployment {
            envoy: Some(root.join("envoy/envoy.yaml")),
            kong: Some(root.join("kong/kong.yml")),
            sidecar: vec![root.join("sidecar/config.example.json")],
            paired_sidecar: None,
        }
    }
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

pub fn schema_of(root: &Path, rel: &str) -> Result<jsonschema::Validator, String> {
    let v = read_json(&root.join(rel)).map_err(|e| format!("{rel}: {e}"))?;
    jsonschema::validator_for(&v).map_err(|e| format!("{rel}: {e}"))
}

/// Every finding of the deployment; empty when it may be loaded.
pub fn check(root: &Path, d: &Deployment) -> Vec<Finding> {
    let mut out = Vec::new();
    let published = match schema_of(root, "schemas/filters/cxgate.config.schema.json") {
        Ok(v) => v,
        Err(e) => return vec![finding("schemas", "", e)],
    };
    let sidecar_for_maps = d
        .paired_sidecar
        .clone()
        .unwrap_or_else(|| crate::demo_sidecar_config(&Ports::demo(), None));
    let synced = synced_maps(&sidecar_for_maps);
    if let Some(envoy) = &d.envoy {
        let file = envoy.display().to_string();
        match envoy_documents(root, envoy).and_then(|d| Ok((d, envoy_clusters(root, envoy)?))) {
            Ok((docs, clusters)) => {
                for (name, doc) in docs {
                    let file = format!("{file} ({name})");
                    out.extend(document(
                        &file,
                        &doc,
                        &published,
                        CasDialect::Envoy,
                        &synced,
                    ));
                    out.extend(envoy_upstreams(&file, &doc, &clusters));
                }
            }
            Err(e) => out.push(finding(&file, "", e)),
        }
    }
    if let Some(kong) = &d.kong {
        let file = kong.display().to_string();
        let meta = read_json(&root.join("kong/cxgate.meta.json")).and_then(|m| {
            jsonschema::validator_for(&m["config_schema"]).map_err(|e| e.to_string())
        });
        match (kong_documents(kong), meta) {
            (Ok(docs), Ok(meta)) => {
                for (name, doc) in docs {
                    let file = format!("{file} ({name})");
                    out.extend(document(&file, &doc, &meta, CasDialect::Kong, &synced));
                }
            }
            (Err(e), _) | (_, Err(e)) => out.push(finding(&file, "", e)),
        }
    }
    for path in &d.sidecar {
        out.extend(sidecar(root, path));
    }
    out
}

/// The rendered `envoy.yaml` as YAML.
fn rendered_envoy(root: &Path, path: &Path) -> Result<serde_yaml::Value, String> {
    let template = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let vars = Vars {
        ports: Ports::demo(),
        wasm_dir: crate::wasm_dir(),
        pipeline: shipped_pipeline(root)?,
        access_log: "/dev/stdout".into(),
        key_store: "/etc/cxgate/keys/consumer-keys.json".into(),
    };
    let rendered = render_envoy(&template, &vars)?;
    serde_yaml::from_str(&rendered).map_err(|e| format!("not YAML: {e}"))
}

/// The cluster names the rendered `envoy.yaml` defines.
pub fn envoy_clusters(root: &Path, path: &Path) -> Result<BTreeSet<String>, String> {
    let yaml = rendered_envoy(root, path)?;
    let clusters = yaml
        .get("static_resources")
        .and_then(|r| r.get("clusters"))
        .and_then(|c| c.as_sequence())
        .ok_or("no static_resources.clusters")?;
    Ok(clusters
        .iter()
        .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
        .collect())
}

/// In Envoy every call names a cluster: one the config lacks fails each call at run time
/// (the proxy refuses the dispatch), which the parser cannot tell.
fn envoy_upstreams(file: &str, doc: &Value, clusters: &BTreeSet<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(doc, "", &mut |key, child, at| {
        if let ("upstream", Some(u)) = (key, child.as_str())
            && !clusters.contains(u)
        {
            out.push(finding(file, at, format!("no Envoy cluster named {u:?}")));
        }
    });
    out
}

/// The rendered `envoy.yaml`'s Wasm plugin configurations, by plugin name.
pub fn envoy_documents(root: &Path, path: &Path) -> Result<Vec<(String, Value)>, String> {
    let yaml = rendered_envoy(root, path)?;
    let mut found = Vec::new();
    wasm_configs(&yaml, &mut found);
    if found.is_empty() {
        return Err("no Wasm filter configuration found".into());
    }
    found
        .into_iter()
        .map(|(name, text)| {
            serde_json::from_str(&text)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("{name}: the configuration is not JSON: {e}"))
        })
        .collect()
}

fn wasm_configs(v: &serde_yaml::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            let config = m.get("config");
            let text = config
                .and_then(|c| c.get("configuration"))
                .and_then(|c| c.get("value"))
                .and_then(|c| c.as_str());
            if let Some(text) = text {
                let name = config
                    .and_then(|c| c.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("?");
                out.push((name.to_string(), text.to_string()));
            }
            m.values().for_each(|c| wasm_configs(c, out));
        }
        serde_yaml::Value::Sequence(s) => s.iter().for_each(|c| wasm_configs(c, out)),
        _ => {}
    }
}

/// `kong.yml`'s filter configurations, by service and filter.
pub fn kong_documents(path: &Path) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("not YAML: {e}"))?;
    let kong = serde_json::to_value(yaml).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for service in kong["services"].as_array().into_iter().flatten() {
        for chain in service["filter_chains"].as_array().into_iter().flatten() {
            for filter in chain["filters"].as_array().into_iter().flatten() {
                let name = format!("{} {}", service["name"], filter["name"]);
                out.push((name, filter["config"].clone()));
            }
        }
    }
    if out.is_empty() {
        return Err("no filter_chains with filters".into());
    }
    Ok(out)
}

/// One pipeline document: schema, the real parser, cross-references.
fn document(
    file: &str,
    doc: &Value,
    schema: &jsonschema::Validator,
    dialect: CasDialect,
    synced: &BTreeSet<String>,
) -> Vec<Finding> {
    let mut out: Vec<Finding> = schema
        .iter_errors(doc)
        .map(|e| finding(file, e.instance_path().as_str(), e.to_string()))
        .collect();
    let mut h = TestHost::new(dialect, 1);
    // The parser needs the secrets to exist, not their values.
    h.env.insert("CXGATE_SIDECAR_KEY".into(), "validate".into());
    h.env.insert("CXGATE_CURSOR_KEY".into(), "v".repeat(32));
    if let Err(e) = h.pipeline(&doc.to_string(), &cxgate_pipeline::STAGES) {
        out.push(finding(file, e.field, e.message));
    }
    out.extend(cross_refs(file, doc, synced));
    if dialect == CasDialect::Kong {
        out.extend(kong_upstreams(file, doc));
    }
    out
}

/// Kong dispatches to `host:port`; an Envoy cluster name there fails every
/// call at run time, which the parser cannot tell (it does not know the proxy).
fn kong_upstreams(file: &str, doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(doc, "", &mut |key, child, at| {
        if let ("upstream", Some(u)) = (key, child.as_str()) {
            let ok = u
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                let why = format!(
                    "{u:?} is not host:port (Kong dispatches to host:port, not to a cluster)"
                );
                out.push(finding(file, at, why));
            }
        }
    });
    out
}

/// Calls `f(key, value, pointer)` for every object member under `v`, depth first.
fn walk(v: &Value, at: &str, f: &mut impl FnMut(&str, &Value, &str)) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let here = format!("{at}/{}", pointer_token(k));
                f(k, child, &here);
                walk(child, &here, f);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{at}/{i}"), f);
            }
        }
        _ => {}
    }
}

/// What the parser cannot know: who can reach what, and what the sidecar syncs.
pub fn cross_refs(file: &str, doc: &Value, synced: &BTreeSet<String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let model = &doc["model"];
    let mut held: BTreeSet<&str> = BTreeSet::new();
    for c in model["consumers"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        held.extend(
            c["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        );
    }
    held.extend(
        model["default_consumer"]["scopes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    );
    let mut platforms: BTreeSet<&str> = BTreeSet::new();
    for (i, r) in model["routes"].as_array().into_iter().flatten().enumerate() {
        if let Some(p) = r["platform"].as_str() {
            platforms.insert(p);
        }
        for (j, s) in r["scopes"].as_array().into_iter().flatten().enumerate() {
            let Some(s) = s.as_str() else { continue };
            if !held.contains(s) {
                out.push(finding(
                    file,
                    format!("/model/routes/{i}/scopes/{j}"),
                    format!("no consumer holds the scope {s:?}: nobody can use this route"),
                ));
            }
        }
    }
    for p in doc["ratelimit"]["platforms"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
    {
        if !platforms.contains(p.as_str()) {
            out.push(finding(
                file,
                format!("/ratelimit/platforms/{}", pointer_token(p)),
                format!("no route goes to the platform {p:?}"),
            ));
        }
    }
    let mut lookups = Vec::new();
    walk(&doc["transform"], "/transform", &mut |key, child, at| {
        if let ("$lookup", Some(name)) = (key, child.as_str()) {
            lookups.push((at.to_string(), name.to_string()));
        }
    });
    for (at, map) in lookups {
        if !synced.contains(&map) {
            out.push(finding(
                file,
                at,
                format!("the sidecar does not sync the ID map {map:?} (synced: {synced:?})"),
            ));
        }
    }
    out
}

/// The ID maps a sidecar config syncs (what `sidecar/src/main.rs` starts for it).
pub fn synced_maps(config: &Value) -> BTreeSet<String> {
    let mut maps = BTreeSet::new();
    if config.get("genesys").is_some_and(|g| !g.is_null()) {
        maps.insert("genesys/queues".to_string());
        maps.insert("genesys/skills".to_string());
    }
    if config.get("cxone").is_some_and(|c| !c.is_null()) {
        maps.insert("cxone/skills".to_string());
        if config["metadata"]["seed_queues"] == true {
            maps.insert("cxone/queues".to_string());
        }
    }
    maps
}

/// A sidecar config: its schema, then the sidecar's own parser (`cxgate-sidecar --check`).
fn sidecar(root: &Path, path: &Path) -> Vec<Finding> {
    let file = path.display().to_string();
    let doc = match read_json(path) {
        Ok(d) => d,
        Err(e) => return vec![finding(&file, "", e)],
    };
    let mut out = match schema_of(root, "schemas/sidecar.config.schema.json") {
        Ok(v) => v
            .iter_errors(&doc)
            .map(|e| finding(&file, e.instance_path().as_str(), e.to_string()))
            .collect(),
        Err(e) => vec![finding("schemas", "", e)],
    };
    let run = std::process::Command::new(crate::bin("cxgate-sidecar"))
        .arg("--config")
        .arg(path)
        .arg("--check")
        .output();
    match run {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let reason = err
                .trim()
                .trim_start_matches("cxgate-sidecar: ")
                .to_string();
            out.push(finding(&file, "", reason));
        }
        Err(e) => out.push(finding(
            &file,
            "",
            format!("cannot run cxgate-sidecar: {e}"),
        )),
    }
    out
}
