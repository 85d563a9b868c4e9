//! The test-facing driver: streams, callbacks, the virtual clock and what was recorded.

use crate::state::*;
use crate::types::*;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wasmtime::{Result, bail, format_err as anyhow};
pub use worker::*;

/// A proxy with N workers running one filter.
pub struct Host {
    pub(crate) profile: Profile,
    pub(crate) handle: SharedHandle,
    pub(crate) workers: Vec<Worker>,
    pub(crate) recipe: std::sync::Arc<Recipe>,
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
            zones: None,
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
        // Envoy lowercases header names; Kong keeps the client's case.
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                let k = if kong {
                    k.to_string()
                } else {
                    k.to_ascii_lowercase()
                };
                (k, v.to_string())
            })
            .collect();
        let st = w.stream_mut(s.id)?;
        if request {
            st.request_headers = pairs;
        } else {
            st.response_headers = pairs;
            st.in_response = true;
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

    /// The stream's properties as the filter last set them (`proxy_set_property`).
    pub fn properties(&self, s: Stream) -> Vec<(String, String)> {
        self.workers
            .get(s.worker)
            .and_then(|w| w.stream(s.id).ok())
            .map(|st| st.properties.clone())
            .unwrap_or_default()
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
            self.run_tick(worker)?;
        }
        self.settle_queues()
    }

    /// One `on_tick`. Kong recycles an instance whose `on_tick` trapped: `on_configure` runs
    /// again (recorded in [`Host::recycles`]) and the worker goes on; Envoy's VM is broken.
    fn run_tick(&mut self, worker: usize) -> Result<()> {
        let kong = self.profile == Profile::Kong;
        let w = self.worker(worker)?;
        let Err(e) = w.tick() else {
            return Ok(());
        };
        if !kong {
            return Err(e);
        }
        let msg = format!("worker {worker}: on_tick trapped, on_configure runs again: {e:#}");
        self.shared().recycles.push(msg);
        // A fresh instance (its streams are gone), configured again. Its period starts from
        // the one it sets; on the real host the old timer keeps firing too (ticks pile up).
        let fresh = self.recipe.worker(worker)?;
        let next_context = self.worker(worker)?.next_context;
        let slot = self.worker(worker)?;
        *slot = fresh;
        slot.next_context = next_context;
        Ok(())
    }

    /// Kong instances recycled after a trap in `on_tick`; a clean filter has none.
    pub fn recycles(&self) -> Vec<String> {
        self.shared().recycles.clone()
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
                    self.run_tick(i)?;
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

    /// The wall clock steps back by `by` (an NTP correction, a restored VM): what filters read
    /// goes back, while ticks and call timeouts, which a proxy runs on monotonic timers, keep
    /// their spacing.
    pub fn step_back(&mut self, by: Duration) {
        let d = by.as_nanos() as u64;
        let now = self.handle.clock.load(Ordering::SeqCst);
        self.handle
            .clock
            .store(now.saturating_sub(d), Ordering::SeqCst);
        for w in &mut self.workers {
            let st = w.state_mut();
            st.next_tick_ns = st.next_tick_ns.map(|t| t.saturating_sub(d));
        }
        for c in &mut self.shared().calls {
            c.dispatched_ns = c.dispatched_ns.saturating_sub(d);
        }
    }

    pub fn advance(&mut self, by: Duration) -> Result<()> {
        self.advance_skipping(by, &[])
    }

    // ---- callouts ----

    /// Calls dispatched and not answered yet.
    pub fn pending_calls(&self) -> Vec<CallInfo> {
        self.shared().calls.clone()
    }

    /// The one pending call a request waits for, the sidecar's state poll aside; fails when
    /// there is none or more than one.
    pub fn awaited_call(&self) -> Result<CallInfo> {
        let mut calls: Vec<CallInfo> = self
            .pending_calls()
            .into_iter()
            .filter(|c| !c.path().starts_with("/v1/state"))
            .collect();
        match calls.len() {
            1 => Ok(calls.remove(0)),
            n => bail!("{n} pending calls besides the state poll: {calls:#?}"),
        }
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
    /// Every shared-data key that holds a value (an empty value reads as absent, but its key
    /// stays: Proxy-Wasm cannot delete one), so tests can bound the key count.
    pub fn shared_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.shared().kv.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Kong profile: the bytes a shm_kv zone holds (keys, values and per-entry overhead).
    pub fn zone_bytes(&self, zone: &str) -> usize {
        self.shared().zone_bytes(zone)
    }

    pub fn put_shared(&self, key: &str, value: &[u8]) {
        let mut shared = self.shared();
        shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
        let cas = shared.next_cas;
        shared.put(key.to_string(), Some((value.to_vec(), cas)));
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
