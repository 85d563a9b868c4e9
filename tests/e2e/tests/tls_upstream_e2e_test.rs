//! Layer 3: the production config (`./cxgate render` of a deployment file) run by real Envoy
//! against the mock platforms serving HTTPS with a CA of the test's own. The mocks record the
//! SNI and HTTP version of every request. A gateway that trusts another CA fails closed.

// A scenario reads top to bottom as one test, so some run past the 100-line limit.
#![allow(clippy::too_many_lines)]

use cxgate_e2e::deploy;
use cxgate_e2e::keystore::write_key_store;
use cxgate_e2e::pki::{Pki, TLS_NAME};
use cxgate_e2e::{
    CURSOR_KEY, MOCK_SECRETS, SIDECAR_KEY, Service, bin, consumers, free_port, repo_root,
    run_envoy, wait_ready_with, wasm_dir,
};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const KEY: &str = "demo-key-omnichannel";

struct Rig {
    http: reqwest::blocking::Client,
    genesys: u16,
    cxone: u16,
    llm: u16,
    sidecar: u16,
    _mocks: Service,
}

impl Rig {
    fn mock(&self, port: u16, path: &str) -> String {
        format!("https://{TLS_NAME}:{port}{path}")
    }

    /// What reached a mock through a gateway (Envoy adds `x-request-id`).
    fn through_gateway(&self, port: u16) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(self.mock(port, "/__mock/requests"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_default();
        all.into_iter()
            .filter(|r| r["headers"].get("x-request-id").is_some())
            .collect()
    }

    fn fault(&self, port: u16, fault: Value) {
        let r = self
            .http
            .post(self.mock(port, "/__mock/faults"))
            .json(&fault)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "fault refused: {fault}");
    }

    fn stats(&self, port: u16) -> Value {
        self.http
            .get(self.mock(port, "/__mock/stats"))
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null)
    }

    /// A deployment file for these mocks: everything as shipped but the hosts and the CA.
    fn deployment(&self, dir: &Path, name: &str, ca: &Path, gateway: (u16, u16)) -> Value {
        let store = dir.join("keys").join(format!("{name}-consumer-keys.json"));
        write_key_store(&store, &consumers(&repo_root()).unwrap()).unwrap();
        let env = |n: &str| json!({"env": n});
        json!({
            "version": 1,
            "root": repo_root(),
            "pipeline": "envoy/cxgate.json",
            "key_store": store,
            "wasm_dir": wasm_dir(),
            "gateway": {"listen": format!("127.0.0.1:{}", gateway.0),
                        "admin": format!("127.0.0.1:{}", gateway.1),
                        "access_log": dir.join(format!("{name}-access.log"))},
            "tls": {"ca_file": ca},
            "sidecar": {"listen": format!("127.0.0.1:{}", self.sidecar), "key": env("CXGATE_SIDECAR_KEY")},
            "genesys": {"region": "mypurecloud.com",
                        "api_url": self.mock(self.genesys, ""), "login_url": self.mock(self.genesys, ""),
                        "client_id": env("GENESYS_CLIENT_ID"), "client_secret": env("GENESYS_CLIENT_SECRET")},
            "cxone": {"issuer": self.mock(self.cxone, ""), "tenant_id": "demo-tenant",
                      "client_id": env("CXONE_CLIENT_ID"), "client_secret": env("CXONE_CLIENT_SECRET"),
                      "access_key_id": env("CXONE_ACCESS_KEY_ID"),
                      "access_key_secret": env("CXONE_ACCESS_KEY_SECRET")},
            "llm": {"url": self.mock(self.llm, ""), "api_key": env("LLM_API_KEY")},
            "routes": {"genesys-read": {"timeout_ms": 5000,
                       "retry": {"max_retries": 2, "backoff_base_ms": 100, "retry_on": [429, 502, 503]}},
                       "genesys-write": {"timeout_ms": 5000,
                       "retry": {"max_retries": 2, "backoff_base_ms": 100, "retry_on": [429, 502, 503]}}}
        })
    }
}

fn render(dir: &Path, name: &str, deployment: &Value) -> Result<deploy::Rendered, String> {
    let path = dir.join(format!("{name}-deployment.json"));
    std::fs::write(&path, deployment.to_string()).unwrap();
    let d = deploy::load(&repo_root(), &path)?;
    deploy::render(&repo_root(), &d, &dir.join(name))
}

fn send(
    gateway: u16,
    method: &str,
    path: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client
        .request(method, format!("http://127.0.0.1:{gateway}{path}"))
        .header("x-api-key", KEY);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send() {
        Ok(r) => (r.status().as_u16(), r.json().unwrap_or(Value::Null)),
        Err(e) => (0, json!({"error": e.to_string()})),
    }
}

#[test]
fn the_rendered_production_config_reaches_https_platforms_and_a_wrong_ca_fails_closed() {
    let dir = repo_root()
        .join("target/e2e-runs")
        .join(format!("tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::create(&dir.join("pki")).unwrap_or_else(|e| panic!("{e}"));
    let (genesys, cxone, llm, sidecar) = (free_port(), free_port(), free_port(), free_port());
    let mut args = vec![
        "--genesys".to_string(),
        format!("127.0.0.1:{genesys}"),
        "--cxone".into(),
        format!("127.0.0.1:{cxone}"),
        "--llm".into(),
        format!("127.0.0.1:{llm}"),
    ];
    args.extend(pki.mock_args());
    let mut mocks = Service::spawn("mocks", &bin("cxgate-mocks"), &args, &[], &dir).unwrap();
    let pem = std::fs::read(&pki.ca).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for port in [genesys, cxone, llm] {
        let url = format!("https://{TLS_NAME}:{port}/__mock/health");
        wait_ready_with(&mut mocks, &http, &url, &[], Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let rig = Rig {
        http,
        genesys,
        cxone,
        llm,
        sidecar,
        _mocks: mocks,
    };

    // Rendered as shipped, with CXone's host discovered over TLS.
    let (gw, admin) = (free_port(), free_port());
    let good = render(
        &dir,
        "good",
        &rig.deployment(&dir, "good", &pki.ca, (gw, admin)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let envoy_text = std::fs::read_to_string(&good.envoy).unwrap();
    let sidecar_text = std::fs::read_to_string(&good.sidecar).unwrap();
    let kong_text = std::fs::read_to_string(&good.kong).unwrap();
    let mut secrets: Vec<String> = MOCK_SECRETS.iter().map(|(_, v)| v.to_string()).collect();
    secrets.extend([SIDECAR_KEY.to_string(), CURSOR_KEY.to_string()]);
    secrets.extend(consumers(&repo_root()).unwrap().into_iter().map(|c| c.key));
    for s in &secrets {
        for (file, text) in [
            ("envoy", &envoy_text),
            ("sidecar", &sidecar_text),
            ("kong", &kong_text),
        ] {
            assert!(
                !text.contains(s.as_str()),
                "a secret is in the rendered {file} config"
            );
        }
    }
    let authority = format!("{TLS_NAME}:{cxone}");
    assert!(
        envoy_text.contains(&format!("host_rewrite_literal: {authority}")),
        "CXone's discovered host is the cxone cluster's"
    );
    let findings = cxgate_e2e::validate::check(
        &repo_root(),
        &cxgate_e2e::validate::Deployment {
            envoy: Some(good.envoy.clone()),
            kong: Some(good.kong.clone()),
            sidecar: vec![good.sidecar.clone()],
            paired_sidecar: serde_json::from_str(&sidecar_text).ok(),
        },
    );
    assert!(findings.is_empty(), "{findings:?}");

    // The sidecar, on its rendered config: tokens and ID maps from the HTTPS mocks.
    let mut env: Vec<(&str, &str)> = MOCK_SECRETS.to_vec();
    env.push(("CXGATE_SIDECAR_KEY", SIDECAR_KEY));
    let config_arg = vec!["--config".to_string(), good.sidecar.display().to_string()];
    let mut sc =
        Service::spawn("sidecar", &bin("cxgate-sidecar"), &config_arg, &env, &dir).unwrap();
    cxgate_e2e::wait_ready(
        &mut sc,
        &format!("http://127.0.0.1:{sidecar}/health"),
        &[("x-cxgate-sidecar-key", SIDECAR_KEY)],
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let envoy = run_envoy("envoy-good", &envoy_text, &dir, admin, 2, "info")
        .unwrap_or_else(|e| panic!("{e}"));

    // A raw read over TLS: SNI, HTTP/2 by ALPN, the platform's Host, the platform's token.
    let (status, body) = send(gw, "GET", "/genesys/api/v2/routing/queues", None, &[]);
    assert_eq!(status, 200, "{body}");
    let seen = rig.through_gateway(genesys);
    let read = seen.last().expect("the read reached the mock");
    assert_eq!(read["sni"], TLS_NAME, "Envoy sent SNI");
    assert_eq!(read["version"], "HTTP/2.0", "HTTP/2, offered by ALPN");
    assert_eq!(
        read["authority"],
        format!("{TLS_NAME}:{genesys}"),
        "the platform's Host"
    );
    assert!(
        read["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .starts_with("Bearer ")
    );
    assert_ne!(
        read["headers"]["x-api-key"], KEY,
        "the consumer's key stays at the gateway"
    );

    // The normalized queue update: the real API's read-merge-write, over TLS (the map synced).
    let update = json!({"target_platform": "GENESYS", "idempotency_key": "tls-e2e-1",
                        "payload": {"queue_name": "Premium_Support", "max_wait_time_ms": 45000}});
    let started = Instant::now();
    let (status, body) = loop {
        let got = send(
            gw,
            "POST",
            "/gateway/v1/routing/queues/update",
            Some(update.clone()),
            &[],
        );
        if got.0 != 503 || started.elapsed() > Duration::from_secs(20) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["queue_name"], "Premium_Support");
    assert_eq!(body["max_wait_time_ms"], 45000);
    let seen = rig.through_gateway(genesys);
    let put = seen
        .iter()
        .rev()
        .find(|r| r["method"] == "PUT")
        .expect("the PUT");
    assert_eq!(put["sni"], TLS_NAME);
    assert!(
        put["path"]
            .as_str()
            .unwrap()
            .starts_with("/api/v2/routing/queues/")
    );
    assert!(
        seen.iter()
            .any(|r| r["method"] == "GET" && r["path"] == put["path"]),
        "read first"
    );

    // CXone by its discovered host.
    let (status, body) = send(
        gw,
        "GET",
        "/cxone/incontactapi/services/v30.0/skills",
        None,
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(rig.through_gateway(cxone).last().unwrap()["sni"], TLS_NAME);
    // The sidecar's discovery agrees with the host the gateway was rendered for.
    let health: Value = rig
        .http
        .get(format!("http://127.0.0.1:{sidecar}/health"))
        .header("x-cxgate-sidecar-key", SIDECAR_KEY)
        .send()
        .and_then(|r| r.json())
        .unwrap();
    let check = &health["checks"]["cxone.api_endpoint"];
    assert_eq!(check["status"], "pass", "{health}");
    assert_eq!(check["discovered"], rig.mock(cxone, ""), "{health}");

    // Retries: a read is retried after the platform's Retry-After; a POST without an
    // Idempotency-Key never is; with one, it is.
    let before = rig.through_gateway(genesys).len();
    rig.fault(
        genesys,
        json!({"status": 429, "retry_after": 1, "count": 1, "path_prefix": "/api/v2/users"}),
    );
    let t0 = Instant::now();
    let (status, _) = send(gw, "GET", "/genesys/api/v2/users", None, &[]);
    let waited = t0.elapsed();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(1000),
        "retried after {waited:?}, before Retry-After"
    );
    assert_eq!(
        rig.through_gateway(genesys).len() - before,
        2,
        "the 429, then the retry"
    );

    // A POST the platform answers 503 once: what the consumer gets.
    let post_after_503 = |extra: &[(&str, &str)]| {
        rig.fault(
            genesys,
            json!({"status": 503, "count": 1, "path_prefix": "/api/v2/analytics"}),
        );
        let path = "/genesys/api/v2/analytics/conversations/details/query";
        send(gw, "POST", path, Some(json!({})), extra).0
    };
    let before = rig.through_gateway(genesys).len();
    assert_eq!(post_after_503(&[]), 503, "no retry of a POST without a key");
    assert_eq!(rig.through_gateway(genesys).len() - before, 1, "sent once");
    let keyed = post_after_503(&[("idempotency-key", "tls-e2e-post-1")]);
    assert_ne!(keyed, 503, "a keyed POST is retried past the 503");
    assert_eq!(
        rig.through_gateway(genesys).len() - before,
        3,
        "once unkeyed, twice keyed"
    );
    // A Retry-After longer than the route can wait (5 s timeout): not retried early, the
    // consumer gets the platform's 429 with it at once. (Last: the pipeline then holds
    // Genesys traffic for those 30 s.)
    rig.fault(
        genesys,
        json!({"status": 429, "retry_after": 30, "count": 1, "path_prefix": "/api/v2/users"}),
    );
    let before = rig.through_gateway(genesys).len();
    let t0 = Instant::now();
    let got = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{gw}/genesys/api/v2/users"))
        .header("x-api-key", KEY)
        .send()
        .unwrap();
    let status = got.status().as_u16();
    assert_eq!(
        got.headers()["retry-after"],
        "30",
        "the platform's Retry-After"
    );
    assert!(
        got.headers().get("x-envoy-ratelimited").is_none(),
        "the marker stays inside"
    );
    let body: Value = got.json().unwrap_or(Value::Null);
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["code"], "mock.fault",
        "the platform's own answer: {body}"
    );
    assert_eq!(
        rig.through_gateway(genesys).len() - before,
        1,
        "never retried"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "no wait: {:?}",
        t0.elapsed()
    );
    drop(envoy);

    // Another CA: discovery refuses the mock when rendering, and with the host pinned the
    // gateway refuses it too: a 503 problem, and nothing reaches the platform.
    let (gw2, admin2) = (free_port(), free_port());
    let mut wrong = rig.deployment(&dir, "wrong", &pki.other_ca, (gw2, admin2));
    let err = render(&dir, "wrong", &wrong)
        .err()
        .expect("discovery must fail closed");
    assert!(err.contains("CXone discovery"), "{err}");
    wrong["cxone"]["api_endpoint"] = json!(rig.mock(cxone, ""));
    let bad = render(&dir, "wrong", &wrong).unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&bad.envoy).unwrap();
    let _envoy2 = run_envoy("envoy-wrong-ca", &text, &dir, admin2, 2, "info")
        .unwrap_or_else(|e| panic!("{e}"));
    let before = rig.through_gateway(genesys).len();
    let refused_before = rig.stats(genesys)["tls_handshakes_refused"]
        .as_u64()
        .unwrap_or(0);
    let (status, body) = send(gw2, "GET", "/genesys/api/v2/routing/queues", None, &[]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["type"], "urn:cxgate:problem:upstream-unavailable",
        "{body}"
    );
    assert_eq!(
        rig.through_gateway(genesys).len(),
        before,
        "nothing reached the platform"
    );
    assert!(
        rig.stats(genesys)["tls_handshakes_refused"]
            .as_u64()
            .unwrap_or(0)
            > refused_before
    );
    drop(sc);
}
