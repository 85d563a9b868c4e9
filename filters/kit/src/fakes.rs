//! In-memory hosts for native and wasmtime unit tests of filter cores: a clock that tests move,
//! a shared store with each proxy's exact CAS rules and injectable races, header maps, metrics,
//! entropy and callouts that record what they were asked.

use crate::error::HostError;
use crate::host::{
    Callout, Cas, CasDialect, Clock, Entropy, Expect, Headers, HttpCallout, Metrics, SharedStore,
    Versioned,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// A clock tests advance by hand (time travel). Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Rc<Cell<u64>>);

impl FakeClock {
    pub fn at(now_ms: u64) -> Self {
        FakeClock(Rc::new(Cell::new(now_ms)))
    }
    pub fn advance(&self, ms: u64) {
        self.0.set(self.0.get().saturating_add(ms));
    }
    pub fn set(&self, now_ms: u64) {
        self.0.set(now_ms);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Debug, Default)]
struct StoreInner {
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    /// Conditional writes still to be beaten by a simulated concurrent writer.
    races: u32,
    sets: u64,
    mismatches: u64,
}

/// Shared data with the CAS rules of one proxy. Clones are "workers" over the same store.
#[derive(Debug, Clone)]
pub struct FakeStore {
    inner: Rc<RefCell<StoreInner>>,
    dialect: CasDialect,
}

impl FakeStore {
    pub fn new(dialect: CasDialect) -> Self {
        FakeStore {
            inner: Rc::new(RefCell::new(StoreInner::default())),
            dialect,
        }
    }

    /// The next `n` writes to an existing key lose a race: another writer bumps the key's CAS
    /// (same value) just before each of them.
    pub fn race_next_writes(&self, n: u32) {
        self.inner.borrow_mut().races = n;
    }

    /// How many writes succeeded, and how many were refused for a CAS mismatch.
    pub fn stats(&self) -> (u64, u64) {
        let inner = self.inner.borrow();
        (inner.sets, inner.mismatches)
    }

    /// The raw ABI write, with the exact semantics of the dialect's proxy.
    pub fn raw_set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), HostError> {
        let mut inner = self.inner.borrow_mut();
        if inner.races > 0 && inner.data.contains_key(key) {
            inner.races -= 1;
            inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
            let bumped = inner.next_cas;
            if let Some(entry) = inner.data.get_mut(key) {
                entry.1 = bumped;
            }
        }
        let current = inner.data.get(key).map(|(_, c)| *c);
        let allowed = match (self.dialect, current) {
            (CasDialect::Envoy, None) => true,
            (CasDialect::Envoy, Some(c)) => cas == 0 || cas == c,
            (CasDialect::Kong, None) => cas == 0,
            (CasDialect::Kong, Some(c)) => cas == c,
        };
        if !allowed {
            inner.mismatches += 1;
            return Err(HostError::CasMismatch);
        }
        inner.next_cas = inner.next_cas.wrapping_add(1).max(1);
        let cas = inner.next_cas;
        inner.data.insert(key.to_string(), (value.to_vec(), cas));
        inner.sets += 1;
        Ok(())
    }
}

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> Result<Option<Versioned>, HostError> {
        let inner = self.inner.borrow();
        Ok(inner.data.get(key).map(|(value, cas)| Versioned {
            value: value.clone(),
            cas: Cas(*cas),
        }))
    }

    fn set(&mut self, key: &str, value: &[u8], expect: Expect) -> Result<(), HostError> {
        self.raw_set(key, value, self.dialect.raw_cas(expect))
    }
}

/// A header map with HTTP's case-insensitive names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeHeaders {
    pub pairs: Vec<(String, String)>,
}

impl FakeHeaders {
    pub fn from(pairs: &[(&str, &str)]) -> Self {
        FakeHeaders {
            pairs: pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
        }
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Headers for FakeHeaders {
    fn get(&self, name: &str) -> Result<Option<String>, HostError> {
        Ok(self.all(name).first().map(|v| v.to_string()))
    }
    fn set(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.remove(name)?;
        self.pairs
            .push((name.to_ascii_lowercase(), value.to_string()));
        Ok(())
    }
    fn remove(&mut self, name: &str) -> Result<(), HostError> {
        self.pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        Ok(())
    }
}

/// Deterministic bytes: a counter run through SplitMix64, so ids differ but repeat per seed.
#[derive(Debug, Clone)]
pub struct FakeEntropy {
    state: u64,
    pub fail: bool,
}

impl FakeEntropy {
    pub fn seeded(seed: u64) -> Self {
        FakeEntropy {
            state: seed,
            fail: false,
        }
    }
}

impl Entropy for FakeEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), HostError> {
        if self.fail {
            return Err(HostError::InternalFailure);
        }
        for chunk in buf.chunks_mut(8) {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            for (dst, src) in chunk.iter_mut().zip(z.to_le_bytes()) {
                *dst = src;
            }
        }
        Ok(())
    }
}

/// Metrics by name; counters add, gauges hold the last value.
#[derive(Debug, Clone, Default)]
pub struct FakeMetrics {
    names: Vec<String>,
    pub values: HashMap<String, i64>,
}

impl FakeMetrics {
    pub fn value(&self, name: &str) -> i64 {
        self.values.get(name).copied().unwrap_or_default()
    }
    fn define(&mut self, name: &str) -> u32 {
        if let Some(pos) = self.names.iter().position(|n| n == name) {
            return u32::try_from(pos).unwrap_or(u32::MAX);
        }
        self.names.push(name.to_string());
        u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
    }
    fn name(&self, id: u32) -> Result<String, HostError> {
        self.names
            .get(id as usize)
            .cloned()
            .ok_or(HostError::NotFound)
    }
}

impl Metrics for FakeMetrics {
    fn counter(&mut self, name: &str) -> Result<u32, HostError> {
        Ok(self.define(name))
    }
    fn gauge(&mut self, name: &str) -> Result<u32, HostError> {
        Ok(self.define(name))
    }
    fn histogram(&mut self, name: &str) -> Result<u32, HostError> {
        Ok(self.define(name))
    }
    fn increment(&mut self, id: u32, by: i64) -> Result<(), HostError> {
        let name = self.name(id)?;
        *self.values.entry(name).or_default() += by;
        Ok(())
    }
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        let name = self.name(id)?;
        self.values
            .insert(name, i64::try_from(value).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// A recorded outbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    pub token: u32,
    pub upstream: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u32,
}

/// Records callouts; `refuse` makes the next dispatch fail with that error.
#[derive(Debug, Clone, Default)]
pub struct FakeCallout {
    pub calls: Vec<RecordedCall>,
    pub refuse: Option<HostError>,
}

impl HttpCallout for FakeCallout {
    fn dispatch(&mut self, call: &Callout<'_>) -> Result<u32, HostError> {
        if let Some(e) = self.refuse.take() {
            return Err(e);
        }
        let token = u32::try_from(self.calls.len() + 1).unwrap_or(u32::MAX);
        self.calls.push(RecordedCall {
            token,
            upstream: call.upstream.to_string(),
            method: call.method.to_string(),
            path: call.path.to_string(),
            headers: call
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: call.body.map(<[u8]>::to_vec),
            timeout_ms: call.timeout_ms,
        });
        Ok(token)
    }
}
