//! The local stack: Envoy 1.40, the sidecar and the mock platforms on loopback, for the demo
//! (`./cxgate demo`) and the layer-3 tests.
//!
//! [`Stack::start`] renders `envoy/envoy.yaml` with free ports, starts every process, waits
//! until each answers, and kills them all when dropped (also when a test panics). Each
//! child also gets SIGKILL if the harness process dies, so nothing outlives a run.

pub mod process;
pub mod services;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cxgate_deploy::{
    CURSOR_KEY, MOCK_SECRETS, Ports, SIDECAR_KEY, Vars, bin, consumers, demo_sidecar_config,
    envoy_bin, error_chain, free_port, keystore, render_envoy, repo_root, shipped_pipeline,
    unlimited, wasm_dir,
};
pub use process::{Service, wait_ready, wait_ready_with};
pub use services::{start_redis, start_redis_on};

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
