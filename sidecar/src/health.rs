//! `GET /health`: one verdict a load balancer can use, with every check behind it.
//!
//! - `tokens.<platform>`: a valid token is published (fail when missing or expired);
//! - `sync.<map>`: the metadata map is fresh (warn when stale or older than 3 intervals);
//! - `llm.endpoint`: the LLM endpoint answers (warn when unreachable, 5xx, or the key is
//!   refused), probed in the background, never per call;
//! - `redis`: the shared budget's Redis answers `PING` (warn: the filters fall back to their
//!   local share), probed in the background too.
//!
//! `healthy` when all pass, `degraded` when any does not, `unhealthy` when no platform has a
//! token (nothing can be served). 200 for the first two, 503 for `unhealthy`.

use cxgate_state::Snapshot;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Pass => "pass",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub level: Level,
    pub detail: Value,
}

/// A background probe's last result.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// `None` until the first probe finished.
    pub last: Option<(Level, String, u64)>,
}

pub type Shared = Arc<Mutex<Probe>>;

fn put(p: &Shared, level: Level, detail: String) {
    let mut g = p.lock().unwrap_or_else(|e| e.into_inner());
    g.last = Some((level, detail, crate::hub::now_ms()));
}

/// What one LLM answer says about the endpoint.
pub fn llm_level(status: u16) -> (Level, String) {
    match status {
        401 | 403 => (
            Level::Warn,
            format!("reachable, but the key is refused ({status})"),
        ),
        s if s >= 500 => (Level::Warn, format!("answers {s}")),
        s => (Level::Pass, format!("reachable ({s})")),
    }
}

/// Probes `url` (GET, the gateway's LLM key as bearer) every `every`.
pub async fn probe_llm(
    url: String,
    key: crate::config::SecretSource,
    http: reqwest::Client,
    every: Duration,
    out: Shared,
) {
    loop {
        let mut req = http.get(&url).timeout(Duration::from_secs(5));
        if let Ok(k) = key.resolve("llm.api_key") {
            req = req.bearer_auth(k.expose());
        }
        match req.send().await {
            Ok(r) => {
                let (level, detail) = llm_level(r.status().as_u16());
                put(&out, level, detail);
            }
            Err(e) => put(
                &out,
                Level::Warn,
                format!("unreachable: {}", e.without_url()),
            ),
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn probe_redis(budget: Arc<crate::budget::Budget>, every: Duration, out: Shared) {
    loop {
        match budget.ping().await {
            Ok(()) => put(&out, Level::Pass, "PONG".into()),
            Err(e) => put(&out, Level::Warn, e),
        }
        tokio::time::sleep(every).await;
    }
}

fn probed(name: &str, p: &Shared) -> Check {
    let g = p.lock().unwrap_or_else(|e| e.into_inner());
    let (level, detail) = match &g.last {
        Some((level, d, at)) => (*level, json!({"detail": d, "checked_ms": at})),
        None => (Level::Pass, json!({"detail": "not checked yet"})),
    };
    Check {
        name: name.into(),
        level,
        detail,
    }
}

/// Every check, from the snapshot and the probes.
pub fn checks(
    snap: &Snapshot,
    platforms: &[&str],
    sync_bound_ms: u64,
    llm: Option<&Shared>,
    redis: Option<&Shared>,
    now: u64,
) -> Vec<Check> {
    let mut out = Vec::new();
    for p in platforms {
        let t = snap.tokens.get(*p).filter(|t| t.expires_ms > now);
        let (level, detail) = match t {
            Some(t) => (
                Level::Pass,
                json!({"expires_in_s": (t.expires_ms - now) / 1000, "generation": t.generation}),
            ),
            None => {
                let err = snap.health.get(*p).and_then(|h| h.last_error.clone());
                (
                    Level::Fail,
                    json!({"detail": "no valid token", "last_error": err}),
                )
            }
        };
        out.push(Check {
            name: format!("tokens.{p}"),
            level,
            detail,
        });
    }
    for (name, m) in &snap.maps {
        let age = now.saturating_sub(m.fetched_ms);
        let level = if m.stale || age > sync_bound_ms {
            Level::Warn
        } else {
            Level::Pass
        };
        out.push(Check {
            name: format!("sync.{name}"),
            level,
            detail: json!({"age_s": age / 1000, "stale": m.stale, "last_error": m.last_error}),
        });
    }
    if let Some(p) = llm {
        out.push(probed("llm.endpoint", p));
    }
    if let Some(p) = redis {
        out.push(probed("redis", p));
    }
    out
}

/// The gateway sends CXone requests to the host it was rendered for; the sidecar asks
/// discovery. When they differ (the tenant moved), the gateway must be rendered again.
pub fn rendered_endpoint(rendered: &str, discovered: Option<&str>) -> Check {
    let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    let (level, detail) = match discovered {
        None => (Level::Pass, "not discovered yet"),
        Some(d) if norm(d) == norm(rendered) => (Level::Pass, "the gateway's host"),
        Some(_) => (
            Level::Fail,
            "discovery answers another host than the gateway was rendered for: run ./cxgate render again",
        ),
    };
    Check {
        name: "cxone.api_endpoint".into(),
        level,
        detail: json!({"detail": detail, "rendered": rendered, "discovered": discovered}),
    }
}

/// The verdict: `unhealthy` when every token check fails, `degraded` when any check is not a
/// pass, `healthy` otherwise.
pub fn verdict(checks: &[Check]) -> &'static str {
    let tokens: Vec<&Check> = checks
        .iter()
        .filter(|c| c.name.starts_with("tokens."))
        .collect();
    if !tokens.is_empty() && tokens.iter().all(|c| c.level == Level::Fail) {
        return "unhealthy";
    }
    if checks.iter().any(|c| c.level != Level::Pass) {
        return "degraded";
    }
    "healthy"
}

pub fn render(checks: &[Check]) -> Value {
    let map: serde_json::Map<String, Value> = checks
        .iter()
        .map(|c| {
            let mut d = c.detail.clone();
            if let Some(o) = d.as_object_mut() {
                o.insert("status".into(), json!(c.level.as_str()));
            }
            (c.name.clone(), d)
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, level: Level) -> Check {
        Check {
            name: name.into(),
            level,
            detail: json!({}),
        }
    }

    #[test]
    fn the_verdict_follows_the_checks() {
        use Level::*;
        assert_eq!(verdict(&[]), "healthy");
        assert_eq!(verdict(&[check("tokens.genesys", Pass)]), "healthy");
        let one_down = [check("tokens.genesys", Pass), check("tokens.cxone", Fail)];
        assert_eq!(verdict(&one_down), "degraded");
        let all_down = [check("tokens.genesys", Fail), check("tokens.cxone", Fail)];
        assert_eq!(verdict(&all_down), "unhealthy");
        let llm = [check("tokens.llm", Pass), check("llm.endpoint", Warn)];
        assert_eq!(verdict(&llm), "degraded");
        assert_eq!(verdict(&[check("redis", Warn)]), "degraded");
        let moved = rendered_endpoint("https://api-na1.example", Some("https://api-eu1.example"));
        assert_eq!(
            (moved.name.as_str(), moved.level),
            ("cxone.api_endpoint", Fail)
        );
        let same = rendered_endpoint("https://api-na1.example/", Some("https://API-na1.example"));
        assert_eq!(same.level, Pass);
        assert_eq!(rendered_endpoint("https://a.example", None).level, Pass);
        assert_eq!(llm_level(401).0, Warn);
        assert_eq!(llm_level(503).0, Warn);
        assert_eq!(llm_level(200).0, Pass);
        assert_eq!(llm_level(404).0, Pass, "reachable, whatever the path says");
    }
}
