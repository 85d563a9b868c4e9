//! What docker-compose.yml mounts, rendered: Envoy's config (with paths as the containers see
//! them), the consumer key store and the sidecar's config for the mock platforms. The
//! containers use the host's network and the demo's ports.

use crate::demo_sidecar_config;
use crate::keystore::write_key_store;
use crate::render::{Ports, Vars, consumers, render_envoy, shipped_pipeline, write_file as write};
use std::path::Path;

/// Paths inside the containers (docker-compose.yml mounts them).
pub const WASM_DIR: &str = "/etc/cxgate/wasm";
pub const KEY_DIR: &str = "/etc/cxgate/keys";
pub const ROSTER: &str = "/etc/cxgate/legacy-roster.csv";

/// Writes `out/envoy.yaml`, `out/keys/consumer-keys.json` (0600) and `out/sidecar.json`.
pub fn render(root: &Path, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let ports = Ports::demo();
    let path = root.join("envoy/envoy.yaml");
    let template =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let envoy = render_envoy(
        &template,
        &Vars {
            ports: ports.clone(),
            wasm_dir: WASM_DIR.into(),
            pipeline: shipped_pipeline(root)?,
            access_log: "/dev/stdout".into(),
            key_store: Path::new(KEY_DIR).join("consumer-keys.json"),
        },
    )?;
    write(&out.join("envoy.yaml"), &envoy)?;
    write_key_store(&out.join("keys/consumer-keys.json"), &consumers(root)?)?;
    let mut sidecar = demo_sidecar_config(&ports, None);
    sidecar["coexistence"]["legacy_roster"] = serde_json::json!({ "file": ROSTER });
    write(&out.join("sidecar.json"), &sidecar.to_string())
}
