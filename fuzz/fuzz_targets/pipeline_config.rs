//! The config document every cxgate module reads (the pipeline's, and so every stage's
//! config parser): never a panic, and a document that parses still parses, the same, after
//! it is written out again.
#![no_main]

use cxgate_kit::host::CasDialect;
use cxgate_model::fakes::TestHost;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn host() -> TestHost {
    let mut h = TestHost::new(CasDialect::Envoy, 1_800_000_000_000);
    h.env
        .insert("CXGATE_SIDECAR_KEY".into(), "fuzz-sidecar-key".into());
    h.env.insert("CXGATE_CURSOR_KEY".into(), "c".repeat(32));
    h
}

fuzz_target!(|data: &[u8]| {
    let first = host()
        .pipeline(&String::from_utf8_lossy(data), &cxgate_pipeline::STAGES)
        .map(|p| p.stages.iter().map(|s| s.name()).collect::<Vec<_>>());
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let again = host()
        .pipeline(&v.to_string(), &cxgate_pipeline::STAGES)
        .map(|p| p.stages.iter().map(|s| s.name()).collect::<Vec<_>>());
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.field, b.field),
        _ => panic!("written out again it parses differently: {first:?} / {again:?}"),
    }
});
