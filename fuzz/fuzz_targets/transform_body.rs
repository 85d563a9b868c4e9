//! A consumer's body through the transform on the shipped queue update: validated, mapped,
//! completed and checked. Whatever the body, the stage answers a problem, or forwards a
//! payload that passes the platform's schema (nothing unchecked reaches a platform).
#![no_main]

use cxgate_transform::config::Config;
use cxgate_transform::core::{Incoming, Outcome, on_request};
use cxgate_transform::template::{Found, Lookup};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

include!("../../tests/fixtures/shipped.rs");

/// Every name is known: the fuzzer reaches the mapping, not only the lookup's 422.
struct Known;
impl Lookup for Known {
    fn lookup(&self, _map: &str, name: &str) -> Found {
        Found::Id(format!("id-{}", name.len()))
    }
}

struct Fixture {
    config: Config,
    genesys: jsonschema::Validator,
    cxone: jsonschema::Validator,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let doc = shipped_document();
        let model = cxgate_model::document::parse(
            doc.to_string().as_bytes(),
            &cxgate_pipeline::STAGES,
            &[],
        )
        .expect("the shipped document parses")
        .model;
        let schema = |p: &str| {
            let v: Value = serde_json::from_str(schema_file(p)).expect("schema");
            jsonschema::validator_for(&v).expect("schema compiles")
        };
        Fixture {
            config: Config::compile(doc["transform"].clone(), &model).expect("transform"),
            genesys: schema("schemas/platform/genesys-queue-seed.schema.json"),
            cxone: schema("schemas/platform/cxone-queue-seed.schema.json"),
        }
    })
}

// The first byte picks the platform (odd: CXone), the rest is the body.
fuzz_target!(|data: &[u8]| {
    let Some((first, bytes)) = data.split_first() else {
        return;
    };
    let cxone = first % 2 == 1;
    let Ok(body) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    let f = fixture();
    let Some(route) = f
        .config
        .routes
        .iter()
        .position(|r| r.name == "queue-update")
    else {
        return;
    };
    let platform = if cxone { "cxone" } else { "genesys" };
    let incoming = Incoming {
        route,
        path: "/gateway/v1/routing/queues/update",
        body: &body,
        platform,
        consumer: "fuzz",
        trace_id: None,
        cursor_key: b"fuzz-cursor-key-0123456789abcdef",
        idempotency_key: None,
        now_ms: 1_800_000_000_000,
    };
    match on_request(&f.config, &incoming, &Known) {
        Outcome::Forward(fwd) => {
            let payload: Value =
                serde_json::from_slice(fwd.body.as_deref().unwrap_or(b"null")).expect("JSON");
            let schema = if cxone { &f.cxone } else { &f.genesys };
            assert!(schema.is_valid(&payload), "forwarded unchecked: {payload}");
        }
        Outcome::Reply(r) => {
            assert!((400..600).contains(&r.status), "{}", r.status);
            let p: Value = serde_json::from_slice(&r.body).expect("problem JSON");
            assert_eq!(p["status"], u64::from(r.status));
        }
    }
});
