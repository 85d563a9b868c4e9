//! The guard section of the config document, compiled once per worker.

use crate::meter::Price;
use crate::pii::{Kind, Scanner};
use crate::safety::{self, Safety};
use crate::screen::{self, Rule, Screen};
use cxgate_kit::ConfigError;
use cxgate_kit::config;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Replace each match with the marker and forward.
    #[default]
    Filter,
    /// Refuse the request with 400.
    Block,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Filter => "filter",
            Mode::Block => "block",
        }
    }
}

/// Per-route options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteOptions {
    /// Upstream timeouts, 429s and 5xx become the fallback reply (bot routes).
    #[serde(default)]
    pub fallback: bool,
}

pub struct Config {
    pub routes: BTreeMap<String, RouteOptions>,
    pub mode: Mode,
    pub roles: Vec<String>,
    pub screen: Screen,
    pub scanner: Scanner,
    pub safety: Safety,
    pub fallback_text: String,
    pub prices: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    phrase: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScreen {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    rules: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    routes: BTreeMap<String, RouteOptions>,
    #[serde(default)]
    screen: RawScreen,
    #[serde(default)]
    redact: Option<Vec<String>>,
    #[serde(default)]
    safety_keywords: Option<Vec<String>>,
    #[serde(default = "d_fallback")]
    fallback_text: String,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
}

/// The seed's fallback text.
pub const DEFAULT_FALLBACK: &str = "I am currently experiencing high demand. Please try again in a few moments or speak to a human agent.";

fn d_fallback() -> String {
    DEFAULT_FALLBACK.to_string()
}

const AT: &str = "/guard";

impl Config {
    pub fn compile(section: Value) -> Result<Config, ConfigError> {
        if section.is_null() {
            return Err(ConfigError::new(
                AT,
                "the guard stage needs its section (routes at least)",
            ));
        }
        let raw: RawConfig = config::from_value(section, AT)?;
        if raw.routes.is_empty() {
            return Err(ConfigError::new(
                format!("{AT}/routes"),
                "name at least one route",
            ));
        }
        let rules = match raw.screen.rules {
            Some(r) => r
                .into_iter()
                .map(|r| Rule {
                    id: r.id,
                    phrase: r.phrase,
                })
                .collect(),
            None => screen::default_rules(),
        };
        let screen =
            Screen::new(rules).map_err(|e| ConfigError::new(format!("{AT}/screen/rules"), e))?;
        let kinds = match raw.redact {
            Some(names) => names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    Kind::parse(n).ok_or_else(|| {
                        ConfigError::new(
                            format!("{AT}/redact/{i}"),
                            format!("unknown type {n:?}: use ssn, card, phone, email or iban"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![Kind::Ssn, Kind::Card, Kind::Phone, Kind::Email],
        };
        let keywords = raw.safety_keywords.unwrap_or_else(|| {
            safety::DEFAULT_KEYWORDS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let safety = Safety::new(keywords)
            .map_err(|e| ConfigError::new(format!("{AT}/safety_keywords"), e))?;
        if raw.fallback_text.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{AT}/fallback_text"),
                "must not be empty",
            ));
        }
        Ok(Config {
            routes: raw.routes,
            mode: raw.screen.mode,
            roles: raw.screen.roles.unwrap_or_else(|| vec!["user".into()]),
            screen,
            scanner: Scanner::new(&kinds),
            safety,
            fallback_text: raw.fallback_text,
            prices: raw.prices,
        })
    }
}
