//! The deployment file, as read (its schema, `schemas/deployment.schema.json`, says the same
//! with descriptions; the schema is checked first, so errors here are rare).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    /// An editor's pointer to the schema; not read.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    pub version: u32,
    /// Paths below (`pipeline`, the schema files it names) are relative to this directory,
    /// itself relative to the deployment file.
    #[serde(default = "dot")]
    pub root: PathBuf,
    /// The pipeline document: routes, scopes, consumers' scopes, stage settings.
    pub pipeline: PathBuf,
    /// The consumer key store Envoy reads and watches (ECDS from a file).
    pub key_store: PathBuf,
    /// Where `cxgate_pipeline.wasm` is.
    pub wasm_dir: PathBuf,
    #[serde(default)]
    pub gateway: Gateway,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub sidecar: Sidecar,
    pub genesys: Genesys,
    pub cxone: Cxone,
    pub llm: Llm,
    /// Anthropic's Messages API (its own route, `/anthropic/`); absent, the rendered gateway
    /// has no `anthropic` route, cluster or key.
    #[serde(default)]
    pub anthropic: Option<Llm>,
    /// Timeouts and retries for every platform route the `routes` map does not name.
    #[serde(default)]
    pub route_defaults: RoutePolicy,
    /// Per route id of the pipeline document.
    #[serde(default)]
    pub routes: BTreeMap<String, RoutePolicy>,
    /// Keep the seed document's request shapes (`*-seed` profiles) instead of the real APIs'.
    #[serde(default)]
    pub seed_shapes: bool,
    /// The sidecar's coexistence section, as it is (schemas/sidecar.config.schema.json).
    #[serde(default)]
    pub coexistence: Option<Value>,
    /// Set by [`super::load`]: `root` resolved.
    #[serde(skip)]
    pub base: PathBuf,
}

fn dot() -> PathBuf {
    PathBuf::from(".")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub access_log: PathBuf,
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9901)),
            access_log: PathBuf::from("/dev/stdout"),
        }
    }
}

/// The CA bundle Debian (and the Envoy images) keep the system's trusted roots in.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The CAs the gateway and the sidecar trust for the platforms (PEM); the system bundle
    /// when unset.
    pub ca_file: Option<PathBuf>,
}

impl Tls {
    pub fn envoy_ca(&self) -> PathBuf {
        self.ca_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sidecar {
    pub listen: SocketAddr,
    /// Where the sidecar's shared key comes from (`{"env": ...}` or `{"file": ...}`). Envoy
    /// reads it from `CXGATE_SIDECAR_KEY` in its environment.
    pub key: Value,
}

impl Default for Sidecar {
    fn default() -> Self {
        Sidecar {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            key: serde_json::json!({"env": "CXGATE_SIDECAR_KEY"}),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesys {
    /// `mypurecloud.com`, `usw2.pure.cloud`, ...: the API is `https://api.<region>`.
    pub region: String,
    /// Overrides of the hosts the region gives (a private endpoint; the tests' mocks).
    pub api_url: Option<String>,
    pub login_url: Option<String>,
    /// A preset of the platform's limit: `cx1` (200/min), `cx3` (2,000/min) from the seed,
    /// `token-default` (300/min per client-credentials token).
    pub tier: Option<String>,
    /// The platform's limit itself (requests/min), instead of a tier.
    pub per_minute: Option<u32>,
    pub client_id: Value,
    pub client_secret: Value,
}

impl Genesys {
    pub fn per_minute(&self) -> Result<u32, String> {
        per_minute(
            "genesys",
            self.per_minute,
            self.tier.as_deref().unwrap_or("token-default"),
            &[("cx1", 200), ("cx3", 2000), ("token-default", 300)],
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cxone {
    pub issuer: String,
    pub tenant_id: String,
    /// The tenant's API host when pinned; else discovered when rendering.
    pub api_endpoint: Option<String>,
    /// `professional` (100/min) or `enterprise` (1,500/min), from the seed.
    pub tier: Option<String>,
    pub per_minute: Option<u32>,
    pub client_id: Value,
    pub client_secret: Value,
    pub access_key_id: Value,
    pub access_key_secret: Value,
}

impl Cxone {
    pub fn per_minute(&self) -> Result<u32, String> {
        per_minute(
            "cxone",
            self.per_minute,
            self.tier.as_deref().unwrap_or("professional"),
            &[("professional", 100), ("enterprise", 1500)],
        )
    }
}

fn per_minute(
    platform: &str,
    explicit: Option<u32>,
    tier: &str,
    presets: &[(&str, u32)],
) -> Result<u32, String> {
    if let Some(n) = explicit {
        return Ok(n);
    }
    presets
        .iter()
        .find(|(t, _)| *t == tier)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("{platform}.tier: unknown tier {tier}; give per_minute instead"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    /// The OpenAI-compatible API's base URL (`https://api.openai.com`).
    pub url: String,
    pub api_key: Value,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePolicy {
    /// The whole request, retries and their waits included.
    pub timeout_ms: Option<u64>,
    pub retry: Option<Retry>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub retry_on: Vec<u16>,
}

impl Retry {
    /// The seed's route policy: two retries, 500 ms apart and growing, on 429, 502 and 503.
    pub fn seed() -> Retry {
        Retry {
            max_retries: 2,
            backoff_base_ms: 500,
            retry_on: vec![429, 502, 503],
        }
    }
}

impl DeployFile {
    /// What a route gets: its own entry, else `route_defaults`, else the template's timeout
    /// and the seed's retries.
    pub fn policy(&self, route: &str, template_timeout_ms: u64) -> (u64, Retry) {
        let own = self.routes.get(route);
        let timeout = own
            .and_then(|p| p.timeout_ms)
            .or(self.route_defaults.timeout_ms)
            .unwrap_or(template_timeout_ms);
        let retry = own
            .and_then(|p| p.retry.clone())
            .or_else(|| self.route_defaults.retry.clone())
            .unwrap_or_else(Retry::seed);
        (timeout, retry)
    }

    /// The platform clusters and where they go.
    pub fn upstreams(&self, cxone_api: &str) -> Result<Vec<(&'static str, Upstream)>, String> {
        let genesys = match &self.genesys.api_url {
            Some(url) => url.clone(),
            None => format!("https://api.{}", self.genesys.region),
        };
        let mut out = vec![
            ("genesys", Upstream::parse("genesys", &genesys)?),
            ("cxone", Upstream::parse("cxone", cxone_api)?),
            ("llm", Upstream::parse("llm", &self.llm.url)?),
        ];
        if let Some(a) = &self.anthropic {
            out.push(("anthropic", Upstream::parse("anthropic", &a.url)?));
        }
        Ok(out)
    }
}

/// A platform's API host: HTTPS only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// `Host`/`:authority`: the host, with the port when it is not 443.
    pub authority: String,
    /// The URL as given, without a trailing slash.
    pub url: String,
}

impl Upstream {
    pub fn parse(what: &str, url: &str) -> Result<Upstream, String> {
        let url = url.trim_end_matches('/');
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            format!("{what}: {url}: a platform is reached over HTTPS only (https://host[:port])")
        })?;
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(format!(
                "{what}: {url}: give the host only (the gateway's routes add the paths)"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("{what}: {url}: bad port {p}"))?,
            ),
            None => (rest, 443),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !host_ok {
            return Err(format!("{what}: {url}: {host} is not a DNS name"));
        }
        let host = host.to_ascii_lowercase();
        let authority = if port == 443 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            host,
            port,
            authority,
            url: url.to_string(),
        })
    }
}
