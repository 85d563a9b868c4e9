//! `./cxgate render`: the shipped example deployment renders to configs that pass `validate`
//! and Envoy's own validation, with the example's policies in them; bad deployment files are
//! refused with a message naming the field.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_e2e::deploy::{self, DeployFile, Upstream};
use cxgate_e2e::keystore::write_key_store;
use cxgate_e2e::validate::{Deployment, check};
use cxgate_e2e::{consumers, envoy_bin, repo_root, wasm_dir};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = repo_root()
        .join("target/e2e-runs")
        .join(format!("deploy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example() -> Value {
    let text = std::fs::read_to_string(repo_root().join("examples/deployment.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Writes `doc` as a deployment file beside the example (so `root` means the same) and loads it.
fn load(dir: &Path, doc: &Value) -> Result<DeployFile, String> {
    let mut doc = doc.clone();
    doc["root"] = json!(repo_root());
    let path = dir.join("deployment.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    deploy::load(&repo_root(), &path)
}

#[test]
fn the_example_deployment_renders_configs_that_envoy_and_validate_accept() {
    let dir = scratch("example");
    let mut doc = example();
    // Offline: CXone's host pinned instead of discovered; local paths for what Envoy opens.
    doc["cxone"]["api_endpoint"] = json!("https://api-na1.niceincontact.com");
    let store = dir.join("keys/consumer-keys.json");
    write_key_store(&store, &consumers(&repo_root()).unwrap()).unwrap();
    doc["key_store"] = json!(store);
    doc["wasm_dir"] = json!(wasm_dir());
    doc["gateway"]["access_log"] = json!(dir.join("access.log"));
    let d = load(&dir, &doc).unwrap_or_else(|e| panic!("{e}"));
    let r = deploy::render(&repo_root(), &d, &dir.join("out")).unwrap_or_else(|e| panic!("{e}"));

    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(&r.sidecar).unwrap()).unwrap();
    let findings = check(
        &repo_root(),
        &Deployment {
            envoy: Some(r.envoy.clone()),
            kong: Some(r.kong.clone()),
            sidecar: vec![r.sidecar.clone()],
            paired_sidecar: Some(sidecar.clone()),
        },
    );
    assert!(findings.is_empty(), "{findings:?}");
    let out = Command::new(envoy_bin())
        .env("CXGATE_SIDECAR_KEY", cxgate_e2e::SIDECAR_KEY)
        .env("CXGATE_CURSOR_KEY", cxgate_e2e::CURSOR_KEY)
        .args(["--mode", "validate", "-c"])
        .arg(&r.envoy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let envoy: Value = serde_yaml::from_str(&std::fs::read_to_string(&r.envoy).unwrap()).unwrap();
    let clusters = envoy["static_resources"]["clusters"].as_array().unwrap();
    let genesys = clusters.iter().find(|c| c["name"] == "genesys").unwrap();
    assert_eq!(genesys["type"], "LOGICAL_DNS");
    let tls = &genesys["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "api.mypurecloud.com");
    let validation = &tls["common_tls_context"]["validation_context"];
    assert_eq!(
        validation["trusted_ca"]["filename"],
        "/etc/ssl/certs/ca-certificates.crt"
    );
    assert_eq!(
        validation["match_typed_subject_alt_names"][0]["matcher"]["exact"], "api.mypurecloud.com",
        "the certificate's name is checked, not only its chain"
    );
    // Its token filter bounds the Retry-After a retry waits out: genesys-write's 3 s timeout
    // is the shortest of the platform's routes, leaving 2 s.
    let token = genesys["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"][0]
        ["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .unwrap();
    let token: Value = serde_json::from_str(token).unwrap();
    assert_eq!(token["token"]["retry_wait_max_s"], 2);
    let listeners = envoy["static_resources"]["listeners"].as_array().unwrap();
    let gateway = listeners.iter().find(|l| l["name"] == "gateway").unwrap();
    assert_eq!(gateway["address"]["socket_address"]["address"], "0.0.0.0");
    let hcm = &gateway["filter_chains"][0]["filters"][0]["typed_config"];
    let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap();
    let named = |n: &str| {
        routes
            .iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    // The example's own policies: genesys-write 3 s; llm one retry on 429/503.
    assert_eq!(named("genesys-write")["route"]["timeout"], "3.000s");
    assert_eq!(
        named("genesys-write-unkeyed")["route"]["retry_policy"]["num_retries"],
        1
    );
    assert!(
        named("genesys-write-unkeyed")["route"]["retry_policy"]["retriable_status_codes"].is_null()
    );
    assert_eq!(
        named("llm-keyed")["route"]["retry_policy"]["retriable_status_codes"],
        json!([429, 503])
    );
    assert_eq!(named("llm")["route"]["timeout"], "60.000s");
    assert_eq!(
        named("genesys-read")["route"]["host_rewrite_literal"],
        "api.mypurecloud.com"
    );
    assert_eq!(
        named("cxone-read")["route"]["host_rewrite_literal"],
        "api-na1.niceincontact.com"
    );
    // Budgets from the tiers, 90 % of the platform's limit.
    let pipeline = envoy.to_string();
    assert!(pipeline.contains(r#"\"genesys\":{\"capacity\":270,\"per_minute\":270}"#));
    assert!(pipeline.contains(r#"\"cxone\":{\"capacity\":90,\"per_minute\":90}"#));
    // The sidecar: the same hosts, every secret a reference.
    assert_eq!(sidecar["genesys"]["region"], "mypurecloud.com");
    assert_eq!(
        sidecar["llm"]["health_url"],
        "https://api.openai.com/v1/models"
    );
    assert_eq!(
        sidecar["cxone"]["access_key_secret"],
        json!({"file": "/run/secrets/cxone_access_key_secret"})
    );
    let check = Command::new(cxgate_e2e::bin("cxgate-sidecar"))
        .args(["--check", "--config"])
        .arg(&r.sidecar)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let kong = std::fs::read_to_string(&r.kong).unwrap();
    assert!(kong.contains("url: https://api.mypurecloud.com\n    tls_verify: true"));
    assert!(
        !kong.contains("keyauth_credentials"),
        "no key in Kong's file"
    );
    let conf = std::fs::read_to_string(&r.kong_conf).unwrap();
    assert!(conf.contains("nginx_wasm_tls_verify_host = on"));
}

#[test]
fn bad_deployment_files_are_refused_with_the_field_named() {
    let dir = scratch("bad");
    let mut pinned = example();
    pinned["cxone"]["api_endpoint"] = json!("https://api-na1.niceincontact.com");
    let refused = |doc: Value, needle: &str| {
        let err = match load(&dir, &doc) {
            Ok(d) => d
                .upstreams(d.cxone.api_endpoint.as_deref().unwrap_or_default())
                .and_then(|u| deploy::pipeline(&d, &u).map(|_| ()))
                .err()
                .unwrap_or_default(),
            Err(e) => e,
        };
        assert!(err.contains(needle), "wanted {needle:?} in: {err}");
    };
    let mut plain = pinned.clone();
    plain["llm"]["url"] = json!("http://api.openai.com");
    refused(plain, "/llm/url");
    let mut inline = pinned.clone();
    inline["genesys"]["client_secret"] = json!("s3cr3t");
    refused(inline, "/genesys/client_secret");
    let mut unknown = pinned.clone();
    unknown["routes"]["no-such-route"] = json!({"timeout_ms": 1000});
    refused(unknown, "routes.no-such-route");
    let mut tier = pinned.clone();
    tier["genesys"]["tier"] = json!("cx2");
    refused(tier, "/genesys/tier");

    let mut cx3 = pinned.clone();
    cx3["genesys"]["tier"] = json!("cx3");
    cx3["cxone"]["per_minute"] = json!(500);
    let d = load(&dir, &cx3).unwrap();
    let doc = deploy::pipeline(
        &d,
        &d.upstreams("https://api-na1.niceincontact.com").unwrap(),
    )
    .unwrap();
    assert_eq!(doc["ratelimit"]["platforms"]["genesys"]["per_minute"], 1800);
    assert_eq!(doc["ratelimit"]["platforms"]["cxone"]["per_minute"], 450);
    assert_eq!(
        doc["transform"]["routes"]["queue-update"]["platforms"]["genesys"],
        "genesys-real"
    );
    assert!(doc["transform"]["profiles"].get("cxone-seed").is_none());
}

#[test]
fn upstream_urls_are_https_hosts_with_the_port_in_host_only_when_not_443() {
    let u = Upstream::parse("x", "https://API.example.com/").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.authority.as_str()),
        ("api.example.com", 443, "api.example.com")
    );
    let u = Upstream::parse("x", "https://localhost:8443").unwrap();
    assert_eq!(u.authority, "localhost:8443");
    for bad in [
        "http://a.example",
        "https://a.example/v1",
        "https://user@a.example",
        "https://a.example:99999",
        "https://",
    ] {
        assert!(Upstream::parse("x", bad).is_err(), "{bad}");
    }
}
