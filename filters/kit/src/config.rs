//! Config parsing shared by every filter: serde into a raw struct, then the filter compiles it
//! into an immutable runtime object. This module turns serde's errors into a [`ConfigError`]
//! that names the field.

use crate::error::ConfigError;
use serde::de::DeserializeOwned;

/// The config format version every filter currently accepts.
pub const CONFIG_VERSION: u64 = 1;

/// Parses a filter config document. An empty document means "all defaults" (`{}`), which
/// `T` must accept. Unknown fields must be rejected by `T` (`#[serde(deny_unknown_fields)]`).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let text =
        std::str::from_utf8(bytes).map_err(|_| ConfigError::at("", "config is not valid UTF-8"))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::at("", format!("config is not valid JSON: {e}")))?;
    check_version(&value)?;
    from_value(value, "")
}

/// Deserializes one part of a config document; errors name the field as a JSON pointer that
/// starts with `at` (the part's own pointer, e.g. `/ratelimit`).
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    at: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let pointer = format!("{at}{}", pointer_of(e.path()));
        let message = e.inner().to_string();
        ConfigError::at(unknown_field_pointer(&pointer, &message), message)
    })
}

/// A JSON pointer token (`~` and `/` escaped).
pub fn pointer_token(token: &str) -> String {
    escape(token)
}

/// Every filter's `routes`: at least one, each `prefix` an absolute path.
pub fn check_route_prefixes<'a>(
    prefixes: impl IntoIterator<Item = &'a str>,
) -> Result<(), ConfigError> {
    let mut n = 0;
    for (i, prefix) in prefixes.into_iter().enumerate() {
        if !prefix.starts_with('/') {
            return Err(ConfigError::at(
                format!("/routes/{i}/prefix"),
                "must start with '/'",
            ));
        }
        n += 1;
    }
    if n == 0 {
        return Err(ConfigError::at("/routes", "at least one route is required"));
    }
    Ok(())
}

fn check_version(value: &serde_json::Value) -> Result<(), ConfigError> {
    let Some(object) = value.as_object() else {
        return Err(ConfigError::at("", "config must be a JSON object"));
    };
    match object.get("version") {
        None => Ok(()),
        Some(v) if v.as_u64() == Some(CONFIG_VERSION) => Ok(()),
        Some(v) => Err(ConfigError::at(
            "/version",
            format!("unsupported config version {v}; this filter reads version {CONFIG_VERSION}"),
        )),
    }
}

/// `routes[0].platform` → `/routes/0/platform`.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => pointer.push_str(&format!("/{}", escape(key))),
            Segment::Enum { variant } => pointer.push_str(&format!("/{}", escape(variant))),
            Segment::Unknown => {}
        }
    }
    pointer
}

/// For `unknown field `x``, point at the field itself, not at its parent.
fn unknown_field_pointer(pointer: &str, message: &str) -> String {
    match message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        Some(name) if !pointer.ends_with(&format!("/{}", escape(name))) => {
            format!("{pointer}/{}", escape(name))
        }
        _ => pointer.to_string(),
    }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
