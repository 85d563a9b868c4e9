//! `cargo run -p xtask -- <task>`; `./cxgate` calls these.
//!
//! - `wasm`: builds every filter for wasm32-wasip1 (release) and prints each .wasm's size.
//! - `demo`: starts the gateway on the documented ports with the built-in mock platforms.

use cxgate_e2e::{Ports, Stack, StackOptions, repo_root, wasm_dir};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// (crate, shipped?) — test-only filters are built for the ABI tests but not shipped.
fn filters() -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let root = repo_root();
    for (dir, shipped) in [("filters", true), ("tests", false)] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for path in names {
            let manifest = std::fs::read_to_string(path.join("Cargo.toml")).unwrap_or_default();
            if !manifest.contains("cdylib") {
                continue;
            }
            let name = manifest
                .lines()
                .find_map(|l| {
                    l.strip_prefix("name = \"")
                        .and_then(|r| r.strip_suffix('"'))
                })
                .unwrap_or_default()
                .to_string();
            if !name.is_empty() {
                out.push((name, shipped));
            }
        }
    }
    out
}

fn build_wasm() -> Result<(), String> {
    let filters = filters();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--target", "wasm32-wasip1"])
        .current_dir(repo_root());
    let mut features = Vec::new();
    for (name, _) in &filters {
        cmd.args(["-p", name]);
        features.push(format!("{name}/proxy"));
    }
    cmd.args(["--features", &features.join(",")]);
    let status = cmd.status().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("wasm build failed".into());
    }
    println!("\nfilter .wasm sizes (wasm32-wasip1, release):");
    for (name, shipped) in &filters {
        let path = wasm_dir().join(format!("{}.wasm", name.replace('-', "_")));
        let size = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let kind = if *shipped { "filter" } else { "test filter" };
        println!(
            "  {:>9} bytes  {:>7.1} KiB  {name} ({kind})",
            size,
            size as f64 / 1024.0
        );
    }
    Ok(())
}

fn demo() -> Result<(), String> {
    let ports = Ports::demo();
    let run_dir = repo_root().join(".run/demo");
    let stack = Stack::start(StackOptions {
        ports: Some(ports.clone()),
        run_dir: Some(run_dir.clone()),
        ..StackOptions::default()
    })?;
    let g = format!("http://127.0.0.1:{}", ports.gateway);
    println!(
        r#"
cxgate demo gateway is up.
  gateway      {g}
  envoy admin  http://127.0.0.1:{admin}
  sidecar      http://127.0.0.1:{sidecar}   (header x-cxgate-sidecar-key: {key})
  mock Genesys http://127.0.0.1:{genesys}   mock CXone http://127.0.0.1:{cxone}   mock LLM http://127.0.0.1:{llm}
  logs         {logs}

Try:
  curl -s {g}/gateway/v1/whoami -H 'x-api-key: demo-key-omnichannel'
  curl -i {g}/genesys/api/v2/routing/queues -H 'x-api-key: demo-key-omnichannel'   # token injected
  curl -s {g}/cxone/incontactapi/services/v30.0/skills -H 'x-api-key: demo-key-omnichannel'
  curl -i {g}/genesys/api/v2/routing/queues                     # no key: 401 problem+json
  curl -s http://127.0.0.1:{genesys}/__mock/requests             # what the mock Genesys received

Ctrl-C stops everything."#,
        admin = ports.admin,
        sidecar = ports.sidecar,
        key = cxgate_e2e::SIDECAR_KEY,
        genesys = ports.genesys,
        cxone = ports.cxone,
        llm = ports.llm,
        logs = run_dir.display(),
    );
    let mut stack = stack;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let dead = [
            stack.envoy.as_mut(),
            stack.sidecar.as_mut(),
            Some(&mut stack.mocks),
        ]
        .into_iter()
        .flatten()
        .find_map(|s| (!s.alive()).then(|| format!("{} stopped:\n{}", s.name, s.log_tail(20))));
        if let Some(msg) = dead {
            return Err(msg);
        }
    }
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "wasm" => build_wasm(),
        "demo" => demo(),
        _ => Err("usage: xtask wasm|demo".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
