//! The `env` imports of proxy-wasm ABI 0.2.1, as Envoy and Kong implement them.

use crate::host::{CallInfo, LocalReply, LogRecord, Metric, Profile, Queue, State};
use crate::memory::{decode_pairs, read, read_string, return_bytes, write_u32, write_u64};
use wasmtime::Result;
use wasmtime::{Caller, Linker};

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const EMPTY: i32 = 7;
const CAS_MISMATCH: i32 = 8;
const INTERNAL_FAILURE: i32 = 10;

type C<'a> = Caller<'a, State>;

fn kong(c: &C<'_>) -> bool {
    c.data().profile == Profile::Kong
}

/// The header map a map type names, for the effective stream (or the call response).
fn map_mut<'a>(c: &'a mut C<'_>, map: i32) -> Result<Option<&'a mut Vec<(String, String)>>> {
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

fn refuse_in_kong(c: &C<'_>, what: &str) -> Result<()> {
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
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            *m = pairs
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
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
            let key = read_string(&mut c, kptr, klen)?.to_ascii_lowercase();
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            // Envoy returns the first value of a repeated header.
            let Some(value) = m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()) else {
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
            let key = read_string(&mut c, kptr, klen)?.to_ascii_lowercase();
            let value = read_string(&mut c, vptr, vlen)?;
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            m.retain(|(k, _)| *k != key);
            m.push((key, value));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, map: i32, kptr: i32, klen: i32, vptr: i32, vlen: i32| -> Result<i32> {
            c.data().count("proxy_add_header_map_value");
            let key = read_string(&mut c, kptr, klen)?.to_ascii_lowercase();
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
            let key = read_string(&mut c, kptr, klen)?.to_ascii_lowercase();
            let Some(m) = map_mut(&mut c, map)? else {
                return Ok(BAD_ARGUMENT);
            };
            m.retain(|(k, _)| *k != key);
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
        |c: C<'_>, _p: i32, _l: i32, _v: i32, _vl: i32| -> Result<i32> {
            c.data().count("proxy_set_property");
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kptr: i32,
         klen: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> Result<i32> {
            c.data().count("proxy_get_shared_data");
            let key = read_string(&mut c, kptr, klen)?;
            let found = c.data().shared().kv.get(&key).cloned();
            let Some((value, cas)) = found else {
                return Ok(NOT_FOUND);
            };
            if value.is_empty() {
                write_u32(&mut c, ret_ptr, 0)?;
                write_u32(&mut c, ret_size, 0)?;
            } else {
                return_bytes(&mut c, &value, ret_ptr, ret_size)?;
            }
            write_u32(&mut c, ret_cas, cas)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut c: C<'_>, kptr: i32, klen: i32, vptr: i32, vlen: i32, cas: i32| -> Result<i32> {
            c.data().count("proxy_set_shared_data");
            let key = read_string(&mut c, kptr, klen)?;
            let value = read(&mut c, vptr, vlen)?;
            let profile = c.data().profile;
            let cas = cas as u32;
            let mut shared = c.data().shared();
            if shared.races > 0 && cas != 0 && shared.kv.contains_key(&key) {
                shared.races -= 1;
                shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
                let bumped = shared.next_cas;
                if let Some(entry) = shared.kv.get_mut(&key) {
                    entry.1 = bumped;
                }
            }
            let current = shared.kv.get(&key).map(|(_, c)| *c);
            // Envoy (proxy-wasm-cpp-host): absent inserts for any cas; present needs cas 0 or
            // a match. Kong (ngx_wasm_module): cas must equal the current one (0 if absent).
            let allowed = match (profile, current) {
                (Profile::Envoy, None) => true,
                (Profile::Envoy, Some(cur)) => cas == 0 || cas == cur,
                (Profile::Kong, None) => cas == 0,
                (Profile::Kong, Some(cur)) => cas == cur,
            };
            if !allowed {
                shared.cas_mismatches += 1;
                return Ok(CAS_MISMATCH);
            }
            shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
            let next = shared.next_cas;
            shared.kv.insert(key, (value, next));
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, ptr: i32, len: i32, ret: i32| -> Result<i32> {
            c.data().count("proxy_register_shared_queue");
            let name = read_string(&mut c, ptr, len)?;
            let (worker, context_id) = (c.data().worker, c.data().effective);
            let id = {
                let mut shared = c.data().shared();
                match shared.queues.iter().position(|q| q.name == name) {
                    Some(pos) => {
                        if let Some(q) = shared.queues.get_mut(pos) {
                            q.worker = worker;
                            q.context_id = context_id;
                        }
                        pos as u32 + 1
                    }
                    None => {
                        shared.queues.push(Queue {
                            name,
                            worker,
                            context_id,
                            items: Default::default(),
                        });
                        shared.queues.len() as u32
                    }
                }
            };
            write_u32(&mut c, ret, id)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, _vp: i32, _vl: i32, ptr: i32, len: i32, ret: i32| -> Result<i32> {
            c.data().count("proxy_resolve_shared_queue");
            let name = read_string(&mut c, ptr, len)?;
            let found = c.data().shared().queues.iter().position(|q| q.name == name);
            let Some(pos) = found else {
                return Ok(NOT_FOUND);
            };
            write_u32(&mut c, ret, pos as u32 + 1)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut c: C<'_>, id: i32, ptr: i32, len: i32| -> Result<i32> {
            c.data().count("proxy_enqueue_shared_queue");
            let bytes = read(&mut c, ptr, len)?;
            let mut shared = c.data().shared();
            let Some(q) = shared.queues.get_mut((id as u32 as usize).wrapping_sub(1)) else {
                return Ok(NOT_FOUND);
            };
            q.items.push_back(bytes);
            let ready = (q.worker, q.context_id, id as u32);
            shared.queue_ready.push(ready);
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> Result<i32> {
            c.data().count("proxy_dequeue_shared_queue");
            let item = {
                let mut shared = c.data().shared();
                let Some(q) = shared.queues.get_mut((id as u32 as usize).wrapping_sub(1)) else {
                    return Ok(NOT_FOUND);
                };
                q.items.pop_front()
            };
            let Some(item) = item else { return Ok(EMPTY) };
            return_bytes(&mut c, &item, ret_ptr, ret_size)?;
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
            let s = c.data_mut();
            let effective = s.effective;
            let Some(stream) = s.streams.get_mut(&effective) else {
                return Ok(BAD_ARGUMENT);
            };
            stream.local_reply = Some(LocalReply {
                status: status as u32,
                details,
                headers,
                body,
            });
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         uptr: i32,
         ulen: i32,
         hptr: i32,
         hlen: i32,
         bptr: i32,
         blen: i32,
         tptr: i32,
         tlen: i32,
         timeout: i32,
         ret: i32|
         -> Result<i32> {
            c.data().count("proxy_http_call");
            let upstream = read_string(&mut c, uptr, ulen)?;
            let headers = decode_pairs(&read(&mut c, hptr, hlen)?)?;
            let body = read(&mut c, bptr, blen)?;
            let trailers = decode_pairs(&read(&mut c, tptr, tlen)?)?;
            if !trailers.is_empty() {
                refuse_in_kong(&c, "trailers on dispatch_http_call")?;
            }
            let valid_upstream = match c.data().profile {
                Profile::Envoy => c.data().clusters.contains(&upstream),
                Profile::Kong => upstream
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
            };
            if !valid_upstream {
                let worker = c.data().worker;
                c.data().shared().logs.push(LogRecord {
                    worker,
                    level: 4,
                    message: format!("host: dispatch_http_call to unknown upstream {upstream:?}"),
                });
                return Ok(BAD_ARGUMENT);
            }
            // Our portability rule: every call names all four pseudo-headers.
            let missing: Vec<&str> = [":method", ":path", ":authority", ":scheme"]
                .into_iter()
                .filter(|h| !headers.iter().any(|(k, _)| k == h))
                .collect();
            if !missing.is_empty() {
                let msg = format!("dispatch_http_call without {missing:?}");
                c.data().shared().violations.push(msg);
                return Ok(BAD_ARGUMENT);
            }
            let (worker, context_id, now) =
                (c.data().worker, c.data().effective, c.data().now_ns());
            let call = {
                let mut shared = c.data().shared();
                shared.next_token += 1;
                let call = CallInfo {
                    token: shared.next_token,
                    worker,
                    context_id,
                    upstream,
                    headers,
                    body,
                    timeout_ms: timeout as u32,
                    dispatched_ns: now,
                };
                shared.calls.push(call.clone());
                call
            };
            let scripted = {
                let mut shared = c.data().shared();
                let mut responder = shared.responder.take();
                let reply = responder.as_mut().and_then(|r| r(&call));
                shared.responder = responder;
                reply
            };
            if let Some(reply) = scripted {
                c.data_mut().deferred.push((call.token, reply));
            }
            write_u32(&mut c, ret, call.token)?;
            Ok(OK)
        },
    )?;

    // Linked so modules that merely import them load; calling them is a portability failure.
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _x: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _l: i32|
         -> Result<i32> {
            refuse_in_kong(&c, "proxy_grpc_call")?;
            c.data()
                .shared()
                .violations
                .push("proxy_grpc_call: gRPC is outside cxgate's portable subset".into());
            Ok(INTERNAL_FAILURE)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _x: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32|
         -> Result<i32> {
            refuse_in_kong(&c, "proxy_grpc_stream")?;
            c.data()
                .shared()
                .violations
                .push("proxy_grpc_stream: gRPC is outside cxgate's portable subset".into());
            Ok(INTERNAL_FAILURE)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |c: C<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> Result<i32> {
            refuse_in_kong(&c, "proxy_grpc_send")?;
            Ok(BAD_ARGUMENT)
        },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        let n: &'static str = name;
        l.func_wrap("env", n, move |c: C<'_>, _t: i32| -> Result<i32> {
            refuse_in_kong(&c, n)?;
            Ok(BAD_ARGUMENT)
        })?;
    }

    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code: i32, _mptr: i32, msize: i32| -> Result<i32> {
            write_u32(&mut c, code, 0)?;
            write_u32(&mut c, msize, 0)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| -> Result<i32> {
            c.data().count("proxy_set_effective_context");
            let s = c.data_mut();
            let id = id as u32;
            if id != s.root_id && !s.streams.contains_key(&id) {
                return Ok(BAD_ARGUMENT);
            }
            s.effective = id;
            Ok(OK)
        },
    )?;

    // Envoy offers `clear_route_cache` (route re-selection after a :path change); Kong has no
    // foreign functions.
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |mut c: C<'_>, nptr: i32, nlen: i32, _a: i32, _b: i32, _rp: i32, _rs: i32| -> Result<i32> {
            let name = read_string(&mut c, nptr, nlen)?;
            if c.data().profile == Profile::Envoy && name == "clear_route_cache" {
                c.data().count("clear_route_cache");
                return Ok(OK);
            }
            Ok(NOT_FOUND)
        },
    )?;

    l.func_wrap("env", "proxy_done", |c: C<'_>| -> Result<i32> {
        refuse_in_kong(&c, "proxy_done")?;
        Ok(OK)
    })?;

    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, ptr: i32, len: i32, ret: i32| -> Result<i32> {
            c.data().count("proxy_define_metric");
            let name = read_string(&mut c, ptr, len)?;
            if !(0..=2).contains(&kind) {
                return Ok(BAD_ARGUMENT);
            }
            let id = {
                let mut shared = c.data().shared();
                match shared.metrics.iter().position(|m| m.name == name) {
                    Some(pos) => pos as u32,
                    None => {
                        shared.metrics.push(Metric {
                            name,
                            kind,
                            value: 0,
                        });
                        shared.metrics.len() as u32 - 1
                    }
                }
            };
            write_u32(&mut c, ret, id)?;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> Result<i32> {
            c.data().count("proxy_increment_metric");
            let mut shared = c.data().shared();
            let Some(m) = shared.metrics.get_mut(id as u32 as usize) else {
                return Ok(NOT_FOUND);
            };
            if m.kind == 2 {
                return Ok(BAD_ARGUMENT);
            }
            m.value += offset;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> Result<i32> {
            c.data().count("proxy_record_metric");
            let mut shared = c.data().shared();
            let Some(m) = shared.metrics.get_mut(id as u32 as usize) else {
                return Ok(NOT_FOUND);
            };
            m.value = value;
            Ok(OK)
        },
    )?;

    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> Result<i32> {
            let value = c
                .data()
                .shared()
                .metrics
                .get(id as u32 as usize)
                .map(|m| m.value);
            let Some(value) = value else {
                return Ok(NOT_FOUND);
            };
            write_u64(&mut c, ret, value as u64)?;
            Ok(OK)
        },
    )?;

    Ok(())
}
