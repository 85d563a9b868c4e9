//! The pagination adapter: Genesys page numbers and CXone skip/top both become
//! `{items, next_cursor, has_more}`. The cursor is opaque to the consumer: base64url of a
//! versioned internal state plus a tag (sha256 keyed with a VM secret), so a forged or edited
//! cursor is refused instead of sending the platform somewhere unexpected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub v: u32,
    /// The route and platform it belongs to.
    pub route: String,
    pub platform: String,
    /// Genesys: the next page number; CXone: the next skip.
    pub next: u64,
    pub size: u32,
    /// Items handed out so far (for the completeness check).
    pub seen: u64,
}

impl Cursor {
    pub fn first(route: &str, platform: &str, first: u64, size: u32) -> Cursor {
        Cursor {
            v: VERSION,
            route: route.to_string(),
            platform: platform.to_string(),
            next: first,
            size,
            seen: 0,
        }
    }

    pub fn encode(&self, key: &[u8]) -> String {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag(key, &payload))
        )
    }

    /// `None` for anything not made by us with this key (or for another version).
    pub fn decode(text: &str, key: &[u8]) -> Option<Cursor> {
        let (payload, t) = text.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let t = URL_SAFE_NO_PAD.decode(t).ok()?;
        if t.len() != 16 || !constant_eq(&t, &tag(key, &payload)) {
            return None;
        }
        serde_json::from_slice::<Cursor>(&payload)
            .ok()
            .filter(|c| c.v == VERSION)
    }
}

fn tag(key: &[u8], payload: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(payload);
    let d = h.finalize();
    let mut out = [0u8; 16];
    for (o, b) in out.iter_mut().zip(d.iter()) {
        *o = *b;
    }
    out
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the items handed out differ from the platform's total by more than 0.5 %.
pub fn mismatch(seen: u64, total: u64) -> bool {
    let diff = seen.abs_diff(total) as f64;
    diff > (total as f64) * 0.005
}
