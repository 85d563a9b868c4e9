//! `kong/kong.yml`, rendered from the one config document (`envoy/cxgate.json`) so that the
//! two proxies run the same model, stages and settings. What Kong needs differently:
//!
//! - consumers are Kong's (key-auth, mirroring `envoy/consumers.json`), and the model reads the
//!   consumer id from `X-Consumer-Username`;
//! - the pipeline runs the token stage itself (Kong has no upstream filter chain), answering a
//!   platform 401 with 503 + `Retry-After` (it cannot replay);
//! - calls go to `host:port`, and carry the platform's synced token themselves (`credential`);
//! - the normalized API sends the mapped request as the transform's own call (`call`),
//!   because Kong does not choose a route again after `:path` changes;
//! - the guard's retry waits call the sidecar's `/cxgate/delay` (Kong has no fault filter);
//! - `whoami` and `openapi` are Envoy's direct responses, so Kong's model has no such routes.
//!
//! `xtask kong-config` writes the file; a test fails when the checked-in one is not current.

use crate::render::{consumers, shipped_pipeline};
use serde_json::{Value, json};
use std::path::Path;

/// Where Kong sends what Envoy sends to a cluster.
pub struct Targets {
    /// Envoy cluster → `host:port`.
    pub upstreams: Vec<(String, String)>,
    /// The platforms' scheme for the filter's own calls (`https` turns TLS on in Kong).
    pub scheme: String,
    /// Kong service → upstream URL (genesys, cxone, llm).
    pub services: Vec<(String, String)>,
}

impl Targets {
    /// The demo's: the mock platforms and the sidecar on their demo ports.
    pub fn demo() -> Targets {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        Targets {
            upstreams: pairs(&[
                ("sidecar", "127.0.0.1:7070"),
                ("genesys", "127.0.0.1:7101"),
                ("cxone", "127.0.0.1:7102"),
                ("llm", "127.0.0.1:7103"),
                ("cxgate-timer", "127.0.0.1:7070"),
            ]),
            scheme: "http".into(),
            services: pairs(&[
                ("genesys", "http://127.0.0.1:7101"),
                ("cxone", "http://127.0.0.1:7102"),
                ("llm", "http://127.0.0.1:7103"),
                ("anthropic", "http://127.0.0.1:7103"),
            ]),
        }
    }

    fn host_port(&self, cluster: &str) -> Option<&str> {
        self.upstreams
            .iter()
            .find(|(c, _)| c == cluster)
            .map(|(_, h)| h.as_str())
    }

    fn service_url(&self, name: &str) -> &str {
        self.services
            .iter()
            .find(|(s, _)| s == name)
            .map(|(_, u)| u.as_str())
            .unwrap_or("http://127.0.0.1:9")
    }

    /// Every `upstream` that names an Envoy cluster, as `host:port`.
    fn map_upstreams(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if k == "upstream"
                        && let Some(h) = child.as_str().and_then(|c| self.host_port(c))
                    {
                        *child = json!(h);
                    } else {
                        self.map_upstreams(child);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|c| self.map_upstreams(c)),
            _ => {}
        }
    }
}

/// The pipeline document as Kong gets it (the demo's targets).
pub fn kong_document(envoy: &Value) -> Value {
    kong_document_for(envoy, &Targets::demo())
}

/// The pipeline document as Kong gets it, sending to `t`.
pub fn kong_document_for(envoy: &Value, t: &Targets) -> Value {
    let mut doc = envoy.clone();
    doc["model"]["consumer_header"] = json!("x-consumer-username");
    if let Some(routes) = doc["model"]["routes"].as_array_mut() {
        routes.retain(|r| r["id"] != "whoami" && r["id"] != "openapi");
    }
    if let Some(stages) = doc["stages"].as_array_mut() {
        stages.push(json!("token"));
    }
    doc["token"] = json!({"on_unauthorized": "retry-later", "wait_ms": 2000, "retry_after_s": 1});
    let platforms = doc["model"]["platforms"].as_array();
    if platforms.is_some_and(|ps| ps.iter().any(|p| p == "anthropic")) {
        doc["token"]["platforms"] = json!({"anthropic": {"header": "x-api-key", "scheme": "",
            "headers": {"anthropic-version": "2023-06-01"}}});
    }
    t.map_upstreams(&mut doc);
    if let Some(profiles) = doc["transform"]["profiles"].as_object_mut() {
        for p in profiles.values_mut() {
            let platform = p["platform"].as_str().unwrap_or_default().to_string();
            let credential = json!({"platform": platform});
            if p.get("merge").is_some() {
                p["merge"]["credential"] = credential;
                p["merge"]["scheme"] = json!(t.scheme);
            } else if let Some(upstream) = t.host_port(&platform) {
                let authority = upstream.strip_suffix(":443").unwrap_or(upstream);
                let authority = if t.scheme == "http" {
                    platform.as_str()
                } else {
                    authority
                };
                p["call"] = json!({"upstream": upstream, "authority": authority,
                                   "scheme": t.scheme, "credential": credential});
            }
        }
    }
    let calls = &mut doc["guard"]["calls"];
    if calls.is_object() {
        calls["llm"]["credential"] = json!({"platform": "llm"});
        calls["timer"]["authority"] = json!("sidecar");
        calls["timer"]["sidecar_key"] = json!(true);
    }
    if let Some(routes) = doc["guard"]["routes"].as_object_mut() {
        for r in routes.values_mut() {
            if r["bot"]["history"].is_object() {
                r["bot"]["history"]["credential"] = json!({"platform": "cxone"});
            }
        }
    }
    doc
}

/// `text` with every line indented by `n` spaces.
fn indented(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

const HEADER: &str = "\
# Kong 3.9 declarative config: the cxgate pipeline as one filter on each service.
# GENERATED from envoy/cxgate.json by `./cxgate kong-config` (deploy/src/kong.rs says what
# differs for Kong); do not edit by hand: a test fails when this file is not current.
#
# Not run here (Kong 3.9 cannot be installed on the build machines): tests parse every filter
# config below with the pipeline's own parser and check it against kong/cxgate.meta.json, and
# the ABI host's kong profile runs the module with it (README, Kong).
_format_version: \"3.0\"

# Consumer identity: key-auth (header x-api-key) verifies the key and sets X-Consumer-Username,
# which the pipeline's model reads as the consumer id. The keys mirror envoy/consumers.json.
";

/// The whole `kong/kong.yml`.
pub fn render_kong(root: &Path) -> Result<String, String> {
    let keyed: Vec<(String, Option<String>)> = consumers(root)?
        .into_iter()
        .map(|c| (c.id, Some(c.key)))
        .collect();
    render_kong_for(
        HEADER,
        &kong_document(&shipped_pipeline(root)?),
        &keyed,
        &Targets::demo(),
    )
}

/// A Kong declarative config: `header`, the consumers (with their key, when given), and the
/// services with the pipeline filter running `doc`.
pub fn render_kong_for(
    header: &str,
    doc: &Value,
    consumers: &[(String, Option<String>)],
    t: &Targets,
) -> Result<String, String> {
    let yaml = serde_yaml::to_string(doc).map_err(|e| e.to_string())?;
    let mut out = String::from(header);
    out.push_str("consumers:\n");
    for (id, key) in consumers {
        match key {
            Some(key) => out.push_str(&format!(
                "  - username: {id}\n    keyauth_credentials: [{{ key: {key} }}]\n"
            )),
            None => out.push_str(&format!("  - username: {id}\n")),
        }
    }
    out.push_str(
        "\nplugins:\n  - name: key-auth\n    config:\n      key_names: [\"x-api-key\"]\n      hide_credentials: true\n",
    );
    out.push_str("\nservices:\n");
    // (service, upstream url, routes: (name, path, strip_path)).
    type KongRoute<'a> = (&'a str, &'a str, bool);
    let services: [(&str, &str, &[KongRoute<'_>]); 5] = [
        (
            "genesys",
            t.service_url("genesys"),
            &[("genesys", "/genesys/", true)],
        ),
        (
            "cxone",
            t.service_url("cxone"),
            &[("cxone", "/cxone/", true)],
        ),
        (
            "llm",
            t.service_url("llm"),
            &[("llm", "/llm/", true), ("llm-bot", "/llm-bot/", true)],
        ),
        (
            "anthropic",
            t.service_url("anthropic"),
            &[("anthropic", "/anthropic/", true)],
        ),
        // Everything here is answered by the pipeline itself (the transform's and the guard's
        // own calls, the coexistence decision): nothing is ever proxied to this upstream.
        (
            "gateway",
            "http://127.0.0.1:9",
            &[
                ("gateway", "/gateway/v1/", false),
                ("coexistence", "/coexistence/v1/", false),
            ],
        ),
    ];
    for (i, (name, url, routes)) in services.iter().enumerate() {
        out.push_str(&format!("  - name: {name}\n    url: {url}\n"));
        if url.starts_with("https://") {
            // Kong checks an HTTPS upstream's certificate only when told to.
            out.push_str("    tls_verify: true\n");
        }
        out.push_str("    routes:\n");
        for (route, path, strip) in *routes {
            out.push_str(&format!(
                "      - name: {route}\n        paths: [\"{path}\"]\n        strip_path: {strip}\n"
            ));
        }
        out.push_str(&format!(
            "    filter_chains:\n      - name: cxgate-{name}\n        filters:\n          - name: cxgate_pipeline\n"
        ));
        if i == 0 {
            out.push_str("            config: &cxgate\n");
            out.push_str(&indented(&yaml, 14));
        } else {
            out.push_str("            config: *cxgate\n");
        }
    }
    Ok(out)
}
