//! docker-compose.yml as shipped: Compose accepts it, everything it mounts is in the repo or
//! rendered by `compose-config`, and the configs it mounts pass Envoy's and the sidecar's own
//! checks. No Docker engine runs here: the images are neither built nor run (README, "Docker").

use cxgate_e2e::compose::{self, KEY_DIR, ROSTER, WASM_DIR};
use cxgate_e2e::{CURSOR_KEY, SIDECAR_KEY, bin, envoy_bin, repo_root, wasm_dir};
use std::path::Path;
use std::process::Command;

#[test]
fn the_compose_file_validates_and_mounts_what_the_repo_and_compose_config_provide() {
    let root = repo_root();
    let out = std::env::temp_dir().join(format!("cxgate-compose-{}", std::process::id()));
    compose::render(&root, &out).unwrap();
    let keys = [
        ("CXGATE_SIDECAR_KEY", SIDECAR_KEY),
        ("CXGATE_CURSOR_KEY", CURSOR_KEY),
    ];

    // Compose's own check (Debian's docker-compose), with the keys it requires; without them
    // it refuses, naming the missing one.
    let config = Command::new("docker-compose")
        .current_dir(&root)
        .args(["-f", "docker-compose.yml", "config"])
        .envs(keys)
        .output()
        .expect("docker-compose (./cxgate setup installs it)");
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
    let refused = Command::new("docker-compose")
        .current_dir(&root)
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .env_remove("CXGATE_SIDECAR_KEY")
        .env_remove("CXGATE_CURSOR_KEY")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("key of 16+ characters"));

    // Every bind mount's source exists: in the repo, or among what compose-config renders.
    let doc: serde_yaml::Value = serde_yaml::from_slice(&config.stdout).unwrap();
    let rendered = root.join(".run/compose");
    let mut mounts = 0;
    for (_, service) in doc["services"].as_mapping().unwrap() {
        for v in service["volumes"].as_sequence().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            let on_host = match Path::new(source).strip_prefix(&rendered) {
                Ok(rel) => out.join(rel),
                Err(_) => source.into(),
            };
            assert!(on_host.exists(), "{source} is mounted but missing");
            mounts += 1;
        }
    }
    assert_eq!(mounts, 5);
    // The tools image is the repo's Dockerfile, which builds both binaries the services run.
    let services = &doc["services"];
    assert_eq!(services["mocks"]["build"]["dockerfile"], "Dockerfile");
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for name in ["cxgate-mocks", "cxgate-sidecar"] {
        assert!(
            dockerfile.contains(&format!("-p {name}")),
            "{name} is not built"
        );
        assert!(
            dockerfile.contains(&format!("release/{name}")),
            "{name} is not copied"
        );
    }
    assert_eq!(services["envoy"]["image"], "envoyproxy/envoy:v1.40-latest");

    // Envoy validates the config compose mounts, its container paths mapped onto the host.
    let yaml = std::fs::read_to_string(out.join("envoy.yaml"))
        .unwrap()
        .replace(WASM_DIR, &wasm_dir().display().to_string())
        .replace(KEY_DIR, &out.join("keys").display().to_string());
    let host_yaml = out.join("envoy-host.yaml");
    std::fs::write(&host_yaml, yaml).unwrap();
    let v = Command::new(envoy_bin())
        .envs(keys)
        .args(["--mode", "validate", "-c"])
        .arg(&host_yaml)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // The sidecar accepts the config compose gives it.
    let sidecar = std::fs::read_to_string(out.join("sidecar.json"))
        .unwrap()
        .replace(
            ROSTER,
            &root.join("sip/legacy-roster.csv").display().to_string(),
        );
    let host_sidecar = out.join("sidecar-host.json");
    std::fs::write(&host_sidecar, sidecar).unwrap();
    let c = Command::new(bin("cxgate-sidecar"))
        .arg("--check")
        .arg("--config")
        .arg(&host_sidecar)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let _ = std::fs::remove_dir_all(&out);
}
