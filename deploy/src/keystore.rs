//! The consumer key store: the api_key_auth filter's config as an ECDS resource in a file of
//! its own, which Envoy reads at start and again whenever a new one is moved into its
//! directory. The rendered envoy.yaml names the file, never a key.

use crate::render::Consumer;
use serde_json::json;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The filter name in envoy.yaml that the resource configures.
pub const FILTER: &str = "cxgate.consumer-keys";

/// The key store's document: one `TypedExtensionConfig` with the consumers' keys.
pub fn render_key_store(consumers: &[Consumer]) -> String {
    let credentials: Vec<_> = consumers
        .iter()
        .map(|c| json!({ "key": c.key, "client": c.id }))
        .collect();
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth",
                "credentials": credentials,
                // `x-api-key` first; else `Authorization: Bearer <key>`, which is what the
                // official OpenAI and Anthropic SDKs send for their `api_key` (Envoy strips
                // the scheme). Both are hidden from the platform.
                "key_sources": [{ "header": "x-api-key" }, { "header": "authorization" }],
                "forwarding": { "header": "x-cxgate-consumer", "hide_credentials": true }
            }
        }]
    })
    .to_string()
}

/// Writes the key store at `path` the way Envoy picks it up: readable by its owner only,
/// written aside in the same directory (created 0700) and moved into place in one rename.
pub fn write_key_store(path: &Path, consumers: &[Consumer]) -> Result<(), String> {
    let dir = path.parent().ok_or("a key store path needs a directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or("a key store path needs a file name")?;
    let aside = dir.join(format!(".{}.new", name.to_string_lossy()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| format!("{}: {e}", aside.display()))?;
    f.write_all(render_key_store(consumers).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", aside.display()))?;
    std::fs::rename(&aside, path).map_err(|e| format!("{}: {e}", path.display()))
}
