//! The pagination adapter: Genesys page numbers and CXone skip/top both become
//! `{items, next_cursor, has_more}`. The cursor is opaque to the consumer: base64url of a
//! versioned internal state plus an HMAC-SHA256 tag under the cursor key (its own secret, not
//! the sidecar's), bound to the consumer it was issued to and valid for a while, so a forged,
//! edited, borrowed or stale cursor is refused instead of sending the platform somewhere
//! unexpected.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The cursor format this gateway writes and reads.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub v: u32,
    /// The route and platform it belongs to.
    pub route: String,
    pub platform: String,
    /// The verified consumer it was issued to.
    pub consumer: String,
    /// Not valid at or after this time (ms since the epoch).
    pub exp_ms: u64,
    /// Genesys: the next page number; CXone: the next skip.
    pub next: u64,
    pub size: u32,
    /// Items handed out so far (for the completeness check).
    pub seen: u64,
}

/// Why a cursor is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not made by us with this key, edited, another version, or another consumer's.
    Invalid,
    /// Ours, but past its time: the listing must start again.
    Expired,
}

fn mac(key: &[u8], payload: &[u8]) -> Option<Hmac<Sha256>> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
    m.update(payload);
    Some(m)
}

impl Cursor {
    pub fn first(route: &str, platform: &str, consumer: &str, first: u64, size: u32) -> Cursor {
        Cursor {
            v: VERSION,
            route: route.to_string(),
            platform: platform.to_string(),
            consumer: consumer.to_string(),
            exp_ms: 0,
            next: first,
            size,
            seen: 0,
        }
    }

    /// Signed text, valid until `exp_ms`.
    pub fn encode(&self, key: &[u8], exp_ms: u64) -> String {
        let c = Cursor {
            exp_ms,
            ..self.clone()
        };
        let payload = serde_json::to_vec(&c).unwrap_or_default();
        let tag = mac(key, &payload)
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The cursor, if we made it with this key for this consumer and it is still valid.
    pub fn decode(text: &str, key: &[u8], consumer: &str, now_ms: u64) -> Result<Cursor, Refused> {
        let (payload, t) = text.split_once('.').ok_or(Refused::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refused::Invalid)?;
        let t = URL_SAFE_NO_PAD.decode(t).map_err(|_| Refused::Invalid)?;
        let m = mac(key, &payload).ok_or(Refused::Invalid)?;
        m.verify_slice(&t).map_err(|_| Refused::Invalid)?;
        let c = serde_json::from_slice::<Cursor>(&payload).map_err(|_| Refused::Invalid)?;
        if c.v != VERSION || c.consumer != consumer {
            return Err(Refused::Invalid);
        }
        if now_ms >= c.exp_ms {
            return Err(Refused::Expired);
        }
        Ok(c)
    }
}

/// True when the items handed out differ from the platform's total by more than 0.5 %.
pub fn mismatch(seen: u64, total: u64) -> bool {
    let diff = seen.abs_diff(total) as f64;
    diff > (total as f64) * 0.005
}
