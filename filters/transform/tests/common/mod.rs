//! Helpers shared by the transform's layer-1 test files: the shipped document, its model and
//! profiles, the fake ID maps and request drivers.
#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub use cxgate_kit::fakes::FakeStore;
pub use cxgate_kit::host::CasDialect;
pub use cxgate_kit::problem::LocalReply;
pub use cxgate_model::Model;
pub use cxgate_model::body::parse_json;
pub use cxgate_model::model::{PlatformSource, Resolved, query_param};
pub use cxgate_transform::config::Config;
pub use cxgate_transform::core::{Forward, Incoming, Outcome, Returned, on_request, on_response};
pub use cxgate_transform::idem::{self, Begin, Stored};
pub use cxgate_transform::page::Cursor;
pub use cxgate_transform::template::{Found, Lookup, iso8601_to_ms, ms_to_iso8601};
pub use serde_json::{Value, json};
pub use std::collections::BTreeMap;

include!("../../../../tests/fixtures/shipped.rs");

/// The shipped document's request model.
pub fn model() -> Model {
    let v: Value = serde_json::from_str(SHIPPED).unwrap();
    Model::compile(v["model"].clone()).unwrap()
}

/// The shipped transform section, schemas inlined.
pub fn shipped() -> Value {
    shipped_document()["transform"].clone()
}

pub fn compile(v: Value) -> Result<Config, cxgate_kit::ConfigError> {
    Config::compile(v, &model())
}

pub fn cfg() -> Config {
    compile(shipped()).unwrap()
}

/// The shipped config, with the update route sent to the real-API profiles.
pub fn real_cfg() -> Config {
    let mut v = shipped();
    v["routes"]["queue-update"]["platforms"] =
        json!({"genesys": "genesys-real", "cxone": "cxone-real"});
    compile(v).unwrap()
}

pub struct Maps(pub BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>);

impl Lookup for Maps {
    fn lookup(&self, map: &str, name: &str) -> Found {
        match self.0.get(map) {
            None => Found::NoMap,
            Some(m) => m
                .get(name)
                .map_or(Found::Unknown, |id| Found::Id(id.to_string())),
        }
    }
}

pub fn maps() -> Maps {
    let mut m = BTreeMap::new();
    m.insert(
        "genesys/queues",
        BTreeMap::from([("Premium_Support", "q-premium-1")]),
    );
    m.insert(
        "genesys/skills",
        BTreeMap::from([("billing", "gs-1"), ("tier2", "gs-2")]),
    );
    m.insert(
        "cxone/queues",
        BTreeMap::from([("Premium_Support", "cxq-0001")]),
    );
    m.insert(
        "cxone/skills",
        BTreeMap::from([
            ("billing", "skill_billing_001"),
            ("tier2", "skill_tier2_002"),
            ("Premium_Support", "11007"),
        ]),
    );
    Maps(m)
}

/// The normalized API's example request (the normalized queue update's reference example).
/// The clock the drivers run at.
pub const NOW_MS: u64 = 1_800_000_000_000;

pub const SEED: &str = include_str!("../../../../tests/fixtures/queue-update.seed.json");

pub fn seed(platform: &str) -> String {
    SEED.replace("GENESYS", platform)
}

/// A request as the pipeline hands it to the transform: the model resolves the route, parses
/// the body once (its problems answer first) and resolves the platform.
pub fn send_with(
    c: &Config,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
    lookup: &dyn Lookup,
) -> Outcome {
    let m = model();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let Resolved::Route(i) = m.resolve(method, path) else {
        panic!("no model route for {method} {path}");
    };
    let json = if body.is_empty() {
        Value::Null
    } else {
        match parse_json(m.max_body_bytes, content_type, body) {
            Ok(v) => v,
            Err(p) => return Outcome::Reply((*p).into_reply()),
        }
    };
    let said = match &m.routes[i].platform {
        PlatformSource::Body(ptr) => json
            .pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default(),
        PlatformSource::Query(q) => query_param(path, q).unwrap_or_default(),
        _ => "",
    };
    let platform = m
        .known_platform(said)
        .expect("a platform the model knows")
        .to_string();
    on_request(
        c,
        &Incoming {
            route: c.route_for(i).unwrap(),
            path,
            body: &json,
            platform: &platform,
            consumer: "omnichannel-app-prod",
            trace_id: Some("t-1"),
            cursor_key: b"cursor-key-0123456789",
            idempotency_key: None,
            now_ms: NOW_MS,
        },
        lookup,
    )
}

pub fn send(c: &Config, path: &str, content_type: Option<&str>, body: &[u8]) -> Outcome {
    send_with(c, path, content_type, body, &maps())
}

pub fn update(c: &Config, body: &str) -> Outcome {
    send(
        c,
        "/gateway/v1/routing/queues/update",
        Some("application/json"),
        body.as_bytes(),
    )
}

pub fn forward(o: Outcome) -> Forward {
    match o {
        Outcome::Forward(f) => f,
        Outcome::Reply(r) => panic!(
            "expected a forward, got {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
    }
}

pub fn problem(o: Outcome) -> (u32, Value) {
    match o {
        Outcome::Reply(LocalReply {
            status,
            body,
            headers,
        }) => {
            assert!(headers.contains(&("content-type".into(), "application/problem+json".into())));
            (status, serde_json::from_slice(&body).unwrap())
        }
        Outcome::Forward(f) => panic!("expected a problem, got a forward to {}", f.path),
    }
}

pub fn body(f: &Forward) -> Value {
    serde_json::from_slice(f.body.as_ref().unwrap()).unwrap()
}
