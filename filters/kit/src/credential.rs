//! The platform credential for a call a stage makes itself (`dispatch_http_call`). In Envoy
//! such calls go through the platform cluster, whose upstream token filter adds it; Kong has no
//! filter under a call, so the calling stage adds it from the synced token in shared data.

use crate::ConfigError;
use crate::fields::Fields;
use crate::host::SharedStore;
use crate::shared::Stamped;
use cxgate_state::{Freshness, TokenState};

/// `credential: {platform, header?, scheme?}` on a call's endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub platform: String,
    /// Default `authorization`.
    pub header: String,
    /// Default `Bearer`; empty sends the raw token (an API key header).
    pub scheme: String,
}

/// Why no credential can be added: the call is not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// No token synced yet, or the store could not be read.
    Missing,
    /// Past its hard expiry, or the platform rejected it.
    Expired,
}

impl Credential {
    /// `header` defaults to `authorization`, `scheme` to `Bearer`; `Err` names what is wrong
    /// with `platform`.
    pub fn new(platform: &str, header: Option<&str>, scheme: Option<&str>) -> Result<Self, String> {
        if !cxgate_state::PLATFORMS.contains(&platform) {
            return Err(format!("must be one of {:?}", cxgate_state::PLATFORMS));
        }
        Ok(Credential {
            platform: platform.to_string(),
            header: header.unwrap_or("authorization").to_ascii_lowercase(),
            scheme: scheme.unwrap_or("Bearer").to_string(),
        })
    }

    pub fn compile(f: Option<Fields<'_>>) -> Result<Option<Credential>, ConfigError> {
        let Some(mut f) = f else {
            return Ok(None);
        };
        let platform = f.required_str("platform")?;
        let header = f.str("header")?;
        let scheme = f.str("scheme")?;
        let c = Credential::new(platform, header, scheme)
            .map_err(|e| ConfigError::at(f.at("platform"), e))?;
        f.done()?;
        Ok(Some(c))
    }

    /// The header to send, from the token the sidecar synced (a stale one is still served).
    pub fn header<S: SharedStore + ?Sized>(
        &self,
        store: &S,
        now_ms: u64,
    ) -> Result<(String, String), Unavailable> {
        let key = cxgate_state::keys::token(&self.platform);
        let value = store.get(&key).ok().flatten().ok_or(Unavailable::Missing)?;
        let token = Stamped::decode(&value.value)
            .and_then(|s| serde_json::from_slice::<TokenState>(&s.payload).ok())
            .ok_or(Unavailable::Missing)?;
        if token.rejected || token.freshness(now_ms) == Freshness::Expired {
            return Err(Unavailable::Expired);
        }
        let v = if self.scheme.is_empty() {
            token.access_token
        } else {
            format!("{} {}", self.scheme, token.access_token)
        };
        Ok((self.header.clone(), v))
    }
}
