//! The coexistence section of the config document, compiled once per worker.

use cxgate_kit::ConfigError;
use cxgate_kit::config;
use serde::Deserialize;
use serde_json::{Value, json};

/// The two platforms a call can go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Platform {
    #[serde(rename = "CLOUD")]
    Cloud,
    #[serde(rename = "LEGACY")]
    Legacy,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Cloud => "CLOUD",
            Platform::Legacy => "LEGACY",
        }
    }
    pub fn other(self) -> Platform {
        match self {
            Platform::Cloud => Platform::Legacy,
            Platform::Legacy => Platform::Cloud,
        }
    }
    /// Accepts either case (SIP proxies send what their config has).
    pub fn parse(s: &str) -> Option<Platform> {
        match s.to_ascii_uppercase().as_str() {
            "CLOUD" => Some(Platform::Cloud),
            "LEGACY" => Some(Platform::Legacy),
            _ => None,
        }
    }
}

/// How a transitioning agent's calls go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transitioning {
    /// To the cloud while the agent is active and on queue there, otherwise to legacy.
    #[default]
    OnQueue,
    Cloud,
    Legacy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Any,
}

impl Pattern {
    pub fn matches(&self, dnis: &str) -> bool {
        match self {
            Pattern::Exact(p) => dnis == p,
            Pattern::Prefix(p) => dnis.starts_with(p.as_str()),
            Pattern::Suffix(p) => dnis.ends_with(p.as_str()),
            Pattern::Any => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnisRule {
    pub name: String,
    pub pattern: Pattern,
    pub platform: Platform,
}

/// Where one platform's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `sip:` or `sips:` URI; `{dnis}` and `{extension}` are filled per call.
    pub sip_uri: String,
    /// The emergency address id when neither the agent nor its site has one.
    pub e911_id: Option<String>,
    /// The cloud's platform in the breaker stage: while its breaker is open the cloud counts
    /// as down, and calls bound for it go to legacy (`cloud_unavailable`).
    pub breaker: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Route ids this stage answers.
    pub routes: Vec<String>,
    pub cloud: Target,
    pub legacy: Target,
    pub dnis_rules: Vec<DnisRule>,
    /// When no agent rule and no DNIS rule decides.
    pub default: Platform,
    /// Where calls go without usable state, and for suspended agents.
    pub safe_default: Platform,
    /// A request whose `hop` is at least this is a loop.
    pub hop_limit: u32,
    /// Older roster state is still used, marked `stale_state`.
    pub stale_after_ms: u64,
    /// Older roster state is not used at all: the safe default.
    pub expire_after_ms: u64,
    pub transitioning: Transitioning,
    pub max_body_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    sip_uri: String,
    #[serde(default)]
    e911_id: Option<String>,
    #[serde(default)]
    breaker: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    any: bool,
    platform: Platform,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    routes: Vec<String>,
    cloud: RawTarget,
    legacy: RawTarget,
    #[serde(default)]
    dnis_rules: Vec<RawRule>,
    #[serde(default = "legacy")]
    default: Platform,
    #[serde(default = "legacy")]
    safe_default: Platform,
    #[serde(default = "d_hop_limit")]
    hop_limit: u32,
    #[serde(default = "d_stale")]
    stale_after_ms: u64,
    #[serde(default = "d_expire")]
    expire_after_ms: u64,
    #[serde(default)]
    transitioning: Transitioning,
    #[serde(default = "d_max_body")]
    max_body_bytes: usize,
}

fn legacy() -> Platform {
    Platform::Legacy
}
fn d_hop_limit() -> u32 {
    2
}
/// Three missed 60 s roster polls.
fn d_stale() -> u64 {
    180_000
}
/// An hour: past this the roster no longer says who moved.
fn d_expire() -> u64 {
    3_600_000
}
fn d_max_body() -> usize {
    4096
}

const AT: &str = "/coexistence";

fn target(raw: RawTarget, at: &str) -> Result<Target, ConfigError> {
    let uri = raw.sip_uri.trim().to_string();
    if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
        return Err(ConfigError::at(
            format!("{at}/sip_uri"),
            "must be a sip: or sips: URI",
        ));
    }
    let mut rest = uri.as_str();
    while let Some(open) = rest.find('{') {
        let tail = rest.get(open..).unwrap_or_default();
        let Some(close) = tail.find('}') else {
            return Err(ConfigError::at(format!("{at}/sip_uri"), "unclosed '{'"));
        };
        let name = tail.get(1..close).unwrap_or_default();
        if name != "dnis" && name != "extension" {
            return Err(ConfigError::at(
                format!("{at}/sip_uri"),
                format!("unknown placeholder {{{name}}}: use {{dnis}} or {{extension}}"),
            ));
        }
        rest = tail.get(close + 1..).unwrap_or_default();
    }
    if raw.breaker.as_deref().is_some_and(|b| b.trim().is_empty()) {
        return Err(ConfigError::at(format!("{at}/breaker"), "names a platform"));
    }
    Ok(Target {
        sip_uri: uri,
        e911_id: raw.e911_id,
        breaker: raw.breaker.map(|b| b.trim().to_string()),
    })
}

fn rule(raw: RawRule, i: usize) -> Result<DnisRule, ConfigError> {
    let at = format!("{AT}/dnis_rules/{i}");
    let digits = |s: String, field: &str| -> Result<String, ConfigError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::at(
                format!("{at}/{field}"),
                "must be one or more digits",
            ));
        }
        Ok(s)
    };
    let mut patterns = Vec::new();
    if let Some(p) = raw.exact {
        patterns.push(Pattern::Exact(digits(p, "exact")?));
    }
    if let Some(p) = raw.prefix {
        patterns.push(Pattern::Prefix(digits(p, "prefix")?));
    }
    if let Some(p) = raw.suffix {
        patterns.push(Pattern::Suffix(digits(p, "suffix")?));
    }
    if raw.any {
        patterns.push(Pattern::Any);
    }
    let mut patterns = patterns.into_iter();
    let (Some(pattern), None) = (patterns.next(), patterns.next()) else {
        return Err(ConfigError::at(
            at,
            "a rule has exactly one of exact, prefix, suffix or any",
        ));
    };
    Ok(DnisRule {
        name: raw.name.unwrap_or_else(|| format!("rule-{i}")),
        pattern,
        platform: raw.platform,
    })
}

impl Config {
    pub fn compile(section: Value) -> Result<Config, ConfigError> {
        if section.is_null() {
            return Err(ConfigError::at(
                AT,
                "the coexistence stage needs its section (cloud and legacy sip_uri at least)",
            ));
        }
        let raw: RawConfig = config::from_value(section, AT)?;
        if raw.hop_limit == 0 {
            return Err(ConfigError::at(
                format!("{AT}/hop_limit"),
                "must be at least 1",
            ));
        }
        if raw.expire_after_ms < raw.stale_after_ms {
            return Err(ConfigError::at(
                format!("{AT}/expire_after_ms"),
                "must not be below stale_after_ms",
            ));
        }
        let dnis_rules = raw
            .dnis_rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            routes: raw.routes,
            cloud: target(raw.cloud, &format!("{AT}/cloud"))?,
            legacy: match raw.legacy.breaker {
                Some(_) => {
                    return Err(ConfigError::at(
                        format!("{AT}/legacy/breaker"),
                        "only the cloud target has a breaker",
                    ));
                }
                None => target(raw.legacy, &format!("{AT}/legacy"))?,
            },
            dnis_rules,
            default: raw.default,
            safe_default: raw.safe_default,
            hop_limit: raw.hop_limit,
            stale_after_ms: raw.stale_after_ms,
            expire_after_ms: raw.expire_after_ms,
            transitioning: raw.transitioning,
            max_body_bytes: raw.max_body_bytes,
        })
    }

    pub fn target(&self, p: Platform) -> &Target {
        match p {
            Platform::Cloud => &self.cloud,
            Platform::Legacy => &self.legacy,
        }
    }

    /// The smallest valid section (tests and docs start from it).
    pub fn example() -> Value {
        json!({
            "routes": ["coexistence-decision"],
            "cloud": {"sip_uri": "sip:{dnis}@cloud.example.net"},
            "legacy": {"sip_uri": "sip:{dnis}@pbx.example.net"}
        })
    }
}
