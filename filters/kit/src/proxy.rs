//! The host traits over the proxy-wasm ABI (0.2.1), implemented once for every filter.
//!
//! The SDK's `hostcalls` wrappers panic on any status they do not expect, and a panic kills
//! the VM (and, fail-closed, the traffic). So this module calls the ABI imports itself and
//! maps every status to a [`HostError`]. The SDK is still used for context dispatch.

use crate::error::HostError;
use crate::host::{
    Callout, Cas, CasDialect, Clock, Entropy, Expect, Headers, HttpCallout, Metrics, SharedStore,
    Versioned,
};
use crate::problem::LocalReply;
use crate::wire::{deserialize_pairs, serialize_pairs};
use std::ptr::null_mut;

mod abi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        pub fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
        pub fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub fn proxy_get_buffer_bytes(
            kind: u32,
            start: usize,
            max: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub fn proxy_get_header_map_pairs(
            map: u32,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
        pub fn proxy_replace_header_map_value(
            map: u32,
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
        ) -> u32;
        pub fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
        pub fn proxy_get_shared_data(
            key: *const u8,
            key_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
            ret_cas: *mut u32,
        ) -> u32;
        pub fn proxy_set_shared_data(
            key: *const u8,
            key_size: usize,
            value: *const u8,
            value_size: usize,
            cas: u32,
        ) -> u32;
        pub fn proxy_send_local_response(
            status: u32,
            details: *const u8,
            details_size: usize,
            body: *const u8,
            body_size: usize,
            headers: *const u8,
            headers_size: usize,
            grpc_status: i32,
        ) -> u32;
        pub fn proxy_continue_stream(stream: u32) -> u32;
        pub fn proxy_define_metric(
            kind: u32,
            name: *const u8,
            name_size: usize,
            ret_id: *mut u32,
        ) -> u32;
        pub fn proxy_increment_metric(id: u32, offset: i64) -> u32;
        pub fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub fn proxy_set_buffer_bytes(
            kind: u32,
            start: usize,
            size: usize,
            data: *const u8,
            len: usize,
        ) -> u32;
        pub fn proxy_call_foreign_function(
            name: *const u8,
            name_size: usize,
            args: *const u8,
            args_size: usize,
            ret_data: *mut *mut u8,
            ret_size: *mut usize,
        ) -> u32;
    }
}

/// Takes ownership of a buffer the host allocated in our memory (through the SDK's
/// `proxy_on_memory_allocate`).
///
/// # Safety
/// `data`/`size` must come from a host call that just returned Ok with them.
unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated exactly `size` bytes with our allocator and handed them over.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub use crate::log::Level;

/// The proxy's log, as a [`crate::log::Log`].
pub struct ProxyLog;

impl crate::log::Log for ProxyLog {
    fn log(&mut self, level: Level, line: &str) {
        log(level, line);
    }
}

pub fn log(level: Level, message: &str) {
    // SAFETY: pointer and length describe `message`, which outlives the call.
    // A failed log call has nowhere else to be reported; ignore it.
    let _ = unsafe { abi::proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Logs panics at critical before the VM aborts (panic = "abort"), so the cause is visible.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        log(
            Level::Critical,
            &format!(
                "{{\"event\":\"FILTER_PANIC\",\"detail\":{:?}}}",
                info.to_string()
            ),
        );
    }));
}

/// The plugin configuration document (`on_configure`).
pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    buffer(7, 0, usize::MAX)
}

/// Bytes of a buffer: 0 request body, 1 response body, 4 http-call response body, 7 plugin config.
pub fn buffer(kind: u32, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: out-pointers are valid locals; the returned buffer is taken over by `take`.
    let status = unsafe { abi::proxy_get_buffer_bytes(kind, start, max, &mut data, &mut size) };
    match HostError::check(status) {
        Ok(()) => Ok(unsafe { take(data, size) }),
        Err(HostError::NotFound) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Replaces the `current` bytes of a body buffer (0 request, 1 response) with `data`. Pass
/// exactly what the host holds: Envoy drains that many bytes, then prepends `data`.
pub fn replace_buffer(kind: u32, current: usize, data: &[u8]) -> Result<(), HostError> {
    // SAFETY: `data` is a valid slice for the duration of the call.
    HostError::check(unsafe {
        abi::proxy_set_buffer_bytes(kind, 0, current, data.as_ptr(), data.len())
    })
}

/// Envoy re-selects the route after the filter changed `:path` only when asked: its
/// `clear_route_cache` foreign function. Envoy answers NotFound for names it lacks, but Kong
/// traps on every foreign function (measured): never call this on Kong. True when cleared.
pub fn clear_route_cache() -> bool {
    let name = "clear_route_cache";
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: valid name slice and out-pointers; a returned buffer is taken over by `take`.
    let status = unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            [].as_ptr(),
            0,
            &mut data,
            &mut size,
        )
    };
    let _ = unsafe { take(data, size) };
    HostError::check(status).is_ok()
}

pub fn set_tick_period_ms(period: u32) -> Result<(), HostError> {
    // SAFETY: plain value call.
    HostError::check(unsafe { abi::proxy_set_tick_period_milliseconds(period) })
}

/// Resumes a paused request (0) or response (1).
pub fn continue_stream(stream: u32) -> Result<(), HostError> {
    // SAFETY: plain value call.
    HostError::check(unsafe { abi::proxy_continue_stream(stream) })
}

/// Sends a local reply for the current stream instead of forwarding it.
pub fn send_local_reply(reply: &LocalReply, details: &str) -> Result<(), HostError> {
    let pairs: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let headers = serialize_pairs(&pairs);
    // SAFETY: every pointer/length pair describes a live local buffer.
    HostError::check(unsafe {
        abi::proxy_send_local_response(
            reply.status,
            details.as_ptr(),
            details.len(),
            reply.body.as_ptr(),
            reply.body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub struct ProxyClock;

impl Clock for ProxyClock {
    fn now_ms(&self) -> u64 {
        let mut nanos = 0u64;
        // SAFETY: valid out-pointer. The call cannot fail on a host that loaded us; 0 on error.
        let _ = unsafe { abi::proxy_get_current_time_nanoseconds(&mut nanos) };
        nanos / 1_000_000
    }
}

pub struct ProxyEntropy;

impl Entropy for ProxyEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), HostError> {
        getrandom::fill(buf).map_err(|_| HostError::InternalFailure)
    }
}

/// Shared data of the VM (`vm_id` scope in Envoy, the shm zone in Kong). Detect it once per
/// worker (root context) and copy it into streams: detection writes shared data.
#[derive(Debug, Clone, Copy)]
pub struct ProxyStore {
    dialect: CasDialect,
}

impl ProxyStore {
    /// Builds the store for this host, probing its CAS rules once (see [`CasDialect`]).
    pub fn detect() -> Result<ProxyStore, HostError> {
        Ok(ProxyStore {
            dialect: detect_cas_dialect()?,
        })
    }

    pub fn dialect(&self) -> CasDialect {
        self.dialect
    }
}

const PROBE_KEY: &str = "cxgate/probe/cas";

/// Writes the probe key twice with cas 0: the second write overwrites on Envoy and is refused
/// on Kong (where cas 0 means "only if absent"). Two host calls, once per worker at configure.
fn detect_cas_dialect() -> Result<CasDialect, HostError> {
    let _ = raw_set(PROBE_KEY, b"probe", 0);
    match raw_set(PROBE_KEY, b"probe", 0) {
        Ok(()) => Ok(CasDialect::Envoy),
        Err(HostError::CasMismatch) => Ok(CasDialect::Kong),
        Err(e) => Err(e),
    }
}

fn raw_set(key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
    // SAFETY: pointer/length pairs describe live slices.
    HostError::check(unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

impl SharedStore for ProxyStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, HostError> {
        let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
        // SAFETY: out-pointers are valid locals; the buffer is taken over by `take`.
        let status = unsafe {
            abi::proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match HostError::check(status) {
            Ok(()) => Ok(Some(Versioned {
                value: unsafe { take(data, size) },
                cas: Cas(cas),
            })),
            Err(HostError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], expect: Expect) -> Result<(), HostError> {
        raw_set(key, value, self.dialect.raw_cas(expect))
    }
}

/// A header map of the current stream.
pub struct ProxyHeaders {
    map: u32,
}

impl ProxyHeaders {
    pub const fn request() -> Self {
        ProxyHeaders { map: 0 }
    }
    pub const fn response() -> Self {
        ProxyHeaders { map: 2 }
    }
    /// Headers of the http-call response being delivered.
    pub const fn call_response() -> Self {
        ProxyHeaders { map: 6 }
    }

    /// `:status` of a response (or call response) header map; 0 when absent or unreadable.
    pub fn status(&self) -> u16 {
        self.get(":status")
            .ok()
            .flatten()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The whole map in the ABI's wire format, in one host call.
    pub fn wire(&self) -> Result<Vec<u8>, HostError> {
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: out-pointers are valid locals; the buffer is taken over by `take`.
        let status = unsafe { abi::proxy_get_header_map_pairs(self.map, &mut data, &mut size) };
        HostError::check(status)?;
        Ok(unsafe { take(data, size) })
    }

    pub fn pairs(&self) -> Result<Vec<(String, String)>, HostError> {
        let bytes = self.wire()?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        deserialize_pairs(&bytes).ok_or(HostError::SerializationFailure)
    }
}

impl Headers for ProxyHeaders {
    fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        let (mut data, mut size) = (null_mut(), 0usize);
        // SAFETY: out-pointers are valid locals; the buffer is taken over by `take`.
        let status = unsafe {
            abi::proxy_get_header_map_value(
                self.map,
                name.as_ptr(),
                name.len(),
                &mut data,
                &mut size,
            )
        };
        match HostError::check(status) {
            Ok(()) if data.is_null() => Ok(None),
            Ok(()) => Ok(Some(
                String::from_utf8_lossy(&unsafe { take(data, size) }).into_owned(),
            )),
            Err(HostError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        // SAFETY: pointer/length pairs describe live slices.
        HostError::check(unsafe {
            abi::proxy_replace_header_map_value(
                self.map,
                name.as_ptr(),
                name.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        // SAFETY: pointer/length pair describes a live slice.
        match HostError::check(unsafe {
            abi::proxy_remove_header_map_value(self.map, name.as_ptr(), name.len())
        }) {
            Err(HostError::NotFound) => Ok(()),
            other => other,
        }
    }
}

/// Callouts go through the SDK's wrapper, not the raw import: the SDK must register the
/// token, or it panics when the answer arrives. (The wrapper panics only on statuses other
/// than Ok, BadArgument and InternalFailure, which neither Envoy nor Kong returns here.)
pub struct ProxyCallout;

impl HttpCallout for ProxyCallout {
    fn dispatch(&mut self, call: &Callout<'_>) -> Result<u32, HostError> {
        let mut headers = vec![
            (":method", call.method),
            (":path", call.path),
            (":authority", call.authority),
            (":scheme", call.scheme),
        ];
        headers.extend(call.headers.iter().copied());
        // Trailers are never sent: Kong does not support them.
        proxy_wasm::hostcalls::dispatch_http_call(
            call.upstream,
            headers,
            call.body,
            Vec::new(),
            std::time::Duration::from_millis(u64::from(call.timeout_ms)),
        )
        .map_err(|status| {
            HostError::check(status as u32)
                .err()
                .unwrap_or(HostError::InternalFailure)
        })
    }
}

pub struct ProxyMetrics;

impl ProxyMetrics {
    fn define(kind: u32, name: &str) -> Result<u32, HostError> {
        let mut id = 0u32;
        // SAFETY: pointer/length describe `name`; `id` is a valid out-pointer.
        let status = unsafe { abi::proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) };
        HostError::check(status).map(|()| id)
    }
}

impl Metrics for ProxyMetrics {
    fn counter(&mut self, name: &str) -> Result<u32, HostError> {
        Self::define(0, name)
    }
    fn gauge(&mut self, name: &str) -> Result<u32, HostError> {
        Self::define(1, name)
    }
    fn histogram(&mut self, name: &str) -> Result<u32, HostError> {
        Self::define(2, name)
    }
    fn increment(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        // SAFETY: plain value call.
        HostError::check(unsafe { abi::proxy_increment_metric(id, by) })
    }
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        // SAFETY: plain value call.
        HostError::check(unsafe { abi::proxy_record_metric(id, value) })
    }
}

/// Runs a [`crate::sync::SyncClient`] from a root context: ticks, answers, and the log lines
/// and metrics every filter reports the same way (`cxgate_sync.*`).
pub struct SyncDriver {
    client: crate::sync::SyncClient,
    store: ProxyStore,
    failing: bool,
    applied: u32,
    failures: u32,
    stale: u32,
}

impl SyncDriver {
    /// Reads the sidecar key from the VM environment (`config.key_env`), never from config.
    pub fn new(
        config: crate::sync::SyncConfig,
        store: ProxyStore,
    ) -> Result<SyncDriver, crate::ConfigError> {
        let key = std::env::var(&config.key_env).map_err(|_| {
            crate::ConfigError::at(
                "/sync/key_env",
                format!("environment variable {} is not set in the VM (Envoy: vm_config.environment_variables.host_env_keys)", config.key_env),
            )
        })?;
        let mut entropy = ProxyEntropy;
        let holder = crate::host::Entropy::next_u64(&mut entropy).unwrap_or(1) | 1;
        let mut m = ProxyMetrics;
        Ok(SyncDriver {
            client: crate::sync::SyncClient::new(config, key, holder),
            store,
            failing: false,
            applied: m.counter("cxgate_sync.applied").unwrap_or_default(),
            failures: m.counter("cxgate_sync.failures").unwrap_or_default(),
            stale: m.gauge("cxgate_sync.stale").unwrap_or_default(),
        })
    }

    pub fn on_tick(&mut self) {
        let out = self
            .client
            .on_tick(&mut self.store, &ProxyClock, &mut ProxyCallout);
        if let Err(e) = out {
            self.failed(&e);
        }
        let mut m = ProxyMetrics;
        if let Ok(status) = crate::sync::read_status(&self.store) {
            let stale = crate::sync::is_stale(
                &status,
                ProxyClock.now_ms(),
                self.client.config().stale_after_ms,
            );
            let _ = m.record(self.stale, u64::from(stale));
        }
    }

    /// Call from the root context's `on_http_call_response`; false if the call is not ours.
    pub fn on_http_call_response(&mut self, token: u32, num_headers: usize) -> bool {
        if !self.client.owns(token) {
            return false;
        }
        let status = if num_headers == 0 {
            None
        } else {
            ProxyHeaders::call_response()
                .get(":status")
                .ok()
                .flatten()
                .and_then(|s| s.parse().ok())
        };
        let body = buffer(4, 0, usize::MAX).unwrap_or_default();
        match self
            .client
            .on_response(&mut self.store, &ProxyClock, status, &body)
        {
            Ok(applied) => {
                if self.failing {
                    log(
                        Level::Info,
                        &crate::log::Event::new("SIDECAR_SYNC_RESUMED").render(),
                    );
                    self.failing = false;
                }
                if let crate::sync::Applied::Updated(version) = applied {
                    let _ = ProxyMetrics.increment(self.applied, 1);
                    log(
                        Level::Debug,
                        &crate::log::Event::new("STATE_SYNCED")
                            .num("version", version)
                            .render(),
                    );
                }
                // Poll again at once: a change right after this answer (a refresh following an
                // invalidation) then reaches the workers in milliseconds, not a tick later.
                if let Err(e) = self
                    .client
                    .on_tick(&mut self.store, &ProxyClock, &mut ProxyCallout)
                {
                    self.failed(&e);
                }
            }
            Err(e) => self.failed(&e),
        }
        true
    }

    /// One log line per failure streak (not per tick), a counter per failure.
    fn failed(&mut self, e: &crate::sync::SyncError) {
        let _ = ProxyMetrics.increment(self.failures, 1);
        if !self.failing {
            let event = crate::log::Event::new("SIDECAR_UNREACHABLE")
                .str("error", &format!("{e:?}"))
                .str("effect", "serving the last synced state");
            log(Level::Warn, &event.render());
            self.failing = true;
        }
    }
}

/// Logs a rejected config (one structured line naming the filter and the field) and returns
/// false, the value `on_configure` must return so the proxy refuses the plugin.
pub fn reject_config(filter: &str, field: &str, message: &str) -> bool {
    let event = crate::log::Event::new("CONFIG_REJECTED")
        .str("filter", filter)
        .str("field", field)
        .str("error", message);
    log(Level::Error, &event.render());
    false
}
