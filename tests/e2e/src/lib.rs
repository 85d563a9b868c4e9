//! Layer 3 harness: real Envoy 1.40, the sidecar and the mock platforms on loopback.
//!
//! [`Stack::start`] renders `envoy/envoy.yaml` with free ports, starts every process, waits
//! until each answers, and kills them all when dropped (also when a test panics). Each
//! child also gets SIGKILL if the harness process dies, so nothing outlives a run.

pub mod compose;
pub mod deploy;
pub mod keystore;
pub mod kong;
pub mod openapi;
pub mod pki;
pub mod process;
pub mod render;
pub mod services;
pub mod validate;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use process::{Service, wait_ready, wait_ready_with};
pub use render::{Ports, Vars, consumers, render_envoy, shipped_pipeline, unlimited};
pub use services::{start_redis, start_redis_on};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// A free loopback port for a child process to listen on.
///
/// Ports come from below the kernel's ephemeral range (32768+ on Linux), so no outgoing
/// connection can take one between this check and the child's bind, and each port is handed
/// out once per process, so tests running in parallel never share one. Under cargo-nextest
/// every test is its own process: each of its concurrent slots (`NEXTEST_TEST_GLOBAL_SLOT`)
/// takes ports from its own part of the range, so two test processes never share one either.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let (base, span) = port_range();
    let seed = RandomState::new();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for attempt in 0u64.. {
        let port = base + (seed.hash_one(attempt) % u64::from(span)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
        if attempt > 100_000 {
            break;
        }
    }
    0
}

/// The ports this process may hand out: 20000–31999, or an eighth of it per nextest slot.
fn port_range() -> (u16, u16) {
    const BASE: u16 = 20_000;
    const SPAN: u16 = 12_000;
    const SLOTS: u16 = 8;
    match std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
    {
        Some(slot) => (BASE + (slot % SLOTS) * (SPAN / SLOTS), SPAN / SLOTS),
        None => (BASE, SPAN),
    }
}

/// Where the project's binaries are: `$CXGATE_BIN_DIR` or `target/debug`.
pub fn bin(name: &str) -> PathBuf {
    std::env::var_os("CXGATE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug"))
        .join(name)
}

/// Envoy from the project venv (`./cxgate setup` installs it), or `$CXGATE_ENVOY`.
pub fn envoy_bin() -> PathBuf {
    std::env::var_os("CXGATE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"))
}

/// The built filters: `$CXGATE_WASM_DIR` or `target/wasm32-wasip1/release`.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("CXGATE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/wasm32-wasip1/release"))
}

/// A blocking client that opens a new connection per request (spreads load over workers).
pub fn reqwest_client_without_pooling() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// What to start.
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub envoy_workers: u32,
    /// Extra arguments for the mocks (e.g. `--genesys-token-ttl 5`).
    pub mock_args: Vec<String>,
    pub start_sidecar: bool,
    pub start_envoy: bool,
    /// Fixed ports (the demo); free ports when `None` (tests).
    pub ports: Option<Ports>,
    /// Directory for logs and the rendered config.
    pub run_dir: Option<PathBuf>,
    /// The sidecar config's `refresh` object (defaults when `None`).
    pub sidecar_refresh: Option<serde_json::Value>,
    /// The pipeline's config document; the shipped `envoy/cxgate.json` when `None`.
    pub pipeline: Option<serde_json::Value>,
    /// A Redis URL for the sidecar's shared rate-limit budget.
    pub redis: Option<String>,
    /// The legacy roster file; the shipped `sip/legacy-roster.csv` when `None`.
    pub legacy_roster: Option<PathBuf>,
}

/// The shipped pipeline with budgets that never limit (see [`unlimited`]).
pub fn unlimited_pipeline() -> serde_json::Value {
    shipped_pipeline(&repo_root())
        .map(unlimited)
        .unwrap_or_default()
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            envoy_workers: 2,
            mock_args: Vec::new(),
            start_sidecar: true,
            start_envoy: true,
            ports: None,
            run_dir: None,
            sidecar_refresh: None,
            pipeline: None,
            redis: None,
            legacy_roster: None,
        }
    }
}

/// The sidecar's shared key for test and demo runs (never a platform secret).
pub const SIDECAR_KEY: &str = "cxgate-local-sidecar-key-0001";
/// The local key that signs pagination cursors (its own secret, 32+ characters).
pub const CURSOR_KEY: &str = "cxgate-local-cursor-key-000000000001";

/// What a consumer got: status 0 when the request failed in transport.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON (`Null` if it is not).
    pub body: serde_json::Value,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Envoy + sidecar + mocks, torn down on drop (in reverse start order).
pub struct Stack {
    pub ports: Ports,
    pub run_dir: PathBuf,
    pub http: reqwest::blocking::Client,
    // Field order is drop order: the gateway first, then what it talks to.
    pub envoy: Option<Service>,
    pub sidecar: Option<Service>,
    pub mocks: Service,
}

fn unique_run_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    repo_root()
        .join("target/e2e-runs")
        .join(format!("{}-{n}", std::process::id()))
}

/// The sidecar config for the mock platforms. Secrets are named, not written: the mock's demo
/// credentials reach the sidecar through the environment (see [`MOCK_SECRETS`]).
pub fn demo_sidecar_config(ports: &Ports, refresh: Option<serde_json::Value>) -> serde_json::Value {
    let genesys = format!("http://127.0.0.1:{}", ports.genesys);
    let cxone = format!("http://127.0.0.1:{}", ports.cxone);
    let llm_models = format!("http://127.0.0.1:{}/v1/models", ports.llm);
    serde_json::json!({
        "version": 1,
        "listen": format!("127.0.0.1:{}", ports.sidecar),
        "refresh": refresh.unwrap_or_else(|| serde_json::json!({})),
        "metadata": {"seed_queues": true},
        "genesys": {"login_url": genesys, "api_url": genesys,
                    "client_id": {"env": "GENESYS_CLIENT_ID"}, "client_secret": {"env": "GENESYS_CLIENT_SECRET"}},
        "cxone": {"issuer": cxone, "tenant_id": "demo-tenant",
                  "client_id": {"env": "CXONE_CLIENT_ID"}, "client_secret": {"env": "CXONE_CLIENT_SECRET"},
                  "access_key_id": {"env": "CXONE_ACCESS_KEY_ID"}, "access_key_secret": {"env": "CXONE_ACCESS_KEY_SECRET"}},
        "llm": {"api_key": {"env": "LLM_API_KEY"}, "health_url": llm_models},
        // The mock LLM speaks Anthropic's Messages API too, with the same key.
        "anthropic": {"api_key": {"env": "LLM_API_KEY"}},
        "coexistence": {
            "legacy_roster": {"file": repo_root().join("sip/legacy-roster.csv")},
            "poll_s": 60,
            "reconcile_s": 900,
            "sites": {
                "berlin": {"cloud_e911_id": "genesys-location-berlin", "legacy_e911_id": "erl-berlin"},
                "munich": {"cloud_e911_id": "genesys-location-munich", "legacy_e911_id": "erl-munich"}
            }
        }
    })
}

/// The mock platforms' demo credentials (their defaults), as the sidecar's environment.
pub const MOCK_SECRETS: [(&str, &str); 7] = [
    ("GENESYS_CLIENT_ID", "demo-genesys-client"),
    ("GENESYS_CLIENT_SECRET", "demo-genesys-secret"),
    ("CXONE_CLIENT_ID", "demo-cxone-client"),
    ("CXONE_CLIENT_SECRET", "demo-cxone-secret"),
    ("CXONE_ACCESS_KEY_ID", "demo-access-key"),
    ("CXONE_ACCESS_KEY_SECRET", "demo-access-key-secret"),
    ("LLM_API_KEY", "demo-llm-key"),
];

/// Starts the sidecar with `run_dir/sidecar.json` and waits until it answers healthy.
pub fn start_sidecar(ports: &Ports, run_dir: &Path) -> Result<Service, String> {
    start_sidecar_ready_at(ports, run_dir, "/health")
}

/// The same, ready once `path` answers 2xx (`/v1/state` answers before any token exists).
pub fn start_sidecar_ready_at(
    ports: &Ports,
    run_dir: &Path,
    path: &str,
) -> Result<Service, String> {
    let args = vec![
        "--config".to_string(),
        run_dir.join("sidecar.json").display().to_string(),
    ];
    let mut env: Vec<(&str, &str)> = MOCK_SECRETS.to_vec();
    env.push(("CXGATE_SIDECAR_KEY", SIDECAR_KEY));
    let mut s = Service::spawn("sidecar", &bin("cxgate-sidecar"), &args, &env, run_dir)?;
    wait_ready(
        &mut s,
        &format!("http://127.0.0.1:{}{path}", ports.sidecar),
        &[("x-cxgate-sidecar-key", SIDECAR_KEY)],
        Duration::from_secs(20),
    )?;
    Ok(s)
}

/// Renders `envoy/envoy.yaml` for `ports` into `run_dir/<name>.yaml`, starts Envoy and waits
/// until its admin port says ready.
pub fn start_envoy(
    name: &str,
    ports: &Ports,
    run_dir: &Path,
    workers: u32,
    pipeline: serde_json::Value,
) -> Result<Service, String> {
    let key_store = run_dir
        .join("keys")
        .join(format!("{name}-consumer-keys.json"));
    keystore::write_key_store(&key_store, &consumers(&repo_root())?)?;
    let vars = Vars {
        ports: ports.clone(),
        wasm_dir: wasm_dir(),
        pipeline,
        access_log: run_dir.join(format!("{name}-access.log")),
        key_store,
    };
    let template =
        std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).map_err(|e| e.to_string())?;
    let config = render_envoy(&template, &vars)?;
    run_envoy(name, &config, run_dir, ports.admin, workers, "info")
}

/// Writes `config` to `run_dir/<name>.yaml`, starts Envoy with it (`workers` workers, the
/// sidecar key in its environment, base id = admin port) and waits until the admin port at
/// `admin` says ready.
pub fn run_envoy(
    name: &str,
    config: &str,
    run_dir: &Path,
    admin: u16,
    workers: u32,
    log_level: &str,
) -> Result<Service, String> {
    run_envoy_with(name, config, run_dir, admin, workers, log_level, &[])
}

/// [`run_envoy`] with more command-line arguments (a hot restart's `--restart-epoch 1`).
pub fn run_envoy_with(
    name: &str,
    config: &str,
    run_dir: &Path,
    admin: u16,
    workers: u32,
    log_level: &str,
    extra: &[&str],
) -> Result<Service, String> {
    let path = run_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let args = vec![
        "-c".to_string(),
        path.display().to_string(),
        "--concurrency".into(),
        workers.to_string(),
        "--base-id".into(),
        admin.to_string(),
        "--log-level".into(),
        log_level.into(),
        "--component-log-level".into(),
        format!("wasm:{log_level}"),
    ];
    let args: Vec<String> = args
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
    let mut e = Service::spawn(
        name,
        &envoy_bin(),
        &args,
        &[
            ("CXGATE_SIDECAR_KEY", SIDECAR_KEY),
            ("CXGATE_CURSOR_KEY", CURSOR_KEY),
        ],
        run_dir,
    )?;
    wait_ready(
        &mut e,
        &format!("http://127.0.0.1:{admin}/ready"),
        &[],
        Duration::from_secs(60),
    )
    .map_err(|err| format!("{name}: {err}\n{}", e.log_tail(20)))?;
    Ok(e)
}

impl Stack {
    /// Another Envoy in front of the same sidecar and mocks (its own gateway and admin ports).
    pub fn start_another_envoy(
        &self,
        name: &str,
        pipeline: serde_json::Value,
    ) -> Result<(Service, Ports), String> {
        let ports = Ports {
            gateway: free_port(),
            admin: free_port(),
            ..self.ports.clone()
        };
        let e = start_envoy(name, &ports, &self.run_dir, 2, pipeline)?;
        Ok((e, ports))
    }

    /// Starts the sidecar again (after a test stopped it), same port and config.
    pub fn restart_sidecar(&mut self) -> Result<(), String> {
        if let Some(mut old) = self.sidecar.take() {
            old.stop();
        }
        self.sidecar = Some(start_sidecar(&self.ports, &self.run_dir)?);
        Ok(())
    }

    /// Calls the sidecar's API with the shared key.
    pub fn sidecar_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.http
            .post(format!("http://127.0.0.1:{}{path}", self.ports.sidecar))
            .header("x-cxgate-sidecar-key", SIDECAR_KEY)
            .json(&body)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())
    }

    pub fn sidecar_state(&self) -> Result<serde_json::Value, String> {
        self.http
            .get(format!("http://127.0.0.1:{}/v1/state", self.ports.sidecar))
            .header("x-cxgate-sidecar-key", SIDECAR_KEY)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())
    }

    pub fn start(opts: StackOptions) -> Result<Stack, String> {
        let ports = opts.ports.clone().unwrap_or_else(Ports::free);
        let run_dir = opts.run_dir.clone().unwrap_or_else(unique_run_dir);
        std::fs::create_dir_all(&run_dir).map_err(|e| e.to_string())?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;

        let mut args = vec![
            "--genesys".to_string(),
            format!("127.0.0.1:{}", ports.genesys),
            "--cxone".into(),
            format!("127.0.0.1:{}", ports.cxone),
            "--llm".into(),
            format!("127.0.0.1:{}", ports.llm),
        ];
        args.extend(opts.mock_args.iter().cloned());
        let mut mocks = Service::spawn("mocks", &bin("cxgate-mocks"), &args, &[], &run_dir)?;
        for port in [ports.genesys, ports.cxone, ports.llm] {
            wait_ready(
                &mut mocks,
                &format!("http://127.0.0.1:{port}/__mock/health"),
                &[],
                Duration::from_secs(20),
            )?;
        }

        let sidecar_config = run_dir.join("sidecar.json");
        let mut config = demo_sidecar_config(&ports, opts.sidecar_refresh.clone());
        if let Some(url) = &opts.redis {
            config["redis"] = serde_json::json!({"url": url});
        }
        if let Some(file) = &opts.legacy_roster {
            config["coexistence"]["legacy_roster"] = serde_json::json!({"file": file});
        }
        std::fs::write(&sidecar_config, config.to_string()).map_err(|e| e.to_string())?;
        let sidecar = if opts.start_sidecar {
            Some(start_sidecar(&ports, &run_dir)?)
        } else {
            None
        };

        let pipeline = match opts.pipeline.clone() {
            Some(p) => p,
            None => shipped_pipeline(&repo_root())?,
        };
        let envoy = if opts.start_envoy {
            Some(start_envoy(
                "envoy",
                &ports,
                &run_dir,
                opts.envoy_workers,
                pipeline,
            )?)
        } else {
            None
        };
        Ok(Stack {
            ports,
            run_dir,
            http,
            envoy,
            sidecar,
            mocks,
        })
    }

    /// Sends a consumer's request to the gateway: its key, and a JSON body if there is one.
    pub fn send(&self, method: &str, path: &str, key: &str, body: Option<&str>) -> Got {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or_default();
        let mut req = self
            .http
            .request(method, self.gateway_url(path))
            .header("x-api-key", key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        match req.send() {
            Ok(r) => Got {
                status: r.status().as_u16(),
                headers: r.headers().clone(),
                body: r.json().unwrap_or(serde_json::Value::Null),
            },
            Err(e) => Got {
                status: 0,
                headers: Default::default(),
                body: serde_json::json!({"transport_error": error_chain(&e)}),
            },
        }
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.gateway)
    }

    pub fn mock_url(&self, platform: &str, path: &str) -> String {
        let port = match platform {
            "genesys" => self.ports.genesys,
            "cxone" => self.ports.cxone,
            _ => self.ports.llm,
        };
        format!("http://127.0.0.1:{port}{path}")
    }

    /// What a mock received (`GET /__mock/requests`).
    pub fn mock_requests(&self, platform: &str) -> Vec<serde_json::Value> {
        self.http
            .get(self.mock_url(platform, "/__mock/requests"))
            .send()
            .and_then(|r| r.json::<Vec<serde_json::Value>>())
            .unwrap_or_default()
    }

    /// Token grants a mock has issued (`GET /__mock/stats`).
    pub fn mock_grants(&self, platform: &str) -> u64 {
        self.http
            .get(self.mock_url(platform, "/__mock/stats"))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .ok()
            .and_then(|v| v["grants"].as_u64())
            .unwrap_or(0)
    }

    /// What reached a mock through the gateway (Envoy adds `x-request-id`; the sidecar's own
    /// token grants and metadata syncs do not carry it).
    pub fn gateway_requests(&self, platform: &str) -> Vec<serde_json::Value> {
        self.mock_requests(platform)
            .into_iter()
            .filter(|r| r["headers"].get("x-request-id").is_some())
            .collect()
    }

    /// A filter counter once every worker has flushed: workers batch their increments and
    /// flush them on their tick (at most 1 s), so this waits one flush before reading.
    pub fn counter(&self, name: &str) -> Option<u64> {
        std::thread::sleep(Duration::from_millis(1_300));
        self.envoy_stat(name)
    }

    /// A counter or gauge from Envoy's admin `/stats` (filter metrics included), as it is now.
    pub fn envoy_stat(&self, name: &str) -> Option<u64> {
        self.envoy_stat_at(self.ports.admin, name)
    }

    /// The same, from the Envoy whose admin port is `admin` (e.g. a second instance).
    pub fn envoy_stat_at(&self, admin: u16, name: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{admin}/stats?filter={name}"))
            .send()
            .ok()?
            .text()
            .ok()?;
        text.lines()
            .find(|l| {
                l.split(": ")
                    .next()
                    .is_some_and(|n| n == name || n.ends_with(&format!(".{name}")))
            })
            .and_then(|l| l.rsplit(": ").next())
            .and_then(|v| v.trim().parse().ok())
    }

    /// Envoy's log so far (filter logs included).
    pub fn envoy_log(&self) -> String {
        self.envoy
            .as_ref()
            .map(|e| std::fs::read_to_string(&e.log).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// An error with its causes, which is where a transport error says what happened.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
