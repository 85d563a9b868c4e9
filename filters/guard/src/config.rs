//! The guard section of the config document, compiled once per worker.

use crate::bot::BotConfig;
use crate::chain::ChainConfig;
use crate::detect::Thresholds;
use crate::endpoint::{Calls, Endpoint};
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

/// What the guard does on a route.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteKind {
    /// Guards a request the proxy forwards to the LLM (screening, redaction, metering).
    Proxy,
    /// Answers the request itself with the two-stage chain.
    Chain(Box<ChainConfig>),
    /// Answers a CXone bot webhook with the LLM.
    Bot(Box<BotConfig>),
}

/// Per-route options.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOptions {
    /// Upstream timeouts, 429s and 5xx become the fallback reply (bot routes).
    pub fallback: bool,
    pub kind: RouteKind,
    /// PII in what is sent to the LLM is redacted too, in every text field (not only in
    /// what comes back).
    pub redact_prompts: bool,
    /// With `redact_prompts`: each entity becomes a token for this request (`[EMAIL_A]`) that
    /// the answer gets back as the original value (proxied routes).
    pub placeholders: bool,
    /// Media parts (images, audio, files) are forwarded unread instead of refused (proxied
    /// routes). The guard cannot screen them: a route that sets this says so.
    pub pass_media: bool,
    /// Paths below the route's prefix forwarded without the guard (exact, or a prefix ending
    /// in `*`); every use is logged. Anything else the guard does not understand is refused.
    pub unguarded: Vec<String>,
    /// The injection detector's thresholds here (`None`: off), the screen's unless the route
    /// sets its own.
    pub detector: Option<Thresholds>,
    /// The route's own `detector` setting, until [`Config::compile`] resolves `detector`.
    detector_override: Option<Option<Thresholds>>,
}

/// Read by hand ([`Fields`]), not derived: the module is smaller by the serde code of each
/// type (BENCHMARKS.md, "LLM guard rails"). Small tables are vectors for the same reason.
pub struct Config {
    pub routes: Vec<(String, RouteOptions)>,
    pub mode: Mode,
    pub roles: Vec<String>,
    pub screen: Screen,
    pub scanner: Scanner,
    pub safety: Safety,
    pub fallback_text: String,
    pub prices: Vec<(String, Price)>,
    /// Present when a route is a chain or a bot.
    pub calls: Option<Calls>,
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
            return Err(ConfigError::at(
                AT,
                "the guard stage needs its section (routes at least)",
            ));
        }
        let mut f = Fields::of(&section, AT)?;
        let mut routes = f.entries("routes", route)?.unwrap_or_default();
        if routes.is_empty() {
            return Err(ConfigError::at(f.at("routes"), "name at least one route"));
        }
        let ScreenSection {
            mode,
            roles,
            rules,
            detector,
        } = screen_section(f.object("screen")?)?;
        let screen = Screen::new(rules.unwrap_or_else(screen::default_rules))
            .map_err(|e| ConfigError::at(format!("{AT}/screen/rules"), e))?;
        let kinds = redact_kinds(f.strings("redact")?)?;
        let keywords = f.strings("safety_keywords")?.unwrap_or_else(|| {
            safety::DEFAULT_KEYWORDS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        let safety = Safety::new(keywords)
            .map_err(|e| ConfigError::at(format!("{AT}/safety_keywords"), e))?;
        let fallback_text = f.str("fallback_text")?.unwrap_or(DEFAULT_FALLBACK);
        if fallback_text.trim().is_empty() {
            return Err(ConfigError::at(
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
        let calls = f.object("calls")?.map(compile_calls).transpose()?;
        for (_, r) in routes.iter_mut() {
            if let Some(own) = r.detector_override.take() {
                r.detector = own;
            } else {
                r.detector = detector;
            }
        }
        check_calls(&routes, calls.as_ref(), &f.at("calls"))?;
        f.done()?;
        Ok(Config {
            routes,
            mode,
            roles: roles.unwrap_or_else(|| vec!["user".into(), "tool".into()]),
            screen,
            scanner: Scanner::new(&kinds),
            safety,
            fallback_text: fallback_text.to_string(),
            prices,
            calls,
        })
    }
}

/// The `screen` object: mode, roles, rules and the detector's thresholds.
struct ScreenSection {
    mode: Mode,
    roles: Option<Vec<String>>,
    rules: Option<Vec<Rule>>,
    detector: Option<Thresholds>,
}

fn screen_section(sc: Option<Fields<'_>>) -> Result<ScreenSection, ConfigError> {
    let Some(mut sc) = sc else {
        return Ok(ScreenSection {
            mode: Mode::Filter,
            roles: None,
            rules: None,
            detector: Some(Thresholds::default()),
        });
    };
    let detector = match sc.get("detector") {
        Some(v) => thresholds(v, &sc.at("detector"))?,
        None => Some(Thresholds::default()),
    };
    let mode = match sc.str("mode")? {
        None | Some("filter") => Mode::Filter,
        Some("block") => Mode::Block,
        Some(other) => {
            return Err(ConfigError::at(
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
    Ok(ScreenSection {
        mode,
        roles,
        rules,
        detector,
    })
}

/// The entity types `redact` names, or the default set.
fn redact_kinds(names: Option<Vec<String>>) -> Result<Vec<Kind>, ConfigError> {
    let Some(names) = names else {
        return Ok(Kind::DEFAULT.to_vec());
    };
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Kind::parse(n).ok_or_else(|| {
                ConfigError::at(
                    format!("{AT}/redact/{i}"),
                    format!(
                        "unknown type {n:?}: use ssn, card, phone, email, iban, passport, \
                         driver_license, birth_date or ipv4"
                    ),
                )
            })
        })
        .collect()
}

/// A chain or bot route calls the LLM, so `calls` must say how; one that retries also needs
/// the timer its waits use.
fn check_calls(
    routes: &[(String, RouteOptions)],
    calls: Option<&Calls>,
    calls_at: &str,
) -> Result<(), ConfigError> {
    for (id, r) in routes {
        let retries = match &r.kind {
            RouteKind::Proxy => continue,
            RouteKind::Chain(c) => c.retry.attempts > 1,
            RouteKind::Bot(b) => b.retry.attempts > 1,
        };
        let Some(c) = calls else {
            return Err(ConfigError::at(
                calls_at,
                format!("route {id:?} calls the LLM: give calls.llm"),
            ));
        };
        if retries && c.timer.is_none() {
            return Err(ConfigError::at(
                format!("{AT}/calls/timer"),
                format!(
                    "route {id:?} retries, and retry waits need calls.timer (or retry.attempts 1)"
                ),
            ));
        }
    }
    Ok(())
}

/// One entry of `routes`: `{fallback?, redact_prompts?, pass_media?, unguarded?}`,
/// `{chain: {...}}` or `{bot: {...}}`.
fn route(_id: &str, mut r: Fields<'_>) -> Result<RouteOptions, ConfigError> {
    let fallback = r.bool("fallback")?.unwrap_or(false);
    let redact_prompts = r.bool("redact_prompts")?.unwrap_or(false);
    let placeholders = r.bool("placeholders")?.unwrap_or(false);
    if placeholders && !redact_prompts {
        return Err(ConfigError::at(
            r.at("placeholders"),
            "placeholders stand in for what redact_prompts takes out: set redact_prompts too",
        ));
    }
    let pass_media = r.bool("pass_media")?.unwrap_or(false);
    let unguarded = r.strings("unguarded")?.unwrap_or_default();
    let detector_override = match r.get("detector") {
        Some(v) => Some(thresholds(v, &r.at("detector"))?),
        None => None,
    };
    if let Some(i) = unguarded.iter().position(|u| !u.starts_with('/')) {
        return Err(ConfigError::at(
            format!("{}/{i}", r.at("unguarded")),
            "must start with / (a path below the route's prefix)",
        ));
    }
    let chain = r.object("chain")?.map(ChainConfig::compile).transpose()?;
    let bot = r.object("bot")?.map(BotConfig::compile).transpose()?;
    let kind = match (chain, bot) {
        (None, None) => RouteKind::Proxy,
        (Some(c), None) => RouteKind::Chain(Box::new(c)),
        (None, Some(b)) => RouteKind::Bot(Box::new(b)),
        (Some(_), Some(_)) => {
            return Err(ConfigError::at(
                r.at("bot"),
                "a route is a chain or a bot, not both",
            ));
        }
    };
    let proxied = matches!(kind, RouteKind::Proxy);
    if fallback && !proxied {
        return Err(ConfigError::at(
            r.at("fallback"),
            "only for proxied routes (a bot route always falls back)",
        ));
    }
    if !proxied && (pass_media || placeholders || !unguarded.is_empty()) {
        let key = match (pass_media, placeholders) {
            (true, _) => "pass_media",
            (_, true) => "placeholders",
            _ => "unguarded",
        };
        return Err(ConfigError::at(
            r.at(key),
            "only for proxied routes (the gateway builds a chain's or a bot's calls itself)",
        ));
    }
    r.done()?;
    Ok(RouteOptions {
        fallback,
        kind,
        redact_prompts,
        placeholders,
        pass_media,
        unguarded,
        detector: None,
        detector_override,
    })
}

/// `false` (off), `true` (the defaults) or `{filter_at?, block_at?}` (0..=100, filter below
/// block).
fn thresholds(v: &Value, at: &str) -> Result<Option<Thresholds>, ConfigError> {
    if let Some(on) = v.as_bool() {
        return Ok(on.then(Thresholds::default));
    }
    let mut f = Fields::of(v, at)?;
    let d = Thresholds::default();
    let filter_at = f.u64("filter_at")?.unwrap_or(u64::from(d.filter_at));
    let block_at = f.u64("block_at")?.unwrap_or(u64::from(d.block_at));
    if filter_at == 0 || filter_at > block_at || block_at > 101 {
        return Err(ConfigError::at(
            at,
            "thresholds are 1..=101 with filter_at <= block_at (101: never block)",
        ));
    }
    f.done()?;
    Ok(Some(Thresholds {
        filter_at: filter_at as u32,
        block_at: block_at as u32,
    }))
}

/// `calls: {llm: {upstream, authority, scheme?, path?}, timer?: {...}}`.
fn compile_calls(mut f: Fields<'_>) -> Result<Calls, ConfigError> {
    let llm = endpoint(f.object("llm")?, "/v1/chat/completions")?;
    let timer = endpoint(f.object("timer")?, "/cxgate/delay")?;
    let Some((llm, llm_path)) = llm else {
        return Err(ConfigError::at(f.at("llm"), "missing field `llm`"));
    };
    f.done()?;
    Ok(Calls {
        llm,
        llm_path,
        timer,
    })
}

fn endpoint(
    e: Option<Fields<'_>>,
    default_path: &str,
) -> Result<Option<(Endpoint, String)>, ConfigError> {
    let Some(mut e) = e else {
        return Ok(None);
    };
    let ep = Endpoint::compile(&mut e)?;
    let path = e.str("path")?.unwrap_or(default_path).to_string();
    if !path.starts_with('/') {
        return Err(ConfigError::at(e.at("path"), "must start with /"));
    }
    e.done()?;
    Ok(Some((ep, path)))
}

/// `[{id, phrase}, ...]`.
fn rules_of(v: &Value, at: &str) -> Result<Vec<Rule>, ConfigError> {
    let items = v
        .as_array()
        .ok_or_else(|| ConfigError::at(at, "must be an array of {id, phrase}"))?;
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
