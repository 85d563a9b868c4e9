//! The hand config reader: values by type, pointers on every error, unknown fields refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fields::Fields;
use serde_json::json;

#[test]
fn fields_read_by_type_and_errors_point_at_the_field() {
    let v = json!({"a": "x", "b": true, "n": 7, "list": ["p", "q"], "nul": null,
                   "map": {"k/1": {"on": true}}});
    let mut f = Fields::of(&v, "/s").unwrap();
    assert_eq!(f.str("a").unwrap(), Some("x"));
    assert_eq!(f.bool("b").unwrap(), Some(true));
    assert_eq!(f.u64("n").unwrap(), Some(7));
    assert_eq!(f.strings("list").unwrap().unwrap(), ["p", "q"]);
    assert_eq!(f.str("nul").unwrap(), None, "null is absent");
    assert_eq!(f.str("missing").unwrap(), None);
    let map = f
        .entries("map", |name, mut e| {
            let on = e.bool("on")?;
            e.done()?;
            Ok((name.to_string(), on))
        })
        .unwrap()
        .unwrap();
    assert_eq!(map, [("k/1".to_string(), ("k/1".to_string(), Some(true)))]);
    f.done().unwrap();

    let mut f = Fields::of(&v, "/s").unwrap();
    assert_eq!(f.u64("a").unwrap_err().field, "/s/a");
    assert_eq!(f.bool("n").unwrap_err().field, "/s/n");
    let e = f.done().unwrap_err();
    assert!(e.message.contains("unknown field"), "{e}");
    assert_ne!(e.field, "/s", "points at the field, not its parent");

    let bad = json!({"list": ["p", 3], "map": {"k/1": {"off": 1}}});
    let mut f = Fields::of(&bad, "").unwrap();
    assert_eq!(f.strings("list").unwrap_err().field, "/list/1");
    let e = f.entries("map", |_, e| e.done()).unwrap_err();
    assert_eq!(e.field, "/map/k~11/off");
    assert_eq!(Fields::of(&json!([1]), "/x").err().unwrap().field, "/x");
    assert!(Fields::of(&bad, "").unwrap().required("nope").is_err());
}
