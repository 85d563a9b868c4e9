//! An in-memory host for stage and pipeline tests: kit's fakes plus a recording stream.

use crate::document;
use crate::flow::Pipeline;
use crate::stage::{Build, Io, NowOnce, RootIo, StageKind, StreamHost};
use cxgate_kit::fakes::{FakeCallout, FakeClock, FakeEntropy, FakeHeaders, FakeMetrics, FakeStore};
use cxgate_kit::host::{CasDialect, Clock, Headers};
use cxgate_kit::log::Level;
use cxgate_kit::{ConfigError, HostError};
use std::collections::HashMap;
use std::rc::Rc;

/// What stages did to the stream.
#[derive(Debug, Clone, Default)]
pub struct FakeStream {
    /// Headers set or removed on the request (`None` value: removed).
    pub request_writes: Vec<(String, Option<String>)>,
    pub response: FakeHeaders,
    pub request_body: Option<Vec<u8>>,
    pub route_cache_cleared: u32,
    /// Kong has no `clear_route_cache`.
    pub no_route_cache: bool,
}

impl FakeStream {
    /// The last value a stage gave request header `name` (`Some(None)`: removed).
    pub fn request_write(&self, name: &str) -> Option<Option<&str>> {
        self.request_writes
            .iter()
            .rev()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }
}

impl StreamHost for FakeStream {
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.request_writes
            .push((name.to_string(), Some(value.to_string())));
        Ok(())
    }
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        self.request_writes.push((name.to_string(), None));
        Ok(())
    }
    fn set_response_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.response.set(name, value)
    }
    fn remove_response_header(&mut self, name: &str) -> Result<(), HostError> {
        self.response.remove(name)
    }
    fn replace_request_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        self.request_body = Some(body.to_vec());
        Ok(())
    }
    fn clear_route_cache(&mut self) -> bool {
        if self.no_route_cache {
            return false;
        }
        self.route_cache_cleared += 1;
        true
    }
}

/// Every fake a stage can touch; `io()` lends them out for one hook.
pub struct TestHost {
    pub clock: FakeClock,
    pub store: FakeStore,
    pub entropy: FakeEntropy,
    pub callout: FakeCallout,
    pub stream: FakeStream,
    pub metrics: FakeMetrics,
    pub logs: Vec<(Level, String)>,
    pub env: HashMap<String, String>,
}

impl TestHost {
    pub fn new(dialect: CasDialect, now_ms: u64) -> TestHost {
        TestHost {
            clock: FakeClock::at(now_ms),
            store: FakeStore::new(dialect),
            entropy: FakeEntropy::seeded(7),
            callout: FakeCallout::default(),
            stream: FakeStream::default(),
            metrics: FakeMetrics::default(),
            logs: Vec::new(),
            env: HashMap::new(),
        }
    }

    /// Another worker: same store and clock, its own everything else.
    pub fn worker(&self) -> TestHost {
        TestHost {
            clock: self.clock.clone(),
            store: self.store.clone(),
            entropy: FakeEntropy::seeded(self.clock.now_ms() ^ 0x5eed),
            callout: FakeCallout::default(),
            stream: FakeStream::default(),
            metrics: FakeMetrics::default(),
            logs: Vec::new(),
            env: self.env.clone(),
        }
    }

    pub fn io(&mut self) -> Io<'_> {
        Io {
            now: NowOnce::new(&self.clock),
            store: &mut self.store,
            entropy: &mut self.entropy,
            callout: &mut self.callout,
            stream: &mut self.stream,
            metrics: &mut self.metrics,
            log: &mut self.logs,
        }
    }

    pub fn root_io(&mut self) -> RootIo<'_> {
        RootIo {
            now_ms: self.clock.now_ms(),
            store: &mut self.store,
            entropy: &mut self.entropy,
            callout: &mut self.callout,
            metrics: &mut self.metrics,
            log: &mut self.logs,
        }
    }

    /// Builds a pipeline from a config document, as the runner does at configure time.
    pub fn pipeline(&mut self, config: &str, kinds: &[StageKind]) -> Result<Pipeline, ConfigError> {
        let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
        let doc = document::parse(config.as_bytes(), kinds, &names)?;
        let key = doc
            .sync
            .as_ref()
            .and_then(|s| self.env.get(&s.key_env).cloned());
        let env = self.env.clone();
        let read = move |name: &str| env.get(name).cloned();
        let sync = doc.sync.clone();
        let mut build = Build {
            model: Rc::new(doc.model.clone()),
            sync: sync.as_ref(),
            sidecar_key: key.as_deref(),
            env: &read,
            metrics: &mut self.metrics,
            entropy: &mut self.entropy,
        };
        Pipeline::build(doc, &mut build)
    }

    /// Log lines containing `needle`.
    pub fn logged(&self, needle: &str) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.as_str())
            .collect()
    }
}
