//! One worker VM and the builder that loads a module into N of them.

use super::Host;
use crate::abi;
use crate::state::*;
use crate::types::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::error::Context;
use wasmtime::{Engine, Func, Instance, Linker, Module, Store, WasmParams, WasmResults};
use wasmtime::{Result, bail, format_err as anyhow};
use wasmtime_wasi::WasiCtxBuilder;

/// One worker: its own VM instance and root context.
pub struct Worker {
    pub(crate) store: Store<State>,
    pub(crate) instance: Instance,
    pub(crate) next_context: u32,
    /// Exports by name, looked up once: a proxy resolves its callbacks at load time.
    pub(crate) funcs: HashMap<String, Func>,
}

pub(crate) const ROOT_ID: u32 = 1;

impl Worker {
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &str,
        params: P,
    ) -> Result<R> {
        let func = match self.funcs.get(name) {
            Some(func) => *func,
            None => {
                let func = self
                    .instance
                    .get_func(&mut self.store, name)
                    .with_context(|| format!("filter does not export {name}"))?;
                self.funcs.insert(name.to_string(), func);
                func
            }
        };
        func.typed::<P, R>(&self.store)?
            .call(&mut self.store, params)
            .with_context(|| format!("{name} trapped"))
    }

    pub(crate) fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_export(&mut self.store, name).is_some()
    }

    pub(crate) fn state(&self) -> &State {
        self.store.data()
    }

    pub(crate) fn state_mut(&mut self) -> &mut State {
        self.store.data_mut()
    }

    pub(crate) fn stream(&self, id: u32) -> Result<&StreamState> {
        self.state()
            .streams
            .get(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    pub(crate) fn stream_mut(&mut self, id: u32) -> Result<&mut StreamState> {
        self.state_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    pub(crate) fn deliver(&mut self, token: u32, context_id: u32, reply: CallReply) -> Result<()> {
        let (response, nheaders, body_len) = match reply {
            CallReply::Response {
                status,
                mut headers,
                body,
            } => {
                headers.insert(0, (":status".into(), status.to_string()));
                let n = headers.len() as i32;
                let len = body.len() as i32;
                (CallResponse { headers, body }, n, len)
            }
            // Kong answers a failed dispatch with zero headers, yet a `:dispatch_status`
            // pseudo-header can be read (measured); Envoy with no headers at all.
            CallReply::Failure if self.state().profile == Profile::Kong => {
                let headers = vec![(":dispatch_status".into(), "timeout".into())];
                (
                    CallResponse {
                        headers,
                        body: Vec::new(),
                    },
                    0,
                    0,
                )
            }
            CallReply::Failure => (CallResponse::default(), 0, 0),
        };
        self.state_mut().call_response = Some(response);
        self.state_mut().effective = context_id;
        let out = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (context_id as i32, token as i32, nheaders, body_len, 0),
        );
        self.state_mut().call_response = None;
        out
    }

    /// Answers the replies scripted responders produced while the last callback ran.
    pub(crate) fn settle(&mut self) -> Result<()> {
        for _ in 0..10_000 {
            let deferred = std::mem::take(&mut self.state_mut().deferred);
            if deferred.is_empty() {
                return Ok(());
            }
            for (token, reply) in deferred {
                let call = {
                    let mut shared = self.state().shared();
                    let pos = shared.calls.iter().position(|c| c.token == token);
                    pos.map(|p| shared.calls.remove(p))
                };
                if let Some(call) = call {
                    self.deliver(token, call.context_id, reply)?;
                }
            }
        }
        bail!("scripted responders kept answering: more than 10000 rounds")
    }

    pub(crate) fn tick(&mut self) -> Result<()> {
        self.state_mut().effective = ROOT_ID;
        self.call::<i32, ()>("proxy_on_tick", ROOT_ID as i32)?;
        self.settle()
    }
}

/// Builds a [`Host`].
pub struct HostBuilder {
    pub(crate) wasm: PathBuf,
    pub(crate) profile: Profile,
    pub(crate) workers: usize,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) clusters: Vec<String>,
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) start_ms: u64,
    pub(crate) shared: Option<SharedHandle>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) zones: Option<Vec<(String, usize)>>,
}

impl HostBuilder {
    /// Kong profile: the shm_kv zones (name, bytes); default the shipped `kong.conf`'s one
    /// `*` zone of 16 MiB. No zone at all: every shared-data call traps, as on Kong.
    pub fn kong_zones(mut self, zones: &[(&str, usize)]) -> Self {
        self.zones = Some(zones.iter().map(|(n, b)| (n.to_string(), *b)).collect());
        self
    }

    /// An environment variable of every worker VM (Envoy: `host_env_keys`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    pub fn config(mut self, json: &str) -> Self {
        self.plugin_config = json.as_bytes().to_vec();
        self
    }
    pub fn vm_config(mut self, bytes: &[u8]) -> Self {
        self.vm_config = bytes.to_vec();
        self
    }
    /// Envoy profile: the cluster names `dispatch_http_call` may use.
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.push(name.to_string());
        self
    }
    /// A property for `proxy_get_property`, path segments joined by '.'.
    pub fn property(mut self, path: &str, value: &[u8]) -> Self {
        self.properties.insert(path.to_string(), value.to_vec());
        self
    }
    /// Virtual wall-clock start, in ms since the epoch.
    pub fn start_ms(mut self, ms: u64) -> Self {
        self.start_ms = ms;
        self
    }
    /// Share the store (and clock) of another host: several filters over one shared data.
    pub fn share(mut self, other: &Host) -> Self {
        self.shared = Some(other.handle.clone());
        self
    }

    /// Instantiates every worker and runs `on_vm_start` and `on_configure` in each. A filter
    /// that rejects its config makes this fail, with the filter's log in the error.
    pub fn start(self) -> Result<Host> {
        let (engine, module) = compiled(&self.wasm)?;
        if self.profile == Profile::Kong {
            let imports_log_level = module
                .imports()
                .any(|i| i.module() == "env" && i.name() == "proxy_get_log_level");
            if imports_log_level {
                bail!(
                    "kong profile: {} imports proxy_get_log_level, which Kong declares with a wrong signature: the module does not load and nginx starts no workers",
                    self.wasm.display()
                );
            }
        }
        let zones = self
            .zones
            .unwrap_or_else(|| vec![("*".to_string(), crate::state::KONG_DEFAULT_ZONE)]);
        let handle = self.shared.unwrap_or_else(|| {
            let h = SharedHandle::default();
            h.clock.store(self.start_ms * 1_000_000, Ordering::SeqCst);
            h.shared.lock().unwrap_or_else(|e| e.into_inner()).zones = zones;
            h
        });
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
        abi::link(&mut linker)?;
        let recipe = Arc::new(Recipe {
            wasm: self.wasm,
            engine,
            module,
            linker,
            profile: self.profile,
            handle: handle.clone(),
            plugin_config: self.plugin_config,
            vm_config: self.vm_config,
            clusters: Arc::new(self.clusters),
            properties: Arc::new(self.properties),
            env: self.env,
        });
        let mut workers = Vec::new();
        for index in 0..self.workers {
            workers.push(recipe.worker(index)?);
        }
        Ok(Host {
            profile: recipe.profile,
            handle,
            workers,
            recipe,
        })
    }
}

/// What it takes to make a worker again (Kong recycles an instance that trapped in on_tick).
pub(crate) struct Recipe {
    wasm: PathBuf,
    #[allow(dead_code)]
    engine: Engine,
    module: &'static Module,
    linker: Linker<State>,
    profile: Profile,
    handle: SharedHandle,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    clusters: Arc<Vec<String>>,
    properties: Arc<HashMap<String, Vec<u8>>>,
    env: Vec<(String, String)>,
}

impl Recipe {
    /// A fresh instance: `on_vm_start` and `on_configure` run in it.
    pub(crate) fn worker(&self, index: usize) -> Result<Worker> {
        let handle = &self.handle;
        let wasi = WasiCtxBuilder::new()
            .envs(&self.env)
            .inherit_stderr()
            .wall_clock(VirtualWall(handle.clock.clone()))
            .monotonic_clock(VirtualMono(handle.clock.clone()))
            .build_p1();
        let state = State {
            wasi,
            shared: handle.shared.clone(),
            clock: handle.clock.clone(),
            profile: self.profile,
            worker: index,
            plugin_config: self.plugin_config.clone(),
            vm_config: self.vm_config.clone(),
            clusters: self.clusters.clone(),
            properties: self.properties.clone(),
            root_id: ROOT_ID,
            effective: ROOT_ID,
            streams: HashMap::new(),
            call_response: None,
            tick_period_ms: 0,
            next_tick_ns: None,
            deferred: Vec::new(),
            log_level: 2,
            guest: None,
        };
        let mut store = Store::new(self.module.engine(), state);
        let instance = self.linker.instantiate(&mut store, self.module)?;
        store.data_mut().guest = crate::guest::Guest::of(&instance, &mut store);
        let mut worker = Worker {
            store,
            instance,
            next_context: ROOT_ID + 1,
            funcs: HashMap::new(),
        };
        if !worker.has_export("proxy_abi_version_0_2_1") {
            bail!(
                "{} does not export proxy_abi_version_0_2_1",
                self.wasm.display()
            );
        }
        if worker.has_export("_initialize") {
            worker.call::<(), ()>("_initialize", ())?;
        }
        worker.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT_ID as i32, 0))?;
        let vm_len = worker.state().vm_config.len() as i32;
        if worker.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT_ID as i32, vm_len))? == 0 {
            bail!("on_vm_start returned false on worker {index}");
        }
        let cfg_len = worker.state().plugin_config.len() as i32;
        if worker.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_ID as i32, cfg_len))? == 0 {
            let logs: Vec<String> = worker
                .state()
                .shared()
                .logs
                .iter()
                .map(|l| l.message.clone())
                .collect();
            if self.profile == Profile::Kong {
                bail!(
                    "kong profile: on_configure returned false on worker {index}: the worker exits for good and requests hang (fatal); filter log: {logs:?}"
                );
            }
            bail!("on_configure returned false on worker {index}; filter log: {logs:?}");
        }
        worker.settle()?;
        Ok(worker)
    }
}

/// Compiles each .wasm once per test process.
fn compiled(path: &Path) -> Result<(Engine, &'static Module)> {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, &'static Module>>> = OnceLock::new();
    let engine = ENGINE.get_or_init(Engine::default).clone();
    let mut modules = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(m) = modules.get(path) {
        return Ok((engine, m));
    }
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {} (build the filters first: ./cxgate build)",
            path.display()
        )
    })?;
    let module: &'static Module = Box::leak(Box::new(cached_compile(&engine, &bytes)?));
    modules.insert(path.to_path_buf(), module);
    Ok((engine, module))
}

/// Compiles a module, or loads what an earlier test process compiled from the same bytes.
///
/// Each test may run in its own process (cargo-nextest), and compiling the pipeline's 5 MB
/// module takes seconds, so the compiled code is kept in the build's target directory
/// (`target/debug/abi-host-cache/<hash of the bytes>.cwasm`), written to a temporary name and
/// renamed.
/// Wasmtime checks that a serialized module matches its version and settings when loading;
/// a mismatch, or any error, falls back to compiling.
fn cached_compile(engine: &Engine, bytes: &[u8]) -> Result<Module> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    let dir = cache_dir();
    let file = dir.join(format!("{:016x}-{}.cwasm", h.finish(), bytes.len()));
    if file.exists() {
        // SAFETY: the file is one this function wrote with `Module::serialize` for these exact
        // bytes; wasmtime rejects a file from another version or configuration.
        if let Ok(m) = unsafe { Module::deserialize_file(engine, &file) } {
            return Ok(m);
        }
    }
    let module = Module::new(engine, bytes)?;
    if let Ok(code) = module.serialize() {
        let tmp = dir.join(format!(".{}.{}", std::process::id(), h.finish()));
        let _ = std::fs::create_dir_all(&dir);
        if std::fs::write(&tmp, code).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
    Ok(module)
}

/// `target/<profile>/abi-host-cache`: two levels above the test executable (`deps/`), or the
/// system's temporary directory when run from elsewhere.
fn cache_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("abi-host-cache")))
        .unwrap_or_else(|| std::env::temp_dir().join("cxgate-abi-host-cache"))
}
