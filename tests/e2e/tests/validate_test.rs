//! `cxgate validate` on the shipped deployment (no finding) and on one fixture per kind of
//! mistake (each found with its file and JSON pointer).

use cxgate_e2e::validate::{Deployment, Finding, check, cross_refs, synced_maps};
use cxgate_e2e::{Ports, demo_sidecar_config, repo_root, shipped_pipeline};
use serde_json::json;
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxgate-validate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn only(d: Deployment) -> Vec<Finding> {
    check(&repo_root(), &d)
}

fn none() -> Deployment {
    Deployment {
        envoy: None,
        kong: None,
        sidecar: Vec::new(),
        paired_sidecar: None,
    }
}

fn has(findings: &[Finding], file_part: &str, pointer: &str) -> bool {
    findings
        .iter()
        .any(|f| f.file.contains(file_part) && f.pointer == pointer)
}

#[test]
fn the_shipped_deployment_passes() {
    let findings = check(&repo_root(), &Deployment::shipped(&repo_root()));
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(findings.is_empty(), "{text:#?}");
}

/// kong.yml with one line changed.
fn kong_with(name: &str, from: &str, to: &str) -> Vec<Finding> {
    let text = std::fs::read_to_string(repo_root().join("kong/kong.yml")).unwrap();
    assert!(text.contains(from), "{from}");
    let path = scratch(name).join("kong.yml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    only(Deployment {
        kong: Some(path),
        ..none()
    })
}

#[test]
fn a_schema_mistake_in_kong_yml_is_pointed_at() {
    let f = kong_with(
        "schema",
        "                  genesys:\n                    capacity: 270",
        "                  genesys:\n                    capacity: lots",
    );
    assert!(
        has(&f, "kong.yml", "/ratelimit/platforms/genesys/capacity"),
        "{f:#?}"
    );
}

#[test]
fn what_only_the_parser_refuses_is_pointed_at_too() {
    // The parser points at the second listing (the schema only at the whole list).
    let f = kong_with(
        "parser",
        "              - coexistence\n              - token\n",
        "              - coexistence\n              - token\n              - trace\n",
    );
    assert!(
        f.iter()
            .any(|x| x.pointer == "/stages/8" && x.reason.contains("twice")),
        "{f:#?}"
    );
}

#[test]
fn a_kong_upstream_that_is_not_host_port_is_found() {
    let f = kong_with(
        "upstream",
        "                poll_wait_ms: 20000\n                upstream: 127.0.0.1:7070",
        "                poll_wait_ms: 20000\n                upstream: sidecar",
    );
    assert!(has(&f, "kong.yml", "/sync/upstream"), "{f:#?}");
}

#[test]
fn a_route_nobody_can_use_and_an_unsynced_id_map_are_cross_reference_findings() {
    let mut doc = shipped_pipeline(&repo_root()).unwrap();
    doc["model"]["routes"][0]["scopes"] = json!(["genesys:typo"]);
    let demo = synced_maps(&demo_sidecar_config(&Ports::demo(), None));
    let f = cross_refs("doc", &doc, &demo);
    assert!(has(&f, "doc", "/model/routes/0/scopes/0"), "{f:#?}");

    let doc = shipped_pipeline(&repo_root()).unwrap();
    let mut no_cxone = demo_sidecar_config(&Ports::demo(), None);
    no_cxone["cxone"] = serde_json::Value::Null;
    let f = cross_refs("doc", &doc, &synced_maps(&no_cxone));
    assert!(
        f.iter()
            .any(|x| x.pointer.ends_with("/$lookup") && x.reason.contains("cxone/skills")),
        "{f:#?}"
    );
    let mut stray = shipped_pipeline(&repo_root()).unwrap();
    stray["ratelimit"]["platforms"]["genesis"] = json!({"capacity": 1, "per_minute": 1});
    let f = cross_refs("doc", &stray, &demo);
    assert!(has(&f, "doc", "/ratelimit/platforms/genesis"), "{f:#?}");
}

#[test]
fn sidecar_config_mistakes_are_found_by_schema_and_parser() {
    let dir = scratch("sidecar");
    let bad_type = dir.join("bad-type.json");
    std::fs::write(
        &bad_type,
        json!({"genesys": {"region": 5, "client_id": {"env": "A"}, "client_secret": {"env": "B"}}})
            .to_string(),
    )
    .unwrap();
    let open = dir.join("open.json");
    std::fs::write(&open, json!({"listen": "0.0.0.0:7070"}).to_string()).unwrap();
    let f = only(Deployment {
        sidecar: vec![bad_type, open],
        ..none()
    });
    assert!(has(&f, "bad-type.json", "/genesys/region"), "{f:#?}");
    assert!(
        f.iter()
            .any(|x| x.file.contains("open.json") && x.reason.contains("loopback")),
        "{f:#?}"
    );
}

#[test]
fn a_broken_envoy_template_is_a_finding_not_a_crash() {
    let text = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    let path = scratch("envoy").join("envoy.yaml");
    std::fs::write(&path, format!("{text}\n# {{{{NO_SUCH_PLACEHOLDER}}}}\n")).unwrap();
    let f = only(Deployment {
        envoy: Some(path),
        ..none()
    });
    assert_eq!(f.len(), 1, "{f:#?}");
    assert!(f[0].reason.contains("NO_SUCH_PLACEHOLDER"), "{f:#?}");
}

#[test]
fn an_envoy_call_to_a_cluster_the_config_lacks_is_found() {
    let text = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    let from = "  - name: cxgate-timer\n    type: STATIC";
    assert!(text.contains(from));
    let path = scratch("cluster").join("envoy.yaml");
    std::fs::write(
        &path,
        text.replacen(from, "  - name: cxgate-timer-renamed\n    type: STATIC", 1),
    )
    .unwrap();
    let f = only(Deployment {
        envoy: Some(path),
        ..none()
    });
    assert!(
        f.iter().any(
            |x| x.pointer == "/guard/calls/timer/upstream" && x.reason.contains("cxgate-timer")
        ),
        "{f:#?}"
    );
}
