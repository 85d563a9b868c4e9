//! The request body as JSON: checked once (size, media type, UTF-8, syntax) for every stage.

use cxgate_kit::problem::Problem;
use serde_json::Value;

/// `application/json` or any `application/*+json`.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// The 413 for a body over `max` bytes.
pub fn too_large(len: usize, max: usize) -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "Request body too large",
        format!("The body has {len} bytes; the limit is {max}."),
    )
}

/// Parses a consumer body, or the problem that says why it cannot be read.
pub fn parse_json(
    max: usize,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Value, Box<Problem>> {
    if body.len() > max {
        return Err(Box::new(too_large(body.len(), max)));
    }
    if !is_json(content_type) {
        return Err(Box::new(Problem::new(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            format!(
                "Expected application/json, got {}.",
                content_type.unwrap_or("no content type")
            ),
        )));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Box::new(Problem::new(
            400,
            "invalid-utf8",
            "Body is not UTF-8",
            format!("Invalid UTF-8 at byte {}.", e.valid_up_to()),
        ))
    })?;
    serde_json::from_str(text).map_err(|e| {
        Box::new(Problem::new(
            400,
            "malformed-json",
            "Malformed JSON",
            format!("The body is not JSON: {e}."),
        ))
    })
}
