//! Shared data (with each proxy's CAS rules), shared queues and metrics.

use super::*;
use crate::memory::{read, read_string, return_bytes, write_u32, write_u64};
use crate::state::{Metric, Queue, Shared, State};
use crate::types::Profile;
use wasmtime::Linker;
use wasmtime::{Result, bail};

pub(crate) fn link(l: &mut Linker<State>) -> Result<()> {
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
            if c.data().profile == Profile::Kong && c.data().shared().zone_of(&key).is_none() {
                bail!(
                    "kong: failed getting value from shm (could not resolve namespace) for {key:?}"
                );
            }
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
            if profile == Profile::Kong {
                // Kong resolves the zone first (a key no zone takes traps), and a write that
                // does not fit its zone traps too ("could not write to slab").
                let Some(zone) = shared.zone_of(&key).map(str::to_string) else {
                    bail!("kong: failed setting value to shm (could not resolve namespace) for {key:?}");
                };
                let capacity = shared
                    .zones
                    .iter()
                    .find(|(n, _)| *n == zone)
                    .map_or(0, |(_, b)| *b);
                let old = shared
                    .kv
                    .get(&key)
                    .map_or(0, |(v, _)| Shared::entry_bytes(&key, v.len()));
                let new = Shared::entry_bytes(&key, value.len());
                if vptr != 0 && shared.zone_bytes(&zone) - old + new > capacity {
                    bail!("kong: failed setting value to shm (could not write to slab): zone {zone:?} is full");
                }
            }
            if shared.races > 0 && cas != 0 && shared.kv.contains_key(&key) {
                shared.races -= 1;
                shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
                let global = shared.next_cas;
                if let Some(entry) = shared.kv.get_mut(&key) {
                    // The other writer's write moves the CAS the way this proxy moves it.
                    entry.1 = match profile {
                        Profile::Envoy => global,
                        Profile::Kong => entry.1.wrapping_add(1).max(1),
                    };
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
            if profile == Profile::Kong && vptr == 0 {
                // Kong: a NULL value deletes the key (Envoy keeps it, empty).
                shared.put(key, None);
                return Ok(OK);
            }
            // Envoy's CAS is one counter for the whole store; Kong's counts per key from 1.
            let next = match profile {
                Profile::Envoy => {
                    shared.next_cas = shared.next_cas.wrapping_add(1).max(1);
                    shared.next_cas
                }
                Profile::Kong => current.map_or(1, |c| c.wrapping_add(1).max(1)),
            };
            shared.put(key, Some((value, next)));
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
