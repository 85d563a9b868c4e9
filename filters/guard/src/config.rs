//! The guard section of the config document, compiled once per worker.

use crate::meter::Price;
use crate::pii::{Kind, Scanner};
use crate::safety::{self, Safety};
use crate::screen::{self, Rule, Screen};
use cxgate_kit::ConfigError;
use cxgate_kit::fields::Fields;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteOptions {
    /// Upstream timeouts, 429s and 5xx become the fallback reply (bot routes).
    pub fallback: bool,
}

/// Read by hand ([`Fields`]), not derived: the module is smaller by the serde code of each
/// type (BENCHMARKS.md, issue 17). Small tables are vectors for the same reason.
pub struct Config {
    pub routes: Vec<(String, RouteOptions)>,
    pub mode: Mode,
    pub roles: Vec<String>,
    pub screen: Screen,
    pub scanner: Scanner,
    pub safety: Safety,
    pub fallback_text: String,
    pub prices: Vec<(String, Price)>,
}

/// The seed's fallback text.
pub const DEFAULT_FALLBACK: &str = "I am currently experiencing high demand. Please try again in a few moments or speak to a human agent.";

const AT: &str = "/guard";

impl Config {
    pub fn route(&self, id: &str) -> Option<&RouteOptions> {
        self.routes.iter().find(|(r, _)| r == id).map(|(_, o)| o)
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .iter()
            .find(|(m, _)| m == model)
            .map(|(_, p)| *p)
    }

    pub fn compile(section: Value) -> Result<Config, ConfigError> {
        if section.is_null() {
            return Err(ConfigError::new(
                AT,
                "the guard stage needs its section (routes at least)",
            ));
        }
        let mut f = Fields::of(&section, AT)?;
        let routes = f
            .entries("routes", |_, mut r| {
                let fallback = r.bool("fallback")?.unwrap_or(false);
                r.done()?;
                Ok(RouteOptions { fallback })
            })?
            .unwrap_or_default();
        if routes.is_empty() {
            return Err(ConfigError::new(f.at("routes"), "name at least one route"));
        }
        let (mode, roles, rules) = match f.object("screen")? {
            Some(mut sc) => {
                let mode = match sc.str("mode")? {
                    None | Some("filter") => Mode::Filter,
                    Some("block") => Mode::Block,
                    Some(other) => {
                        return Err(ConfigError::new(
                            sc.at("mode"),
                            format!("unknown mode {other:?}: use filter or block"),
                        ));
                    }
                };
                let roles = sc.strings("roles")?;
                let rules = sc
                    .get("rules")
                    .map(|v| rules_of(v, &sc.at("rules")))
                    .transpose()?;
                sc.done()?;
                (mode, roles, rules)
            }
            None => (Mode::Filter, None, None),
        };
        let screen = Screen::new(rules.unwrap_or_else(screen::default_rules))
            .map_err(|e| ConfigError::new(format!("{AT}/screen/rules"), e))?;
        let kinds = match f.strings("redact")? {
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
        let keywords = f.strings("safety_keywords")?.unwrap_or_else(|| {
            safety::DEFAULT_KEYWORDS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let safety = Safety::new(keywords)
            .map_err(|e| ConfigError::new(format!("{AT}/safety_keywords"), e))?;
        let fallback_text = f.str("fallback_text")?.unwrap_or(DEFAULT_FALLBACK);
        if fallback_text.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{AT}/fallback_text"),
                "must not be empty",
            ));
        }
        let prices = f
            .entries("prices", |_, mut p| {
                let price = Price {
                    prompt_micros_per_1k: p.required_u64("prompt_micros_per_1k")?,
                    completion_micros_per_1k: p.required_u64("completion_micros_per_1k")?,
                };
                p.done()?;
                Ok(price)
            })?
            .unwrap_or_default();
        f.done()?;
        Ok(Config {
            routes,
            mode,
            roles: roles.unwrap_or_else(|| vec!["user".into()]),
            screen,
            scanner: Scanner::new(&kinds),
            safety,
            fallback_text: fallback_text.to_string(),
            prices,
        })
    }
}

/// `[{id, phrase}, ...]`.
fn rules_of(v: &Value, at: &str) -> Result<Vec<Rule>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::new(at, "must be an array of {id, phrase}"))?;
    let mut rules = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut r = Fields::of(item, &format!("{at}/{i}"))?;
        let id = r.required_str("id")?.to_string();
        let phrase = r.required_str("phrase")?.to_string();
        r.done()?;
        rules.push(Rule { id, phrase });
    }
    Ok(rules)
}
