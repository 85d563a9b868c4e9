//! What ABI tests load: the shipped pipeline config as Envoy or Kong would get it, and a
//! sidecar snapshot with tokens and ID maps.

use crate::host::Host;
use crate::types::{CallReply, Profile};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The sidecar key tests give the VM.
pub const SIDECAR_KEY: &str = "abi-test-sidecar-key-000";
/// The cursor key tests give the VM.
pub const CURSOR_KEY: &str = "abi-test-cursor-key-0000000000000";

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `envoy/cxgate.json` with its schema files inlined, the sidecar named as `profile` names
/// upstreams (an Envoy cluster, or Kong's `host:port`), and a short poll for tests.
pub fn shipped_pipeline(profile: Profile) -> Value {
    let root = repo();
    let text = std::fs::read_to_string(root.join("envoy/cxgate.json")).unwrap_or_default();
    let mut doc: Value = serde_json::from_str(&text).unwrap_or_default();
    if let Some(t) = doc.get_mut("transform") {
        let _ = cxgate_transform::config::inline_schema_files(t, &|p| {
            std::fs::read_to_string(root.join(p)).map_err(|e| e.to_string())
        });
    }
    doc["sync"] = json!({"upstream": sidecar(profile), "authority": "sidecar", "poll_wait_ms": 2000, "lease_ms": 3000});
    doc
}

/// The pipeline document of the shipped `kong/kong.yml` (every service runs the same one).
pub fn kong_pipeline() -> Value {
    let text = std::fs::read_to_string(repo().join("kong/kong.yml")).unwrap_or_default();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_default();
    let kong = serde_json::to_value(yaml).unwrap_or_default();
    kong["services"][0]["filter_chains"][0]["filters"][0]["config"].clone()
}

/// The sidecar as `profile` names an upstream.
pub fn sidecar(profile: Profile) -> &'static str {
    match profile {
        Profile::Envoy => "sidecar",
        Profile::Kong => "127.0.0.1:7070",
    }
}

/// A state snapshot: a fresh token for every platform and the demo's ID maps.
pub fn snapshot(now_ms: u64) -> Value {
    let token = |name: &str, generation: u64| {
        json!({"access_token": name, "token_type": "bearer", "issued_ms": now_ms,
               "expires_ms": now_ms + 86_400_000, "stale_ms": now_ms + 82_080_000, "generation": generation})
    };
    let map = |entries: Value| json!({"entries": entries, "fetched_ms": 1, "stale": false, "last_error": null});
    json!({"format": 1, "version": 5, "generated_ms": now_ms, "health": {},
        "tokens": {"genesys": token("genesys-tok-1", 1), "cxone": token("cxone-tok-1", 1), "llm": token("llm-key", 1)},
        "maps": {"genesys/queues": map(json!({"Premium_Support": "q-1"})),
                 "cxone/queues": map(json!({"Premium_Support": "cxq-0001"})),
                 "cxone/skills": map(json!({"billing": "11000", "tier2": "11001"}))}})
}

/// Starts `module` with `config` on `workers` workers and answers the first state poll.
pub fn start_synced(
    module: &Path,
    profile: Profile,
    workers: usize,
    config: &Value,
) -> Result<Host, String> {
    let mut h = Host::builder(module)
        .profile(profile)
        .workers(workers)
        .cluster("sidecar")
        // The shipped envoy.yaml's other clusters, for the calls stages make themselves.
        .cluster("genesys")
        .cluster("cxone")
        .cluster("llm")
        .cluster("cxgate-timer")
        .env("CXGATE_SIDECAR_KEY", SIDECAR_KEY)
        .env("CXGATE_CURSOR_KEY", CURSOR_KEY)
        .config(&config.to_string())
        .start()
        .map_err(|e| format!("{e:#}"))?;
    h.advance(Duration::from_millis(1000))
        .map_err(|e| e.to_string())?;
    let now = h.now_ms();
    if let Some(poll) = h
        .pending_calls()
        .into_iter()
        .find(|c| c.path().starts_with("/v1/state"))
    {
        h.reply(poll.token, CallReply::json(200, &snapshot(now).to_string()))
            .map_err(|e| e.to_string())?;
    }
    Ok(h)
}

/// The pipeline module with the shipped config, on one worker, synced.
pub fn shipped_host(profile: Profile) -> Result<Host, String> {
    start_synced(
        &crate::filter_wasm("cxgate-pipeline"),
        profile,
        1,
        &shipped_pipeline(profile),
    )
}
