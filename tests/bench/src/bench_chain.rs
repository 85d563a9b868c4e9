//! `cxgate-bench bench-chain [requests]`: what the gateway adds to the LLM chain, i.e. a chain's
//! total minus its two model calls. Each round times the two model calls made directly to
//! the mock LLM (the same bodies the gateway sends, one after the other, on a pooled
//! connection), then one chain through Envoy (one worker, the shipped pipeline with unlimited
//! budgets); rounds alternate so drift in the machine's load hits both alike.

use crate::bench_coexistence::percentile;
use cxgate_stack::{Stack, StackOptions, unlimited_pipeline};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const INPUT: &str = "I need to change my flight to next Tuesday and update my seat to 14A";

fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> Result<Value, String> {
    let r = client
        .post(url)
        .header("x-api-key", key)
        .bearer_auth("demo-llm-key")
        .json(body)
        .send()
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    r.json().map_err(|e| e.to_string())
}

/// The two requests the shipped chain sends for `INPUT`, built from the shipped config.
fn model_bodies(pipeline: &Value) -> Result<(Value, Value), String> {
    let p =
        &pipeline["guard"]["routes"]["llm-pipeline"]["chain"]["pipelines"]["request-validation"];
    let body = |stage: &Value, user: String, system: String| {
        json!({"model": stage["model"], "temperature": stage["temperature"], "max_tokens": stage["max_tokens"],
               "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (e, s) = (&p["extraction"], &p["specialist"]);
    if e.is_null() || s.is_null() {
        return Err("the shipped config has no request-validation pipeline".into());
    }
    let extracted = r#"{"action":"modify_flight","date":"next Tuesday","seat":"14A"}"#;
    Ok((
        body(
            e,
            text(&e["user"]).replace("{input}", INPUT),
            text(&e["system"]),
        ),
        body(
            s,
            text(&s["user"]).replace("{extraction}", extracted),
            text(&s["system"]).replace("{extraction}", extracted),
        ),
    ))
}

pub fn run(requests: usize) -> Result<(), String> {
    let pipeline = unlimited_pipeline();
    let (first, second) = model_bodies(&pipeline)?;
    let stack = Stack::start(StackOptions {
        envoy_workers: 1,
        pipeline: Some(pipeline),
        ..StackOptions::default()
    })?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let llm = stack.mock_url("llm", "/v1/chat/completions");
    let gateway = stack.gateway_url("/gateway/v1/llm/pipeline");
    let chain_body = json!({"input": INPUT});
    let (mut direct, mut chained, mut added) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..requests + 10 {
        let t = Instant::now();
        post(&client, &llm, "-", &first)?;
        post(&client, &llm, "-", &second)?;
        let d = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let v = post(&client, &gateway, "demo-key-omnichannel", &chain_body)?;
        let c = t.elapsed().as_secs_f64() * 1000.0;
        if v["status"] != "success" {
            return Err(format!("the chain failed: {v}"));
        }
        // The first rounds warm connections and the VM; they are not counted.
        if i >= 10 {
            direct.push(d);
            chained.push(c);
            added.push(c - d);
        }
    }
    for v in [&mut direct, &mut chained, &mut added] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "\nLLM chain: the gateway's own latency (1 Envoy worker, client-side, ms, {requests} pairs)"
    );
    println!("  {:<36} {:>9} {:>9} {:>9}", "", "p50", "p90", "p99");
    for (name, v) in [
        ("two model calls, direct", &direct),
        ("the chain through the gateway", &chained),
        ("added by the gateway (per pair)", &added),
    ] {
        println!(
            "  {:<36} {:>9.3} {:>9.3} {:>9.3}",
            name,
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99)
        );
    }
    println!("  target: added median <= 2 ms");
    Ok(())
}
