//! One token manager per platform. It alone talks to the platform's token endpoint, so grants
//! are singleflight by construction: demand (invalidations) only wakes it. It refreshes at 95 %
//! of the lifetime actually received (minus jitter), never faster than the platform's grant
//! cap, and backs off with jitter on failure without ever giving up.

use crate::config::{Refresh, Secret, SecretSource};
use crate::hub::{Hub, now_ms};
use crate::metrics::Metrics;
use base64::Engine;
use cxgate_sidecar_wire as wire;
use cxgate_state::TokenState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub enum Grantor {
    /// Client credentials against `{login}/oauth/token`.
    Genesys {
        login: String,
        client_id: Secret,
        client_secret: Secret,
    },
    /// Password grant with access keys at the discovered token endpoint.
    Cxone {
        issuer: String,
        tenant_id: String,
        client_id: Secret,
        client_secret: Secret,
        access_key_id: Secret,
        access_key_secret: Secret,
        /// (token endpoint, API endpoint), discovered once and again after a failure.
        discovered: Mutex<Option<(String, String)>>,
    },
    /// A static API key (the LLM endpoint), read from its source on every "grant".
    StaticKey {
        source: SecretSource,
        field: &'static str,
        lifetime_s: u64,
    },
}

fn basic(id: &Secret, secret: &Secret) -> String {
    let raw = format!("{}:{}", id.expose(), secret.expose());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Describes a failed response without echoing anything secret.
async fn failure(resp: reqwest::Response) -> String {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    wire::token_failure(status, &body)
}

impl Grantor {
    async fn discover(&self, http: &reqwest::Client) -> Result<(String, String), String> {
        let Grantor::Cxone {
            issuer,
            tenant_id,
            discovered,
            ..
        } = self
        else {
            return Err("not a CXone grantor".into());
        };
        if let Some(found) = discovered.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(found);
        }
        let get = |url: String| async move {
            let resp = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("discovery {url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("discovery {url}: HTTP {}", resp.status().as_u16()));
            }
            resp.bytes()
                .await
                .map_err(|e| format!("discovery {url}: {e}"))
        };
        let oidc = get(format!("{issuer}/.well-known/openid-configuration")).await?;
        let token_endpoint = wire::oidc_token_endpoint(&oidc)?;
        let conf = get(format!(
            "{issuer}/.well-known/cxone-configuration?tenantId={tenant_id}"
        ))
        .await?;
        let api = wire::cxone_api_endpoint(&conf)?;
        let found = (token_endpoint, api);
        *discovered.lock().unwrap_or_else(|e| e.into_inner()) = Some(found.clone());
        Ok(found)
    }

    /// The CXone API base, once discovered.
    pub fn api_endpoint(&self) -> Option<String> {
        match self {
            Grantor::Cxone { discovered, .. } => discovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|d| d.1.clone()),
            Grantor::Genesys { .. } | Grantor::StaticKey { .. } => None,
        }
    }

    /// One grant: (access token, token type, expires_in seconds).
    pub async fn grant(&self, http: &reqwest::Client) -> Result<(String, String, u64), String> {
        let resp = match self {
            Grantor::Genesys {
                login,
                client_id,
                client_secret,
            } => http
                .post(format!("{login}/oauth/token"))
                .header("authorization", basic(client_id, client_secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .map_err(|e| format!("token endpoint unreachable: {e}"))?,
            Grantor::Cxone {
                client_id,
                client_secret,
                access_key_id,
                access_key_secret,
                discovered,
                ..
            } => {
                let (endpoint, _) = self.discover(http).await?;
                let sent = http
                    .post(&endpoint)
                    .header("authorization", basic(client_id, client_secret))
                    .form(&[
                        ("grant_type", "password"),
                        ("username", access_key_id.expose()),
                        ("password", access_key_secret.expose()),
                    ])
                    .send()
                    .await;
                match sent {
                    Ok(r) => r,
                    Err(e) => {
                        // The endpoint may have moved: discover again next time.
                        *discovered.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        return Err(format!("token endpoint unreachable: {e}"));
                    }
                }
            }
            Grantor::StaticKey {
                source,
                field,
                lifetime_s,
            } => {
                let key = source.resolve(field)?;
                return Ok((key.expose().to_string(), "api-key".into(), *lifetime_s));
            }
        };
        if !resp.status().is_success() {
            return Err(failure(resp).await);
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("token response unreadable: {e}"))?;
        let g = wire::token_response(&body)?;
        Ok((g.access_token, g.token_type, g.expires_in))
    }
}

pub struct TokenManager {
    pub platform: &'static str,
    pub grantor: Grantor,
    pub min_interval: Duration,
    pub refresh: Refresh,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    wake: Notify,
    /// Highest token generation a caller reported as rejected (0: none).
    rejected: AtomicU64,
}

/// A uniform random number in [0, 1).
pub fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl TokenManager {
    pub fn new(
        platform: &'static str,
        grantor: Grantor,
        max_rps: f64,
        refresh: Refresh,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
    ) -> Self {
        // Every platform's counters exist from the start at 0: a series that first appears
        // at 1 hides its first failure from rate() and from the alert on it.
        let label = Metrics::platform(platform);
        let _ = metrics.token_refreshes.get_or_create(&label);
        let _ = metrics.grant_failures.get_or_create(&label);
        let _ = metrics.invalidations.get_or_create(&label);
        TokenManager {
            platform,
            grantor,
            min_interval: Duration::from_secs_f64(1.0 / max_rps),
            refresh,
            hub,
            metrics,
            http,
            wake: Notify::new(),
            rejected: AtomicU64::new(0),
        }
    }

    /// A caller saw `generation` rejected (a 401): refresh now unless a newer token exists.
    /// Returns the generation the caller should wait to exceed, or `Err` for a generation
    /// above the current one that this sidecar never issued: a forged number would otherwise
    /// disable the "already replaced" short-circuit for good. (An older unknown one, from an
    /// earlier run, just finds the newer token.)
    pub fn invalidate(&self, generation: Option<u64>) -> Result<u64, u64> {
        let current = self
            .hub
            .token(self.platform)
            .map(|t| t.generation)
            .unwrap_or(0);
        if let Some(g) = generation
            && g > current
            && !self.hub.issued(self.platform, g)
        {
            return Err(g);
        }
        let rejected = generation.unwrap_or(current);
        if rejected >= current && current > 0 {
            self.rejected.fetch_max(rejected, Ordering::SeqCst);
            self.hub.drop_token(self.platform);
            self.metrics
                .invalidations
                .get_or_create(&Metrics::platform(self.platform))
                .inc();
            self.wake.notify_one();
        }
        Ok(rejected.max(current))
    }

    /// When to refresh a token just received: at `at` of its lifetime, minus up to `jitter`
    /// (drawn once per token, so instances spread out and never refresh past `at`).
    fn plan_refresh(&self, token: &TokenState) -> Instant {
        let life = token.expires_ms.saturating_sub(token.issued_ms) as f64;
        let share = self.refresh.at - self.refresh.jitter * unit_random();
        let refresh_ms = token.issued_ms + (life * share) as u64;
        Instant::now() + Duration::from_millis(refresh_ms.saturating_sub(now_ms()))
    }

    pub async fn run(self: Arc<Self>) {
        let mut last_grant: Option<Instant> = None;
        let mut backoff = Duration::from_millis(self.refresh.backoff_initial_ms);
        let mut next = Instant::now();
        loop {
            let woken = tokio::select! {
                _ = tokio::time::sleep_until(next) => false,
                _ = self.wake.notified() => true,
            };
            // A wake-up about a token we have already replaced needs no grant.
            if woken
                && self
                    .hub
                    .token(self.platform)
                    .is_some_and(|t| t.generation > self.rejected.load(Ordering::SeqCst))
            {
                continue;
            }
            if let Some(t) = last_grant {
                tokio::time::sleep_until(t + self.min_interval).await;
            }
            last_grant = Some(Instant::now());
            let label = Metrics::platform(self.platform);
            match self.grantor.grant(&self.http).await {
                Ok((token, token_type, expires_in)) => {
                    // The hub gives it its generation: the version that publishes it.
                    let state = TokenState::new(token, token_type, now_ms(), expires_in, 0);
                    next = self.plan_refresh(&state);
                    let generation = self.hub.set_token(self.platform, state);
                    self.metrics.token_refreshes.get_or_create(&label).inc();
                    tracing::info!(
                        event = "TOKEN_REFRESHED",
                        platform = self.platform,
                        generation,
                        expires_in
                    );
                    backoff = Duration::from_millis(self.refresh.backoff_initial_ms);
                }
                Err(error) => {
                    self.hub.grant_failed(self.platform, &error);
                    self.metrics.grant_failures.get_or_create(&label).inc();
                    let wait = backoff.mul_f64(0.5 + 0.5 * unit_random());
                    tracing::warn!(event = "TOKEN_GRANT_FAILED", platform = self.platform, error = %error, retry_in_ms = wait.as_millis() as u64);
                    next = Instant::now() + wait;
                    backoff = (backoff * 2).min(Duration::from_millis(self.refresh.backoff_max_ms));
                }
            }
        }
    }
}
