//! `./cxgate render`: one deployment file (schema: `schemas/deployment.schema.json`) becomes
//! what a production gateway runs: Envoy's bootstrap with TLS upstreams to the platforms'
//! real hosts, the sidecar's config, and Kong's declarative config and `kong.conf`. Nothing secret is written:
//! the consumer keys stay in the key store Envoy watches, and every platform secret is a
//! reference (an environment variable or a file) the sidecar resolves when it starts.
//!
//! The platforms' hosts: Genesys Cloud's from its region (`api.<region>`, `login.<region>`),
//! the LLM's from its URL, CXone's from discovery, asked once when rendering (see
//! [`cxone_api_endpoint`]: README, "Production config", says why not at run time).

pub mod envoy;
pub mod kong;
pub mod model;
pub mod sidecar;

pub use model::{DeployFile, RoutePolicy, Upstream};

use crate::render::write_file as write;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The files one render writes.
pub struct Rendered {
    pub envoy: PathBuf,
    pub sidecar: PathBuf,
    pub kong: PathBuf,
    pub kong_conf: PathBuf,
}

/// The deployment file at `path`: checked against its schema, then parsed.
pub fn load(repo: &Path, path: &Path) -> Result<DeployFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let validator = crate::validate::schema_of(repo, "schemas/deployment.schema.json")?;
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", display_pointer(e.instance_path().as_str())))
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "{} does not match schemas/deployment.schema.json:\n  {}",
            path.display(),
            errors.join("\n  ")
        ));
    }
    let mut d: DeployFile =
        serde_json::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))?;
    d.base = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&d.root)
        .canonicalize()
        .map_err(|e| format!("{}: root {}: {e}", path.display(), d.root.display()))?;
    Ok(d)
}

fn display_pointer(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

/// The pipeline document the deployment names, with its schema files inlined, its platform
/// budgets from the tiers, and its own calls addressed to the platforms' real hosts.
pub fn pipeline(d: &DeployFile, upstreams: &[(&str, Upstream)]) -> Result<Value, String> {
    let mut doc = crate::render::pipeline_document(&d.base, &d.pipeline)?;
    let ids: Vec<String> = doc["model"]["routes"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(unknown) = d.routes.keys().find(|id| !ids.contains(id)) {
        return Err(format!(
            "routes.{unknown}: no route of that id in {} (its ids: {})",
            d.pipeline.display(),
            ids.join(", ")
        ));
    }
    if !d.seed_shapes {
        real_profiles(&mut doc);
    }
    if d.anthropic.is_none() {
        without_platform(&mut doc, "anthropic");
    }
    doc["ratelimit"]["platforms"]["genesys"] = budget(d.genesys.per_minute()?);
    doc["ratelimit"]["platforms"]["cxone"] = budget(d.cxone.per_minute()?);
    for (cluster, upstream) in upstreams {
        address_calls(&mut doc, cluster, &upstream.authority);
    }
    Ok(doc)
}

/// Each transform route sends to the profile written for the platform's real API
/// (`<platform>-real`: a read-merge-write of the whole Genesys queue, CXone skills) where the
/// document has one, instead of the seed document's shapes (which only the mocks speak).
fn real_profiles(doc: &mut Value) {
    let profiles: Vec<String> = doc["transform"]["profiles"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let Some(routes) = doc["transform"]["routes"].as_object_mut() else {
        return;
    };
    for route in routes.values_mut() {
        let Some(platforms) = route["platforms"].as_object_mut() else {
            continue;
        };
        for (platform, profile) in platforms.iter_mut() {
            let real = format!("{platform}-real");
            if profile.as_str().is_some_and(|p| p.ends_with("-seed")) && profiles.contains(&real) {
                *profile = Value::from(real);
            }
        }
    }
    // A seed profile no route names any more goes too: it looks up maps (`cxone/queues`)
    // that the sidecar only syncs from the mocks.
    let used: Vec<String> = routes
        .values()
        .filter_map(|r| r["platforms"].as_object())
        .flat_map(|p| p.values().filter_map(Value::as_str).map(str::to_string))
        .collect();
    if let Some(all) = doc["transform"]["profiles"].as_object_mut() {
        all.retain(|name, _| !name.ends_with("-seed") || used.contains(name));
    }
}

/// A platform the deployment does not name goes from the document: its routes (model and
/// guard) and its place in the model's platforms, so no route is left without an upstream.
fn without_platform(doc: &mut Value, platform: &str) {
    let mut gone = Vec::new();
    if let Some(routes) = doc["model"]["routes"].as_array_mut() {
        routes.retain(|r| {
            let keep = r["platform"] != platform;
            if !keep && let Some(id) = r["id"].as_str() {
                gone.push(id.to_string());
            }
            keep
        });
    }
    if let Some(ps) = doc["model"]["platforms"].as_array_mut() {
        ps.retain(|p| p != platform);
    }
    if let Some(g) = doc["guard"]["routes"].as_object_mut() {
        g.retain(|id, _| !gone.contains(id));
    }
}

/// A platform budget: the platform's own limit, undercut by a tenth so that a burst from
/// other clients of the same credentials still finds room (seed, section 3).
fn budget(platform_per_minute: u32) -> Value {
    let n = (u64::from(platform_per_minute) * 9 / 10).max(1);
    serde_json::json!({"capacity": n, "per_minute": n})
}

/// Every call the filters make to `cluster` (the transform's merge and calls, the guard's
/// LLM calls, the bot history) goes with the platform's real host as `:authority`.
fn address_calls(v: &mut Value, cluster: &str, authority: &str) {
    match v {
        Value::Object(m) => {
            if m.get("upstream").and_then(Value::as_str) == Some(cluster)
                && m.contains_key("authority")
            {
                m.insert("authority".into(), Value::from(authority));
            }
            m.values_mut()
                .for_each(|c| address_calls(c, cluster, authority));
        }
        Value::Array(a) => a
            .iter_mut()
            .for_each(|c| address_calls(c, cluster, authority)),
        _ => {}
    }
}

/// CXone's API host for the tenant: the deployment's `cxone.api_endpoint` when it pins one,
/// else asked of `{issuer}/.well-known/cxone-configuration?tenantId=`,
/// trusting the deployment's CA file too. The answer is used as it is.
pub fn cxone_api_endpoint(d: &DeployFile) -> Result<String, String> {
    if let Some(pinned) = &d.cxone.api_endpoint {
        return Ok(pinned.clone());
    }
    let mut builder =
        reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(15));
    if let Some(ca) = &d.tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let http = builder.build().map_err(|e| e.to_string())?;
    let url = format!(
        "{}/.well-known/cxone-configuration",
        d.cxone.issuer.trim_end_matches('/')
    );
    let answer: Value = http
        .get(&url)
        .query(&[("tenantId", d.cxone.tenant_id.as_str())])
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .map_err(|e| {
            format!(
                "CXone discovery at {url} failed: {}. Pin the host with cxone.api_endpoint to render without it.",
                crate::error_chain(&e)
            )
        })?;
    answer["api_endpoint"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("CXone discovery at {url} answered without api_endpoint"))
}

/// Renders everything into `out` (created): `envoy.yaml`, `sidecar.json` and `kong.yml`.
pub fn render(repo: &Path, d: &DeployFile, out: &Path) -> Result<Rendered, String> {
    let upstreams = d.upstreams(&cxone_api_endpoint(d)?)?;
    let doc = pipeline(d, &upstreams)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let rendered = Rendered {
        envoy: out.join("envoy.yaml"),
        sidecar: out.join("sidecar.json"),
        kong: out.join("kong.yml"),
        kong_conf: out.join("kong.conf"),
    };
    write(
        &rendered.envoy,
        &envoy::render(repo, d, doc.clone(), &upstreams)?,
    )?;
    let sidecar = sidecar::config(d, &upstreams)?;
    let sidecar_text = serde_json::to_string_pretty(&sidecar).map_err(|e| e.to_string())?;
    write(&rendered.sidecar, &sidecar_text)?;
    write(&rendered.kong, &kong::render(d, &doc, &upstreams)?)?;
    let shipped =
        std::fs::read_to_string(repo.join("kong/kong.conf")).map_err(|e| e.to_string())?;
    let conf: String = shipped
        .lines()
        .filter(|l| !l.starts_with("proxy_listen"))
        .map(|l| format!("{l}\n"))
        .collect();
    write(&rendered.kong_conf, &(conf + &kong::conf_lines(d)))?;
    Ok(rendered)
}
