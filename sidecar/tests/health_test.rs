//! `/health` as a load balancer sees it: `degraded` (200) while the LLM endpoint is down and
//! `healthy` once it is back; `unhealthy` (503) when no platform has a token.

mod common;
use common::*;

fn mocks(args: &[String], dir: &Path, name: &str, ready: &str) -> Service {
    let mut m = Service::spawn(name, &bin("cxgate-mocks"), args, &[], dir).unwrap();
    wait_ready(&mut m, ready, &[], Duration::from_secs(20)).unwrap();
    m
}

fn sidecar(dir: &Path, config: &Value) -> (Service, String) {
    let env = [
        ("T_GENESYS_ID", "demo-genesys-client"),
        ("T_GENESYS_SECRET", GENESYS_SECRET),
        ("T_LLM_KEY", "demo-llm-key"),
    ];
    spawn_sidecar(dir, config, &env)
}

fn health(base: &str) -> (u16, Value) {
    let r = Client::new()
        .get(format!("{base}/health"))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

fn wait_for(base: &str, what: &str, f: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, v) = health(base);
        if f(code, &v) {
            return (code, v);
        }
        assert!(Instant::now() < deadline, "{what}: {code} {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxgate-health-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn the_llm_endpoint_down_degrades_and_its_return_heals() {
    let d = dir("llm");
    let (g, l, s) = (free_port(), free_port(), free_port());
    let genesys = format!("http://127.0.0.1:{g}");
    let _platforms = mocks(
        &["--genesys".into(), format!("127.0.0.1:{g}")],
        &d,
        "genesys",
        &format!("{genesys}/__mock/health"),
    );
    let llm_args = vec!["--llm".to_string(), format!("127.0.0.1:{l}")];
    let llm_ready = format!("http://127.0.0.1:{l}/__mock/health");
    let mut llm = mocks(&llm_args, &d, "llm", &llm_ready);
    let config = json!({
        "version": 1, "listen": format!("127.0.0.1:{s}"),
        "genesys": {"login_url": genesys, "api_url": genesys,
                    "client_id": {"env": "T_GENESYS_ID"}, "client_secret": {"env": "T_GENESYS_SECRET"}},
        "llm": {"api_key": {"env": "T_LLM_KEY"}, "health_url": format!("http://127.0.0.1:{l}/v1/models"),
                "health_interval_s": 1}
    });
    let (_side, base) = sidecar(&d, &config);
    let (code, v) = wait_for(&base, "healthy at first", |_, v| v["status"] == "healthy");
    assert_eq!(code, 200);
    assert_eq!(v["checks"]["llm.endpoint"]["status"], "pass");
    assert_eq!(v["checks"]["tokens.genesys"]["status"], "pass");

    llm.stop();
    let (code, v) = wait_for(&base, "degraded while the LLM is down", |_, v| {
        v["status"] == "degraded"
    });
    assert_eq!(code, 200, "degraded still serves");
    assert_eq!(v["checks"]["llm.endpoint"]["status"], "warn");
    assert!(
        v["checks"]["llm.endpoint"]["detail"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );

    let _llm_again = mocks(&llm_args, &d, "llm-again", &llm_ready);
    let (code, _) = wait_for(&base, "healthy once it is back", |_, v| {
        v["status"] == "healthy"
    });
    assert_eq!(code, 200);
}

#[test]
fn no_token_anywhere_is_unhealthy_with_503() {
    let d = dir("tokens");
    let s = free_port();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = json!({
        "version": 1, "listen": format!("127.0.0.1:{s}"),
        "genesys": {"login_url": closed, "api_url": closed,
                    "client_id": {"env": "T_GENESYS_ID"}, "client_secret": {"env": "T_GENESYS_SECRET"}}
    });
    let (_side, base) = sidecar(&d, &config);
    let (code, v) = health(&base);
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["checks"]["tokens.genesys"]["status"], "fail");
}
