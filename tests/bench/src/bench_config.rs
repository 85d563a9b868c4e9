//! The benchmark's configurations and the Envoy configs they run as (`bench.rs` runs them).

use cxgate_stack::{Ports, repo_root, shipped_pipeline, wasm_dir};
use serde_json::json;

/// One benchmark configuration: what runs in front of the fast upstream.
pub struct Config {
    pub name: &'static str,
    /// Envoy's api_key_auth (the consumer id the pipeline reads).
    pub auth: bool,
    /// A cxgate module downstream and the stages its document lists.
    pub cxgate: Option<(&'static str, Vec<&'static str>)>,
    /// The token stage as the platform cluster's upstream filter (from this module).
    pub token: Option<&'static str>,
    /// Envoy's local_ratelimit + credential_injector (oauth2): the nearest native equivalents.
    pub native: bool,
    /// Copies of the do-nothing Wasm filter: the proxy's own cost per Proxy-Wasm filter.
    pub noops: usize,
    /// JSON route (POST 1 KB normalized update) instead of the header route.
    pub json: bool,
}

const PIPELINE: &str = "cxgate_pipeline.wasm";

pub fn configs() -> Vec<Config> {
    let c = |name| Config {
        name,
        auth: false,
        cxgate: None,
        token: None,
        native: false,
        noops: 0,
        json: false,
    };
    let pipeline = |name, stages: Vec<&'static str>, token: bool, json| Config {
        auth: true,
        cxgate: Some((PIPELINE, stages)),
        token: token.then_some(PIPELINE),
        json,
        ..c(name)
    };
    let alone = |name, file, stage, json| Config {
        cxgate: Some((file, vec![stage])),
        json,
        ..c(name)
    };
    let headers = vec!["trace", "authz", "ratelimit", "breaker"];
    let json_stages = vec!["trace", "authz", "ratelimit", "transform", "breaker"];
    vec![
        c("bare"),
        Config {
            native: true,
            ..c("native")
        },
        pipeline("pipeline-headers", headers.clone(), true, false),
        pipeline("pipeline-headers without token", headers, false, false),
        Config {
            auth: true,
            ..c("api_key_auth alone")
        },
        Config {
            noops: 1,
            ..c("no-op Wasm filter alone")
        },
        Config {
            noops: 4,
            ..c("4 no-op Wasm filters")
        },
        alone("trace alone", "cxgate_trace.wasm", "trace", false),
        alone(
            "ratelimit alone",
            "cxgate_ratelimit.wasm",
            "ratelimit",
            false,
        ),
        alone("breaker alone", "cxgate_breaker.wasm", "breaker", false),
        Config {
            token: Some("cxgate_token.wasm"),
            ..c("token alone")
        },
        Config {
            json: true,
            ..c("bare-json")
        },
        pipeline("pipeline-json", json_stages, true, true),
        alone(
            "transform alone",
            "cxgate_transform.wasm",
            "transform",
            true,
        ),
    ]
}

/// The pipeline document of a benchmark configuration: the shipped stage settings, one
/// consumer with every scope and a budget never reached (real bucket work on every request).
pub fn document(stages: &[&str]) -> serde_json::Value {
    let huge = json!({"capacity": 1_000_000_000u64, "per_second": 1_000_000_000u64});
    let shipped = shipped_pipeline(&repo_root()).unwrap_or_default();
    let mut doc = json!({
        "version": 2,
        "stages": stages,
        "sync": {"upstream": "sidecar", "authority": "sidecar"},
        "model": {
            "default_consumer": {"scopes": ["routing:queue:edit", "genesys:passthrough:read"], "limit": huge},
            "routes": [
                {"id": "queue-update", "path": "/gateway/v1/routing/queues/update", "methods": ["POST"],
                 "platform": {"body": "/target_platform"}, "cost": 5, "scopes": ["routing:queue:edit"]},
                {"id": "genesys-read", "prefix": "/genesys/", "methods": ["GET"], "platform": "genesys",
                 "scopes": ["genesys:passthrough:read"]}
            ]
        }
    });
    for stage in stages {
        match *stage {
            "ratelimit" => doc["ratelimit"] = json!({"platforms": {"genesys": huge}}),
            "transform" => {
                let mut t = shipped["transform"].clone();
                t["routes"] =
                    json!({"queue-update": shipped["transform"]["routes"]["queue-update"]});
                doc["transform"] = t;
            }
            "trace" | "breaker" => doc[*stage] = shipped[*stage].clone(),
            _ => {}
        }
    }
    // The LLM route is always there, so a chain with and without the guard serve the same path.
    doc["model"]["platforms"] = json!(["genesys", "cxone", "llm"]);
    doc["model"]["default_consumer"]["scopes"] = json!([
        "routing:queue:edit",
        "genesys:passthrough:read",
        "llm:invoke"
    ]);
    if let Some(routes) = doc["model"]["routes"].as_array_mut() {
        routes.push(
            json!({"id": "llm", "prefix": "/llm/", "methods": ["POST"], "platform": "llm",
                           "scopes": ["llm:invoke"]}),
        );
        routes.push(
            json!({"id": "llm-pipeline", "path": "/gateway/v1/llm/pipeline", "methods": ["POST"],
                   "platform": "llm", "scopes": ["llm:invoke"]}),
        );
    }
    if doc.get("ratelimit").is_some() {
        doc["ratelimit"]["platforms"]["llm"] = huge.clone();
    }
    if stages.contains(&"guard") {
        let mut g = shipped["guard"].clone();
        g["routes"] =
            json!({"llm": {}, "llm-pipeline": shipped["guard"]["routes"]["llm-pipeline"]});
        doc["guard"] = g;
    }
    doc
}

/// The token stage's document as the upstream filter of the genesys cluster.
fn token_document() -> serde_json::Value {
    json!({"version": 2, "stages": ["token"], "sync": {"upstream": "sidecar", "authority": "sidecar"},
        "model": {"routes": [{"id": "genesys", "prefix": "/", "platform": "genesys"}]},
        "token": {"on_unauthorized": "replay"}})
}

pub fn wasm_filter(name: &str, file: &str, config: &str, extra: &str) -> String {
    format!(
        r#"          - name: cxgate.{name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: cxgate.{name}
                root_id: cxgate
                fail_open: false{extra}
                vm_config:
                  vm_id: cxgate
                  runtime: envoy.wasm.runtime.v8
                  environment_variables: {{ host_env_keys: [CXGATE_SIDECAR_KEY, CXGATE_CURSOR_KEY] }}
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
pub fn envoy_yaml(
    cfg: &Config,
    listen: u16,
    admin: u16,
    upstream: u16,
    stack_ports: &Ports,
) -> String {
    let mut filters = String::new();
    if cfg.auth {
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
            "",
        ));
    }
    if let Some((file, stages)) = &cfg.cxgate {
        filters.push_str(&wasm_filter(
            "pipeline",
            file,
            &document(stages).to_string(),
            "\n                allow_on_headers_stop_iteration: true",
        ));
    }
    if cfg.native {
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
    let token_upstream = if let Some(file) = cfg.token {
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
            wasm_filter("token", file, &token_document().to_string(), "")
                .lines()
                .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
                .collect::<String>()
        )
    } else {
        String::new()
    };
    let secret = if cfg.native {
        r#"  secrets:
  - name: genesys-secret
    generic_secret: { secret: { inline_string: demo-genesys-secret } }
"#
    } else {
        ""
    };
    format!(
        r#"# As envoy/envoy.yaml ships it: give back what compiling the module freed.
memory_allocator_manager: {{ bytes_to_release: 8388608, memory_release_interval: 0.5s }}
admin:
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
pub fn upstream_yaml(listen: u16, admin: u16) -> String {
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
