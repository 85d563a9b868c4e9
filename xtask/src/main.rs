//! `cargo run -p xtask -- <task>`; `./cxgate` calls these.
//!
//! - `wasm [pipeline]`: builds every filter for wasm32-wasip1 (release), or the pipeline's
//!   alone (what the demo loads), and prints each .wasm's size.
//! - `demo`: starts the gateway on the documented ports with the built-in mock platforms.
//! - `demo --real`: the same against the real platforms (credentials from the environment).
//! - `render <deployment.json> [out]`: the production config from a deployment file.
//! - `compose-config`: renders what docker-compose.yml mounts into `.run/compose/`.
//! - `validate`, `kong-config`: the shipped configs checked; `kong/kong.yml` regenerated.
//!
//! The benchmarks are a test crate of their own (`tests/bench`, `cxgate-bench`), so that
//! nothing here links the ABI host or wasmtime.

mod compose;
mod render;

use cxgate_stack::{Ports, Stack, StackOptions, repo_root, wasm_dir};
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

/// The one crate that links every stage into a single module.
const PIPELINE: &str = "cxgate-pipeline";

/// Every filter module, or with `pipeline_only` the pipeline's alone (what the demo loads).
fn build_wasm(pipeline_only: bool) -> Result<(), String> {
    let mut filters = filters();
    if pipeline_only {
        filters.retain(|(n, _)| n == PIPELINE);
    }
    let cargo_build = |crates: &[&String], features: &[String]| -> Result<(), String> {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--release", "--target", "wasm32-wasip1"])
            .current_dir(repo_root());
        for name in crates {
            cmd.args(["-p", name]);
        }
        cmd.args(["--features", &features.join(",")]);
        match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(_) => Err("wasm build failed".into()),
            Err(e) => Err(format!("cargo: {e}")),
        }
    };
    // Two builds: the filters' `standalone` feature (their own entry point) must not reach
    // the pipeline, which links the same crates, and features unify within one build. The
    // pipeline goes first so the standalone build is the last to write the filters' .wasm.
    cargo_build(
        &[&PIPELINE.to_string()],
        &[format!("{PIPELINE}/standalone")],
    )?;
    let standalone: Vec<&String> = filters
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.as_str() != PIPELINE)
        .collect();
    let features: Vec<String> = filters
        .iter()
        .filter(|(n, _)| n.as_str() != PIPELINE)
        .map(|(n, shipped)| {
            if *shipped {
                format!("{n}/standalone")
            } else {
                format!("{n}/proxy")
            }
        })
        .collect();
    if !standalone.is_empty() {
        cargo_build(&standalone, &features)?;
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
  logs         {logs}   (access log: envoy-access.log, one JSON line per request)

Try:
  curl -s {g}/gateway/v1/whoami -H 'x-api-key: demo-key-omnichannel'
  curl -i {g}/genesys/api/v2/routing/queues -H 'x-api-key: demo-key-omnichannel'   # token injected
  curl -s {g}/cxone/incontactapi/services/v30.0/skills -H 'x-api-key: demo-key-omnichannel'
  curl -i {g}/genesys/api/v2/routing/queues                     # no key: 401 problem+json
  curl -s http://127.0.0.1:{genesys}/__mock/requests             # what the mock Genesys received

Ctrl-C stops everything."#,
        admin = ports.admin,
        sidecar = ports.sidecar,
        key = cxgate_stack::SIDECAR_KEY,
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

/// `validate [--envoy F] [--kong F] [--sidecar F]...`: the named files, or every shipped one.
fn validate() -> Result<(), String> {
    use cxgate_deploy::validate::{Deployment, check};
    let root = cxgate_stack::repo_root();
    let args: Vec<String> = std::env::args().skip(2).collect();
    let mut d = if args.is_empty() {
        Deployment::shipped(&root)
    } else {
        Deployment {
            envoy: None,
            kong: None,
            sidecar: Vec::new(),
            paired_sidecar: None,
        }
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let path = it
            .next()
            .map(std::path::PathBuf::from)
            .ok_or_else(|| format!("{flag} needs a file"))?;
        match flag.as_str() {
            "--envoy" => d.envoy = Some(path),
            "--kong" => d.kong = Some(path),
            "--sidecar" => d.sidecar.push(path),
            other => {
                return Err(format!(
                    "unknown option {other}: use --envoy, --kong, --sidecar"
                ));
            }
        }
    }
    let findings = check(&root, &d);
    for f in &findings {
        eprintln!("{f}");
    }
    if findings.is_empty() {
        println!("validate: no findings");
        Ok(())
    } else {
        Err(format!("{} finding(s)", findings.len()))
    }
}

/// Writes `kong/kong.yml` from the one config document (see `cxgate_deploy::kong`).
fn kong_config() -> Result<(), String> {
    let root = cxgate_stack::repo_root();
    let text = cxgate_deploy::kong::render_kong(&root)?;
    let path = root.join("kong/kong.yml");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "wasm" => build_wasm(std::env::args().nth(2).as_deref() == Some("pipeline")),
        "validate" => validate(),
        "kong-config" => kong_config(),
        "compose-config" => compose::run(),
        "demo" if std::env::args().any(|a| a == "--real") => render::demo_real(),
        "demo" => demo(),
        "render" => render::run(),
        _ => Err(
            "usage: xtask wasm [pipeline]|validate|kong-config|compose-config|demo [--real]|render <deployment.json> [out] (benchmarks: cxgate-bench)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
