//! The benchmarks behind `./cxgate bench` and `./cxgate soak` (BENCHMARKS.md): throughput
//! through Envoy (`throughput`), the sidecar-to-gateway sync, coexistence decisions, the LLM
//! guard and chain, the soak, and the per-request instruction counts of the filters under the
//! ABI host (`micro`, with callgrind). A test crate: it links the ABI host and wasmtime, which
//! nothing a user runs needs.

// Open (issue 36): three benchmark drivers (throughput::run, soak::run, bench_config::envoy_yaml)
// still run past the 100-line limit; they are to be split along their steps.
#![allow(clippy::too_many_lines)]

mod bench_chain;
mod bench_coexistence;
mod bench_config;
mod bench_guard;
mod micro;
mod soak;
mod throughput;

use cxgate_stack::{Stack, StackOptions};
use std::process::ExitCode;
use std::time::Duration;

/// Sidecar change → every Envoy worker: invalidate the Genesys token, then time until requests
/// through the gateway carry the new one (first request, and 10 in a row on fresh connections,
/// which the kernel spreads over the workers). Prints p50/p99 over `rounds`.
fn bench_sync(rounds: usize) -> Result<(), String> {
    let stack = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        ..StackOptions::default()
    })?;
    let fresh = cxgate_stack::reqwest_client_without_pooling()?;
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

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
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
            throughput::run(arg(2, 15) as usize, arg(3, 2)).and_then(|()| {
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
            "usage: cxgate-bench bench [rounds] [seconds]|bench-micro [--no-callgrind]|bench-sync [rounds]|bench-coexistence [calls]|bench-guard [requests]|bench-chain [requests]|soak [seconds]"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxgate-bench {task}: {e}");
            ExitCode::FAILURE
        }
    }
}
