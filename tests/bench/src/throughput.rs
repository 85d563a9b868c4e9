//! `./cxgate bench`: what the chain costs against bare Envoy and Envoy's native filters.
//!
//! Every configuration is its own Envoy (1 worker) in front of a fast upstream (a second
//! Envoy answering with `direct_response`); tokens and ID maps come from the sidecar and the
//! mock platforms as in the demo. Load comes from `wrk` on loopback. The machine is shared and
//! noisy, so configurations run in interleaved pairs against bare Envoy (A B, then B A next
//! round) and the result is the median of the pairwise ratios with its interquartile range,
//! plus Envoy's own CPU time per request from /proc. Also: RSS idle and after load, and the
//! rate limiter's admission accuracy under load with 2 workers.

use crate::bench_config::{Config, configs, document, envoy_yaml, upstream_yaml, wasm_filter};
use cxgate_stack::{Service, Stack, StackOptions, free_port};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";

struct Running {
    cfg_index: usize,
    listen: u16,
    envoy: Service,
}

fn start_envoy(
    name: &str,
    yaml: &str,
    dir: &Path,
    admin: u16,
    workers: u32,
) -> Result<Service, String> {
    cxgate_stack::run_envoy(name, yaml, dir, admin, workers, "warn")
}

/// 1 KB normalized queue update, a fresh idempotency key per request (so every request takes
/// the full path: validate, map, claim, store).
fn wrk_json_script(dir: &Path) -> Result<String, String> {
    let skills: Vec<String> = (0..48).map(|i| format!("skill_{i:03}")).collect();
    let body = json!({"idempotency_key": "KEY", "target_platform": "GENESYS",
        "payload": {"queue_name": "Premium_Support", "enabled": true, "routing_strategy": "LONGEST_IDLE_AGENT",
                    "skill_requirements": skills, "max_wait_time_ms": 120000}})
    .to_string();
    let lua = format!(
        "counter = 0\nwrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"x-api-key\"] = \"{KEY}\"\nrequest = function()\n  counter = counter + 1\n  local body = string.gsub('{body}', 'KEY', 'k' .. counter .. '-' .. math.random(1, 1000000000))\n  return wrk.format(nil, \"/gateway/v1/routing/queues/update\", nil, body)\nend\n"
    );
    let path = dir.join("json.lua");
    std::fs::write(&path, lua).map_err(|e| e.to_string())?;
    Ok(path.display().to_string())
}

struct Run {
    rps: f64,
    requests: u64,
    non_2xx: u64,
}

fn wrk(
    port: u16,
    seconds: u64,
    connections: u32,
    json_script: Option<&str>,
) -> Result<Run, String> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "-H",
        &format!("x-api-key: {KEY}"),
    ]);
    if let Some(s) = json_script {
        cmd.args(["-s", s]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/genesys/api/v2/users"));
    let out = cmd
        .output()
        .map_err(|e| format!("wrk: {e} (install it: apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("wrk output: {text}"))?;
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(Run {
        rps,
        requests,
        non_2xx,
    })
}

/// CPU time (user + system) of a process, in microseconds.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    ticks * 10_000 // USER_HZ is 100 on Linux
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let pos = (s.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn run(rounds: usize, seconds: u64) -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed: apt-get install wrk".into());
    }
    let stack = Stack::start(StackOptions {
        start_envoy: false,
        mock_args: vec![
            "--genesys-rate-limit".into(),
            "0".into(),
            "--genesys-body-credentials".into(),
        ],
        ..StackOptions::default()
    })?;
    let dir = stack.run_dir.clone();
    let (up_port, up_admin) = (free_port(), free_port());
    let _upstream = start_envoy(
        "upstream",
        &upstream_yaml(up_port, up_admin),
        &dir,
        up_admin,
        1,
    )?;
    let script = wrk_json_script(&dir)?;
    // CXGATE_BENCH_ONLY=name,name: a subset (the baselines always run); skips memory and P8.
    let only: Option<Vec<String>> = std::env::var("CXGATE_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().to_string()).collect());
    let all = configs();
    let chosen = |c: &Config| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name));
    // A baseline runs when a chosen configuration is measured against it.
    let needed = |c: &Config| {
        c.name.starts_with("bare") && all.iter().any(|o| o.json == c.json && chosen(o))
    };
    let cfgs: Vec<&Config> = all.iter().filter(|c| chosen(c) || needed(c)).collect();
    let mut running = Vec::new();
    for (i, c) in cfgs.iter().enumerate() {
        let (listen, admin) = (free_port(), free_port());
        let yaml = envoy_yaml(c, listen, admin, up_port, &stack.ports);
        let envoy = start_envoy(&format!("bench-{i}"), &yaml, &dir, admin, 1)?;
        running.push(Running {
            cfg_index: i,
            listen,
            envoy,
        });
    }
    // Warm up: tokens and maps synced, every config answering 2xx.
    for r in &running {
        let c = &cfgs[r.cfg_index];
        let started = Instant::now();
        loop {
            let run = wrk(r.listen, 1, 2, c.json.then_some(script.as_str()))?;
            if run.requests > 0 && run.non_2xx == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{} never answered 2xx: {} of {} failed\n{}\ntoken requests at the mock: {:?}",
                    c.name,
                    run.non_2xx,
                    run.requests,
                    r.envoy.log_tail(5),
                    stack
                        .mock_requests("genesys")
                        .iter()
                        .rfind(|q| q["path"] == "/oauth/token")
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    println!(
        "cxgate benchmark: {rounds} interleaved rounds of {seconds} s runs, wrk -t1 -c16, Envoy 1 worker, loopback"
    );
    let baseline = |json: bool| {
        running
            .iter()
            .position(|r| cfgs[r.cfg_index].name == if json { "bare-json" } else { "bare" })
    };
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cfgs.len()];
    let mut failures = vec![0u64; cfgs.len()];
    for round in 0..rounds {
        for (i, r) in running.iter().enumerate() {
            let c = &cfgs[r.cfg_index];
            let Some(b) = baseline(c.json) else { continue };
            if b == i {
                continue;
            }
            let pair = if round % 2 == 0 { [b, i] } else { [i, b] };
            let mut got = [0.0f64; 2];
            for (slot, idx) in pair.iter().enumerate() {
                let rr = &running[*idx];
                let before = cpu_us(rr.envoy.pid());
                let run = wrk(
                    rr.listen,
                    seconds,
                    16,
                    cfgs[rr.cfg_index].json.then_some(script.as_str()),
                )?;
                let used = cpu_us(rr.envoy.pid()).saturating_sub(before);
                failures[*idx] += run.non_2xx;
                rps[*idx].push(run.rps);
                if run.requests > 0 {
                    cpu[*idx].push(used as f64 / run.requests as f64);
                }
                got[slot] = run.rps;
            }
            let (base, this) = if pair[0] == b {
                (got[0], got[1])
            } else {
                (got[1], got[0])
            };
            ratios[i].push(this / base);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    println!(
        "\n| configuration | median rps | ratio to bare (median) | IQR of ratio | Envoy CPU µs/request (median) | non-2xx |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, c) in cfgs.iter().enumerate() {
        let ratio = if ratios[i].is_empty() {
            "1 (baseline)".to_string()
        } else {
            format!("{:.3}", quantile(&ratios[i], 0.5))
        };
        let iqr = if ratios[i].is_empty() {
            "".to_string()
        } else {
            format!(
                "{:.3}–{:.3}",
                quantile(&ratios[i], 0.25),
                quantile(&ratios[i], 0.75)
            )
        };
        println!(
            "| {} | {:.0} | {ratio} | {iqr} | {:.1} | {} |",
            c.name,
            quantile(&rps[i], 0.5),
            quantile(&cpu[i], 0.5),
            failures[i]
        );
    }
    drop(running);
    if std::env::var_os("CXGATE_BENCH_MEMORY").is_some() {
        memory(&stack, &dir, up_port, &script)?;
    }
    if only.is_some() {
        return Ok(());
    }
    memory(&stack, &dir, up_port, &script)?;
    accuracy(&stack, &dir, up_port)?;
    Ok(())
}

/// Envoy RSS at idle and after 5 s of load, bare vs the full chain, 1 and 2 workers.
fn memory(stack: &Stack, dir: &Path, upstream: u16, script: &str) -> Result<(), String> {
    let all = configs();
    println!(
        "\n| Envoy RSS (MiB) | workers | idle | after load | chain − bare (after load) | allocated / heap (tcmalloc, MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for workers in [1u32, 2] {
        let mut base = 0u64;
        for name in ["bare-json", "no-op Wasm filter alone", "pipeline-json"] {
            let Some(c) = all.iter().find(|c| c.name == name) else {
                continue;
            };
            let (listen, admin) = (free_port(), free_port());
            let e = start_envoy(
                &format!("mem-{name}-{workers}"),
                &envoy_yaml(c, listen, admin, upstream, &stack.ports),
                dir,
                admin,
                workers,
            )?;
            std::thread::sleep(Duration::from_secs(3));
            let idle = rss_kib(e.pid());
            wrk(listen, 5, 16, Some(script))?;
            let loaded = rss_kib(e.pid());
            let heap = allocator(stack, admin);
            let delta = if name == "bare-json" {
                base = loaded;
                String::new()
            } else {
                format!("{:+.1}", (loaded as f64 - base as f64) / 1024.0)
            };
            println!(
                "| {name} | {workers} | {:.1} | {:.1} | {delta} | {heap} |",
                idle as f64 / 1024.0,
                loaded as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// Envoy's allocator view (admin `/memory`): live bytes against the heap it holds, which
/// tells memory in use from memory freed but kept (e.g. after compiling a module).
fn allocator(stack: &Stack, admin: u16) -> String {
    let mib = |v: &serde_json::Value, k: &str| {
        v[k].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0.0, |b| b / 1_048_576.0)
    };
    stack
        .http
        .get(format!("http://127.0.0.1:{admin}/memory"))
        .send()
        .and_then(|r| r.json::<serde_json::Value>())
        .map(|v| format!("{:.1} / {:.1}", mib(&v, "allocated"), mib(&v, "heap_size")))
        .unwrap_or_else(|e| format!("n/a ({e})"))
}

/// P8: 2 workers, a budget far below the offered load; admitted against the bucket math.
fn accuracy(stack: &Stack, dir: &Path, upstream: u16) -> Result<(), String> {
    let mut doc = document(&["ratelimit"]);
    doc["model"]["default_consumer"]["limit"] = json!({"capacity": 100, "per_second": 50});
    doc["ratelimit"] = json!({});
    let (listen, admin) = (free_port(), free_port());
    let c = Config {
        auth: true,
        ..configs().swap_remove(0)
    };
    let yaml = envoy_yaml(&c, listen, admin, upstream, &stack.ports).replace(
        "          - name: envoy.filters.http.router",
        &format!(
            "{}          - name: envoy.filters.http.router",
            wasm_filter("ratelimit", "cxgate_ratelimit.wasm", &doc.to_string(), "")
        ),
    );
    let e = start_envoy("accuracy", &yaml, dir, admin, 2)?;
    let stat = |name: &str| -> u64 {
        let text = stack
            .http
            .get(format!("http://127.0.0.1:{admin}/stats?filter={name}"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.rsplit_once(": ").and_then(|(_, v)| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    let run = wrk(listen, 10, 16, None)?;
    let took = t0.elapsed().as_secs_f64();
    // Counters reach Envoy on each worker's next tick.
    std::thread::sleep(Duration::from_millis(1500));
    let admitted = stat("cxgate_ratelimit.admitted");
    let limited = stat("cxgate_ratelimit.limited");
    // The bucket starts full (100) and refills 50/s while the load lasts.
    let expected = 100.0 + 50.0 * run.requests.max(1) as f64 / run.rps.max(1.0);
    println!(
        "\nrate-limit accuracy (2 workers, 100 units + 50/s, offered {:.0} rps for {took:.1} s): admitted {admitted}, refused {limited}, bucket math {expected:.0}, error {:+.2} %",
        run.rps,
        (admitted as f64 - expected) / expected * 100.0
    );
    drop(e);
    Ok(())
}
