//! Outbound calls (HTTP; gRPC, which Kong lacks), their status, the effective context and
//! foreign functions.

use super::*;
use crate::memory::{decode_pairs, read, read_string, write_u32};
use crate::state::State;
use crate::types::{CallInfo, LogRecord, Profile};
use wasmtime::Linker;
use wasmtime::Result;

pub(crate) fn link(l: &mut Linker<State>) -> Result<()> {
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
            // Kong traps on any foreign function (measured: the request gets a 500).
            refuse_in_kong(&c, &format!("the foreign function {name:?}"))?;
            if name == "clear_route_cache" {
                c.data().count("clear_route_cache");
                return Ok(OK);
            }
            Ok(NOT_FOUND)
        },
    )?;
    Ok(())
}
