//! The sidecar's config for a deployment (schema: `schemas/sidecar.config.schema.json`):
//! the same hosts as the gateway's, and every secret as the deployment's reference to it.

use super::model::{DeployFile, Upstream};
use serde_json::{Value, json};

pub fn config(d: &DeployFile, upstreams: &[(&str, Upstream)]) -> Result<Value, String> {
    let url = |cluster: &str| {
        upstreams
            .iter()
            .find(|(c, _)| *c == cluster)
            .map(|(_, u)| u.url.clone())
            .ok_or_else(|| format!("no {cluster} upstream"))
    };
    let mut genesys = json!({
        "client_id": d.genesys.client_id,
        "client_secret": d.genesys.client_secret,
    });
    match &d.genesys.login_url {
        // An explicit login host needs the API host beside it (the sidecar takes both or none).
        Some(login) => {
            genesys["login_url"] = json!(login);
            genesys["api_url"] = json!(url("genesys")?);
        }
        None if d.genesys.api_url.is_some() => {
            genesys["login_url"] = json!(format!("https://login.{}", d.genesys.region));
            genesys["api_url"] = json!(url("genesys")?);
        }
        None => genesys["region"] = json!(d.genesys.region),
    }
    let mut out = json!({
        "version": 1,
        "listen": d.sidecar.listen.to_string(),
        "key": d.sidecar.key,
        "genesys": genesys,
        "cxone": {
            "issuer": d.cxone.issuer,
            "tenant_id": d.cxone.tenant_id,
            "client_id": d.cxone.client_id,
            "client_secret": d.cxone.client_secret,
            "access_key_id": d.cxone.access_key_id,
            "access_key_secret": d.cxone.access_key_secret,
            "gateway_api_endpoint": url("cxone")?,
        },
        "llm": {
            "api_key": d.llm.api_key,
            "health_url": format!("{}/v1/models", url("llm")?),
        },
    });
    if let Some(a) = &d.anthropic {
        out["anthropic"] = json!({"api_key": a.api_key});
    }
    if let Some(ca) = &d.tls.ca_file {
        out["tls"] = json!({"ca_file": ca});
    }
    if let Some(c) = &d.coexistence {
        out["coexistence"] = c.clone();
    }
    Ok(out)
}
