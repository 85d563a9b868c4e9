//! `./cxgate bench`: what the chain costs against bare Envoy and Envoy's native filters.
//!
//! Every configuration is its own Envoy (1 worker) in front of a fast upstream (a second
//! Envoy answering with `direct_response`); tokens and ID maps come from the sidecar and the
//! mock platforms as in the demo. Load comes from `wrk` on loopback. The machine is shared and
//! noisy, so configurations run in interleaved pairs against bare Envoy (A B, then B A next
//! round) and the result is the median of the pairwise ratios with its interquartile range,
//! plus Envoy's own CPU time per request from /proc. Also: RSS idle and after load, and the
//! rate limiter's admission accuracy under load with 2 workers.

use cxgate_e2e::{
    Ports, Service, Stack, StackOptions, free_port, repo_root, shipped_transform, wasm_dir,
};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum F {
    Auth,
    Trace,
    Ratelimit,
    Transform,
    Breaker,
    Token,
    /// Envoy's local_ratelimit + credential_injector (oauth2): the nearest native equivalents.
    Native,
}

struct Config {
    name: &'static str,
    filters: Vec<F>,
    /// Copies of the do-nothing Wasm filter: the proxy's own cost per Proxy-Wasm filter.
    noops: usize,
    /// Every cxgate filter from the one-module bundle (one VM) instead of its own module.
    bundle: bool,
    /// JSON route (POST 1 KB normalized update) instead of the header route.
    json: bool,
}

fn configs() -> Vec<Config> {
    use F::*;
    let c = |name, filters: Vec<F>, json| Config {
        name,
        filters,
        noops: 0,
        bundle: false,
        json,
    };
    let one_module = |name, filters: Vec<F>, json| Config {
        bundle: true,
        ..c(name, filters, json)
    };
    let noop = |name, noops| Config {
        noops,
        ..c(name, vec![], false)
    };
    vec![
        c("bare", vec![], false),
        c("native", vec![Native], false),
        one_module(
            "chain-headers",
            vec![Auth, Trace, Ratelimit, Breaker, Token],
            false,
        ),
        c(
            "chain-headers (module per filter)",
            vec![Auth, Trace, Ratelimit, Breaker, Token],
            false,
        ),
        c("api_key_auth alone", vec![Auth], false),
        one_module(
            "chain-headers without token",
            vec![Auth, Trace, Ratelimit, Breaker],
            false,
        ),
        noop("no-op Wasm filter alone", 1),
        noop("4 no-op Wasm filters", 4),
        c("trace alone", vec![Trace], false),
        c("ratelimit alone", vec![Ratelimit], false),
        c("breaker alone", vec![Breaker], false),
        c("token alone", vec![Token], false),
        c("bare-json", vec![], true),
        one_module(
            "chain-json",
            vec![Auth, Trace, Ratelimit, Transform, Breaker, Token],
            true,
        ),
        c(
            "chain-json (module per filter)",
            vec![Auth, Trace, Ratelimit, Transform, Breaker, Token],
            true,
        ),
        c("transform alone", vec![Transform], true),
    ]
}

fn wasm_filter(name: &str, file: &str, config: &str, env: bool, extra: &str) -> String {
    let env = if env {
        "\n                  environment_variables: { host_env_keys: [CXGATE_SIDECAR_KEY] }"
    } else {
        ""
    };
    format!(
        r#"          - name: cxgate.{name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: cxgate.{name}
                root_id: cxgate.{name}
                fail_open: false{extra}
                vm_config:
                  vm_id: cxgate
                  runtime: envoy.wasm.runtime.v8{env}
                  code: {{ local: {{ filename: "{dir}/{file}" }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{config}'
"#,
        dir = wasm_dir().display(),
        config = config.replace('\'', "''"),
    )
}

/// The Envoy config for one benchmark configuration.
fn envoy_yaml(cfg: &Config, listen: u16, admin: u16, upstream: u16, stack_ports: &Ports) -> String {
    // The bundle needs one vm_config for all its plugins (same code, same environment).
    let wasm_filter = |name: &str, file: &str, config: &str, env: bool, extra: &str| {
        if cfg.bundle {
            wasm_filter(name, "cxgate_bundle.wasm", config, true, extra)
        } else {
            wasm_filter(name, file, config, env, extra)
        }
    };
    let mut filters = String::new();
    let has = |f: F| cfg.filters.contains(&f);
    if has(F::Auth) {
        filters.push_str(
            r#"          - name: envoy.filters.http.api_key_auth
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth
              credentials:
              - { key: "demo-key-omnichannel", client: "omnichannel-app-prod" }
              key_sources: [{ header: x-api-key }]
              forwarding: { header: x-cxgate-consumer, hide_credentials: true }
"#,
        );
    }
    for n in 0..cfg.noops {
        filters.push_str(&wasm_filter(
            &format!("noop{n}"),
            "cxgate_noop_filter.wasm",
            "{}",
            false,
            "",
        ));
    }
    if has(F::Trace) {
        filters.push_str(&wasm_filter(
            "trace",
            "cxgate_trace.wasm",
            r#"{"version": 1, "echo_in_response": true}"#,
            false,
            "",
        ));
    }
    if has(F::Ratelimit) {
        // Real bucket work on every request, a budget never reached.
        let rl = json!({"version": 1, "consumer": {"capacity": 1_000_000_000u64, "per_second": 1_000_000_000u64},
            "routes": [{"prefix": "/gateway/v1/", "cost": 5}, {"prefix": "/genesys/", "platform": "genesys", "cost": 1}]});
        filters.push_str(&wasm_filter(
            "ratelimit",
            "cxgate_ratelimit.wasm",
            &rl.to_string(),
            false,
            "",
        ));
    }
    if has(F::Transform) {
        let mut t = shipped_transform(&repo_root()).unwrap_or_default();
        t["sync"] = json!({"upstream": "sidecar", "authority": "sidecar"});
        filters.push_str(&wasm_filter(
            "transform",
            "cxgate_transform.wasm",
            &t.to_string(),
            true,
            "\n                allow_on_headers_stop_iteration: true",
        ));
    }
    if has(F::Breaker) {
        let b = json!({"version": 1, "routes": [{"prefix": "/genesys/", "platform": "genesys"}]});
        filters.push_str(&wasm_filter(
            "breaker",
            "cxgate_breaker.wasm",
            &b.to_string(),
            false,
            "",
        ));
    }
    if has(F::Native) {
        filters.push_str(&format!(
            r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: native_rl
              token_bucket: {{ max_tokens: 1000000000, tokens_per_fill: 1000000000, fill_interval: 1s }}
              filter_enabled: {{ default_value: {{ numerator: 100, denominator: HUNDRED }} }}
              filter_enforced: {{ default_value: {{ numerator: 100, denominator: HUNDRED }} }}
          - name: envoy.filters.http.credential_injector
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector
              overwrite: true
              allow_request_without_credential: false
              credential:
                name: envoy.http.injected_credentials.oauth2
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2
                  token_endpoint: {{ cluster: token, timeout: 3s, uri: "http://127.0.0.1:{genesys}/oauth/token" }}
                  client_credentials:
                    client_id: demo-genesys-client
                    client_secret: {{ name: genesys-secret }}
"#,
            genesys = stack_ports.genesys
        ));
    }
    filters.push_str(
        r#"          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
    );
    let token_upstream = if has(F::Token) {
        let t = json!({"version": 1, "routes": [{"prefix": "/", "platform": "genesys"}], "on_unauthorized": "replay",
            "sync": {"upstream": "sidecar", "authority": "sidecar"}});
        format!(
            r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http_protocol_options: {{}} }}
        http_filters:
{}        - name: envoy.filters.http.upstream_codec
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec
"#,
            wasm_filter("token", "cxgate_token.wasm", &t.to_string(), true, "")
                .lines()
                .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
                .collect::<String>()
        )
    } else {
        String::new()
    };
    let secret = if has(F::Native) {
        r#"  secrets:
  - name: genesys-secret
    generic_secret: { secret: { inline_string: demo-genesys-secret } }
"#
    } else {
        ""
    };
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
{secret}  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {{ prefix: "/genesys/" }}
                route: {{ cluster: genesys, prefix_rewrite: "/" }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: genesys }}
          http_filters:
{filters}  clusters:
  - name: genesys
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: genesys
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }} }}] }}]
{token_upstream}  - name: sidecar
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: sidecar
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {sidecar} }} }} }} }}] }}]
  - name: token
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: token
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {genesys} }} }} }} }}] }}]
"#,
        sidecar = stack_ports.sidecar,
        genesys = stack_ports.genesys,
    )
}

/// The fast upstream: answers every request at once with a small Genesys-like queue.
fn upstream_yaml(listen: u16, admin: u16) -> String {
    let body = json!({"id": "00009e0e-0000-4000-8000-000000000000", "name": "Premium_Support", "enabled": true,
        "routingConfig": {"strategy": "LONGESTIDLEAGENT", "skillsRequired": ["billing"], "maxWaitTime": "PT2M"},
        "selfUri": "/api/v2/routing/queues/00009e0e-0000-4000-8000-000000000000"})
    .to_string();
    format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
  - name: upstream
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {listen} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: upstream
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: '{body}' }} }}
                response_headers_to_add: [{{ header: {{ key: content-type, value: application/json }} }}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

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
    cxgate_e2e::run_envoy(name, yaml, dir, admin, workers, "warn")
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

fn rss_kib(pid: u32) -> u64 {
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
    println!("\n| Envoy RSS (MiB) | workers | idle | after load | chain − bare (after load) |");
    println!("|---|---|---|---|---|");
    for workers in [1u32, 2] {
        let mut base = 0u64;
        for name in [
            "bare-json",
            "no-op Wasm filter alone",
            "chain-json",
            "chain-json (module per filter)",
        ] {
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
            let delta = if name == "bare-json" {
                base = loaded;
                String::new()
            } else {
                format!("{:+.1}", (loaded as f64 - base as f64) / 1024.0)
            };
            println!(
                "| {name} | {workers} | {:.1} | {:.1} | {delta} |",
                idle as f64 / 1024.0,
                loaded as f64 / 1024.0
            );
        }
    }
    Ok(())
}

/// P8: 2 workers, a budget far below the offered load; admitted against the bucket math.
fn accuracy(stack: &Stack, dir: &Path, upstream: u16) -> Result<(), String> {
    let rl = json!({"version": 1, "consumer": {"capacity": 100, "per_second": 50},
        "routes": [{"prefix": "/genesys/", "platform": "genesys", "cost": 1}]});
    let (listen, admin) = (free_port(), free_port());
    let c = Config {
        name: "accuracy",
        filters: vec![F::Auth],
        noops: 0,
        bundle: false,
        json: false,
    };
    let yaml = envoy_yaml(&c, listen, admin, upstream, &stack.ports).replace(
        "          - name: envoy.filters.http.router",
        &format!(
            "{}          - name: envoy.filters.http.router",
            wasm_filter(
                "ratelimit",
                "cxgate_ratelimit.wasm",
                &rl.to_string(),
                false,
                ""
            )
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
