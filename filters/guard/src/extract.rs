//! JSON out of what a model wrote: models asked for JSON still wrap it in Markdown fences, put
//! prose before and after it, or stop half way. This takes the first balanced JSON object,
//! looking inside code fences first, and says why when there is none.

use serde_json::{Map, Value};

/// Longest model text looked at; a longer one is cut (a model's answer is bounded by its
/// `max_tokens`, so this only stops abuse).
pub const MAX_TEXT: usize = 64 * 1024;
/// Candidate `{` positions tried before giving up (prose full of braces).
const MAX_CANDIDATES: usize = 64;

/// Why no JSON object came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// No `{` at all: prose only.
    NoObject,
    /// An object starts but never closes (the model stopped mid-way).
    Unbalanced,
    /// Balanced braces, but not JSON (`{name: 'x'}`, a trailing comma...).
    Invalid,
}

impl Malformed {
    pub fn describe(self) -> &'static str {
        match self {
            Malformed::NoObject => "the model's answer holds no JSON object",
            Malformed::Unbalanced => "the model's JSON object is cut off before it closes",
            Malformed::Invalid => "the model's answer holds braces but no valid JSON object",
        }
    }
}

/// The first JSON object in `text`: inside the first code fence that holds one, else
/// anywhere in the text.
pub fn first_object(text: &str) -> Result<Map<String, Value>, Malformed> {
    let text = cut(text.trim_start_matches('\u{feff}'), MAX_TEXT);
    let mut worst = Malformed::NoObject;
    for block in fenced_blocks(text) {
        match scan(block) {
            Ok(m) => return Ok(m),
            Err(e) => worst = worse(worst, e),
        }
    }
    scan(text).map_err(|e| worse(worst, e))
}

fn worse(a: Malformed, b: Malformed) -> Malformed {
    let rank = |m| match m {
        Malformed::NoObject => 0,
        Malformed::Invalid => 1,
        Malformed::Unbalanced => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The bodies of Markdown code fences (```` ```json ````, ```` ``` ````, `~~~`), in order; an
/// unclosed fence runs to the end (the model stopped inside it). A fence opens only at the
/// start of a line (after at most three spaces), as in CommonMark: a `~~~` inside a JSON
/// string is text.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let Some((at, fence)) = opening_fence(rest) else {
            return out;
        };
        let after = rest.get(at + fence.len()..).unwrap_or_default();
        // The info string (`json`, `JSON`, `javascript`...) runs to the end of the line.
        let body = match after.find('\n') {
            Some(nl) => after.get(nl + 1..).unwrap_or_default(),
            None => after.trim_start_matches(|c: char| c.is_ascii_alphabetic()),
        };
        match body.find(fence) {
            Some(end) => {
                out.push(body.get(..end).unwrap_or_default());
                rest = body.get(end + fence.len()..).unwrap_or_default();
            }
            None => {
                out.push(body);
                return out;
            }
        }
    }
}

/// The first fence in `text` that starts a line: its offset and marker.
fn opening_fence(text: &str) -> Option<(usize, &'static str)> {
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let body = line.get(indent..).unwrap_or_default();
        if indent <= 3 {
            for fence in ["```", "~~~"] {
                if body.starts_with(fence) {
                    return Some((line_start + indent, fence));
                }
            }
        }
        line_start += line.len();
    }
    None
}

/// The first `{...}` in `text` that balances and parses as a JSON object.
fn scan(text: &str) -> Result<Map<String, Value>, Malformed> {
    let bytes = text.as_bytes();
    let mut from = 0;
    let mut seen = Malformed::NoObject;
    for _ in 0..MAX_CANDIDATES {
        let Some(start) = bytes
            .get(from..)
            .and_then(|b| b.iter().position(|c| *c == b'{'))
            .map(|i| i + from)
        else {
            return Err(seen);
        };
        match balanced_end(bytes, start) {
            Some(end) => {
                let candidate = text.get(start..=end).unwrap_or_default();
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(candidate) {
                    return Ok(m);
                }
                seen = worse(seen, Malformed::Invalid);
            }
            None => seen = worse(seen, Malformed::Unbalanced),
        }
        from = start + 1;
    }
    Err(seen)
}

/// The index of the `}` that closes the `{` at `start`, skipping braces inside strings.
fn balanced_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return (*c == b'}').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}
