//! Host state, workers and the test-facing driver API.

use crate::abi;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use wasmtime::error::Context;
use wasmtime::{Engine, Func, Instance, Linker, Module, Store, WasmParams, WasmResults};
use wasmtime::{Result, bail, format_err as anyhow};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtxBuilder};

/// Which proxy the host imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Envoy 1.40: `dispatch_http_call` names a cluster; Envoy's CAS rules.
    Envoy,
    /// Kong 3.9 (ngx_wasm_module): `host:port` upstreams, Kong's CAS rules, and no gRPC,
    /// `on_queue_ready`, `proxy_get_log_level`, `proxy_done`, trailers, metadata properties or
    /// pausing in response headers.
    Kong,
}

/// What a header or body callback returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
    Other(i32),
}

impl Action {
    fn from_raw(raw: i32) -> Action {
        match raw {
            0 => Action::Continue,
            1 => Action::Pause,
            other => Action::Other(other),
        }
    }
}

/// A stream (HTTP context) on one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stream {
    pub worker: usize,
    pub id: u32,
}

/// A local reply a filter sent instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub details: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalReply {
    /// The body as an RFC 9457 problem; fails unless the reply is `application/problem+json`.
    pub fn problem(&self) -> Result<serde_json::Value> {
        if self.header("content-type") != Some("application/problem+json") {
            return Err(anyhow!("not a problem reply: {:?}", self.headers));
        }
        Ok(serde_json::from_slice(&self.body)?)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub worker: usize,
    pub level: u32,
    pub message: String,
}

/// An outbound call a filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub token: u32,
    pub worker: usize,
    pub context_id: u32,
    pub upstream: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u32,
    pub dispatched_ns: u64,
}

impl CallInfo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or_default()
    }
}

/// How a call is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallReply {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The call timed out or the upstream failed: the filter is called with no headers.
    Failure,
}

impl CallReply {
    pub fn json(status: u16, body: &str) -> CallReply {
        CallReply::Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

type Responder = Box<dyn FnMut(&CallInfo) -> Option<CallReply> + Send>;

pub(crate) struct Metric {
    pub name: String,
    pub kind: i32,
    pub value: i64,
}

pub(crate) struct Queue {
    pub name: String,
    pub worker: usize,
    pub context_id: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// State shared by every worker (and every filter loaded over the same store).
#[derive(Default)]
pub(crate) struct Shared {
    pub kv: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    pub metrics: Vec<Metric>,
    pub logs: Vec<LogRecord>,
    pub violations: Vec<String>,
    pub calls: Vec<CallInfo>,
    pub next_token: u32,
    pub queues: Vec<Queue>,
    pub queue_ready: Vec<(usize, u32, u32)>,
    pub responder: Option<Responder>,
    pub host_calls: HashMap<&'static str, u64>,
    /// Conditional writes still to lose a race to a simulated concurrent writer.
    pub races: u32,
    pub cas_mismatches: u64,
}

/// A handle on one shared store, to load several filters over the same shared data.
#[derive(Clone, Default)]
pub struct SharedHandle {
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) clock: Arc<AtomicU64>,
}

/// Per-stream state.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamState {
    pub request_headers: Vec<(String, String)>,
    pub request_trailers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_headers: Vec<(String, String)>,
    pub response_trailers: Vec<(String, String)>,
    pub response_body: Vec<u8>,
    pub local_reply: Option<LocalReply>,
    pub request_continued: u32,
    pub response_continued: u32,
    pub request_body_paused: bool,
    pub response_body_paused: bool,
}

#[derive(Default)]
pub(crate) struct CallResponse {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Store data of one worker VM.
pub(crate) struct State {
    pub wasi: WasiP1Ctx,
    pub shared: Arc<Mutex<Shared>>,
    pub clock: Arc<AtomicU64>,
    pub profile: Profile,
    pub worker: usize,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub clusters: Arc<Vec<String>>,
    pub properties: Arc<HashMap<String, Vec<u8>>>,
    pub root_id: u32,
    pub effective: u32,
    pub streams: HashMap<u32, StreamState>,
    pub call_response: Option<CallResponse>,
    pub tick_period_ms: u32,
    pub next_tick_ns: Option<u64>,
    pub deferred: Vec<(u32, CallReply)>,
    pub log_level: u32,
    /// The guest's memory and allocator, looked up once after instantiation (as a proxy does),
    /// so that a host call's cost is the call's, not an export lookup by name.
    pub guest: Option<crate::memory::Guest>,
}

impl State {
    pub fn shared(&self) -> MutexGuard<'_, Shared> {
        // A poisoned lock only means another test thread panicked; the data is still usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn now_ns(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }
    pub fn count(&self, name: &'static str) {
        *self.shared().host_calls.entry(name).or_default() += 1;
    }
    pub fn violation(&self, what: &str) -> wasmtime::Error {
        let msg = format!("kong profile: {what} is not supported by Kong's ngx_wasm_module");
        self.shared().violations.push(msg.clone());
        anyhow!(msg)
    }
}

struct VirtualWall(Arc<AtomicU64>);
impl HostWallClock for VirtualWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}
struct VirtualMono(Arc<AtomicU64>);
impl HostMonotonicClock for VirtualMono {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One worker: its own VM instance and root context.
pub struct Worker {
    store: Store<State>,
    instance: Instance,
    next_context: u32,
    /// Exports by name, looked up once: a proxy resolves its callbacks at load time.
    funcs: HashMap<String, Func>,
}

const ROOT_ID: u32 = 1;

impl Worker {
    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<R> {
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

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_export(&mut self.store, name).is_some()
    }

    fn state(&self) -> &State {
        self.store.data()
    }

    fn state_mut(&mut self) -> &mut State {
        self.store.data_mut()
    }

    fn stream(&self, id: u32) -> Result<&StreamState> {
        self.state()
            .streams
            .get(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    fn stream_mut(&mut self, id: u32) -> Result<&mut StreamState> {
        self.state_mut()
            .streams
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no stream {id}"))
    }

    fn deliver(&mut self, token: u32, context_id: u32, reply: CallReply) -> Result<()> {
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
    fn settle(&mut self) -> Result<()> {
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

    fn tick(&mut self) -> Result<()> {
        self.state_mut().effective = ROOT_ID;
        self.call::<i32, ()>("proxy_on_tick", ROOT_ID as i32)?;
        self.settle()
    }
}

/// Builds a [`Host`].
pub struct HostBuilder {
    wasm: PathBuf,
    profile: Profile,
    workers: usize,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    clusters: Vec<String>,
    properties: HashMap<String, Vec<u8>>,
    start_ms: u64,
    shared: Option<SharedHandle>,
    env: Vec<(String, String)>,
}

impl HostBuilder {
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
        let handle = self.shared.unwrap_or_else(|| {
            let h = SharedHandle::default();
            h.clock.store(self.start_ms * 1_000_000, Ordering::SeqCst);
            h
        });
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)?;
        abi::link(&mut linker)?;
        let clusters = Arc::new(self.clusters);
        let properties = Arc::new(self.properties);
        let mut workers = Vec::new();
        for index in 0..self.workers {
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
                clusters: clusters.clone(),
                properties: properties.clone(),
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
            let mut store = Store::new(&engine, state);
            let instance = linker.instantiate(&mut store, module)?;
            store.data_mut().guest = crate::memory::Guest::of(&instance, &mut store);
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
            if worker.call::<(i32, i32), i32>("proxy_on_configure", (ROOT_ID as i32, cfg_len))? == 0
            {
                let logs: Vec<String> = worker
                    .state()
                    .shared()
                    .logs
                    .iter()
                    .map(|l| l.message.clone())
                    .collect();
                bail!("on_configure returned false on worker {index}; filter log: {logs:?}");
            }
            worker.settle()?;
            workers.push(worker);
        }
        Ok(Host {
            profile: self.profile,
            handle,
            workers,
        })
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
    let module: &'static Module = Box::leak(Box::new(Module::new(&engine, bytes)?));
    modules.insert(path.to_path_buf(), module);
    Ok((engine, module))
}

/// A proxy with N workers running one filter.
pub struct Host {
    profile: Profile,
    handle: SharedHandle,
    workers: Vec<Worker>,
}

impl Host {
    pub fn builder(wasm: impl Into<PathBuf>) -> HostBuilder {
        HostBuilder {
            wasm: wasm.into(),
            profile: Profile::Envoy,
            workers: 1,
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            clusters: Vec::new(),
            properties: HashMap::new(),
            start_ms: 1_767_225_600_000,
            shared: None,
            env: Vec::new(),
        }
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The size of a worker's linear memory: what the module's heap has grown to.
    pub fn guest_memory_bytes(&mut self, worker: usize) -> Result<usize> {
        let w = self.worker(worker)?;
        let memory = w.store.data().guest.as_ref().and_then(|g| g.memory());
        Ok(memory.map_or(0, |m| m.data_size(&w.store)))
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.handle.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker(&mut self, index: usize) -> Result<&mut Worker> {
        self.workers
            .get_mut(index)
            .ok_or_else(|| anyhow!("no worker {index}"))
    }

    // ---- streams ----

    pub fn new_stream(&mut self, worker: usize) -> Result<Stream> {
        let w = self.worker(worker)?;
        let id = w.next_context;
        w.next_context += 1;
        w.state_mut().streams.insert(id, StreamState::default());
        w.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, ROOT_ID as i32))?;
        Ok(Stream { worker, id })
    }

    fn header_callback(
        &mut self,
        s: Stream,
        export: &str,
        request: bool,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let kong = self.profile == Profile::Kong;
        let w = self.worker(s.worker)?;
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let st = w.stream_mut(s.id)?;
        if request {
            st.request_headers = pairs;
        } else {
            st.response_headers = pairs;
        }
        w.state_mut().effective = s.id;
        // Kong always reports end_of_stream = false in header callbacks.
        let eos = i32::from(end_of_stream && !kong);
        let n = headers.len() as i32;
        let raw = w.call::<(i32, i32, i32), i32>(export, (s.id as i32, n, eos))?;
        w.settle()?;
        let action = Action::from_raw(raw);
        if kong && !request && action != Action::Continue && self.local_reply(s).is_none() {
            let msg = "kong profile: pausing in response headers is not supported by Kong's ngx_wasm_module".to_string();
            self.shared().violations.push(msg.clone());
            bail!(msg);
        }
        Ok(action)
    }

    fn body_callback(
        &mut self,
        s: Stream,
        export: &str,
        request: bool,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action> {
        let w = self.worker(s.worker)?;
        let st = w.stream_mut(s.id)?;
        let (buf, paused) = if request {
            (&mut st.request_body, st.request_body_paused)
        } else {
            (&mut st.response_body, st.response_body_paused)
        };
        // A paused (buffering) filter sees the whole body so far; otherwise just the chunk.
        if !paused {
            buf.clear();
        }
        buf.extend_from_slice(chunk);
        let size = buf.len() as i32;
        w.state_mut().effective = s.id;
        let raw =
            w.call::<(i32, i32, i32), i32>(export, (s.id as i32, size, i32::from(end_of_stream)))?;
        let action = Action::from_raw(raw);
        let st = w.stream_mut(s.id)?;
        if request {
            st.request_body_paused = action == Action::Pause;
        } else {
            st.response_body_paused = action == Action::Pause;
        }
        w.settle()?;
        Ok(action)
    }

    pub fn request_headers(
        &mut self,
        s: Stream,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        self.header_callback(s, "proxy_on_request_headers", true, headers, end_of_stream)
    }

    pub fn request_body(&mut self, s: Stream, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        self.body_callback(s, "proxy_on_request_body", true, chunk, end_of_stream)
    }

    pub fn response_headers(
        &mut self,
        s: Stream,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        self.header_callback(
            s,
            "proxy_on_response_headers",
            false,
            headers,
            end_of_stream,
        )
    }

    pub fn response_body(
        &mut self,
        s: Stream,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action> {
        self.body_callback(s, "proxy_on_response_body", false, chunk, end_of_stream)
    }

    /// Ends the stream: `on_done`, `on_log`, `on_delete`; its pending calls are cancelled.
    pub fn finish(&mut self, s: Stream) -> Result<()> {
        let w = self.worker(s.worker)?;
        w.state_mut().effective = s.id;
        w.call::<i32, i32>("proxy_on_done", s.id as i32)?;
        w.call::<i32, ()>("proxy_on_log", s.id as i32)?;
        w.call::<i32, ()>("proxy_on_delete", s.id as i32)?;
        w.state_mut().streams.remove(&s.id);
        self.shared()
            .calls
            .retain(|c| !(c.worker == s.worker && c.context_id == s.id));
        Ok(())
    }

    /// Request headers as they would leave the proxy (after the filter's changes).
    pub fn upstream_request_headers(&self, s: Stream) -> Result<Vec<(String, String)>> {
        let w = self
            .workers
            .get(s.worker)
            .ok_or_else(|| anyhow!("no worker"))?;
        Ok(w.stream(s.id)?.request_headers.clone())
    }

    pub fn downstream_response_headers(&self, s: Stream) -> Result<Vec<(String, String)>> {
        let w = self
            .workers
            .get(s.worker)
            .ok_or_else(|| anyhow!("no worker"))?;
        Ok(w.stream(s.id)?.response_headers.clone())
    }

    pub fn request_header(&self, s: Stream, name: &str) -> Option<String> {
        let headers = self.upstream_request_headers(s).ok()?;
        headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn response_header(&self, s: Stream, name: &str) -> Option<String> {
        let headers = self.downstream_response_headers(s).ok()?;
        headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn request_body_bytes(&self, s: Stream) -> Vec<u8> {
        self.workers
            .get(s.worker)
            .and_then(|w| w.stream(s.id).ok())
            .map(|st| st.request_body.clone())
            .unwrap_or_default()
    }

    /// The response body as it leaves the proxy (after the filter's changes).
    pub fn response_body_bytes(&self, s: Stream) -> Vec<u8> {
        self.workers
            .get(s.worker)
            .and_then(|w| w.stream(s.id).ok())
            .map(|st| st.response_body.clone())
            .unwrap_or_default()
    }

    pub fn local_reply(&self, s: Stream) -> Option<LocalReply> {
        self.workers
            .get(s.worker)?
            .stream(s.id)
            .ok()?
            .local_reply
            .clone()
    }

    /// How many times the filter resumed the paused request.
    pub fn request_continued(&self, s: Stream) -> u32 {
        self.workers
            .get(s.worker)
            .and_then(|w| w.stream(s.id).ok())
            .map(|st| st.request_continued)
            .unwrap_or(0)
    }

    // ---- time ----

    pub fn now_ms(&self) -> u64 {
        self.handle.clock.load(Ordering::SeqCst) / 1_000_000
    }

    /// Fires `on_tick` on every worker that asked for ticks, now.
    pub fn tick_all(&mut self) -> Result<()> {
        for i in 0..self.workers.len() {
            self.tick(i)?;
        }
        Ok(())
    }

    /// Fires `on_tick` on one worker (e.g. to let only some workers run).
    pub fn tick(&mut self, worker: usize) -> Result<()> {
        let w = self.worker(worker)?;
        if w.state().tick_period_ms > 0 {
            w.tick()?;
        }
        self.settle_queues()
    }

    /// Moves the virtual clock forward, firing each worker's ticks and each call timeout in
    /// time order as they come due. `skip` lists workers that are "dead" (never tick).
    pub fn advance_skipping(&mut self, by: Duration, skip: &[usize]) -> Result<()> {
        let target = self.handle.clock.load(Ordering::SeqCst) + by.as_nanos() as u64;
        loop {
            let tick = self
                .workers
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .filter_map(|(i, w)| w.state().next_tick_ns.map(|t| (t, i)))
                .min();
            let timeout = self
                .shared()
                .calls
                .iter()
                .filter(|c| c.timeout_ms > 0)
                .map(|c| {
                    (
                        c.dispatched_ns + u64::from(c.timeout_ms) * 1_000_000,
                        c.token,
                    )
                })
                .min();
            match (tick, timeout) {
                (Some((t, i)), to) if t <= target && to.is_none_or(|(d, _)| t <= d) => {
                    self.handle.clock.store(t, Ordering::SeqCst);
                    let w = self.worker(i)?;
                    let period = u64::from(w.state().tick_period_ms) * 1_000_000;
                    w.state_mut().next_tick_ns = (period > 0).then_some(t + period);
                    w.tick()?;
                    self.settle_queues()?;
                }
                (_, Some((d, token))) if d <= target => {
                    self.handle.clock.store(d, Ordering::SeqCst);
                    self.fail(token)?;
                }
                _ => break,
            }
        }
        self.handle.clock.store(target, Ordering::SeqCst);
        Ok(())
    }

    pub fn advance(&mut self, by: Duration) -> Result<()> {
        self.advance_skipping(by, &[])
    }

    // ---- callouts ----

    /// Calls dispatched and not answered yet.
    pub fn pending_calls(&self) -> Vec<CallInfo> {
        self.shared().calls.clone()
    }

    /// Scripts answers: called for every new dispatch; `Some` answers it right after the
    /// dispatching callback returns, `None` leaves it pending for the test.
    pub fn respond_with(&mut self, f: impl FnMut(&CallInfo) -> Option<CallReply> + Send + 'static) {
        self.shared().responder = Some(Box::new(f));
    }

    pub fn reply(&mut self, token: u32, reply: CallReply) -> Result<()> {
        let call = {
            let mut shared = self.shared();
            let pos = shared
                .calls
                .iter()
                .position(|c| c.token == token)
                .ok_or_else(|| anyhow!("no pending call {token}"))?;
            shared.calls.remove(pos)
        };
        let w = self.worker(call.worker)?;
        w.deliver(token, call.context_id, reply)?;
        w.settle()?;
        self.settle_queues()
    }

    /// Fails a pending call (timeout / connection failure).
    pub fn fail(&mut self, token: u32) -> Result<()> {
        self.reply(token, CallReply::Failure)
    }

    // ---- shared data ----

    pub fn handle(&self) -> SharedHandle {
        self.handle.clone()
    }

    pub fn shared_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared().kv.get(key).map(|(v, _)| v.clone())
    }

    /// Writes shared data as an outside party would (e.g. a test seeding state).
    pub fn put_shared(&self, key: &str, value: &[u8]) {
        let mut shared = self.shared();
        shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
        let cas = shared.next_cas;
        shared.kv.insert(key.to_string(), (value.to_vec(), cas));
    }

    /// The next `n` conditional writes to an existing key lose a race: another writer bumps
    /// the key's CAS just before each of them.
    pub fn race_next_writes(&self, n: u32) {
        self.shared().races = n;
    }

    pub fn cas_mismatches(&self) -> u64 {
        self.shared().cas_mismatches
    }

    // ---- records ----

    pub fn logs(&self) -> Vec<LogRecord> {
        self.shared().logs.clone()
    }

    pub fn logs_containing(&self, needle: &str) -> Vec<LogRecord> {
        self.logs()
            .into_iter()
            .filter(|l| l.message.contains(needle))
            .collect()
    }

    /// Calls the kong profile refused; a clean filter has none.
    pub fn violations(&self) -> Vec<String> {
        self.shared().violations.clone()
    }

    pub fn metric(&self, name: &str) -> Option<i64> {
        self.shared()
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// Host calls made so far, by ABI function name.
    pub fn host_calls(&self) -> HashMap<&'static str, u64> {
        self.shared().host_calls.clone()
    }

    pub fn reset_host_calls(&self) {
        self.shared().host_calls.clear();
    }

    fn settle_queues(&mut self) -> Result<()> {
        if self.profile == Profile::Kong {
            self.shared().queue_ready.clear();
            return Ok(());
        }
        loop {
            let ready = std::mem::take(&mut self.shared().queue_ready);
            if ready.is_empty() {
                return Ok(());
            }
            for (worker, context_id, queue) in ready {
                let w = self.worker(worker)?;
                w.state_mut().effective = context_id;
                w.call::<(i32, i32), ()>(
                    "proxy_on_queue_ready",
                    (context_id as i32, queue as i32),
                )?;
                w.settle()?;
            }
        }
    }
}
