//! The consumer API's OpenAPI 3.1 document as the gateway serves it: `schemas/openapi.json`
//! with every `$ref` to a file under `schemas/` replaced by that file's schema, so the spec
//! and the JSON Schemas in `schemas/consumer/` are one source.

use serde_json::Value;
use std::path::Path;

/// `schemas/openapi.json` with its file references inlined.
pub fn render_openapi(root: &Path) -> Result<Value, String> {
    let path = root.join("schemas/openapi.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut spec: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    inline(&mut spec, &root.join("schemas"))?;
    Ok(spec)
}

/// Replaces `{"$ref": "<file>.json"}` (a path relative to `schemas/`) with the file's schema,
/// minus `$schema` and `$id`, which would change how refs inside it resolve.
fn inline(v: &mut Value, dir: &Path) -> Result<(), String> {
    match v {
        Value::Object(m) => {
            let file = m
                .get("$ref")
                .and_then(Value::as_str)
                .filter(|r| r.ends_with(".json") && !r.starts_with('#'))
                .map(str::to_string);
            if let Some(file) = file {
                let path = dir.join(&file);
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{file}: {e}"))?;
                let mut schema: Value =
                    serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
                if let Some(o) = schema.as_object_mut() {
                    o.remove("$schema");
                    o.remove("$id");
                }
                inline(&mut schema, dir)?;
                *v = schema;
                return Ok(());
            }
            for child in m.values_mut() {
                inline(child, dir)?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|c| inline(c, dir)),
        _ => Ok(()),
    }
}
