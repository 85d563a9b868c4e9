//! `./cxgate bench micro`: each filter's per-request work in the wasmtime ABI host (1 worker,
//! envoy profile): nanoseconds per request, host calls per request, and, under valgrind's
//! callgrind, instructions per request (exact and repeatable, unlike time on a shared machine).

use cxgate_abi_host::fixtures::start_synced;
use cxgate_abi_host::{Action, Host, Profile, filter_wasm};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Instant;

/// What a row's requests look like.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// GET with headers only.
    Headers,
    /// POST of the 1 KB normalized update, with a JSON answer.
    Json,
    /// A streamed chat completion on `/llm/`: 20 SSE deltas, one body chunk each.
    Chat,
    /// The LLM chain: the request, two model calls answered by the harness, the reply.
    Chain,
}

/// A row: its name, the module, the stages its document lists, and its request shape. `noop` is the do-nothing filter: the harness's own cost per request, the floor under
/// every other row (a row's work is its figure minus this one's).
pub struct Row {
    pub name: &'static str,
    module: &'static str,
    stages: &'static [&'static str],
    shape: Shape,
}

pub const ROWS: [Row; 12] = [
    Row {
        name: "noop",
        module: "cxgate-noop-filter",
        stages: &[],
        shape: Shape::Headers,
    },
    Row {
        name: "trace",
        module: "cxgate-trace",
        stages: &["trace"],
        shape: Shape::Headers,
    },
    Row {
        name: "ratelimit",
        module: "cxgate-ratelimit",
        stages: &["ratelimit"],
        shape: Shape::Headers,
    },
    Row {
        name: "breaker",
        module: "cxgate-breaker",
        stages: &["breaker"],
        shape: Shape::Headers,
    },
    Row {
        name: "token",
        module: "cxgate-token",
        stages: &["token"],
        shape: Shape::Headers,
    },
    Row {
        name: "pipeline (trace, authz, ratelimit, breaker)",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "breaker"],
        shape: Shape::Headers,
    },
    Row {
        name: "pipeline + token in one context",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "breaker", "token"],
        shape: Shape::Headers,
    },
    Row {
        name: "transform",
        module: "cxgate-transform",
        stages: &["transform"],
        shape: Shape::Json,
    },
    Row {
        name: "pipeline-json (trace, authz, ratelimit, transform, breaker)",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "transform", "breaker"],
        shape: Shape::Json,
    },
    Row {
        name: "pipeline-llm without guard (trace, authz, ratelimit, breaker)",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "breaker"],
        shape: Shape::Chat,
    },
    Row {
        name: "pipeline-llm (trace, authz, ratelimit, guard, breaker)",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "guard", "breaker"],
        shape: Shape::Chat,
    },
    Row {
        name: "pipeline-chain (trace, authz, ratelimit, guard, breaker)",
        module: "cxgate-pipeline",
        stages: &["trace", "authz", "ratelimit", "guard", "breaker"],
        shape: Shape::Chain,
    },
];

fn config(row: &Row) -> Value {
    if row.stages.is_empty() {
        return json!({});
    }
    if row.stages == ["token"] {
        return json!({"version": 2, "stages": ["token"], "sync": {"upstream": "sidecar", "poll_wait_ms": 2000},
            "model": {"routes": [{"id": "genesys", "prefix": "/", "platform": "genesys"}]}});
    }
    let mut doc = crate::bench_config::document(row.stages);
    doc["sync"] = json!({"upstream": "sidecar", "poll_wait_ms": 2000});
    doc
}

/// 1 KB normalized update with a fresh idempotency key.
fn json_body(n: u64) -> String {
    let skills: Vec<String> = (0..48).map(|i| format!("skill_{i:03}")).collect();
    json!({"idempotency_key": format!("k-{n}"), "target_platform": "GENESYS",
        "payload": {"queue_name": "Premium_Support", "enabled": true, "routing_strategy": "LONGEST_IDLE_AGENT",
                    "skill_requirements": skills, "max_wait_time_ms": 120000}})
    .to_string()
}

const PLATFORM_RESPONSE: &str = r#"{"id":"q-1","name":"Premium_Support","enabled":true,"version":2,"selfUri":"/api/v2/routing/queues/q-1","routingConfig":{"strategy":"LONGESTIDLEAGENT","skillsRequired":["billing"],"maxWaitTime":"PT2M"}}"#;

/// The row's module, with tokens and ID maps synced as the sidecar would.
fn host(row: &Row) -> Result<Host, String> {
    start_synced(&filter_wasm(row.module), Profile::Envoy, 1, &config(row))
        .map_err(|e| format!("{}: {e}", row.name))
}

/// One request through the filter, as the proxy would drive it.
fn one(h: &mut Host, row: &Row, n: u64) -> Result<(), String> {
    let s = h.new_stream(0).map_err(|e| e.to_string())?;
    let e = |e: wasmtime::Error| e.to_string();
    let filter = row.name;
    if row.shape == Shape::Chat {
        return chat(h, s, n);
    }
    if row.shape == Shape::Chain {
        return chain(h, s, n);
    }
    if row.shape == Shape::Json {
        let body = json_body(n);
        let len = body.len().to_string();
        let a = h
            .request_headers(
                s,
                &[
                    (":method", "POST"),
                    (":path", "/gateway/v1/routing/queues/update"),
                    ("content-type", "application/json"),
                    ("content-length", &len),
                    ("x-cxgate-consumer", "app"),
                    ("x-gateway-trace-id", "0123456789abcdef0123456789abcdef"),
                ],
                false,
            )
            .map_err(e)?;
        if a != Action::Pause {
            return Err("transform did not wait for the body".into());
        }
        if h.request_body(s, body.as_bytes(), true).map_err(e)? != Action::Continue {
            return Err(format!("transform refused: {:?}", h.local_reply(s)));
        }
        let rlen = PLATFORM_RESPONSE.len().to_string();
        h.response_headers(
            s,
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", &rlen),
            ],
            false,
        )
        .map_err(e)?;
        h.response_body(s, PLATFORM_RESPONSE.as_bytes(), true)
            .map_err(e)?;
    } else {
        let path = if row.stages == ["token"] {
            "/api/v2/users"
        } else {
            "/genesys/api/v2/users"
        };
        let a = h
            .request_headers(
                s,
                &[
                    (":method", "GET"),
                    (":path", path),
                    (":authority", "gateway"),
                    ("x-cxgate-consumer", "app"),
                    ("x-gateway-trace-id", "0123456789abcdef0123456789abcdef"),
                    ("user-agent", "wrk"),
                    ("accept", "*/*"),
                ],
                true,
            )
            .map_err(e)?;
        if a != Action::Continue {
            return Err(format!("{filter} did not forward: {:?}", h.local_reply(s)));
        }
        h.response_headers(
            s,
            &[
                (":status", "200"),
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
            false,
        )
        .map_err(e)?;
    }
    h.finish(s).map_err(e)
}

/// One SSE event of a streamed answer.
fn delta(i: usize) -> String {
    let words = [
        "Thanks",
        " for",
        " waiting,",
        " your",
        " order",
        " ships",
        " today;",
        " write",
        " to",
        " ann@example.com",
        " or",
        " call",
        " us",
        " any",
        " time.",
        " We",
        " are",
        " glad",
        " to",
        " help.",
    ];
    let content = words.get(i).copied().unwrap_or(".");
    let e = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock-gpt",
                   "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {e}\n\n")
}

/// A streamed chat completion: the prompt screened, 20 deltas redacted one chunk at a time,
/// then the usage chunk and `[DONE]`.
fn chat(h: &mut Host, s: cxgate_abi_host::Stream, n: u64) -> Result<(), String> {
    let e = |e: wasmtime::Error| e.to_string();
    let body = json!({"model": "mock-gpt", "stream": true, "messages": [
        {"role": "system", "content": "You are a support agent for an online shop."},
        {"role": "user", "content": format!("Where is my order {n}? It was due on Monday.")}]})
    .to_string();
    let len = body.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/llm/v1/chat/completions"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("content-length", &len),
        ("x-cxgate-consumer", "app"),
        ("x-gateway-trace-id", "0123456789abcdef0123456789abcdef"),
    ];
    let a = h.request_headers(s, &headers, false).map_err(e)?;
    if a == Action::Pause
        && h.request_body(s, body.as_bytes(), true).map_err(e)? != Action::Continue
    {
        return Err(format!("the chat was refused: {:?}", h.local_reply(s)));
    }
    let response = [(":status", "200"), ("content-type", "text/event-stream")];
    h.response_headers(s, &response, false).map_err(e)?;
    for i in 0..20 {
        h.response_body(s, delta(i).as_bytes(), false).map_err(e)?;
    }
    let usage = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mock-gpt",
        "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}});
    let tail = format!("data: {usage}\n\ndata: [DONE]\n\n");
    h.response_body(s, tail.as_bytes(), true).map_err(e)?;
    h.finish(s).map_err(e)
}

/// The LLM chain: both model calls answered at once (the harness is the model), then the
/// aggregated reply. Its figure is the gateway's own work for one chain.
fn chain(h: &mut Host, s: cxgate_abi_host::Stream, n: u64) -> Result<(), String> {
    let e = |e: wasmtime::Error| e.to_string();
    let body =
        json!({"input": format!("Change my flight {n} to next Tuesday, seat 14A")}).to_string();
    let len = body.len().to_string();
    let headers = [
        (":method", "POST"),
        (":path", "/gateway/v1/llm/pipeline"),
        (":authority", "gateway"),
        ("content-type", "application/json"),
        ("content-length", &len),
        ("x-cxgate-consumer", "app"),
        ("x-gateway-trace-id", "0123456789abcdef0123456789abcdef"),
    ];
    h.request_headers(s, &headers, false).map_err(e)?;
    h.request_body(s, body.as_bytes(), true).map_err(e)?;
    let answers = [
        r#"{"action": "modify_flight", "date": "next Tuesday", "seat": "14A"}"#,
        r#"{"isValid": true, "reason": "allowed", "nextSteps": ["confirm", "apply"]}"#,
    ];
    for text in answers {
        let call = h
            .pending_calls()
            .into_iter()
            .find(|c| c.path() == "/v1/chat/completions")
            .ok_or("the chain made no model call")?;
        let body = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                          "usage": {"prompt_tokens": 60, "completion_tokens": 20}});
        h.reply(
            call.token,
            cxgate_abi_host::CallReply::json(200, &body.to_string()),
        )
        .map_err(e)?;
    }
    match h.local_reply(s) {
        Some(r) if r.status == 200 => h.finish(s).map_err(e),
        other => Err(format!("the chain did not succeed: {other:?}")),
    }
}

/// Runs `requests` requests after a warm-up; prints what it measured.
pub fn run_one(name: &str, requests: u64) -> Result<(f64, f64, usize), String> {
    let row = ROWS
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("no microbenchmark row {name:?}"))?;
    let mut h = host(row)?;
    for n in 0..50 {
        one(&mut h, row, 1_000_000 + n)?;
    }
    h.reset_host_calls();
    one(&mut h, row, 2_000_000)?;
    let calls: u64 = h.host_calls().values().sum();
    if std::env::var_os("CXGATE_BENCH_CALLS").is_some() {
        let mut by_name: Vec<_> = h.host_calls().into_iter().collect();
        by_name.sort();
        eprintln!("{name}: {by_name:?}");
    }
    let t0 = Instant::now();
    for n in 0..requests {
        one(&mut h, row, n)?;
    }
    let ns = t0.elapsed().as_nanos() as f64 / requests as f64;
    let memory = h.guest_memory_bytes(0).map_err(|e| e.to_string())?;
    Ok((ns, calls as f64, memory))
}

/// Instructions per request: callgrind counts only inside `one` (each request, the 51 warm-up
/// and counted ones included), so the module's compilation never enters the figure.
fn callgrind(filter: &str, n: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!(
        "cxgate-callgrind-{filter}-{n}-{}.out",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--smc-check=all-non-file",
            "--collect-atstart=no",
            "--toggle-collect=xtask::micro::one",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        .arg(&exe)
        .args(["micro-one", filter, &n.to_string()])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !status.status.success() {
        return Err(format!(
            "callgrind {filter}: {}",
            String::from_utf8_lossy(&status.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|t| t.parse::<u64>().ok())
        })
        .map(|total| total / (n + 51))
        .ok_or_else(|| "no callgrind summary".into())
}

pub fn run(with_callgrind: bool) -> Result<(), String> {
    println!(
        "\n| filter (ABI host, wasmtime) | route | ns/request (median of 5) | host calls/request | instructions/request (callgrind) | linear memory (KiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &ROWS {
        let f = row.name;
        let mut samples = Vec::new();
        let (mut calls, mut memory) = (0.0, 0);
        for _ in 0..5 {
            let (ns, c, m) = run_one(f, 2_000)?;
            samples.push(ns);
            (calls, memory) = (c, m);
        }
        samples.sort_by(f64::total_cmp);
        let ir = if with_callgrind {
            format!("{}", callgrind(f, 300)?)
        } else {
            "(skipped)".into()
        };
        let route = match row.shape {
            Shape::Json => "1 KB JSON update",
            Shape::Headers => "headers only",
            Shape::Chat => "chat, 20 SSE deltas",
            Shape::Chain => "LLM chain, 2 model calls",
        };
        println!(
            "| {f} | {route} | {:.0} | {calls:.0} | {ir} | {} |",
            samples[2],
            memory / 1024
        );
    }
    Ok(())
}
