//! The request model and the config document (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_model::document::parse;
use cxgate_model::model::{Match, PlatformSource, Resolved};
use cxgate_model::{Limit, Model};
use serde_json::{Value, json};

fn routes() -> Value {
    json!([
        {"id": "read", "prefix": "/genesys/", "methods": ["get", "HEAD"], "platform": "genesys", "scopes": ["genesys:passthrough:read"]},
        {"id": "write", "prefix": "/genesys/", "methods": ["POST", "PUT", "PATCH", "DELETE"], "platform": "genesys", "cost": 5,
         "scopes": ["genesys:passthrough:write", "genesys:passthrough:read"]},
        {"id": "bulk", "prefix": "/genesys/bulk/", "platform": "genesys", "cost": 50},
        {"id": "update", "path": "/gateway/v1/routing/queues/update", "methods": ["POST"], "platform": {"body": "/target_platform"}},
        {"id": "list", "path": "/gateway/v1/routing/queues", "methods": ["GET"], "platform": {"query": "platform"}},
        {"id": "whoami", "path": "/gateway/v1/whoami"}
    ])
}

fn model() -> Model {
    Model::compile(json!({
        "default_consumer": {"limit": {"capacity": 10, "per_second": 1}},
        "consumers": {"app": {"scopes": ["genesys:passthrough:read", "genesys:passthrough:read", "b:x"]},
                      "big": {"limit": {"capacity": 900, "per_minute": 900}}},
        "routes": routes()
    }))
    .unwrap()
}

fn id(m: &Model, method: &str, path: &str) -> String {
    match m.resolve(method, path) {
        Resolved::Route(i) => m.routes[i].id.clone(),
        other => format!("{other:?}"),
    }
}

#[test]
fn the_most_specific_route_wins_and_the_query_is_ignored() {
    let m = model();
    assert_eq!(id(&m, "GET", "/genesys/api/v2/users?pageSize=5"), "read");
    assert_eq!(id(&m, "DELETE", "/genesys/api/v2/users/u-1"), "write");
    assert_eq!(
        id(&m, "GET", "/genesys/bulk/jobs"),
        "bulk",
        "a longer prefix first"
    );
    assert_eq!(
        id(&m, "POST", "/gateway/v1/routing/queues/update"),
        "update"
    );
    assert_eq!(
        id(&m, "GET", "/gateway/v1/routing/queues?platform=CXONE"),
        "list"
    );
    assert_eq!(id(&m, "GET", "/gateway/v1/whoami"), "whoami");
    assert_eq!(
        id(&m, "DELETE", "/gateway/v1/whoami"),
        "whoami",
        "no methods: any"
    );
    // An exact path does not match as a prefix.
    assert_eq!(m.resolve("GET", "/gateway/v1/whoami/x"), Resolved::NoRoute);
    assert_eq!(m.resolve("GET", "/genesys"), Resolved::NoRoute);
    assert_eq!(m.resolve("GET", "/"), Resolved::NoRoute);
    assert_eq!(
        m.resolve("OPTIONS", "/genesys/api/v2/users"),
        Resolved::MethodNotAllowed(
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!(
        m.resolve("GET", "/gateway/v1/routing/queues/update"),
        Resolved::MethodNotAllowed(vec!["POST".into()])
    );
    // Methods are compared in upper case, as proxies send them.
    assert_eq!(id(&m, "HEAD", "/genesys/x"), "read");
}

#[test]
fn routes_carry_their_platform_source_cost_and_scopes() {
    let m = model();
    let r = |i: &str| m.route_by_id(i).unwrap().1.clone();
    assert_eq!(r("read").platform, PlatformSource::Fixed("genesys".into()));
    assert_eq!(
        r("update").platform,
        PlatformSource::Body("/target_platform".into())
    );
    assert_eq!(r("list").platform, PlatformSource::Query("platform".into()));
    assert_eq!(r("whoami").platform, PlatformSource::None);
    assert_eq!(
        (r("read").cost, r("write").cost, r("bulk").cost),
        (1, 5, 50)
    );
    assert_eq!(
        r("write").scopes,
        ["genesys:passthrough:read", "genesys:passthrough:write"]
    );
    assert_eq!(
        r("update").matcher,
        Match::Exact("/gateway/v1/routing/queues/update".into())
    );
    assert_eq!(m.known_platform("CXONE"), Some("cxone"));
    assert_eq!(m.known_platform(" genesys "), Some("genesys"));
    assert_eq!(m.known_platform("AVAYA"), None);
    assert_eq!(m.route_platforms(&r("update")), ["genesys", "cxone", "llm"]);
}

#[test]
fn consumers_have_their_scopes_and_budgets_and_strangers_the_defaults() {
    let m = model();
    let app = m.consumer("app");
    assert_eq!(
        app.scopes,
        ["b:x", "genesys:passthrough:read"],
        "sorted, deduplicated"
    );
    assert!(app.has_scope("genesys:passthrough:read"));
    assert!(!app.has_scope("genesys:passthrough:write"));
    assert_eq!(
        app.limit,
        Limit {
            capacity: 10,
            rate: 1,
            period_ms: 1_000
        },
        "the default budget"
    );
    assert_eq!(
        m.consumer("big").limit,
        Limit {
            capacity: 900,
            rate: 900,
            period_ms: 60_000
        }
    );
    let stranger = m.consumer("who-knows");
    assert_eq!(stranger.id, "anonymous");
    assert!(stranger.scopes.is_empty());
}

#[test]
fn a_bad_model_names_the_field() {
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({"routes": routes()});
        f(&mut v);
        Model::compile(v).unwrap_err()
    };
    for (edit, field) in [
        (
            Box::new(|v: &mut Value| v["routes"] = json!([])) as Box<dyn Fn(&mut Value)>,
            "/model/routes",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][1]["id"] = json!("read")),
            "/model/routes/1/id",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][1]["id"] = json!("Write Route")),
            "/model/routes/1/id",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][0]["prefix"] = json!("genesys/")),
            "/model/routes/0/prefix",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][5]["prefix"] = json!("/x")),
            "/model/routes/5",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][0]["methods"] = json!(["GET", "FETCH"])),
            "/model/routes/0/methods/1",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][0]["platform"] = json!("Genesys")),
            "/model/routes/0/platform",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][3]["platform"] = json!({"header": "x"})),
            "/model/routes/3/platform",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][3]["methods"] = json!(["GET"])),
            "/model/routes/3/methods",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][2]["cost"] = json!(0)),
            "/model/routes/2/cost",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][0]["scopes"] = json!(["ok", "Not OK"])),
            "/model/routes/0/scopes/1",
        ),
        (
            Box::new(|v: &mut Value| v["routes"][0]["scope"] = json!([])),
            "/model/routes/0/scope",
        ),
        (
            Box::new(|v: &mut Value| v["consumers"] = json!({"a": {"limit": {"capacity": 5}}})),
            "/model/consumers/a/limit",
        ),
        (
            Box::new(|v: &mut Value| v["consumers"] = json!({"a/b": {"scopes": ["X"]}})),
            "/model/consumers/a~1b/scopes/0",
        ),
        (
            Box::new(|v: &mut Value| v["consumer_header"] = json!("bad header")),
            "/model/consumer_header",
        ),
        (
            Box::new(|v: &mut Value| v["trace_header"] = json!("traceparent")),
            "/model/trace_header",
        ),
        (
            Box::new(|v: &mut Value| v["max_body_bytes"] = json!(0)),
            "/model/max_body_bytes",
        ),
        (
            Box::new(|v: &mut Value| v["unmatched"] = json!("allow")),
            "/model/unmatched",
        ),
        (
            Box::new(|v: &mut Value| v["platforms"] = json!(["genesys", "CX one"])),
            "/model/platforms/1",
        ),
    ] {
        let e = with(&*edit);
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn the_document_lists_its_stages_and_refuses_what_it_cannot_run() {
    use cxgate_model::authz;
    let kinds = [authz::KIND];
    let doc = |v: Value| parse(v.to_string().as_bytes(), &kinds, &["authz"]);
    let ok = doc(json!({"version": 2, "model": {"routes": routes()}})).unwrap();
    assert_eq!(ok.stages.len(), 1, "the module's default stages");
    assert!(ok.sync.is_none());
    let err = |v: Value| doc(v).err().unwrap();
    let model = json!({"routes": routes()});
    let e = err(json!({"version": 1, "model": model}));
    assert_eq!(e.field, "/version");
    assert!(e.message.contains("/model"), "says what changed: {e}");
    assert_eq!(err(json!({"version": 3, "model": model})).field, "/version");
    assert_eq!(
        err(json!({"model": model, "stages": ["authz", "ratelimit"]})).field,
        "/stages/1"
    );
    assert_eq!(
        err(json!({"model": model, "stages": ["authz", "authz"]})).field,
        "/stages/1"
    );
    assert_eq!(err(json!({"model": model, "stages": []})).field, "/stages");
    assert_eq!(err(json!({"stages": ["authz"]})).field, "/model");
    assert_eq!(
        err(json!({"model": model, "ratelimt": {}})).field,
        "/ratelimt"
    );
    assert_eq!(
        err(json!({"model": model, "sync": {"upstream": 5}})).field,
        "/sync/upstream"
    );
    assert_eq!(err(json!({"model": {"routes": []}})).field, "/model/routes");
    // A stage of the module that the document does not run may not carry settings.
    let two = [
        authz::KIND,
        cxgate_model::StageKind {
            name: "other",
            build: authz::KIND.build,
        },
    ];
    let e = parse(
        json!({"model": model, "stages": ["authz"], "other": {}})
            .to_string()
            .as_bytes(),
        &two,
        &["authz"],
    )
    .err()
    .unwrap();
    assert_eq!(e.field, "/other");
    assert!(e.message.contains("/stages does not list"), "{e}");
    assert_eq!(doc(json!([])).err().unwrap().field, "");
    assert!(parse(b"\xff", &kinds, &["authz"]).is_err());
}
