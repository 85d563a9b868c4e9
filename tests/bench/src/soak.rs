//! `cxgate-bench soak [seconds]`: the pipeline's route mix at 70 % of the measured maximum rate for
//! a long run (default 10 min), against the demo stack (Envoy with 2 workers, the sidecar, the
//! mocks). Reports errors, the RSS of Envoy and the sidecar over time (flat within 5 % after
//! the first 2 minutes is the target), and what the idempotency store holds against its
//! bound. A benchmark, not a test: BENCHMARKS.md keeps the figures.

use crate::throughput::rss_kib;
use cxgate_stack::{Stack, StackOptions};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";
const CONNECTIONS: u64 = 16;
const WARM_UP: Duration = Duration::from_secs(120);
const SAMPLE_EVERY: Duration = Duration::from_secs(30);

/// One request in five each: a raw read, a normalized update (a fresh idempotency key every
/// time, so the store fills and evicts), a normalized listing, a coexistence decision and
/// whoami. `delay_ms` paces each connection (wrk's `delay` hook); 0 runs flat out.
fn mix_script(dir: &Path, delay_ms: u64) -> Result<String, String> {
    let seed: serde_json::Value =
        serde_json::from_str(include_str!("../../fixtures/queue-update.seed.json"))
            .map_err(|e| e.to_string())?;
    let body = seed.to_string().replace("req_8f3a2c9d1e4b", "KEY");
    let delay = if delay_ms > 0 {
        format!("delay = function() return {delay_ms} end\n")
    } else {
        String::new()
    };
    let lua = format!(
        r#"counter = 0
local app = {{["x-api-key"] = "{KEY}"}}
local app_json = {{["x-api-key"] = "{KEY}", ["content-type"] = "application/json"}}
local sip = {{["x-api-key"] = "demo-key-sip", ["content-type"] = "application/json"}}
request = function()
  counter = counter + 1
  local i = counter % 5
  if i == 0 then return wrk.format("GET", "/genesys/api/v2/users", app)
  elseif i == 1 then
    local body = string.gsub('{body}', 'KEY', 'soak-' .. counter .. '-' .. math.random(1, 1000000000))
    return wrk.format("POST", "/gateway/v1/routing/queues/update", app_json, body)
  elseif i == 2 then return wrk.format("GET", "/gateway/v1/routing/queues?platform=GENESYS", app)
  elseif i == 3 then return wrk.format("POST", "/coexistence/v1/decision", sip, '{{"dnis": "15550101"}}')
  else return wrk.format("GET", "/gateway/v1/whoami", app) end
end
{delay}"#
    );
    let path = dir.join(format!("mix-{delay_ms}.lua"));
    std::fs::write(&path, lua).map_err(|e| e.to_string())?;
    Ok(path.display().to_string())
}

#[derive(Debug, Default)]
struct Load {
    rps: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
    p50_ms: f64,
}

fn wrk(port: u16, seconds: u64, script: &str) -> Result<Load, String> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
            script,
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let after = |label: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::trim))
    };
    let number = |label: &str| -> u64 {
        after(label)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.trim_end_matches(',').parse().ok())
            .unwrap_or(0)
    };
    let socket_errors = after("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let p50_ms = after("50%")
        .map(|v| {
            let v = v.trim();
            let (n, scale) = if let Some(n) = v.strip_suffix("us") {
                (n, 0.001)
            } else if let Some(n) = v.strip_suffix("ms") {
                (n, 1.0)
            } else {
                (v.trim_end_matches('s'), 1000.0)
            };
            n.parse::<f64>().unwrap_or(0.0) * scale
        })
        .unwrap_or(0.0);
    Ok(Load {
        rps: after("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("wrk output: {text}"))?,
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        non_2xx: number("Non-2xx or 3xx responses:"),
        socket_errors,
        p50_ms,
    })
}

struct Sample {
    at_s: u64,
    envoy_kib: u64,
    sidecar_kib: u64,
    idem_entries: u64,
}

/// Largest spread of the samples after the warm-up, as a share of their minimum.
fn spread(values: impl Iterator<Item = u64>) -> f64 {
    let v: Vec<u64> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(&lo), Some(&hi)) if lo > 0 => (hi - lo) as f64 / lo as f64,
        _ => 0.0,
    }
}

/// The spread of the medians of consecutive `window_s` windows (a partial last one only if
/// at least half full): growth, which a single transient peak (a burst allocated and freed
/// between two samples) does not move.
fn trend(samples: &[&Sample], window_s: u64, value: impl Fn(&Sample) -> u64) -> f64 {
    let median = |mut w: Vec<u64>| {
        w.sort_unstable();
        w.get(w.len() / 2).copied()
    };
    let Some(first) = samples.first().map(|s| s.at_s) else {
        return 0.0;
    };
    let full = (window_s / SAMPLE_EVERY.as_secs()) as usize;
    let mut medians = Vec::new();
    let mut window = Vec::new();
    let mut end = first + window_s;
    for s in samples {
        if s.at_s >= end {
            medians.extend(median(std::mem::take(&mut window)));
            end += window_s;
        }
        window.push(value(s));
    }
    if window.len() * 2 >= full {
        medians.extend(median(window));
    }
    spread(medians.into_iter())
}

pub fn run(seconds: u64) -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed: apt-get install wrk".into());
    }
    let stack = Stack::start(StackOptions {
        mock_args: vec!["--genesys-rate-limit".into(), "0".into()],
        // The consumers' budgets would refuse most of a load test: what is soaked is the path.
        pipeline: Some(cxgate_stack::unlimited_pipeline()),
        ..StackOptions::default()
    })?;
    let dir = stack.run_dir.clone();
    let started = Instant::now();
    loop {
        let ok = stack
            .send(
                "POST",
                "/coexistence/v1/decision",
                "demo-key-sip",
                Some(r#"{"dnis": "15550101"}"#),
            )
            .body["state"]
            == "fresh";
        let body = include_str!("../../fixtures/queue-update.seed.json");
        if ok
            && stack
                .send("POST", "/gateway/v1/routing/queues/update", KEY, Some(body))
                .status
                == 200
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("the stack never got ready".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let port = stack.ports.gateway;
    let max = wrk(port, 10, &mix_script(&dir, 0)?)?;
    let target = 0.7 * max.rps;
    // Each connection sends one request per (delay + latency): calibrate the delay on short
    // runs, since the latency at 70 % is not the latency at the maximum.
    let mut delay = (CONNECTIONS as f64 * 1000.0 / target.max(1.0)) as u64;
    for _ in 0..3 {
        let probe = wrk(port, 5, &mix_script(&dir, delay)?)?;
        let scaled = delay as f64 * probe.rps / target.max(1.0);
        delay = scaled.round().max(1.0) as u64;
    }
    println!(
        "soak: max {:.0} rps (p50 {:.2} ms, {} non-2xx); target {target:.0} rps: {CONNECTIONS} connections, {delay} ms between requests; {seconds} s",
        max.rps, max.p50_ms, max.non_2xx
    );
    let script = mix_script(&dir, delay)?;
    let envoy_pid = stack.envoy.as_ref().map(|e| e.pid()).unwrap_or(0);
    let sidecar_pid = stack.sidecar.as_ref().map(|e| e.pid()).unwrap_or(0);
    let begun = Instant::now();
    let (load, samples) = std::thread::scope(|scope| {
        let load = scope.spawn(|| wrk(port, seconds, &script));
        let mut samples = Vec::new();
        while !load.is_finished() {
            std::thread::sleep(Duration::from_secs(1));
            let at_s = begun.elapsed().as_secs();
            if at_s.is_multiple_of(SAMPLE_EVERY.as_secs())
                && samples.last().is_none_or(|s: &Sample| s.at_s != at_s)
            {
                samples.push(Sample {
                    at_s,
                    envoy_kib: rss_kib(envoy_pid),
                    sidecar_kib: rss_kib(sidecar_pid),
                    idem_entries: stack
                        .envoy_stat("cxgate_transform.idempotency_entries")
                        .unwrap_or(0),
                });
            }
        }
        (
            load.join().unwrap_or_else(|_| Err("wrk thread".into())),
            samples,
        )
    });
    let load = load?;
    println!("\n| at | Envoy RSS | sidecar RSS | idempotency entries |\n|---|---|---|---|");
    for s in &samples {
        println!(
            "| {} s | {:.1} MiB | {:.1} MiB | {} |",
            s.at_s,
            s.envoy_kib as f64 / 1024.0,
            s.sidecar_kib as f64 / 1024.0,
            s.idem_entries
        );
    }
    let warm: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_s >= WARM_UP.as_secs())
        .collect();
    let envoy = spread(warm.iter().map(|s| s.envoy_kib));
    let sidecar = spread(warm.iter().map(|s| s.sidecar_kib));
    let entries = samples.iter().map(|s| s.idem_entries).max().unwrap_or(0);
    let envoy_trend = trend(&warm, 300, |s| s.envoy_kib);
    let sidecar_trend = trend(&warm, 300, |s| s.sidecar_kib);
    println!(
        "\nsoak: {:.0} rps for {seconds} s ({:.0} % of max), {} requests, {} non-2xx, {} socket errors",
        load.rps,
        100.0 * load.rps / max.rps.max(1.0),
        load.requests,
        load.non_2xx,
        load.socket_errors
    );
    println!(
        "RSS spread after {} s: Envoy {:.1} %, sidecar {:.1} % (target: within 5 %); idempotency entries at most {entries} (bound 10,000)",
        WARM_UP.as_secs(),
        envoy * 100.0,
        sidecar * 100.0
    );
    println!(
        "RSS trend (spread of 5-minute medians after {} s): Envoy {:.1} %, sidecar {:.1} %",
        WARM_UP.as_secs(),
        envoy_trend * 100.0,
        sidecar_trend * 100.0
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(kib: &[u64]) -> Vec<Sample> {
        kib.iter()
            .enumerate()
            .map(|(i, k)| Sample {
                at_s: 120 + 30 * i as u64,
                envoy_kib: *k,
                sidecar_kib: *k,
                idem_entries: 0,
            })
            .collect()
    }

    #[test]
    fn a_transient_peak_is_spread_but_no_trend_and_growth_is_both() {
        // The sidecar in the 30-minute soak: flat, one sample 7 % up, gone at the next.
        let mut flat = vec![12_000; 40];
        flat[20] = 12_900;
        let s = samples(&flat);
        let refs: Vec<&Sample> = s.iter().collect();
        assert!(spread(refs.iter().map(|s| s.sidecar_kib)) > 0.07);
        assert_eq!(trend(&refs, 300, |s| s.sidecar_kib), 0.0);
        // A leak: 20 KiB a sample, 1.7 % per 5 minutes.
        let growing: Vec<u64> = (0..40).map(|i| 12_000 + 20 * i).collect();
        let s = samples(&growing);
        let refs: Vec<&Sample> = s.iter().collect();
        assert!(trend(&refs, 300, |s| s.sidecar_kib) > 0.04);
    }
}
