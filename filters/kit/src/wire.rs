//! The proxy-wasm header-map wire format, kept pure so it is tested natively.

/// Serializes a header map in the ABI's format: count, then (key len, value len) pairs, then
/// each key and value NUL-terminated.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut size = 4;
    for (k, v) in pairs {
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses the ABI's header-map format; `None` when it is malformed.
pub fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let read_u32 = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let count = read_u32(0)?;
    // Each pair needs at least 10 bytes: refuse counts the buffer cannot hold.
    if count.checked_mul(10)? > bytes.len() {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((read_u32(4 + i * 8)?, read_u32(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (ks, vs) in sizes {
        let key = bytes.get(at..at + ks)?;
        at += ks + 1;
        let value = bytes.get(at..at + vs)?;
        at += vs + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}
