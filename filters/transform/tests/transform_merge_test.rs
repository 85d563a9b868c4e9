//! The merge of a read-modify-write update (pure), and its config.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
use common::*;
use cxgate_transform::merge::{Unmergeable, merged};

#[test]
fn objects_merge_key_by_key_and_everything_else_is_replaced() {
    let current =
        json!({"version": 3, "a": {"b": 1, "c": [1, 2]}, "rules": [{"x": 1}], "keep": true});
    let patch = json!({"a": {"c": [9]}, "rules": [], "new": "n"});
    let out = merged(&current, &patch, &[], "/version").unwrap();
    assert_eq!(
        out,
        json!({"version": 3, "a": {"b": 1, "c": [9]}, "rules": [], "keep": true, "new": "n"})
    );
}

#[test]
fn the_version_is_the_one_read_and_defaults_never_override() {
    let current = json!({"version": 3, "scoringMethod": "PriorityOnly"});
    let patch = json!({"version": 99, "name": "q"});
    let defaults = vec![
        ("/scoringMethod".to_string(), json!("TimestampAndPriority")),
        ("/acwSettings/wrapupPrompt".to_string(), json!("OPTIONAL")),
    ];
    let out = merged(&current, &patch, &defaults, "/version").unwrap();
    assert_eq!(
        out,
        json!({"version": 3, "name": "q", "scoringMethod": "PriorityOnly", "acwSettings": {"wrapupPrompt": "OPTIONAL"}})
    );
}

#[test]
fn an_object_without_a_version_or_not_an_object_is_refused() {
    assert_eq!(
        merged(&json!({"name": "q"}), &json!({}), &[], "/version"),
        Err(Unmergeable::NoVersion)
    );
    assert_eq!(
        merged(&json!([1]), &json!({}), &[], "/version"),
        Err(Unmergeable::NotAnObject)
    );
}

#[test]
fn a_merge_profile_sends_only_the_mapped_fields_and_nothing_by_the_proxy() {
    let f = forward(update(&real_cfg(), &seed("GENESYS")));
    assert_eq!(f.body, None, "the stage writes by callout");
    let m = f.merge.unwrap();
    assert_eq!(
        m.path, "/api/v2/routing/queues/q-premium-1",
        "the platform's own path"
    );
    assert!(
        m.patch.get("scoringMethod").is_none(),
        "no defaults in the patch: {}",
        m.patch
    );
    assert_eq!(m.patch["name"], "Premium_Support");
}

#[test]
fn merge_is_for_puts_without_paging() {
    let mut v = shipped();
    v["profiles"]["genesys-real"]["method"] = json!("POST");
    let e = compile(v).unwrap_err();
    assert_eq!(e.field, "/transform/profiles/genesys-real/merge", "{e:?}");
    let mut v = shipped();
    v["profiles"]["genesys-real"]["merge"]["version"] = json!("version");
    let e = compile(v).unwrap_err();
    assert_eq!(
        e.field, "/transform/profiles/genesys-real/merge/version",
        "{e:?}"
    );
}
