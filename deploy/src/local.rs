//! What a local run (the demo, the tests) needs beside the rendered config: free loopback
//! ports, the local shared keys, and the sidecar config for the mock platforms.

use std::net::TcpListener;

use crate::render::Ports;
use crate::repo_root;

/// A free loopback port for a child process to listen on.
///
/// Ports come from below the kernel's ephemeral range (32768+ on Linux), so no outgoing
/// connection can take one between this check and the child's bind, and each port is handed
/// out once per process, so tests running in parallel never share one. Under cargo-nextest
/// every test is its own process: each of its concurrent slots (`NEXTEST_TEST_GLOBAL_SLOT`)
/// takes ports from its own part of the range, so two test processes never share one either.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (base, span) = port_range();
    let seed = RandomState::new();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for attempt in 0u64.. {
        let port = base + (seed.hash_one(attempt) % u64::from(span)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
        if attempt > 100_000 {
            break;
        }
    }
    0
}

/// The ports this process may hand out: 20000–31999, or an eighth of it per nextest slot.
fn port_range() -> (u16, u16) {
    const BASE: u16 = 20_000;
    const SPAN: u16 = 12_000;
    const SLOTS: u16 = 8;
    match std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
    {
        Some(slot) => (BASE + (slot % SLOTS) * (SPAN / SLOTS), SPAN / SLOTS),
        None => (BASE, SPAN),
    }
}

/// The sidecar's shared key for test and demo runs (never a platform secret).
pub const SIDECAR_KEY: &str = "cxgate-local-sidecar-key-0001";
/// The local key that signs pagination cursors (its own secret, 32+ characters).
pub const CURSOR_KEY: &str = "cxgate-local-cursor-key-000000000001";

/// The sidecar config for the mock platforms. Secrets are named, not written: the mock's demo
/// credentials reach the sidecar through the environment (see [`MOCK_SECRETS`]).
pub fn demo_sidecar_config(ports: &Ports, refresh: Option<serde_json::Value>) -> serde_json::Value {
    let genesys = format!("http://127.0.0.1:{}", ports.genesys);
    let cxone = format!("http://127.0.0.1:{}", ports.cxone);
    let llm_models = format!("http://127.0.0.1:{}/v1/models", ports.llm);
    serde_json::json!({
        "version": 1,
        "listen": format!("127.0.0.1:{}", ports.sidecar),
        "refresh": refresh.unwrap_or_else(|| serde_json::json!({})),
        "metadata": {"seed_queues": true},
        "genesys": {"login_url": genesys, "api_url": genesys,
                    "client_id": {"env": "GENESYS_CLIENT_ID"}, "client_secret": {"env": "GENESYS_CLIENT_SECRET"}},
        "cxone": {"issuer": cxone, "tenant_id": "demo-tenant",
                  "client_id": {"env": "CXONE_CLIENT_ID"}, "client_secret": {"env": "CXONE_CLIENT_SECRET"},
                  "access_key_id": {"env": "CXONE_ACCESS_KEY_ID"}, "access_key_secret": {"env": "CXONE_ACCESS_KEY_SECRET"}},
        "llm": {"api_key": {"env": "LLM_API_KEY"}, "health_url": llm_models},
        // The mock LLM speaks Anthropic's Messages API too, with the same key.
        "anthropic": {"api_key": {"env": "LLM_API_KEY"}},
        "coexistence": {
            "legacy_roster": {"file": repo_root().join("sip/legacy-roster.csv")},
            "poll_s": 60,
            "reconcile_s": 900,
            "sites": {
                "berlin": {"cloud_e911_id": "genesys-location-berlin", "legacy_e911_id": "erl-berlin"},
                "munich": {"cloud_e911_id": "genesys-location-munich", "legacy_e911_id": "erl-munich"}
            }
        }
    })
}

/// The mock platforms' demo credentials (their defaults), as the sidecar's environment.
pub const MOCK_SECRETS: [(&str, &str); 7] = [
    ("GENESYS_CLIENT_ID", "demo-genesys-client"),
    ("GENESYS_CLIENT_SECRET", "demo-genesys-secret"),
    ("CXONE_CLIENT_ID", "demo-cxone-client"),
    ("CXONE_CLIENT_SECRET", "demo-cxone-secret"),
    ("CXONE_ACCESS_KEY_ID", "demo-access-key"),
    ("CXONE_ACCESS_KEY_SECRET", "demo-access-key-secret"),
    ("LLM_API_KEY", "demo-llm-key"),
];
