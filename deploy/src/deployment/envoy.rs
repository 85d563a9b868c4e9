//! The production Envoy bootstrap: the shipped template (`envoy/envoy.yaml`, the one every
//! test runs) with the platform clusters and routes made for the real hosts.
//!
//! - Each platform cluster resolves its host by DNS (`LOGICAL_DNS`: one host behind many
//!   addresses, as the platforms' API hosts are), speaks TLS with SNI, checks the chain
//!   against the deployment's CA file (the system bundle by default) and the certificate's
//!   name against the host (Envoy checks no name unless told), and takes HTTP/2 when the
//!   platform offers it by ALPN, else HTTP/1.1. Connections are pooled and reused.
//! - Each platform route of the pipeline document becomes its own Envoy route, selected by
//!   prefix and method, with its timeout and retry policy and the platform's `Host`. A 429,
//!   502 or 503 is retried after the platform's `Retry-After` (or a jittered backoff), but a
//!   POST or PATCH only when it carries an `Idempotency-Key`. A token-drift 401 is replayed
//!   once on every route (the token filter's marker).

use super::model::{DeployFile, Retry, Upstream};
use crate::render::{Ports, Vars, render_envoy};
use serde_json::{Value, json};
use std::path::Path;

/// Platform clusters a deployment may leave out.
const OPTIONAL: [&str; 1] = ["anthropic"];

/// Methods that are not idempotent: never retried without an idempotency key.
const UNSAFE: [&str; 2] = ["POST", "PATCH"];

pub fn render(
    repo: &Path,
    d: &DeployFile,
    pipeline: Value,
    upstreams: &[(&str, Upstream)],
) -> Result<String, String> {
    let path = repo.join("envoy/envoy.yaml");
    let template =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let vars = Vars {
        ports: Ports {
            gateway: d.gateway.listen.port(),
            admin: d.gateway.admin.port(),
            sidecar: d.sidecar.listen.port(),
            genesys: 443,
            cxone: 443,
            llm: 443,
        },
        wasm_dir: d.wasm_dir.clone(),
        pipeline: pipeline.clone(),
        access_log: d.gateway.access_log.clone(),
        key_store: d.key_store.clone(),
    };
    let text = render_envoy(&template, &vars)?;
    let mut cfg: Value = serde_yaml::from_str(&text).map_err(|e| format!("envoy template: {e}"))?;
    set_address(
        &mut cfg["admin"]["address"]["socket_address"],
        d.gateway.admin,
    );
    let resources = &mut cfg["static_resources"];
    // Per platform cluster: the shortest timeout of its routes (bounds the waits retried).
    let mut shortest: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut done = false;
    for listener in array(&mut resources["listeners"])? {
        if listener["name"] != "gateway" {
            continue;
        }
        set_address(&mut listener["address"]["socket_address"], d.gateway.listen);
        let hcm = &mut listener["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = array(&mut hcm["route_config"]["virtual_hosts"][0]["routes"])?;
        let mut out = Vec::new();
        for r in routes.drain(..) {
            let cluster = r["route"]["cluster"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match upstreams.iter().find(|(c, _)| *c == cluster) {
                // A platform the deployment does not name (anthropic): no route to it.
                None if OPTIONAL.contains(&cluster.as_str()) => {}
                Some((c, up)) => {
                    let (made, ms) = platform_routes(d, &pipeline, r, up)?;
                    let entry = shortest.entry(c).or_insert(ms);
                    *entry = (*entry).min(ms);
                    out.extend(made);
                }
                None => out.push(r),
            }
        }
        *routes = out;
        done = true;
    }
    if !done {
        return Err("envoy template: no listener named gateway".into());
    }
    let ca = d.tls.envoy_ca().display().to_string();
    array(&mut resources["clusters"])?.retain(|c| {
        let name = c["name"].as_str().unwrap_or_default();
        !OPTIONAL.contains(&name) || upstreams.iter().any(|(u, _)| *u == name)
    });
    for cluster in array(&mut resources["clusters"])? {
        let name = cluster["name"].as_str().unwrap_or_default().to_string();
        if name == "sidecar" {
            let endpoint = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
            set_address(
                &mut endpoint["endpoint"]["address"]["socket_address"],
                d.sidecar.listen,
            );
        } else if let Some((_, up)) = upstreams.iter().find(|(c, _)| *c == name) {
            tls_cluster(cluster, up, &ca);
            let shortest = shortest.get(name.as_str()).copied().unwrap_or(0);
            bound_retry_waits(cluster, wait_bound_s(shortest))?;
        }
    }
    let yaml = serde_yaml::to_string(&cfg).map_err(|e| e.to_string())?;
    Ok(format!(
        "# cxgate production gateway: GENERATED by `./cxgate render` from a deployment file\n\
         # (schemas/deployment.schema.json) and envoy/envoy.yaml; render again rather than edit.\n\
         # No secret is in it: consumer keys are in the key store file, the sidecar key in the\n\
         # environment (CXGATE_SIDECAR_KEY), platform credentials with the sidecar.\n{yaml}"
    ))
}

fn array(v: &mut Value) -> Result<&mut Vec<Value>, String> {
    v.as_array_mut()
        .ok_or_else(|| "envoy template: a list is missing".to_string())
}

fn set_address(v: &mut Value, addr: std::net::SocketAddr) {
    v["address"] = json!(addr.ip().to_string());
    v["port_value"] = json!(addr.port());
}

fn tls_cluster(c: &mut Value, up: &Upstream, ca: &str) {
    c["type"] = json!("LOGICAL_DNS");
    c["dns_lookup_family"] = json!("V4_PREFERRED");
    c["load_assignment"]["endpoints"] = json!([{"lb_endpoints": [{"endpoint": {"address":
        {"socket_address": {"address": up.host, "port_value": up.port}}}}]}]);
    c["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": up.host,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": ca},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": up.host}}]
            }}
        }
    });
    let opts = &mut c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    if let Some(o) = opts.as_object_mut() {
        o.remove("explicit_http_config");
    }
    // ALPN decides: HTTP/2 where the platform offers it, else HTTP/1.1.
    opts["auto_config"] = json!({"http_protocol_options": {}, "http2_protocol_options": {}});
    // Pooled connections are kept while in use, and closed after 5 idle minutes.
    opts["common_http_protocol_options"] = json!({"idle_timeout": "300s"});
}

/// The longest Retry-After a retry may wait out: what leaves a second of the route's timeout
/// for the retry itself.
fn wait_bound_s(timeout_ms: u64) -> u64 {
    (timeout_ms / 1000).saturating_sub(1)
}

/// The cluster's token filter marks answers asking for a longer wait than `secs`, so Envoy
/// hands them to the consumer instead of retrying before the platform allows (the token
/// stage's `retry_wait_max_s`).
fn bound_retry_waits(cluster: &mut Value, secs: u64) -> Result<(), String> {
    let filters = &mut cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["http_filters"];
    let token = array(filters)?
        .iter_mut()
        .find(|f| f["name"] == "cxgate.token")
        .ok_or("envoy template: a platform cluster without its token filter")?;
    let value = &mut token["typed_config"]["config"]["configuration"]["value"];
    let mut doc: Value = value
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or("envoy template: the token filter's config is not JSON")?;
    doc["token"]["retry_wait_max_s"] = json!(secs);
    *value = json!(doc.to_string());
    Ok(())
}

/// Envoy's duration strings as the template writes them (`10s`, `0.5s`).
fn template_ms(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(10_000)
}

fn duration(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// The template's route for one platform prefix becomes one route per pipeline route under
/// that prefix (and method set), then the template's own route for what none of them takes
/// (the pipeline refuses those before the router, so it only keeps the table complete).
/// With them, the shortest timeout among them.
fn platform_routes(
    d: &DeployFile,
    pipeline: &Value,
    template: Value,
    up: &Upstream,
) -> Result<(Vec<Value>, u64), String> {
    let prefix = template["match"]["prefix"]
        .as_str()
        .ok_or("envoy template: a platform route without a prefix")?
        .to_string();
    let template_timeout = template_ms(&template["route"]["timeout"]);
    let mut shortest = template_timeout;
    let mut out = Vec::new();
    let model_routes = pipeline["model"]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for mr in model_routes
        .iter()
        .filter(|r| r["prefix"] == prefix.as_str())
    {
        let id = mr["id"].as_str().unwrap_or_default();
        let methods: Vec<&str> = mr["methods"]
            .as_array()
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (timeout, retry) = d.policy(id, template_timeout);
        shortest = shortest.min(timeout);
        let (unsafe_m, safe_m): (Vec<&str>, Vec<&str>) =
            methods.iter().partition(|m| UNSAFE.contains(m));
        let route = |name: String, methods: &[&str], keyed: bool, full: bool| {
            let mut headers = vec![json!({"name": ":method", "string_match":
                {"safe_regex": {"regex": format!("^({})$", methods.join("|"))}}})];
            if keyed {
                headers.push(json!({"name": "idempotency-key", "present_match": true}));
            }
            let mut r = template.clone();
            r["name"] = json!(name);
            r["match"] = json!({"prefix": prefix, "headers": headers});
            r["route"]["timeout"] = json!(duration(timeout));
            r["route"]["host_rewrite_literal"] = json!(up.authority);
            r["route"]["retry_policy"] = retry_policy(&retry, timeout, full);
            r
        };
        if !unsafe_m.is_empty() {
            out.push(route(format!("{id}-keyed"), &unsafe_m, true, true));
            out.push(route(format!("{id}-unkeyed"), &unsafe_m, false, false));
        }
        if !safe_m.is_empty() {
            out.push(route(id.to_string(), &safe_m, false, true));
        }
    }
    let mut fallback = template;
    fallback["route"]["host_rewrite_literal"] = json!(up.authority);
    out.push(fallback);
    Ok((out, shortest))
}

/// `full`: the route's retries on its status codes; else only what is always safe: the
/// token-drift replay (the platform refused before acting) and a connection that never
/// opened (nothing was sent).
fn retry_policy(retry: &Retry, timeout_ms: u64, full: bool) -> Value {
    let replay = json!([{"name": cxgate_token::stage::REPLAY_HEADER, "present_match": true}]);
    if !full || retry.max_retries == 0 || retry.retry_on.is_empty() {
        return json!({"retry_on": "retriable-headers,connect-failure",
                      "retriable_headers": replay, "num_retries": 1});
    }
    let base = retry.backoff_base_ms.max(1);
    json!({
        "retry_on": "retriable-status-codes,retriable-headers,connect-failure",
        "retriable_status_codes": retry.retry_on,
        "retriable_headers": replay,
        "num_retries": retry.max_retries,
        "retry_back_off": {"base_interval": duration(base), "max_interval": duration(base * 8)},
        // The platform's Retry-After, when it fits in the route's timeout; a longer one the
        // token filter marks, and the answer goes to the consumer unretried.
        "rate_limited_retry_back_off": {
            "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
            "max_interval": duration(wait_bound_s(timeout_ms).max(1) * 1000)
        }
    })
}
