//! The merge of a read-modify-write update, for a platform whose update replaces the whole
//! object (Genesys queues have no PATCH): the object as read, the profile's defaults only where
//! it has nothing, then the consumer's mapped fields over it. Every other field (routing rules,
//! bullseye rings, member groups, wrap-up and media settings) goes back exactly as it was read,
//! with the version read, so a concurrent change makes the platform refuse the write (409).

use crate::config::Profile;
use crate::core::check_platform;
use crate::outcome::problem;
use crate::template::fill_default;
use cxgate_kit::problem::Problem;
use serde_json::Value;

/// Lays `patch` over `target`: objects merge key by key, anything else replaces.
fn overlay(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(slot) if slot.is_object() && v.is_object() => overlay(slot, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Why the object read cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmergeable {
    NotAnObject,
    NoVersion,
}

/// The whole object to write back.
pub fn merged(
    current: &Value,
    patch: &Value,
    defaults: &[(String, Value)],
    version: &str,
) -> Result<Value, Unmergeable> {
    if !current.is_object() {
        return Err(Unmergeable::NotAnObject);
    }
    let read = current
        .pointer(version)
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or(Unmergeable::NoVersion)?;
    let mut out = current.clone();
    for (pointer, value) in defaults {
        fill_default(&mut out, pointer, value);
    }
    overlay(&mut out, patch);
    // The version is the platform's, never the consumer's.
    if let Some(v) = out.pointer_mut(version) {
        *v = read;
    }
    Ok(out)
}

/// The body of the write, or the problem that stops it (nothing is written).
pub fn update_body(
    profile: &Profile,
    version: &str,
    platform: &str,
    current: &[u8],
    patch: &Value,
    trace: Option<&str>,
) -> Result<Vec<u8>, Box<Problem>> {
    let read: Value = serde_json::from_slice(current).unwrap_or(Value::Null);
    let doc = merged(&read, patch, &profile.defaults, version).map_err(|e| {
        let why = match e {
            Unmergeable::NotAnObject => "is not a JSON object".to_string(),
            Unmergeable::NoVersion => format!("has no version at {version}"),
        };
        Box::new(problem(
            502,
            "platform-invalid-response",
            "Platform answered with an unusable object",
            format!("The object {platform} returned for the update {why}; nothing was written."),
            trace,
        ))
    })?;
    check_platform(profile, &doc, trace)?;
    Ok(doc.to_string().into_bytes())
}
