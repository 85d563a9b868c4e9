//! LLM model provisioning, control-plane work kept off the request path: validate a
//! definition, create it on the LLM platform's admin API, poll it until ACTIVE or FAILED,
//! audit every step, export a snapshot. The CLI (`cxgate-sidecar models ...`) and the admin
//! API (`/v1/models`) both drive [`Provisioner`].

pub mod admin;
pub mod audit;
pub mod cli;
pub mod definition;
pub mod provision;
#[cfg(test)]
mod tests;

use audit::Audit;
use definition::{Checked, Finding};
use provision::{Outcome, Platform, Policy, Progress};
use serde_json::{Value, json};

pub struct Provisioner<P> {
    pub platform: P,
    pub audit: Audit,
    pub policy: Policy,
}

/// A model the platform accepted.
#[derive(Debug, Clone)]
pub struct Created {
    pub id: String,
    pub hash: String,
    /// The definition as given (credential references, never the secret).
    pub definition: Value,
}

fn jitter() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Checks the definition and audits `MODEL_VALIDATED` when it passes.
pub fn validate(audit: &Audit, def: &Value) -> Result<Checked, Vec<Finding>> {
    let checked = definition::check(def)?;
    let meta = json!({"name": def.get("name"), "warnings": checked.warnings.len()});
    let hash = definition::payload_hash(def);
    if let Err(e) = audit.record("MODEL_VALIDATED", None, &hash, meta) {
        return Err(vec![Finding {
            pointer: String::new(),
            message: e,
        }]);
    }
    Ok(checked)
}

impl<P: Platform> Provisioner<P> {
    pub fn validate(&self, def: &Value) -> Result<Checked, Vec<Finding>> {
        validate(&self.audit, def)
    }

    /// Reads the API key from its reference, creates the model, audits `MODEL_CREATED`.
    pub async fn create(&self, checked: &Checked) -> Result<Created, String> {
        let def = &checked.definition;
        let source = definition::api_key_source(def)
            .ok_or("credentials.apiKey: give a reference {env} or {file}")?;
        let secret = source.resolve("credentials.apiKey")?;
        let body = definition::with_secret(def, secret.expose());
        let (id, _) = provision::create(&self.platform, &body, &self.policy).await?;
        let hash = definition::payload_hash(def);
        let meta = json!({"name": def.get("name"), "provider": def.get("provider"), "status": "PROVISIONING"});
        self.audit.record("MODEL_CREATED", Some(&id), &hash, meta)?;
        Ok(Created {
            id,
            hash,
            definition: def.clone(),
        })
    }

    /// Polls until the model settles; audits `MODEL_ACTIVE` or `MODEL_FAILED` (a model that
    /// never settled within the budget is audited as failed too, with why).
    pub async fn settle(
        &self,
        created: &Created,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<Outcome, String> {
        let mut j = jitter;
        let outcome =
            provision::poll(&self.platform, &created.id, &self.policy, &mut j, progress).await;
        let (action, meta) = match &outcome {
            Outcome::Active(_) => ("MODEL_ACTIVE", json!({"status": "ACTIVE"})),
            Outcome::Failed { reason, .. } => (
                "MODEL_FAILED",
                json!({"status": "FAILED", "errorReason": reason}),
            ),
            Outcome::Rejected { status, message } => (
                "MODEL_FAILED",
                json!({"status": "UNKNOWN", "httpStatus": status, "errorReason": message}),
            ),
            Outcome::GaveUp { attempts, last } | Outcome::Deadline { attempts, last } => (
                "MODEL_FAILED",
                json!({"status": "UNKNOWN", "attempts": attempts, "errorReason": format!("gave up polling; last seen: {last}")}),
            ),
        };
        self.audit
            .record(action, Some(&created.id), &created.hash, meta)?;
        Ok(outcome)
    }

    /// The snapshot of a created model; audits `MODEL_CONFIG_SYNC`.
    pub fn snapshot(&self, created: &Created) -> Result<Value, String> {
        let s = audit::snapshot(&self.audit.environment, &created.definition);
        let meta = json!({"snapshotVersion": audit::SNAPSHOT_VERSION});
        self.audit
            .record("MODEL_CONFIG_SYNC", Some(&created.id), &created.hash, meta)?;
        Ok(s)
    }
}
