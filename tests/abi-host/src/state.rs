//! What the host keeps: the store shared by all workers, each worker's store data, and the
//! virtual clocks WASI reads.

use crate::types::*;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::format_err as anyhow;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

pub(crate) type Responder = Box<dyn FnMut(&CallInfo) -> Option<CallReply> + Send>;

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
    pub recycles: Vec<String>,
    pub calls: Vec<CallInfo>,
    pub next_token: u32,
    pub queues: Vec<Queue>,
    pub queue_ready: Vec<(usize, u32, u32)>,
    pub responder: Option<Responder>,
    pub host_calls: HashMap<&'static str, u64>,
    /// Conditional writes still to lose a race to a simulated concurrent writer.
    pub races: u32,
    pub cas_mismatches: u64,
    /// Kong's shm_kv zones (name, bytes); see [`Shared::zone_of`].
    pub zones: Vec<(String, usize)>,
    /// Bytes each zone holds, kept as entries come and go.
    pub zone_used: HashMap<String, usize>,
}

/// What a shm_kv entry costs beyond its key and value (nginx slab and rbtree node), roughly.
pub const ZONE_ENTRY_OVERHEAD: usize = 64;
/// The zone Kong's shipped `kong.conf` declares (`nginx_wasm_shm_kv = 16m`, the `*` zone).
pub const KONG_DEFAULT_ZONE: usize = 16 * 1024 * 1024;

impl Shared {
    /// Kong's key resolution: the zone named by the part before the first `/` if there is one,
    /// else the `*` zone; `None` when neither exists (Kong traps).
    pub fn zone_of(&self, key: &str) -> Option<&str> {
        let named = |name: &str| {
            self.zones
                .iter()
                .find(|(n, _)| n == name)
                .map(|(n, _)| n.as_str())
        };
        key.split_once('/')
            .and_then(|(prefix, _)| named(prefix))
            .or_else(|| named("*"))
    }

    /// Bytes the keys of `zone` take (keys are stored whole, with their prefix).
    pub fn zone_bytes(&self, zone: &str) -> usize {
        self.zone_used.get(zone).copied().unwrap_or(0)
    }

    /// What an entry of `key` with a value of `len` bytes takes in its zone.
    pub fn entry_bytes(key: &str, len: usize) -> usize {
        key.len() + len + ZONE_ENTRY_OVERHEAD
    }

    /// Writes (`Some`) or deletes (`None`) an entry, keeping the zones' usage.
    pub fn put(&mut self, key: String, entry: Option<(Vec<u8>, u32)>) {
        let old = match &entry {
            Some(e) => self.kv.insert(key.clone(), e.clone()),
            None => self.kv.remove(&key),
        };
        let Some(zone) = self.zone_of(&key).map(str::to_string) else {
            return;
        };
        let used = self.zone_used.entry(zone).or_default();
        if let Some((v, _)) = old {
            *used = used.saturating_sub(Self::entry_bytes(&key, v.len()));
        }
        if let Some((v, _)) = entry {
            *used += Self::entry_bytes(&key, v.len());
        }
    }
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
    /// The response phase started (Kong treats a local reply from it differently).
    pub in_response: bool,
    /// What the filter set with `proxy_set_property`, in order (Envoy: filter state).
    pub properties: Vec<(String, String)>,
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
    pub guest: Option<crate::guest::Guest>,
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

pub(crate) struct VirtualWall(pub(crate) Arc<AtomicU64>);
impl HostWallClock for VirtualWall {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}
pub(crate) struct VirtualMono(pub(crate) Arc<AtomicU64>);
impl HostMonotonicClock for VirtualMono {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
