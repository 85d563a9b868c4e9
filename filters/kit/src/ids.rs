//! Trace identifiers: the gateway trace id and W3C `traceparent`.

use crate::error::HostError;
use crate::host::Entropy;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

/// `n` random bytes as lowercase hex, never all zeros (W3C forbids all-zero ids).
pub fn random_hex<E: Entropy + ?Sized>(entropy: &mut E, n: usize) -> Result<String, HostError> {
    let mut buf = vec![0u8; n];
    entropy.fill(&mut buf)?;
    if buf.iter().all(|b| *b == 0)
        && let Some(last) = buf.last_mut()
    {
        *last = 1;
    }
    Ok(hex(&buf))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A parsed W3C trace context (`traceparent`), see https://www.w3.org/TR/trace-context/.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` when it is not valid (the trace then restarts).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim();
        let version = value.get(0..2)?;
        if !is_lower_hex(version) || version == "ff" {
            return None;
        }
        // Version 00 is exactly 55 chars; a future version may append "-..." fields.
        if version == "00" && value.len() != 55 {
            return None;
        }
        if value.len() < 55 || (value.len() > 55 && value.as_bytes().get(55) != Some(&b'-')) {
            return None;
        }
        let mut parts = value.get(0..55)?.split('-');
        let (_, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = trace_id.len() == 32
            && parent_id.len() == 16
            && flags.len() == 2
            && is_lower_hex(trace_id)
            && is_lower_hex(parent_id)
            && is_lower_hex(flags)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: flags.to_string(),
        })
    }

    pub fn render(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }

    /// True when `id` can serve as a W3C trace id (32 lowercase hex, not all zeros).
    pub fn is_trace_id(id: &str) -> bool {
        id.len() == 32 && is_lower_hex(id) && id.bytes().any(|b| b != b'0')
    }
}

/// A gateway trace id a consumer may send: 1–128 chars of `[A-Za-z0-9._:-]`.
pub fn is_valid_gateway_trace_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A version 4 UUID from 16 random bytes.
pub fn uuid_v4(mut r: [u8; 16]) -> String {
    if let Some(b) = r.get_mut(6) {
        *b = (*b & 0x0f) | 0x40;
    }
    if let Some(b) = r.get_mut(8) {
        *b = (*b & 0x3f) | 0x80;
    }
    let mut s = String::with_capacity(36);
    for (i, byte) in r.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&hex(&[*byte]));
    }
    s
}

/// A fresh version 4 UUID.
pub fn random_uuid<E: Entropy + ?Sized>(entropy: &mut E) -> Result<String, HostError> {
    let mut r = [0u8; 16];
    entropy.fill(&mut r)?;
    Ok(uuid_v4(r))
}
