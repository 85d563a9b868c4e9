//! `cxgate-bench bench-coexistence [calls]`: the coexistence decision's latency at the proxy under
//! load, and the post-dial delay it adds through Kamailio (INVITE to 180, timed by sipp)
//! against Kamailio's static route (`BYPASS_DECISION`). The shipped configs, except that the
//! SIP proxy's budget is lifted so the load is not rate limited.

use cxgate_stack::services::{SipRoutes, program, start_kamailio, start_platform_uas};
use cxgate_stack::{Stack, StackOptions, free_port, repo_root, unlimited_pipeline};
use std::process::Command;
use std::time::{Duration, Instant};

const DECISION: &str = "/coexistence/v1/decision";

/// The `p` quantile (0..=1) of sorted samples, nearest rank; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Client-side latencies (ms) of `per_thread` requests on each of `threads` connections.
fn load(
    stack: &Stack,
    path: &str,
    body: Option<&str>,
    threads: usize,
    per_thread: usize,
) -> Vec<f64> {
    let url = stack.gateway_url(path);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.clone();
            let body = body.map(str::to_string);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let mut out = Vec::with_capacity(per_thread);
                for i in 0..per_thread {
                    let started = Instant::now();
                    let req = match &body {
                        Some(b) => client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(b.replace("NN", &format!("{:02}", (t + i) % 100))),
                        None => client.get(&url),
                    };
                    let ok = req
                        .header("x-api-key", "demo-key-sip")
                        .send()
                        .and_then(|r| r.bytes().map(|_| ()))
                        .is_ok();
                    if ok {
                        out.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                out
            })
        })
        .collect();
    let mut all: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

/// INVITE → 180 times (ms) of `calls` carrier calls into Kamailio on `port`, from sipp's
/// response-time trace.
fn pdd(dir: &std::path::Path, port: u16, calls: usize, tag: &str) -> Result<Vec<f64>, String> {
    let rtt = dir.join(format!("pdd-{tag}.csv"));
    let _ = std::fs::remove_file(&rtt);
    let scenario = repo_root().join("tests/fixtures/sipp/carrier-uac.xml");
    let out = Command::new(program("sipp")?)
        .arg(format!("127.0.0.1:{port}"))
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-s",
            "15550102",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args(["-m", &calls.to_string(), "-r", "20", "-l", "10", "-nostdin"])
        .args(["-trace_rtt", "-rtt_freq", "1", "-timeout", "120s"])
        .args([
            "-key", "target", "", "-key", "corr", "", "-key", "hop", "", "-key", "from", "",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("sipp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sipp failed ({tag}): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // sipp names the file <scenario>_<pid>_rtt.csv in its working directory.
    let file = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
        .ok_or("no sipp rtt file")?;
    std::fs::rename(&file, &rtt).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&rtt).map_err(|e| e.to_string())?;
    let mut v: Vec<f64> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(';').nth(1))
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

pub fn run(calls: usize) -> Result<(), String> {
    let stack = Stack::start(StackOptions {
        envoy_workers: 1,
        pipeline: Some(unlimited_pipeline()),
        ..StackOptions::default()
    })?;
    let dir = stack.run_dir.clone();
    // Wait for the roster.
    let started = Instant::now();
    loop {
        let v: serde_json::Value = stack
            .http
            .post(stack.gateway_url(DECISION))
            .header("x-api-key", "demo-key-sip")
            .json(&serde_json::json!({"dnis": "15550101"}))
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())?;
        if v["state"] == "fresh" {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("no roster after 30 s: {v}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    println!(
        "\ncoexistence decision latency at the proxy (1 Envoy worker, 4 connections, client-side, ms)"
    );
    println!("  {:<34} {:>8} {:>8} {:>8}", "request", "p50", "p99", "n");
    let body =
        r#"{"dnis": "155501NN", "ani": "+4930123456", "target_user": "agent000@example.com"}"#;
    for round in 0..3 {
        let decision = load(&stack, DECISION, Some(body), 4, 1_000);
        let whoami = load(&stack, "/gateway/v1/whoami", None, 4, 1_000);
        for (name, v) in [
            ("POST /coexistence/v1/decision", &decision),
            ("GET /gateway/v1/whoami (baseline)", &whoami),
        ] {
            println!(
                "  {:<34} {:>8.3} {:>8.3} {:>8}   round {}",
                name,
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.len(),
                round + 1
            );
        }
    }

    let cloud = free_port();
    let legacy = free_port();
    let _cloud = start_platform_uas(&dir, "CLOUD", cloud)?;
    let _legacy = start_platform_uas(&dir, "LEGACY", legacy)?;
    let routes = SipRoutes {
        listen: free_port(),
        decision_url: stack.gateway_url(DECISION),
        cloud,
        legacy,
        defines: vec![],
    };
    let bypass = SipRoutes {
        listen: free_port(),
        defines: vec!["BYPASS_DECISION=1".into()],
        ..routes.clone()
    };
    let _k1 = start_kamailio(&dir, &routes)?;
    let _k2 = start_kamailio(&dir, &bypass)?;
    let rounds = 5;
    let per = (calls / rounds).max(10);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        with.extend(pdd(&dir, routes.listen, per, &format!("decision-{r}"))?);
        without.extend(pdd(&dir, bypass.listen, per, &format!("static-{r}"))?);
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    println!(
        "\npost-dial delay through Kamailio 5.6 (INVITE to 180, sipp, {rounds} interleaved rounds, ms)"
    );
    println!(
        "  {:<26} {:>8} {:>8} {:>6}",
        "route", "median", "p99", "calls"
    );
    for (name, v) in [
        ("decision (http_client)", &with),
        ("static route", &without),
    ] {
        println!(
            "  {:<26} {:>8.3} {:>8.3} {:>6}",
            name,
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.len()
        );
    }
    println!(
        "  added by the decision: median {:.3} ms (target <= 2 ms)",
        percentile(&with, 0.5) - percentile(&without, 0.5)
    );
    Ok(())
}
