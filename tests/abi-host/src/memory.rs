//! Guest memory access from host functions.

use crate::state::State;
use wasmtime::error::Context;
use wasmtime::{Caller, Memory};
use wasmtime::{Result, format_err as anyhow};

fn memory(caller: &mut Caller<'_, State>) -> Result<Memory> {
    caller
        .data()
        .guest
        .as_ref()
        .and_then(|g| g.memory)
        .ok_or_else(|| anyhow!("guest exports no memory"))
}

pub fn read(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<Vec<u8>> {
    let mem = memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(&caller);
    let end = start.checked_add(len).context("guest pointer overflow")?;
    data.get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("guest read out of bounds"))
}

pub fn read_string(caller: &mut Caller<'_, State>, ptr: i32, len: i32) -> Result<String> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

pub fn write(caller: &mut Caller<'_, State>, ptr: i32, bytes: &[u8]) -> Result<()> {
    let mem = memory(caller)?;
    mem.write(caller, ptr as u32 as usize, bytes)
        .map_err(|e| anyhow!("guest write: {e}"))
}

pub fn write_u32(caller: &mut Caller<'_, State>, ptr: i32, value: u32) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

pub fn write_u64(caller: &mut Caller<'_, State>, ptr: i32, value: u64) -> Result<()> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Copies `bytes` into a fresh guest allocation (the SDK's `proxy_on_memory_allocate`) and
/// stores its address and size at the two return pointers, as the ABI's getters do.
pub fn return_bytes(
    caller: &mut Caller<'_, State>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<()> {
    let alloc = caller
        .data()
        .guest
        .as_ref()
        .and_then(|g| g.alloc.clone())
        .context("guest exports no proxy_on_memory_allocate")?;
    let len = i32::try_from(bytes.len()).context("buffer too large for wasm32")?;
    let addr = alloc.call(&mut *caller, len)?;
    if addr == 0 && len > 0 {
        return Err(anyhow!("guest allocation of {len} bytes failed"));
    }
    write(caller, addr, bytes)?;
    write_u32(caller, ret_ptr, addr as u32)?;
    write_u32(caller, ret_size, len as u32)
}

/// The ABI's header-map wire format (written independently of the guest's copy on purpose:
/// a bug in one side must not cancel out in the other).
pub fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
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

pub fn decode_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let u32_at = |at: usize| -> Result<usize> {
        let b = bytes.get(at..at + 4).context("header map truncated")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = u32_at(0)?;
    let mut sizes = Vec::new();
    for i in 0..count {
        sizes.push((u32_at(4 + 8 * i)?, u32_at(8 + 8 * i)?));
    }
    let mut at = 4 + 8 * count;
    let mut pairs = Vec::new();
    for (ks, vs) in sizes {
        let k = bytes.get(at..at + ks).context("header key truncated")?;
        at += ks + 1;
        let v = bytes.get(at..at + vs).context("header value truncated")?;
        at += vs + 1;
        pairs.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(pairs)
}
