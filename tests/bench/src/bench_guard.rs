//! `cxgate-bench bench-guard [requests]`: time to first token through the guard stage. One Envoy
//! worker runs the shipped pipeline with the guard on `llm-bot` only, so `/llm/` (no guard)
//! and `/llm-bot/` (guard) reach the same mock LLM through the same chain; requests alternate
//! between them. TTFT is timed at the client: request sent to the first SSE bytes carrying
//! non-empty `delta.content`.

use crate::bench_coexistence::percentile;
use cxgate_stack::{Stack, StackOptions, unlimited_pipeline};
use std::io::Read;
use std::time::{Duration, Instant};

/// Milliseconds to the first non-empty content, then the rest is drained.
fn ttft(client: &reqwest::blocking::Client, url: &str, prompt: &str) -> Result<f64, String> {
    let body = serde_json::json!({"model": "mock-gpt", "stream": true,
        "messages": [{"role": "user", "content": prompt}]});
    let started = Instant::now();
    let mut resp = client
        .post(url)
        .header("x-api-key", "demo-key-omnichannel")
        .json(&body)
        .send()
        .map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first = None;
    loop {
        let n = resp.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && has_content(&seen) {
            first = Some(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    first.ok_or_else(|| format!("no content from {url}"))
}

/// Some `"content":"x` with x not the closing quote.
fn has_content(bytes: &[u8]) -> bool {
    let needle = b"\"content\":\"";
    bytes
        .windows(needle.len() + 1)
        .any(|w| w.starts_with(needle) && w[needle.len()] != b'"')
}

pub fn run(requests: usize) -> Result<(), String> {
    let mut pipeline = unlimited_pipeline();
    pipeline["guard"]["routes"] = serde_json::json!({"llm-bot": {"fallback": true}});
    let stack = Stack::start(StackOptions {
        envoy_workers: 1,
        pipeline: Some(pipeline),
        ..StackOptions::default()
    })?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    // The mock streams word by word, 5 ms apart. "Hello," ends at a comma: the guard can
    // release it at once. "Thanks" could still grow into an email address: it is held until
    // the next delta shows it did not.
    let cases = [
        (
            "first delta ends at punctuation",
            "say: Hello, how can I help you today?",
        ),
        (
            "first delta ends mid-word",
            "say: Thanks for calling, how can I help?",
        ),
    ];
    println!("\ntime to first token through the guard (1 Envoy worker, client-side, ms)");
    println!(
        "  {:<34} {:>10} {:>10} {:>10} {:>6}",
        "first delta", "no guard", "guard", "added", "n"
    );
    for (name, prompt) in cases {
        let (mut plain, mut guarded) = (Vec::new(), Vec::new());
        for _ in 0..requests {
            plain.push(ttft(
                &client,
                &stack.gateway_url("/llm/v1/chat/completions"),
                prompt,
            )?);
            guarded.push(ttft(
                &client,
                &stack.gateway_url("/llm-bot/v1/chat/completions"),
                prompt,
            )?);
        }
        plain.sort_by(f64::total_cmp);
        guarded.sort_by(f64::total_cmp);
        let (a, b) = (percentile(&plain, 0.5), percentile(&guarded, 0.5));
        println!(
            "  {:<34} {:>10.3} {:>10.3} {:>10.3} {:>6}   (medians; target added <= 1 ms)",
            name,
            a,
            b,
            b - a,
            plain.len()
        );
    }
    Ok(())
}
