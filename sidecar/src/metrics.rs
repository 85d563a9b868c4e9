//! Prometheus metrics of the sidecar.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabel {
    pub platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabel {
    pub map: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub token_refreshes: Family<PlatformLabel, Counter>,
    pub grant_failures: Family<PlatformLabel, Counter>,
    pub invalidations: Family<PlatformLabel, Counter>,
    pub sync_age_seconds: Family<MapLabel, Gauge<f64, AtomicU64>>,
    pub sync_failures: Family<MapLabel, Counter>,
    pub state_version: Gauge,
    pub allotments: Counter,
    pub budget_errors: Counter,
    pub coexistence_zombies: Gauge,
    pub roster_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cxgate_sidecar");
        let m = Metrics {
            registry: Registry::default(),
            token_refreshes: Family::default(),
            grant_failures: Family::default(),
            invalidations: Family::default(),
            sync_age_seconds: Family::default(),
            sync_failures: Family::default(),
            state_version: Gauge::default(),
            allotments: Counter::default(),
            budget_errors: Counter::default(),
            coexistence_zombies: Gauge::default(),
            roster_failures: Counter::default(),
        };
        registry.register(
            "token_refresh",
            "Tokens obtained from a platform",
            m.token_refreshes.clone(),
        );
        registry.register(
            "grant_failures",
            "Token grants that failed (the manager keeps retrying)",
            m.grant_failures.clone(),
        );
        registry.register(
            "token_invalidations",
            "Invalidate calls that forced a refresh",
            m.invalidations.clone(),
        );
        registry.register(
            "sync_age_seconds",
            "Age of each ID map's last complete fetch",
            m.sync_age_seconds.clone(),
        );
        registry.register(
            "sync_failures",
            "Metadata syncs that failed",
            m.sync_failures.clone(),
        );
        registry.register(
            "state_version",
            "Version of the published state",
            m.state_version.clone(),
        );
        registry.register(
            "ratelimit_allotments",
            "Allotment requests answered from the shared (Redis) budget",
            m.allotments.clone(),
        );
        registry.register(
            "ratelimit_budget_errors",
            "Allotment requests that failed because Redis could not be reached",
            m.budget_errors.clone(),
        );
        registry.register(
            "coexistence_zombies",
            "Agents active on both platforms, their routing suspended",
            m.coexistence_zombies.clone(),
        );
        registry.register(
            "roster_failures",
            "Coexistence roster fetches (cloud or legacy) that failed",
            m.roster_failures.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn platform(p: &str) -> PlatformLabel {
        PlatformLabel {
            platform: p.to_string(),
        }
    }
}
