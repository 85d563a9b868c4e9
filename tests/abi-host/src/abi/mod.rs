//! The `env` imports of proxy-wasm ABI 0.2.1, as Envoy and Kong implement them.

mod calls;
mod state;

use crate::memory::{decode_pairs, read, read_string, return_bytes, write_u32, write_u64};
use crate::state::{State, StreamState};
use crate::types::{LocalReply, LogRecord, Profile};
use wasmtime::Result;
use wasmtime::{Caller, Linker};

pub(crate) const OK: i32 = 0;
pub(crate) const NOT_FOUND: i32 = 1;
pub(crate) const BAD_ARGUMENT: i32 = 2;
pub(crate) const EMPTY: i32 = 7;
pub(crate) const CAS_MISMATCH: i32 = 8;
pub(crate) const INTERNAL_FAILURE: i32 = 10;

pub(crate) type C<'a> = Caller<'a, State>;

pub(crate) fn kong(c: &C<'_>) -> bool {
    c.data().profile == Profile::Kong
}

/// The header map a map type names, for the effective stream (or the call response).
pub(crate) fn map_mut<'a>(
    c: &'a mut C<'_>,
    map: i32,
) -> Result<Option<&'a mut Vec<(String, String)>>> {
    if kong(c) && matches!(map, 1 | 3 | 5 | 7) {
        return Err(c
            .data()
            .violation(&format!("trailers/gRPC metadata (header map type {map})")));
    }
    let state = c.data_mut();
    if map == 6 || map == 7 {
        return Ok(state
            .call_response
            .as_mut()
            .map(|r| &mut r.headers)
            .filter(|_| map == 6));
    }
    let effective = state.effective;
    let Some(stream) = state.streams.get_mut(&effective) else {
        return Ok(None);
    };
    Ok(match map {
        0 => Some(&mut stream.request_headers),
        1 => Some(&mut stream.request_trailers),
        2 => Some(&mut stream.response_headers),
        3 => Some(&mut stream.response_trailers),
        _ => None,
    })
}

/// A header name as the proxy stores it: Envoy lowercases, Kong keeps the case it was given
/// (lookups are case-insensitive on both).
pub(crate) fn stored_name(c: &C<'_>, name: String) -> String {
    if kong(c) {
        name
    } else {
        name.to_ascii_lowercase()
    }
}

/// Kong's `:authority` is the server name and port, and cannot be set (measured).
fn refuse_authority_edit(c: &C<'_>, map: i32, key: &str) -> Result<()> {
    if kong(c) && map == 0 && key.eq_ignore_ascii_case(":authority") {
        return Err(c.data().violation("setting :authority"));
    }
    Ok(())
}

pub(crate) fn refuse_in_kong(c: &C<'_>, what: &str) -> Result<()> {
    if kong(c) {
        Err(c.data().violation(what))
    } else {
        Ok(())
    }
}

pub fn link(l: &mut Linker<State>) -> Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> Result<i32> {
            c.data().count("proxy_log");
            let message = read_string(&mut c, ptr, len)?;
            let worker = c.data().worker;
            c.data().shared().logs.push(LogRecord {
                worker,
                level: level as u32,
                message,
            });
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            refuse_in_kong(&c, "proxy_get_log_level")?;
            let level = c.data().log_level;
            write_u32(&mut c, ret, level)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> Result<i32> {
            c.data().count("proxy_get_current_time_nanoseconds");
            let now = c.data().now_ns();
            write_u64(&mut c, ret, now)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> Result<i32> {
            // Kong: only the root context may set it, and only once (measured: both trap).
            if kong(&c) && c.data().effective != c.data().root_id {
                return Err(c
                    .data()
                    .violation("set_tick_period outside the root context"));
            }
            if kong(&c) && c.data().tick_period_ms > 0 && period > 0 {
                return Err(c
                    .data()
                    .violation("set_tick_period when a period is already set"));
            }
            let now = c.data().now_ns();
            let s = c.data_mut();
            s.tick_period_ms = period as u32;
            s.next_tick_ns = (period > 0).then(|| now + u64::from(period as u32) * 1_000_000);
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            c.data().count("proxy_get_buffer_bytes");
            let s = c.data();
            let stream = s.streams.get(&s.effective);
            let buf: Option<Vec<u8>> = match kind {
                0 => stream.map(|st| st.request_body.clone()),
                1 => stream.map(|st| st.response_body.clone()),
                4 => s.call_response.as_ref().map(|r| r.body.clone()),
                6 => Some(s.vm_config.clone()),
                7 => Some(s.plugin_config.clone()),
                _ => None,
            };
            let Some(buf) = buf else { return Ok(NOT_FOUND) };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(max as u32 as usize).min(buf.len());
            let slice = buf.get(start..end).unwrap_or_default().to_vec();
            if slice.is_empty() {
                write_u32(&mut c, ret_ptr, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                return Ok(OK);
            }
            return_bytes(&mut c, &slice, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         size: i32,
         data: i32,
         data_size: i32|
         -> Result<i32> {
            c.data().count("proxy_set_buffer_bytes");
            let bytes = read(&mut c, data, data_size)?;
            let s = c.data_mut();
            let effective = s.effective;
            let Some(stream) = s.streams.get_mut(&effective) else {
                return Ok(NOT_FOUND);
            };
            let buf = match kind {
                0 => &mut stream.request_body,
                1 => &mut stream.response_body,
                _ => return Ok(BAD_ARGUMENT),
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, bytes);
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            c.data().count("proxy_get_header_map_pairs");
            let Some(pairs) = map_mut(&mut c, map)?.map(|m| m.clone()) else {
                return Ok(BAD_ARGUMENT);
            };
            let bytes = crate::memory::encode_pairs(&pairs);
            return_bytes(&mut c, &bytes, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> Result<i32> {
            c.data().count("proxy_set_header_map_pairs");
            let bytes = read(&mut c, ptr, len)?;
            let pairs = decode_pairs(&bytes)?;
            let pairs: Vec<(String, String)> = pairs
                .into_iter()
                .map(|(k, v)| (stored_name(&c, k), v))
                .collect();
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            *m = pairs;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kptr: i32,
         klen: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> Result<i32> {
            c.data().count("proxy_get_header_map_value");
            let key = read_string(&mut c, kptr, klen)?;
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            // Envoy returns the first value of a repeated header.
            let found = m.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key));
            let Some(value) = found.map(|(_, v)| v.clone()) else {
                return Ok(NOT_FOUND);
            };
            return_bytes(&mut c, value.as_bytes(), ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Result<i32> {
            c.data().count("proxy_replace_header_map_value");
            let key = read_string(&mut c, kptr, klen)?;
            refuse_authority_edit(&c, map, &key)?;
            let key = stored_name(&c, key);
            let value = read_string(&mut c, vptr, vlen)?;
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            m.push((key, value));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Result<i32> {
            c.data().count("proxy_add_header_map_value");
            let key = read_string(&mut c, kptr, klen)?;
            refuse_authority_edit(&c, map, &key)?;
            let key = stored_name(&c, key);
            let value = read_string(&mut c, vptr, vlen)?;
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            m.push((key, value));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32| -> Result<i32> {
            c.data().count("proxy_remove_header_map_value");
            let key = read_string(&mut c, kptr, klen)?;
            refuse_authority_edit(&c, map, &key)?;
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            c.data().count("proxy_get_property");
            let raw = read(&mut c, ptr, len)?;
            let path: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let first = path.first().cloned().unwrap_or_default();
            if kong(&c)
                && (matches!(first.as_str(), "node" | "cluster_name" | "route_name")
                    || first.ends_with("metadata"))
            {
                return Err(c.data().violation(&format!("property {first:?}")));
            }
            // Kong reads "0" where Envoy gives the root id string (measured).
            if kong(&c) && first == "plugin_root_id" {
                return_bytes(&mut c, b"0", ret_ptr, ret_size)?;
                return Ok(OK);
            }
            let Some(value) = c.data().properties.get(&path.join(".")).cloned() else {
                return Ok(NOT_FOUND);
            };
            return_bytes(&mut c, &value, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, p: i32, l: i32, v: i32, vl: i32| -> Result<i32> {
            c.data().count("proxy_set_property");
            // Kong (ngx_wasm_module) knows no user properties: NotFound, and an error in its log.
            if kong(&c) {
                let msg = "kong profile: proxy_set_property of an unknown property (Kong answers NotFound and logs an error)";
                c.data().shared().violations.push(msg.to_string());
                return Ok(NOT_FOUND);
            }
            let name = read_string(&mut c, p, l)?;
            let value = read_string(&mut c, v, vl)?;
            let s = c.data_mut();
            let effective = s.effective;
            let Some(stream) = s.streams.get_mut(&effective) else {
                return Ok(NOT_FOUND);
            };
            stream.properties.retain(|(k, _)| *k != name);
            stream.properties.push((name, value));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, kind: i32| -> Result<i32> {
            c.data().count("proxy_continue_stream");
            let s = c.data_mut();
            let effective = s.effective;
            let Some(stream) = s.streams.get_mut(&effective) else {
                return Ok(NOT_FOUND);
            };
            match kind {
                0 => stream.request_continued += 1,
                1 => stream.response_continued += 1,
                _ => return Ok(BAD_ARGUMENT),
            }
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_close_stream",
        |c: C<'_>, _kind: i32| -> Result<i32> {
            c.data().count("proxy_close_stream");
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         dptr: i32,
         dlen: i32,
         bptr: i32,
         blen: i32,
         hptr: i32,
         hlen: i32,
         _grpc: i32|
         -> Result<i32> {
            c.data().count("proxy_send_local_response");
            let details = read_string(&mut c, dptr, dlen)?;
            let body = read(&mut c, bptr, blen)?;
            let headers = decode_pairs(&read(&mut c, hptr, hlen)?)?;
            let is_kong = kong(&c);
            let s = c.data_mut();
            let effective = s.effective;
            let Some(stream) = s.streams.get_mut(&effective) else {
                return Ok(BAD_ARGUMENT);
            };
            let reply = if is_kong {
                kong_local_reply(stream, status as u32, details, headers, body)
            } else {
                LocalReply {
                    status: status as u32,
                    details,
                    headers,
                    body,
                }
            };
            let hangs = (is_kong && reply.details.contains("client hangs"))
                .then(|| format!("kong profile: {}", reply.details));
            stream.local_reply = Some(reply);
            if let Some(msg) = hangs {
                c.data().shared().violations.push(msg);
            }
            Ok(OK)
        },
    )?;
    state::link(l)?;
    calls::link(l)?;

    Ok(())
}

/// What a Kong client receives for a local reply (measured): the host appends `\n` to the
/// body; from response headers it keeps only status and body, so the response's own headers
/// (as the filter left them) go out and a stale `content-length` truncates the body or, when
/// longer, leaves the client waiting.
fn kong_local_reply(
    stream: &StreamState,
    status: u32,
    details: String,
    headers: Vec<(String, String)>,
    mut body: Vec<u8>,
) -> LocalReply {
    body.push(b'\n');
    if !stream.in_response {
        return LocalReply {
            status,
            details,
            headers,
            body,
        };
    }
    let kept: Vec<(String, String)> = stream
        .response_headers
        .iter()
        .filter(|(k, _)| k != ":status")
        .cloned()
        .collect();
    let length = kept
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let mut details = details;
    match length {
        Some(n) if n < body.len() => body.truncate(n),
        Some(n) if n > body.len() => {
            details = format!(
                "client hangs: content-length {n} for a {}-byte body",
                body.len()
            );
        }
        _ => {}
    }
    LocalReply {
        status,
        details,
        headers: kept,
        body,
    }
}
