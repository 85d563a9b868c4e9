//! Where a call the gateway makes itself goes: the LLM and the timer of the chain and bot
//! routes, and a bot's history calls.

use cxgate_kit::ConfigError;
use cxgate_kit::credential::Credential;
use cxgate_kit::fields::Fields;

/// Where a call the gateway makes itself goes: an Envoy cluster or a Kong `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub upstream: String,
    pub authority: String,
    pub scheme: String,
    /// Kong: the call carries the platform's synced token itself (in Envoy the cluster's
    /// token filter adds it).
    pub credential: Option<Credential>,
    /// The call goes to the sidecar and carries its key (Kong's timer).
    pub sidecar_key: bool,
}

impl Endpoint {
    /// `upstream` and `authority` (both required), `scheme` (http), `credential`,
    /// `sidecar_key`.
    pub fn compile(f: &mut Fields<'_>) -> Result<Endpoint, ConfigError> {
        let upstream = f.required_str("upstream")?.to_string();
        let authority = f.required_str("authority")?.to_string();
        let scheme = match f.str("scheme")? {
            None | Some("http") => "http",
            Some("https") => "https",
            Some(_) => return Err(ConfigError::at(f.at("scheme"), "must be http or https")),
        };
        if upstream.is_empty() || authority.is_empty() {
            return Err(ConfigError::at(f.at("upstream"), "must not be empty"));
        }
        let credential = Credential::compile(f.object("credential")?)?;
        let sidecar_key = f.bool("sidecar_key")?.unwrap_or(false);
        Ok(Endpoint {
            upstream,
            authority,
            scheme: scheme.to_string(),
            credential,
            sidecar_key,
        })
    }
}

/// The calls the chain and the bot routes make: the LLM, and the timer their retry waits
/// go through (proxy-wasm has no sleep: a call that answers after the wait stands in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calls {
    pub llm: Endpoint,
    pub llm_path: String,
    pub timer: Option<(Endpoint, String)>,
}
