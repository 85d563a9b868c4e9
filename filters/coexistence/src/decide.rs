//! The decision core: a request body in, a routing decision out, from the roster alone.

use crate::config::{Config, Platform, Transitioning};
use cxgate_kit::problem::Problem;
use cxgate_state::{Migration, Roster};
use serde_json::{Value, json};

/// A validated decision request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub dnis: String,
    pub ani: Option<String>,
    /// The directory user id (lower-cased) the call is for, when the carrier knows it.
    pub target_user: Option<String>,
    /// The caller's correlation id, if it was a valid UUID (else one is minted).
    pub correlation_id: Option<String>,
    /// The platform that sent the call back (a transfer): never route back to it.
    pub from_platform: Option<Platform>,
    pub hop: u32,
}

const MAX_DNIS: usize = 20;
const MAX_TEXT: usize = 128;

fn invalid(pointer: &str, message: &str) -> Problem {
    Problem::new(
        400,
        "invalid-decision-request",
        "Invalid decision request",
        "The decision request does not match the schema; see errors.",
    )
    .with_error(pointer, message)
}

/// Parses and checks the body: 413 past `max` bytes, 400 with the field otherwise.
pub fn parse(body: &[u8], max: usize) -> Result<Query, Box<Problem>> {
    if body.len() > max {
        return Err(Box::new(Problem::new(
            413,
            "payload-too-large",
            "Payload too large",
            format!(
                "A decision request is at most {max} bytes; this one is {}.",
                body.len()
            ),
        )));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(Problem::new(
            400,
            "invalid-json",
            "Invalid JSON",
            format!("The body is not JSON: {e}"),
        ))
    })?;
    let Some(obj) = v.as_object() else {
        return Err(Box::new(invalid("", "must be an object")));
    };
    let text = |name: &str| -> Result<Option<String>, Box<Problem>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(Box::new(invalid(
                &format!("/{name}"),
                &format!("at most {MAX_TEXT} characters"),
            ))),
            Some(_) => Err(Box::new(invalid(&format!("/{name}"), "must be a string"))),
        }
    };
    let dnis = match text("dnis")? {
        None => return Err(Box::new(invalid("/dnis", "required"))),
        Some(d) => d,
    };
    let digits = dnis.strip_prefix('+').unwrap_or(&dnis);
    if digits.is_empty() || digits.len() > MAX_DNIS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Box::new(invalid(
            "/dnis",
            "must be 1 to 20 digits, optionally after a '+'",
        )));
    }
    let from_platform = match text("from_platform")? {
        None => None,
        Some(p) => Some(
            Platform::parse(&p)
                .ok_or_else(|| Box::new(invalid("/from_platform", "must be CLOUD or LEGACY")))?,
        ),
    };
    let hop = match obj.get("hop") {
        None | Some(Value::Null) => 0,
        Some(h) => h
            .as_u64()
            .and_then(|h| u32::try_from(h).ok())
            .ok_or_else(|| Box::new(invalid("/hop", "must be a non-negative integer")))?,
    };
    Ok(Query {
        dnis: digits.to_string(),
        ani: text("ani")?,
        target_user: text("target_user")?.map(|u| u.trim().to_ascii_lowercase()),
        correlation_id: text("correlation_id")?.filter(|c| is_uuid(c)),
        from_platform,
        hop,
    })
}

pub use cxgate_kit::ids::{is_uuid, uuid_v4};

/// How much the roster can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAge {
    Fresh,
    /// Older than `stale_after_ms`, a source failing, or the sidecar unreachable: still used.
    Stale,
    /// Older than `expire_after_ms`: not used.
    Expired,
    /// Never synced.
    Missing,
}

impl StateAge {
    pub fn of(cfg: &Config, roster: Option<&Roster>, now_ms: u64, sync_failing: bool) -> StateAge {
        let Some(r) = roster.filter(|r| r.fetched_ms > 0) else {
            return StateAge::Missing;
        };
        let age = now_ms.saturating_sub(r.fetched_ms);
        if age > cfg.expire_after_ms {
            StateAge::Expired
        } else if r.stale || sync_failing || age > cfg.stale_after_ms {
            StateAge::Stale
        } else {
            StateAge::Fresh
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            StateAge::Fresh => "fresh",
            StateAge::Stale => "stale",
            StateAge::Expired => "expired",
            StateAge::Missing => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: refuse the call (`sip_status`).
    pub platform: Option<Platform>,
    pub sip_uri: Option<String>,
    pub sip_status: Option<u16>,
    pub reason: &'static str,
    /// What decided underneath the reason (a DNIS rule's name, the agent's status, ...).
    pub rule: String,
    pub correlation_id: String,
    pub emergency_address_id: Option<String>,
    pub hop: u32,
    pub state: StateAge,
}

/// Genesys routing statuses in which an agent takes calls.
fn on_queue(status: Option<&str>) -> bool {
    matches!(status, Some("IDLE" | "INTERACTING" | "COMMUNICATING"))
}

/// Rules 2–5 on usable state: (platform, reason, rule).
fn choose(cfg: &Config, q: &Query, roster: &Roster) -> (Platform, &'static str, String) {
    let user = q.target_user.as_deref();
    if let Some(u) = user
        && let Some(s) = roster.suspended.get(u)
    {
        return (cfg.safe_default, "agent_suspended", s.reason.clone());
    }
    if let Some(agent) = user.and_then(|u| roster.agents.get(u)) {
        let cloud_active = agent.cloud.as_ref().is_some_and(|c| c.active);
        let status = agent
            .cloud
            .as_ref()
            .and_then(|c| c.routing_status.as_deref());
        return match agent.migration {
            Migration::Legacy => (Platform::Legacy, "agent_status", "legacy".into()),
            Migration::Cloud if cloud_active => (Platform::Cloud, "agent_status", "cloud".into()),
            // Not (or no longer) in the cloud directory: it is still a legacy agent.
            Migration::Cloud => (
                Platform::Legacy,
                "agent_status",
                "cloud_but_not_active_in_cloud".into(),
            ),
            Migration::Transitioning => {
                let cloud = match cfg.transitioning {
                    Transitioning::Cloud => true,
                    Transitioning::Legacy => false,
                    Transitioning::OnQueue => cloud_active && on_queue(status),
                };
                let p = if cloud {
                    Platform::Cloud
                } else {
                    Platform::Legacy
                };
                (
                    p,
                    "agent_status",
                    format!("transitioning:{}", status.unwrap_or("unknown")),
                )
            }
        };
    }
    if let Some(r) = cfg.dnis_rules.iter().find(|r| r.pattern.matches(&q.dnis)) {
        return (r.platform, "dnis_rule", r.name.clone());
    }
    (cfg.default, "default", "default".into())
}

/// The emergency address id for the platform chosen: the agent's, its site's, the target's.
fn emergency_id(cfg: &Config, q: &Query, roster: Option<&Roster>, p: Platform) -> Option<String> {
    let agent = q
        .target_user
        .as_deref()
        .and_then(|u| roster.and_then(|r| r.agents.get(u)));
    let legacy = agent.and_then(|a| a.legacy.as_ref());
    let site = legacy
        .and_then(|l| l.site.as_deref())
        .and_then(|s| roster.and_then(|r| r.sites.get(s)));
    let own = match p {
        Platform::Legacy => legacy.and_then(|l| l.e911_id.clone()),
        Platform::Cloud => None,
    };
    let of_site = site.and_then(|s| match p {
        Platform::Legacy => s.legacy_e911_id.clone(),
        Platform::Cloud => s.cloud_e911_id.clone(),
    });
    own.or(of_site).or_else(|| cfg.target(p).e911_id.clone())
}

fn sip_uri(cfg: &Config, q: &Query, roster: Option<&Roster>, p: Platform) -> String {
    let extension = q
        .target_user
        .as_deref()
        .and_then(|u| roster.and_then(|r| r.agents.get(u)))
        .and_then(|a| a.legacy.as_ref())
        .map(|l| l.extension.as_str())
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or(&q.dnis);
    cfg.target(p)
        .sip_uri
        .replace("{dnis}", &q.dnis)
        .replace("{extension}", extension)
}

/// Decides one call. `correlation_id` is the query's, or a new one.
pub fn decide(
    cfg: &Config,
    q: &Query,
    roster: Option<&Roster>,
    state: StateAge,
    cloud_down: bool,
    correlation_id: String,
) -> Decision {
    let hop = q.hop.saturating_add(1);
    if q.hop >= cfg.hop_limit {
        return Decision {
            platform: None,
            sip_uri: None,
            sip_status: Some(482),
            reason: "loop_detected",
            rule: format!("hop {} of at most {}", q.hop, cfg.hop_limit),
            correlation_id,
            emergency_address_id: None,
            hop,
            state,
        };
    }
    let usable = roster.filter(|_| matches!(state, StateAge::Fresh | StateAge::Stale));
    let (mut platform, mut reason, mut rule) = match (usable, state) {
        (Some(r), _) => choose(cfg, q, r),
        (None, StateAge::Expired) => (cfg.safe_default, "state_expired", "safe_default".into()),
        (None, _) => (cfg.safe_default, "no_state", "safe_default".into()),
    };
    if cloud_down && platform == Platform::Cloud {
        rule = format!("{reason}:{rule}: the cloud's breaker is open");
        platform = Platform::Legacy;
        reason = "cloud_unavailable";
    }
    if q.from_platform == Some(platform) {
        rule = format!("{reason}:{rule}: not back to {}", platform.as_str());
        platform = platform.other();
        reason = "loop_guard";
    } else if state == StateAge::Stale && reason != "cloud_unavailable" {
        rule = format!("{reason}:{rule}");
        reason = "stale_state";
    }
    Decision {
        platform: Some(platform),
        sip_uri: Some(sip_uri(cfg, q, usable, platform)),
        sip_status: None,
        reason,
        rule,
        emergency_address_id: emergency_id(cfg, q, usable, platform),
        correlation_id,
        hop,
        state,
    }
}

impl Decision {
    /// The answer's JSON body.
    pub fn to_json(&self) -> Value {
        let platform = self.platform.map(Platform::as_str);
        json!({
            "platform": platform,
            "sip_uri": self.sip_uri,
            "sip_status": self.sip_status,
            "reason": self.reason,
            "rule": self.rule,
            "correlation_id": self.correlation_id,
            "recording_tag": platform.map(|p| format!("{}:{}", p.to_ascii_lowercase(), self.correlation_id)),
            "emergency_address_id": self.emergency_address_id,
            "hop": self.hop,
            "state": self.state.as_str(),
        })
    }
}
