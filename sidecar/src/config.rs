//! The sidecar config file (schema: `schemas/sidecar.config.schema.json`). Secrets are never in
//! it: each secret names an environment variable or a file to read it from.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where a secret comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// A resolved secret. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretSource {
    /// Reads the secret; the error names `field` and the source, never a value.
    pub fn resolve(&self, field: &str) -> Result<Secret, String> {
        let value = match self {
            SecretSource::Env(name) => std::env::var(name)
                .map_err(|_| format!("{field}: environment variable {name} is not set"))?,
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))?
                .trim()
                .to_string(),
        };
        if value.is_empty() {
            return Err(format!("{field}: the secret is empty"));
        }
        Ok(Secret(value))
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}
fn default_key() -> SecretSource {
    SecretSource::Env("CXGATE_SIDECAR_KEY".into())
}
fn default_long_poll_ms() -> u64 {
    25_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub version: Option<u32>,
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The key every caller sends in `x-cxgate-sidecar-key`.
    #[serde(default = "default_key")]
    pub key: SecretSource,
    /// Upper bound for `GET /v1/state?since=` waits.
    #[serde(default = "default_long_poll_ms")]
    pub long_poll_max_ms: u64,
    #[serde(default)]
    pub refresh: Refresh,
    #[serde(default)]
    pub metadata: Metadata,
    #[serde(default)]
    pub tls: Tls,
    pub genesys: Option<Genesys>,
    pub cxone: Option<Cxone>,
    pub llm: Option<Llm>,
    /// Anthropic's API key (the `anthropic` platform), published like `llm`'s; the token stage
    /// puts it in `x-api-key`.
    pub anthropic: Option<Llm>,
    /// The shared rate-limit budget of the filters' distributed mode.
    pub redis: Option<Redis>,
    /// The coexistence roster (cloud directory + legacy roster) for call routing.
    pub coexistence: Option<Coexistence>,
    /// LLM model provisioning through the platform's admin API (`/v1/models`).
    pub models: Option<Models>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    /// The LLM platform's admin API base URL.
    pub platform_url: String,
    pub admin_key: SecretSource,
    #[serde(default = "models_audit_log")]
    pub audit_log: PathBuf,
    #[serde(default = "models_environment")]
    pub environment: String,
    #[serde(default = "models_poll_initial_ms")]
    pub poll_initial_ms: u64,
    #[serde(default = "models_poll_max_attempts")]
    pub poll_max_attempts: u32,
    #[serde(default = "models_poll_deadline_s")]
    pub poll_deadline_s: u64,
}

fn models_audit_log() -> PathBuf {
    PathBuf::from("cxgate-models-audit.jsonl")
}
fn models_environment() -> String {
    "production".into()
}
fn models_poll_initial_ms() -> u64 {
    1000
}
fn models_poll_max_attempts() -> u32 {
    60
}
fn models_poll_deadline_s() -> u64 {
    900
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coexistence {
    /// The legacy PBX's roster: CSV (header `user_id,extension,status,site,e911_id,migration_status`)
    /// or a JSON array of those fields, chosen by the file extension or the content type.
    pub legacy_roster: RosterSource,
    /// How often the Genesys users (with routing status) and the legacy roster are fetched.
    #[serde(default = "coexistence_poll")]
    pub poll_s: u64,
    /// How often agents active on both sides are looked for (zombie reconciliation).
    #[serde(default = "coexistence_reconcile")]
    pub reconcile_s: u64,
    /// Emergency address ids per site, one per platform.
    #[serde(default)]
    pub sites: std::collections::BTreeMap<String, cxgate_state::Site>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum RosterSource {
    File(std::path::PathBuf),
    /// Fetched with a plain GET (loopback or an internal host; no credentials).
    Url(String),
}

fn coexistence_poll() -> u64 {
    60
}
fn coexistence_reconcile() -> u64 {
    900
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// e.g. `redis://127.0.0.1:6379/0` (credentials, if any, belong in the URL's env, not here).
    pub url: String,
    #[serde(default = "redis_prefix")]
    pub key_prefix: String,
    /// Bound on one Redis call; past it the filters fall back to local limits.
    #[serde(default = "redis_timeout")]
    pub timeout_ms: u64,
}

fn redis_prefix() -> String {
    "cxgate:rl:".into()
}
fn redis_timeout() -> u64 {
    300
}

/// An LLM endpoint's static API key, published like a token so the token filter injects it
/// (and a 401 re-reads it, which picks up a rotated key file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    pub api_key: SecretSource,
    /// How long a read of the key is served before it is read again.
    #[serde(default = "llm_lifetime")]
    pub reread_s: u64,
    /// Probed in the background for `/health` (e.g. `{base}/v1/models`).
    pub health_url: Option<String>,
    #[serde(default = "llm_health_interval")]
    pub health_interval_s: u64,
}

fn llm_health_interval() -> u64 {
    15
}

fn llm_lifetime() -> u64 {
    3600
}

/// Trust for the calls to the platforms: the built-in web roots, and these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Further CA certificates (PEM): a private CA, or a TLS-inspecting egress proxy.
    pub ca_file: Option<PathBuf>,
}

impl Tls {
    /// A client builder that trusts `ca_file`'s certificates too.
    pub fn client_builder(&self) -> Result<reqwest::ClientBuilder, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("tls.ca_file: cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "tls.ca_file {}: no certificate in it",
                    path.display()
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Refresh {
    /// Refresh when this share of the received `expires_in` has passed.
    pub at: f64,
    /// Up to this share earlier, at random, so instances do not refresh in step.
    pub jitter: f64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub request_timeout_ms: u64,
}

impl Default for Refresh {
    fn default() -> Self {
        Refresh {
            at: 0.95,
            jitter: 0.02,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            request_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metadata {
    pub interval_s: u64,
    pub page_size: u32,
    /// Also sync `cxone/queues` from the seed documents' `/api/v2/routing/queues` (the mock
    /// platforms speak it; real CXone routes by skills and has no queue entity).
    pub seed_queues: bool,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            interval_s: 300,
            page_size: 100,
            seed_queues: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesys {
    /// e.g. `mypurecloud.com`, `usw2.pure.cloud`: login and API hosts are derived from it.
    pub region: Option<String>,
    /// Explicit base URLs (override `region`; used for the mock platforms).
    pub login_url: Option<String>,
    pub api_url: Option<String>,
    pub client_id: SecretSource,
    pub client_secret: SecretSource,
    #[serde(default = "genesys_rps")]
    pub max_grants_per_second: f64,
}

fn genesys_rps() -> f64 {
    5.0
}

impl Genesys {
    /// (login base, API base).
    pub fn urls(&self) -> Result<(String, String), String> {
        match (&self.login_url, &self.api_url, &self.region) {
            (Some(l), Some(a), _) => Ok((trim(l), trim(a))),
            (_, _, Some(r)) => Ok((format!("https://login.{r}"), format!("https://api.{r}"))),
            _ => Err("/genesys: set region, or both login_url and api_url".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cxone {
    /// OIDC issuer; production: `https://cxone.niceincontact.com`.
    pub issuer: String,
    pub tenant_id: String,
    pub client_id: SecretSource,
    pub client_secret: SecretSource,
    pub access_key_id: SecretSource,
    pub access_key_secret: SecretSource,
    /// The API host the gateway's cxone cluster was rendered for; discovery must agree.
    #[serde(default)]
    pub gateway_api_endpoint: Option<String>,
    #[serde(default = "cxone_rps")]
    pub max_grants_per_second: f64,
}

fn cxone_rps() -> f64 {
    10.0
}

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("config {}: {}", e.path(), e.inner()))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.version.is_some_and(|v| v != 1) {
            return Err("config version: only version 1 is supported".into());
        }
        if !self.listen.ip().is_loopback() {
            return Err(format!(
                "config listen: {} is not a loopback address",
                self.listen
            ));
        }
        let r = &self.refresh;
        if !(0.5..=0.99).contains(&r.at) || !(0.0..=0.2).contains(&r.jitter) || r.jitter >= r.at {
            return Err("config refresh: need 0.5 <= at <= 0.99 and 0 <= jitter <= 0.2".into());
        }
        if r.backoff_initial_ms == 0 || r.backoff_max_ms < r.backoff_initial_ms {
            return Err("config refresh: need 0 < backoff_initial_ms <= backoff_max_ms".into());
        }
        if let Some(g) = &self.genesys {
            g.urls()?;
            if !g.max_grants_per_second.is_finite() || g.max_grants_per_second <= 0.0 {
                return Err("config genesys.max_grants_per_second must be > 0".into());
            }
        }
        if let Some(c) = &self.cxone
            && (!c.max_grants_per_second.is_finite() || c.max_grants_per_second <= 0.0)
        {
            return Err("config cxone.max_grants_per_second must be > 0".into());
        }
        if self.llm.as_ref().is_some_and(|l| l.reread_s < 10) {
            return Err("config llm.reread_s must be >= 10".into());
        }
        if self.anthropic.as_ref().is_some_and(|l| l.reread_s < 10) {
            return Err("config anthropic.reread_s must be >= 10".into());
        }
        if let Some(c) = &self.coexistence {
            if c.poll_s == 0 || c.reconcile_s == 0 {
                return Err("config coexistence: poll_s and reconcile_s must be > 0".into());
            }
            if self.genesys.is_none() {
                return Err("config coexistence: needs genesys (the cloud directory)".into());
            }
        }
        if self.metadata.interval_s == 0 || self.metadata.page_size == 0 {
            return Err("config metadata: interval_s and page_size must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Config;
    use serde_json::{Value, json};

    fn schema() -> jsonschema::Validator {
        let s: Value =
            serde_json::from_str(include_str!("../../schemas/sidecar.config.schema.json")).unwrap();
        jsonschema::validator_for(&s).unwrap()
    }

    /// The schema and the parser agree on the shipped example and on the newer sections.
    #[test]
    fn the_schema_and_the_parser_accept_the_same_configs() {
        let v = schema();
        let example: Value = serde_json::from_str(include_str!("../config.example.json")).unwrap();
        let mut with_models = example.clone();
        with_models["models"] = json!({"platform_url": "https://llm.example.com",
            "admin_key": {"env": "LLM_ADMIN_KEY"}, "poll_deadline_s": 60});
        let demo = cxgate_stack::demo_sidecar_config(&cxgate_stack::Ports::free(), None);
        for doc in [example, with_models, demo] {
            let errors: Vec<String> = v
                .iter_errors(&doc)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
            Config::parse(&doc.to_string()).unwrap();
        }
        let bad = json!({"models": {"platform_url": "https://x", "admin_key": "literal"}});
        assert!(!v.is_valid(&bad));
        assert!(Config::parse(&bad.to_string()).is_err());
    }
}
