//! `cargo run -p xtask -- <task>`; `./cxgate` calls these.
//!
//! - `wasm`: builds every filter for wasm32-wasip1 (release) and prints each .wasm's size.
//! - `demo`: starts the gateway on the documented ports with the built-in mock platforms.
//! - `demo --real`: the same against the real platforms (credentials from the environment).
//! - `render <deployment.json> [out]`: the production config from a deployment file.
//! - `compose-config`: renders what docker-compose.yml mounts into `.run/compose/`.
//! - `bench [rounds] [seconds]`: the benchmark suite (see `bench.rs`, `micro.rs`, BENCHMARKS.md).
//! - `bench-micro [--no-callgrind]`: only the per-filter microbenchmarks.
//! - `bench-sync [rounds]`: sidecar change → gateway propagation.

mod bench;
mod bench_chain;
mod bench_coexistence;
mod bench_config;
mod bench_guard;
mod compose;
mod micro;
mod render;
mod soak;

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

/// Sidecar change → every Envoy worker: invalidate the Genesys token, then time until requests
/// through the gateway carry the new one (first request, and 10 in a row on fresh connections,
/// which the kernel spreads over the workers). Prints p50/p99 over `rounds`.
fn bench_sync(rounds: usize) -> Result<(), String> {
    let stack = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        ..StackOptions::default()
    })?;
    let fresh = cxgate_e2e::reqwest_client_without_pooling()?;
    let gateway = stack.gateway_url("/genesys/api/v2/users");
    let token_in_use = || -> Option<String> {
        let _ = fresh
            .get(&gateway)
            .header("x-api-key", "demo-key-omnichannel")
            .send()
            .ok()?;
        let reqs = stack.gateway_requests("genesys");
        reqs.last()?["headers"]["authorization"]
            .as_str()
            .map(str::to_string)
    };
    let started = std::time::Instant::now();
    while stack.envoy_stat("cxgate_sync.applied").unwrap_or(0) == 0 || token_in_use().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the gateway never reached steady state".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut first, mut all) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let state = stack.sidecar_state()?;
        let generation = state["tokens"]["genesys"]["generation"]
            .as_u64()
            .unwrap_or(0);
        let t0 = std::time::Instant::now();
        stack.sidecar_post(
            "/v1/tokens/genesys/invalidate",
            serde_json::json!({ "generation": generation }),
        )?;
        let new_token = loop {
            let s = stack.sidecar_state()?;
            if s["tokens"]["genesys"]["generation"].as_u64().unwrap_or(0) > generation {
                break format!(
                    "Bearer {}",
                    s["tokens"]["genesys"]["access_token"]
                        .as_str()
                        .unwrap_or_default()
                );
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return Err("the sidecar did not refresh".into());
            }
        };
        let mut in_a_row = 0;
        let mut seen_first = None;
        while in_a_row < 10 {
            if token_in_use().as_deref() == Some(new_token.as_str()) {
                seen_first.get_or_insert(t0.elapsed());
                in_a_row += 1;
            } else {
                in_a_row = 0;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return Err("the new token did not reach the gateway".into());
            }
        }
        first.push(seen_first.unwrap_or_default().as_secs_f64() * 1000.0);
        all.push(t0.elapsed().as_secs_f64() * 1000.0);
        stack
            .http
            .delete(stack.mock_url("genesys", "/__mock/requests"))
            .send()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    println!("sidecar change -> gateway, {rounds} rounds, 2 Envoy workers, loopback:");
    println!(
        "  first request with the new token:   p50 {:6.1} ms   p99 {:6.1} ms",
        pct(&mut first, 0.5),
        pct(&mut first, 0.99)
    );
    println!(
        "  10 fresh connections in a row:      p50 {:6.1} ms   p99 {:6.1} ms",
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );
    Ok(())
}

/// `validate [--envoy F] [--kong F] [--sidecar F]...`: the named files, or every shipped one.
fn validate() -> Result<(), String> {
    use cxgate_e2e::validate::{Deployment, check};
    let root = cxgate_e2e::repo_root();
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

/// Writes `kong/kong.yml` from the one config document (see `cxgate_e2e::kong`).
fn kong_config() -> Result<(), String> {
    let root = cxgate_e2e::repo_root();
    let text = cxgate_e2e::kong::render_kong(&root)?;
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
        "bench-sync" => bench_sync(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(40),
        ),
        "bench" => {
            let arg = |i: usize, d: u64| {
                std::env::args()
                    .nth(i)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(d)
            };
            let subset = std::env::var_os("CXGATE_BENCH_ONLY").is_some();
            bench::run(arg(2, 15) as usize, arg(3, 2)).and_then(|()| {
                if subset {
                    Ok(())
                } else {
                    bench_coexistence::run(200)
                        .and_then(|()| bench_guard::run(200))
                        .and_then(|()| bench_chain::run(200))
                        .and_then(|()| micro::run(true))
                }
            })
        }
        "bench-coexistence" => bench_coexistence::run(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(200),
        ),
        "bench-guard" => bench_guard::run(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(200),
        ),
        "bench-chain" => bench_chain::run(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(200),
        ),
        "soak" => soak::run(
            std::env::args()
                .nth(2)
                .and_then(|n| n.parse().ok())
                .unwrap_or(600),
        ),
        "bench-micro" => micro::run(std::env::args().nth(2).as_deref() != Some("--no-callgrind")),
        // One microbenchmark run, what callgrind executes: `micro-one <filter> <requests>`.
        "micro-one" => {
            let filter = std::env::args().nth(2).unwrap_or_default();
            let n = std::env::args()
                .nth(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            micro::run_one(&filter, n).map(|_| ())
        }
        _ => Err(
            "usage: xtask wasm [pipeline]|validate|kong-config|compose-config|demo [--real]|render <deployment.json> [out]|bench [rounds] [seconds]|bench-micro|bench-sync [rounds]|bench-coexistence [calls]|bench-guard [requests]|bench-chain [requests]|soak [seconds]"
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
