//! `render <deployment.json> [out]`: the production config from a deployment file, checked by
//! `validate` before anything loads it. `demo --real`: the demo against the real platforms,
//! rendered from the environment's credentials, or a clear refusal listing what is missing.

use cxgate_deploy::deployment as deploy;
use cxgate_deploy::validate::{Deployment, check};
use cxgate_stack::{SIDECAR_KEY, Service, consumers, keystore, repo_root, wait_ready};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Renders `deployment` into `out` and checks the result; prints what it wrote.
pub fn render_checked(deployment: &Path, out: &Path) -> Result<deploy::Rendered, String> {
    let root = repo_root();
    let d = deploy::load(&root, deployment)?;
    let r = deploy::render(&root, &d, out)?;
    let sidecar_text = std::fs::read_to_string(&r.sidecar).map_err(|e| e.to_string())?;
    let findings = check(
        &root,
        &Deployment {
            envoy: Some(r.envoy.clone()),
            kong: Some(r.kong.clone()),
            sidecar: vec![r.sidecar.clone()],
            paired_sidecar: serde_json::from_str(&sidecar_text).ok(),
        },
    );
    if !findings.is_empty() {
        let list: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        return Err(format!(
            "the rendered config does not pass validate:\n  {}",
            list.join("\n  ")
        ));
    }
    for path in [&r.envoy, &r.sidecar, &r.kong, &r.kong_conf] {
        println!("wrote {}", path.display());
    }
    Ok(r)
}

pub fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let Some(deployment) = args.first() else {
        return Err("usage: render <deployment.json> [out-dir] (examples/deployment.json)".into());
    };
    let out = args
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".run/render"));
    render_checked(Path::new(deployment), &out).map(|_| ())
}

/// What `demo --real` reads from the environment: (variable, what it is).
pub const REAL_ENV: [(&str, &str); 9] = [
    (
        "GENESYS_REGION",
        "Genesys Cloud region, e.g. mypurecloud.com",
    ),
    (
        "GENESYS_CLIENT_ID",
        "Genesys OAuth client (client credentials)",
    ),
    ("GENESYS_CLIENT_SECRET", "its secret"),
    ("CXONE_TENANT_ID", "CXone tenant id"),
    ("CXONE_CLIENT_ID", "CXone application client id"),
    ("CXONE_CLIENT_SECRET", "its secret"),
    ("CXONE_ACCESS_KEY_ID", "CXone access key id"),
    ("CXONE_ACCESS_KEY_SECRET", "its secret"),
    ("LLM_API_KEY", "the LLM API's key"),
];

/// The variables `demo --real` needs that are unset or empty.
pub fn missing_real_env() -> Vec<&'static str> {
    REAL_ENV
        .iter()
        .filter(|(name, _)| std::env::var(name).map_or(true, |v| v.trim().is_empty()))
        .map(|(name, _)| *name)
        .collect()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// `demo --real`: the gateway (demo ports, demo consumer keys) in front of the real platforms.
pub fn demo_real() -> Result<(), String> {
    let missing = missing_real_env();
    if !missing.is_empty() {
        let lines: Vec<String> = REAL_ENV
            .iter()
            .filter(|(n, _)| missing.contains(n))
            .map(|(n, what)| format!("  {n:<26} {what}"))
            .collect();
        return Err(format!(
            "demo --real needs the platforms' credentials; these are not set:\n{}\n\
             Optional: CXONE_ISSUER (default https://cxone.niceincontact.com), CXONE_API_ENDPOINT \
             (pins the API host instead of asking discovery), LLM_URL (default \
             https://api.openai.com), CXGATE_CA_FILE (default: the system's CA bundle).\n\
             Nothing was started. `./cxgate demo` runs against the mock platforms.",
            lines.join("\n")
        ));
    }
    let root = repo_root();
    let run_dir = root.join(".run/real");
    std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
    let key_store = run_dir.join("keys/consumer-keys.json");
    keystore::write_key_store(&key_store, &consumers(&root)?)?;
    let env = |n: &str| serde_json::json!({"env": n});
    let mut cxone = serde_json::json!({
        "issuer": env_or("CXONE_ISSUER", "https://cxone.niceincontact.com"),
        "tenant_id": env_or("CXONE_TENANT_ID", ""),
        "client_id": env("CXONE_CLIENT_ID"), "client_secret": env("CXONE_CLIENT_SECRET"),
        "access_key_id": env("CXONE_ACCESS_KEY_ID"), "access_key_secret": env("CXONE_ACCESS_KEY_SECRET"),
    });
    if let Ok(pinned) = std::env::var("CXONE_API_ENDPOINT") {
        cxone["api_endpoint"] = serde_json::json!(pinned);
    }
    let mut deployment = serde_json::json!({
        "version": 1,
        "root": root,
        "pipeline": "envoy/cxgate.json",
        "key_store": key_store,
        "wasm_dir": cxgate_stack::wasm_dir(),
        "gateway": {"access_log": run_dir.join("envoy-access.log")},
        "genesys": {"region": env_or("GENESYS_REGION", ""),
                    "client_id": env("GENESYS_CLIENT_ID"), "client_secret": env("GENESYS_CLIENT_SECRET")},
        "cxone": cxone,
        "llm": {"url": env_or("LLM_URL", "https://api.openai.com"), "api_key": env("LLM_API_KEY")},
    });
    if let Ok(ca) = std::env::var("CXGATE_CA_FILE") {
        deployment["tls"] = serde_json::json!({"ca_file": ca});
    }
    let path = run_dir.join("deployment.json");
    std::fs::write(&path, deployment.to_string()).map_err(|e| e.to_string())?;
    let r = render_checked(&path, &run_dir)?;
    // The sidecar and Envoy inherit this environment: the platforms' secrets are read there.
    // Their shared key is the demo's (both listen on loopback only).
    let sidecar_key = SIDECAR_KEY;
    let args = vec!["--config".to_string(), r.sidecar.display().to_string()];
    let env_pairs = [("CXGATE_SIDECAR_KEY", sidecar_key)];
    let mut sidecar = Service::spawn(
        "sidecar",
        &cxgate_stack::bin("cxgate-sidecar"),
        &args,
        &env_pairs,
        &run_dir,
    )?;
    wait_ready(
        &mut sidecar,
        "http://127.0.0.1:7070/v1/state",
        &[("x-cxgate-sidecar-key", sidecar_key)],
        Duration::from_secs(20),
    )?;
    let config = std::fs::read_to_string(&r.envoy).map_err(|e| e.to_string())?;
    let mut envoy = cxgate_stack::run_envoy("envoy", &config, &run_dir, 9901, 2, "info")?;
    println!(
        "\ncxgate gateway is up in front of the real platforms.\n  gateway  http://127.0.0.1:8080\n  \
         logs     {}\nTry: curl -s http://127.0.0.1:8080/genesys/api/v2/routing/queues -H 'x-api-key: demo-key-omnichannel'\n\
         Ctrl-C stops everything.",
        run_dir.display()
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
        for s in [&mut envoy, &mut sidecar] {
            if !s.alive() {
                return Err(format!("{} stopped:\n{}", s.name, s.log_tail(20)));
            }
        }
    }
}
