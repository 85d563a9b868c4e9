//! The rig the sidecar's integration tests share: the sidecar and the mock platforms on free
//! ports, and helpers to read its state.
#![allow(dead_code, unused_imports)]

pub use cxgate_stack::{Service, bin, free_port, wait_ready};
pub use reqwest::blocking::Client;
pub use serde_json::{Value, json};
pub use std::path::{Path, PathBuf};
pub use std::time::{Duration, Instant};

pub const KEY: &str = "test-sidecar-key-0123456789";
pub const GENESYS_SECRET: &str = "demo-genesys-secret";
pub const CXONE_KEY_SECRET: &str = "demo-access-key-secret";

pub struct Rig {
    // Drop order: sidecar first.
    pub sidecar: Service,
    pub _mocks: Service,
    pub genesys: String,
    pub cxone: String,
    pub side: String,
    pub http: Client,
    pub dir: PathBuf,
}

/// Starts the sidecar with `config` (written to `dir/sidecar.json`) and `env` besides the
/// shared key; ready once `/metrics` answers (whatever `/health` says). Returns its base URL.
pub fn spawn_sidecar(dir: &Path, config: &Value, env: &[(&str, &str)]) -> (Service, String) {
    let cfg = dir.join("sidecar.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    let mut all = vec![("CXGATE_SIDECAR_KEY", KEY)];
    all.extend_from_slice(env);
    let args = ["--config".to_string(), cfg.display().to_string()];
    let bin = Path::new(env!("CARGO_BIN_EXE_cxgate-sidecar"));
    let mut s = Service::spawn("sidecar", bin, &args, &all, dir).unwrap();
    let base = format!("http://{}", config["listen"].as_str().unwrap());
    let ready = format!("{base}/metrics");
    wait_ready(
        &mut s,
        &ready,
        &[("x-cxgate-sidecar-key", KEY)],
        Duration::from_secs(20),
    )
    .unwrap();
    (s, base)
}

/// `GET {base}{path}` with the key, as JSON.
pub fn get_json(base: &str, path: &str) -> Value {
    Client::new()
        .get(format!("{base}{path}"))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

pub fn start(mock_args: &[&str], refresh: Value) -> Rig {
    start_with(mock_args, refresh, 300)
}

pub fn start_with(mock_args: &[&str], refresh: Value, metadata_interval_s: u64) -> Rig {
    let (g, c, l, s) = (free_port(), free_port(), free_port(), free_port());
    let dir =
        std::env::temp_dir().join(format!("cxgate-sidecar-tokens-{}-{s}", std::process::id()));
    let mut args: Vec<String> = vec![
        "--genesys".into(),
        format!("127.0.0.1:{g}"),
        "--cxone".into(),
        format!("127.0.0.1:{c}"),
        "--llm".into(),
        format!("127.0.0.1:{l}"),
    ];
    args.extend(mock_args.iter().map(|a| a.to_string()));
    let mut mocks = Service::spawn("mocks", &bin("cxgate-mocks"), &args, &[], &dir).unwrap();
    for p in [g, c] {
        wait_ready(
            &mut mocks,
            &format!("http://127.0.0.1:{p}/__mock/health"),
            &[],
            Duration::from_secs(20),
        )
        .unwrap();
    }
    let genesys = format!("http://127.0.0.1:{g}");
    let cxone = format!("http://127.0.0.1:{c}");
    let config = json!({
        "version": 1,
        "listen": format!("127.0.0.1:{s}"),
        "refresh": refresh,
        "metadata": {"interval_s": metadata_interval_s, "page_size": 25},
        "genesys": {"login_url": genesys, "api_url": genesys,
                    "client_id": {"env": "T_GENESYS_ID"}, "client_secret": {"env": "T_GENESYS_SECRET"}},
        "cxone": {"issuer": cxone, "tenant_id": "tenant-1",
                  "client_id": {"env": "T_CXONE_ID"}, "client_secret": {"env": "T_CXONE_SECRET"},
                  "access_key_id": {"env": "T_CXONE_AK"}, "access_key_secret": {"file": dir.join("ak-secret").display().to_string()}},
        "llm": {"api_key": {"file": dir.join("llm-key").display().to_string()}, "reread_s": 600}
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("llm-key"), "demo-llm-key\n").unwrap();
    std::fs::write(dir.join("ak-secret"), format!("{CXONE_KEY_SECRET}\n")).unwrap();
    let cfg_path = dir.join("sidecar.json");
    std::fs::write(&cfg_path, config.to_string()).unwrap();
    let env = [
        ("CXGATE_SIDECAR_KEY", KEY),
        ("T_GENESYS_ID", "demo-genesys-client"),
        ("T_GENESYS_SECRET", GENESYS_SECRET),
        ("T_CXONE_ID", "demo-cxone-client"),
        ("T_CXONE_SECRET", "demo-cxone-secret"),
        ("T_CXONE_AK", "demo-access-key"),
    ];
    let mut sidecar = Service::spawn(
        "sidecar",
        Path::new(env!("CARGO_BIN_EXE_cxgate-sidecar")),
        &["--config".into(), cfg_path.display().to_string()],
        &env,
        &dir,
    )
    .unwrap();
    let side = format!("http://127.0.0.1:{s}");
    wait_ready(
        &mut sidecar,
        &format!("{side}/health"),
        &[("x-cxgate-sidecar-key", KEY)],
        Duration::from_secs(20),
    )
    .unwrap();
    Rig {
        sidecar,
        _mocks: mocks,
        genesys,
        cxone,
        side,
        http: Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        dir,
    }
}

impl Rig {
    pub fn state(&self) -> Value {
        self.http
            .get(format!("{}/v1/state", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
    pub fn grants(&self, base: &str) -> u64 {
        let v: Value = self
            .http
            .get(format!("{base}/__mock/stats"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["grants"].as_u64().unwrap()
    }
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.state();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    pub fn invalidate(&self, platform: &str, generation: u64) -> reqwest::blocking::Response {
        self.http
            .post(format!("{}/v1/tokens/{platform}/invalidate", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .json(&json!({"generation": generation}))
            .send()
            .unwrap()
    }
    /// What the token filter's replay calls: invalidate, then wait for the newer token.
    pub fn invalidate_and_wait(
        &self,
        platform: &str,
        generation: u64,
    ) -> reqwest::blocking::Response {
        self.http
            .post(format!(
                "{}/v1/tokens/{platform}/invalidate?wait_ms=3000",
                self.side
            ))
            .header("x-cxgate-sidecar-key", KEY)
            .json(&json!({"generation": generation}))
            .send()
            .unwrap()
    }
    pub fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.side))
            .header("x-cxgate-sidecar-key", KEY)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }
}

pub fn fast_refresh() -> Value {
    json!({"backoff_initial_ms": 100, "backoff_max_ms": 400})
}
