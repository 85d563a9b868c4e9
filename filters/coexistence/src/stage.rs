//! The coexistence stage: answers the decision route as a local reply, from shared data only.

use crate::config::{Config, Platform};
use crate::decide::{self, StateAge};
use cxgate_kit::ConfigError;
use cxgate_kit::host::SharedStore;
use cxgate_kit::log::{Event, Level};
use cxgate_kit::problem::LocalReply;
use cxgate_kit::shared::Stamped;
use cxgate_kit::sync;
use cxgate_model::{Build, Exchange, Flow, Io, RootIo, Stage, StageKind, StageStream};
use cxgate_state::{Roster, keys};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "coexistence",
    build,
};

#[derive(Clone, Copy, Default)]
struct Ids {
    cloud: u32,
    legacy: u32,
    refused: u32,
    stale: u32,
    safe_default: u32,
    invalid: u32,
    zombies: u32,
}

/// The worker's decoded roster, keyed by the shared-data CAS it was read with: decoded once
/// per version, not per call.
#[derive(Default)]
struct Cached {
    cas: Option<cxgate_kit::host::Cas>,
    roster: Option<Rc<Roster>>,
}

struct Shared {
    config: Config,
    routes: Vec<usize>,
    ids: Ids,
    cache: RefCell<Cached>,
    stale_sync_ms: u64,
}

struct Coexistence(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    let config = Config::compile(section)?;
    let mut routes = Vec::new();
    for (i, id) in config.routes.iter().enumerate() {
        let Some((at, _)) = b.model.route_by_id(id) else {
            return Err(ConfigError::at(
                format!("/coexistence/routes/{i}"),
                format!("no route with id {id:?} in the model"),
            ));
        };
        routes.push(at);
    }
    let mut c = |n: &str| {
        b.metrics
            .counter(&format!("cxgate_coexistence.{n}"))
            .unwrap_or_default()
    };
    let ids = Ids {
        cloud: c("decisions_cloud"),
        legacy: c("decisions_legacy"),
        refused: c("loops_refused"),
        stale: c("stale_decisions"),
        safe_default: c("safe_default_decisions"),
        invalid: c("invalid_requests"),
        zombies: b
            .metrics
            .gauge("cxgate_coexistence.zombies")
            .unwrap_or_default(),
    };
    Ok(Box::new(Coexistence(Rc::new(Shared {
        config,
        routes,
        ids,
        cache: RefCell::new(Cached::default()),
        stale_sync_ms: b.sync.map_or(u64::MAX, |s| s.stale_after_ms),
    }))))
}

impl Shared {
    fn roster(&self, store: &dyn SharedStore) -> Option<Rc<Roster>> {
        let v = store.get(keys::ROSTER).ok()??;
        let mut cache = self.cache.borrow_mut();
        if cache.cas == Some(v.cas) {
            return cache.roster.clone();
        }
        cache.roster = Stamped::decode(&v.value)
            .and_then(|s| serde_json::from_slice::<Roster>(&s.payload).ok())
            .map(Rc::new);
        cache.cas = Some(v.cas);
        cache.roster.clone()
    }
}

impl Stage for Coexistence {
    fn name(&self) -> &'static str {
        "coexistence"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(CoexistenceStream {
            shared: self.0.clone(),
            active: false,
        })
    }
    fn tick_ms(&self) -> Option<u32> {
        Some(5_000)
    }
    /// Keeps the zombie gauge current without waiting for a call.
    fn on_tick(&self, io: &mut RootIo<'_>) {
        if let Some(r) = self.0.roster(&*io.store) {
            let n = u64::try_from(r.suspended.len()).unwrap_or(u64::MAX);
            let _ = io.metrics.record(self.0.ids.zombies, n);
        }
    }
}

struct CoexistenceStream {
    shared: Rc<Shared>,
    active: bool,
}

impl StageStream for CoexistenceStream {
    fn on_request(&mut self, x: &mut Exchange, _io: &mut Io<'_>) -> Flow {
        self.active = x.route.is_some_and(|r| self.shared.routes.contains(&r));
        Flow::Continue
    }
    fn wants_body(&self, _x: &Exchange) -> bool {
        self.active
    }
    fn on_body(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        if !self.active {
            return Flow::Continue;
        }
        let s = &*self.shared;
        let ids = s.ids;
        let q = match decide::parse(&x.body, s.config.max_body_bytes) {
            Ok(q) => q,
            Err(p) => {
                let _ = io.metrics.increment(ids.invalid, 1);
                return Flow::Reply(x.reply(*p));
            }
        };
        let roster = s.roster(&*io.store);
        let now = io.now.ms();
        let failing = sync::read_status(&*io.store)
            .map(|st| st.failures > 0 || sync::is_stale(&st, now, s.stale_sync_ms))
            .unwrap_or(true);
        let state = StateAge::of(&s.config, roster.as_deref(), now, failing);
        let correlation_id = match &q.correlation_id {
            Some(c) => c.clone(),
            None => {
                let mut r = [0u8; 16];
                if io.entropy.fill(&mut r).is_err() {
                    // No entropy: still a unique-enough id from the clock and the DNIS.
                    r[..8].copy_from_slice(&now.to_be_bytes());
                }
                decide::uuid_v4(r)
            }
        };
        let cloud_down = s
            .config
            .cloud
            .breaker
            .as_deref()
            .is_some_and(|p| cxgate_breaker::core::is_open(&*io.store, p));
        let d = decide::decide(
            &s.config,
            &q,
            roster.as_deref(),
            state,
            cloud_down,
            correlation_id,
        );
        let counter = match d.platform {
            Some(Platform::Cloud) => ids.cloud,
            Some(Platform::Legacy) => ids.legacy,
            None => ids.refused,
        };
        let _ = io.metrics.increment(counter, 1);
        if matches!(state, StateAge::Stale) {
            let _ = io.metrics.increment(ids.stale, 1);
        }
        if matches!(d.reason, "no_state" | "state_expired") {
            let _ = io.metrics.increment(ids.safe_default, 1);
        }
        if d.reason != "dnis_rule" && d.reason != "agent_status" && d.reason != "default" {
            io.log.event(
                Level::Info,
                &Event::new("COEXISTENCE_DECISION")
                    .str("reason", d.reason)
                    .str("rule", &d.rule)
                    .str("platform", d.platform.map_or("none", Platform::as_str))
                    .str("correlation_id", &d.correlation_id),
            );
        }
        let body = serde_json::to_vec(&d.to_json()).unwrap_or_default();
        Flow::Reply(LocalReply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        })
    }
}
