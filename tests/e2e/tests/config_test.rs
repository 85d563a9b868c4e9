//! The shipped configs as they ship: every cxgate document in envoy/ and kong/ passes the
//! published schema and the pipeline's own parser, and the schema and Kong's meta are one.

use cxgate_e2e::validate::{envoy_documents, kong_documents};
use cxgate_e2e::{repo_root, shipped_pipeline};
use cxgate_kit::host::CasDialect;
use cxgate_model::fakes::TestHost;
use serde_json::{Value, json};

fn schema() -> Value {
    let path = repo_root().join("schemas/filters/cxgate.config.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every cxgate document the shipped files hold, by where it is.
fn shipped_documents() -> Vec<(String, Value)> {
    let root = repo_root();
    let mut docs = vec![
        (
            "envoy/cxgate.json".to_string(),
            serde_json::from_str(&std::fs::read_to_string(root.join("envoy/cxgate.json")).unwrap())
                .unwrap(),
        ),
        (
            "envoy/cxgate.json (schemas inlined)".to_string(),
            shipped_pipeline(&root).unwrap(),
        ),
    ];
    // envoy.yaml as rendered (each Wasm plugin's configuration) and kong.yml's filter chains,
    // read as `cxgate validate` reads them.
    for (name, doc) in envoy_documents(&root, &root.join("envoy/envoy.yaml")).unwrap() {
        docs.push((format!("envoy/envoy.yaml {name}"), doc));
    }
    for (name, doc) in kong_documents(&root.join("kong/kong.yml")).unwrap() {
        docs.push((format!("kong/kong.yml {name}"), doc));
    }
    docs
}

#[test]
fn every_shipped_document_passes_the_schema_and_the_pipelines_own_parser() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let docs = shipped_documents();
    let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names
            .iter()
            .filter(|n| n.starts_with("envoy/envoy.yaml"))
            .count()
            >= 4,
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("kong/kong.yml"))
            .count(),
        5,
        "{names:?}"
    );
    for (name, doc) in &docs {
        let errors: Vec<String> = validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path().as_str()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // The schema is not a rubber stamp: what the parser refuses, it refuses too.
        let mut bad = doc.clone();
        bad["model"]["unknwon_field"] = json!(1);
        assert!(!validator.is_valid(&bad), "{name}");
        if name.contains("inlined") || !name.starts_with("envoy/cxgate.json") {
            let mut h = TestHost::new(CasDialect::Kong, 1);
            h.env.insert("CXGATE_SIDECAR_KEY".into(), "k".into());
            h.env.insert("CXGATE_CURSOR_KEY".into(), "c".repeat(32));
            if let Err(e) = h.pipeline(&doc.to_string(), &cxgate_pipeline::STAGES) {
                panic!("{name}: the pipeline refuses it: {e}");
            }
        }
    }
}

#[test]
fn the_published_schema_and_kongs_meta_are_one_schema() {
    let root = repo_root();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("kong/cxgate.meta.json")).unwrap())
            .unwrap();
    let mut kong = meta["config_schema"].clone();
    assert_eq!(
        kong["$schema"], "http://json-schema.org/draft-04/schema#",
        "Kong reads draft-4"
    );
    let mut published = schema();
    for s in [&mut kong, &mut published] {
        let o = s.as_object_mut().unwrap();
        o.remove("$schema");
        o.remove("$id");
    }
    assert_eq!(
        kong, published,
        "kong/cxgate.meta.json is the published schema in draft-4 dress"
    );
    let text = published.to_string();
    for newer in [
        "\"$defs\"",
        "\"const\"",
        "\"prefixItems\"",
        "\"unevaluatedProperties\"",
    ] {
        assert!(!text.contains(newer), "{newer} is not draft-4");
    }
}

#[test]
fn the_demo_consumers_and_the_models_consumers_are_the_same_people() {
    let root = repo_root();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("envoy/cxgate.json")).unwrap())
            .unwrap();
    let mut in_model: Vec<String> = doc["model"]["consumers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut with_keys: Vec<String> = cxgate_e2e::consumers(&root)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    in_model.sort();
    with_keys.sort();
    assert_eq!(
        in_model, with_keys,
        "every verified consumer has rights, and every right a key"
    );
}

#[test]
fn kong_yml_is_rendered_from_the_one_config_document() {
    let root = repo_root();
    let shipped = std::fs::read_to_string(root.join("kong/kong.yml")).unwrap();
    let rendered = cxgate_e2e::kong::render_kong(&root).unwrap();
    assert!(
        shipped == rendered,
        "kong/kong.yml is not current: run ./cxgate kong-config"
    );
}
