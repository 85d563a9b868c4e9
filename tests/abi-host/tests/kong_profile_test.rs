//! Layer 2: the kong profile does what Kong's host was measured to do (ngx_wasm_module inside
//! nginx; docs/architecture.md lists it), and the envoy profile keeps Envoy's behaviour. Each
//! point runs in both directions through the probe filter (or a module written for it).

use cxgate_abi_host::{Host, Profile, Stream, filter_wasm};

fn probe(profile: Profile, config: &str) -> Host {
    Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(profile)
        .cluster("mock")
        .property("plugin_root_id", b"cxgate-probe")
        .config(config)
        .start()
        .unwrap()
}

/// Runs one probe op on request headers (`extra` headers too): the result, or the trap.
fn op(
    h: &mut Host,
    what: &str,
    extra: &[(&str, &str)],
) -> (Stream, Result<Option<String>, String>) {
    let s = h.new_stream(0).unwrap();
    let mut headers = vec![
        (":path", "/"),
        (":authority", "gw.local:8080"),
        ("x-probe-op", what),
    ];
    headers.extend_from_slice(extra);
    let out = h
        .request_headers(s, &headers, true)
        .map(|_| h.request_header(s, "x-probe-result"))
        .map_err(|e| format!("{e:#}"));
    (s, out)
}

fn refused(out: &Result<Option<String>, String>, what: &str) {
    match out {
        Err(e) => assert!(e.contains("not supported by Kong"), "{what}: {e}"),
        Ok(r) => panic!("{what}: the kong profile let it through: {r:?}"),
    }
}

#[test]
fn a_foreign_function_traps_on_kong_and_clear_route_cache_works_on_envoy() {
    let mut h = probe(Profile::Kong, "");
    refused(&op(&mut h, "foreign", &[]).1, "clear_route_cache");
    let mut h = probe(Profile::Envoy, "");
    assert_eq!(
        op(&mut h, "foreign", &[]).1.unwrap().as_deref(),
        Some("cleared:true")
    );
}

#[test]
fn authority_is_read_only_on_kong() {
    let mut h = probe(Profile::Kong, "");
    refused(&op(&mut h, "set-authority", &[]).1, ":authority");
    let mut h = probe(Profile::Envoy, "");
    let (s, out) = op(&mut h, "set-authority", &[]);
    assert_eq!(out.unwrap().as_deref(), Some("Ok(())"));
    assert_eq!(
        h.request_header(s, ":authority").as_deref(),
        Some("elsewhere.example")
    );
}

#[test]
fn header_names_keep_their_case_on_kong_and_lookups_ignore_it() {
    let mut h = probe(Profile::Kong, "");
    let out = op(&mut h, "header-names", &[("X-Mixed-Case", "v")])
        .1
        .unwrap();
    assert_eq!(out.as_deref(), Some("x-probe-op,X-Mixed-Case|v"));
    let mut h = probe(Profile::Envoy, "");
    let out = op(&mut h, "header-names", &[("X-Mixed-Case", "v")])
        .1
        .unwrap();
    assert_eq!(out.as_deref(), Some("x-probe-op,x-mixed-case|v"));
}

#[test]
fn the_tick_period_is_the_root_contexts_and_set_once_on_kong() {
    let mut h = probe(Profile::Kong, "");
    refused(&op(&mut h, "tick-in-stream", &[]).1, "tick in a stream");
    let mut h = probe(Profile::Envoy, "");
    assert_eq!(
        op(&mut h, "tick-in-stream", &[]).1.unwrap().as_deref(),
        Some("Ok(())")
    );

    let twice = r#"{"tick_ms": 1000, "tick_twice": true}"#;
    let err = Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(Profile::Kong)
        .config(twice)
        .start()
        .err()
        .expect("the second period traps on Kong");
    assert!(format!("{err:#}").contains("already set"), "{err:#}");
    probe(Profile::Envoy, twice);
}

#[test]
fn a_trap_in_on_tick_recycles_the_instance_on_kong_and_breaks_envoy() {
    let config = r#"{"tick_ms": 1000}"#;
    let mut h = probe(Profile::Kong, config);
    op(&mut h, "trap-tick", &[]).1.unwrap();
    h.advance(std::time::Duration::from_millis(1000)).unwrap();
    let recycles = h.recycles();
    assert_eq!(recycles.len(), 1, "{recycles:?}");
    assert_eq!(
        h.logs_containing("CAS_DIALECT").len(),
        2,
        "on_configure ran again"
    );
    // The worker goes on.
    assert_eq!(
        op(&mut h, "insert", &[]).1.unwrap().as_deref(),
        Some("Ok(())")
    );
    h.advance(std::time::Duration::from_millis(1000)).unwrap();
    assert_eq!(h.recycles().len(), 1, "one trap, one recycle");

    let mut h = probe(Profile::Envoy, config);
    op(&mut h, "trap-tick", &[]).1.unwrap();
    assert!(h.advance(std::time::Duration::from_millis(1000)).is_err());
}

#[test]
fn plugin_root_id_reads_zero_on_kong() {
    let mut h = probe(Profile::Kong, "");
    assert_eq!(op(&mut h, "root-id", &[]).1.unwrap().as_deref(), Some("0"));
    let mut h = probe(Profile::Envoy, "");
    assert_eq!(
        op(&mut h, "root-id", &[]).1.unwrap().as_deref(),
        Some("cxgate-probe")
    );
}

#[test]
fn a_null_value_deletes_on_kong_and_stays_empty_on_envoy() {
    let mut h = probe(Profile::Kong, "");
    assert_eq!(
        op(&mut h, "delete", &[]).1.unwrap().as_deref(),
        Some("absent")
    );
    assert!(!h.shared_keys().contains(&"cxgate/test/deleted".to_string()));
    let mut h = probe(Profile::Envoy, "");
    assert_eq!(
        op(&mut h, "delete", &[]).1.unwrap().as_deref(),
        Some("kept:0")
    );
}

#[test]
fn a_failed_dispatch_carries_dispatch_status_on_kong() {
    for (profile, upstream, why) in [
        (Profile::Kong, "127.0.0.1:7101", "timeout"),
        (Profile::Envoy, "mock", "none"),
    ] {
        let mut h = probe(profile, &format!(r#"{{"upstream": "{upstream}"}}"#));
        let (s, _) = op(&mut h, "callout", &[]);
        let call = h.pending_calls().pop().expect("dispatched");
        h.fail(call.token).unwrap();
        let reply = h.local_reply(s).expect("504");
        let detail = reply.problem().unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            detail.contains(&format!("dispatch_status: {why}")),
            "{profile:?}: {detail}"
        );
    }
}

#[test]
fn a_local_reply_from_response_headers_keeps_only_status_and_body_on_kong() {
    let upstream = [(":status", "200"), ("content-length", "100"), ("x-up", "1")];
    // Naive: the reply's own header is lost and the upstream's length leaves the client waiting.
    let mut h = probe(Profile::Kong, "");
    let (s, _) = op(&mut h, "reply-in-response", &[]);
    h.response_headers(s, &upstream, false).unwrap();
    let r = h.local_reply(s).unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("retry-after"),
        None,
        "headers given with the reply are dropped"
    );
    assert_eq!(
        r.header("x-up"),
        Some("1"),
        "the response's own headers go out"
    );
    assert!(
        h.violations().iter().any(|v| v.contains("client hangs")),
        "{:?}",
        h.violations()
    );
    // Set on the response first, length removed: the client gets it all (plus Kong's newline).
    let mut h = probe(Profile::Kong, "");
    let (s, _) = op(&mut h, "reply-in-response-fixed", &[]);
    h.response_headers(s, &upstream, false).unwrap();
    let r = h.local_reply(s).unwrap();
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.body, b"try later\n");
    assert!(h.violations().is_empty(), "{:?}", h.violations());
    // Envoy: a local reply is what the filter sent.
    let mut h = probe(Profile::Envoy, "");
    let (s, _) = op(&mut h, "reply-in-response", &[]);
    h.response_headers(s, &upstream, false).unwrap();
    let r = h.local_reply(s).unwrap();
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.body, b"try later");
}

#[test]
fn kong_appends_a_newline_to_local_reply_bodies() {
    for (profile, body) in [
        (Profile::Kong, "try later\n"),
        (Profile::Envoy, "try later"),
    ] {
        let mut h = probe(profile, "");
        let (s, _) = op(&mut h, "reply-in-response-fixed", &[]);
        h.response_headers(s, &[(":status", "200")], false).unwrap();
        assert_eq!(
            h.local_reply(s).unwrap().body,
            body.as_bytes(),
            "{profile:?}"
        );
    }
}

/// The smallest module that imports `proxy_get_log_level`.
const IMPORTS_LOG_LEVEL: &str = r#"(module
  (import "env" "proxy_get_log_level" (func $level (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#;

#[test]
fn a_module_importing_proxy_get_log_level_does_not_load_on_kong() {
    let path = std::env::temp_dir().join(format!("cxgate-log-level-{}.wat", std::process::id()));
    std::fs::write(&path, IMPORTS_LOG_LEVEL).unwrap();
    let err = Host::builder(&path)
        .profile(Profile::Kong)
        .start()
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("proxy_get_log_level"),
        "{err:#}"
    );
    Host::builder(&path)
        .profile(Profile::Envoy)
        .start()
        .unwrap();
    // None of the shipped modules imports it.
    for m in [
        "cxgate-pipeline",
        "cxgate-transform",
        "cxgate-token",
        "cxgate-probe-filter",
    ] {
        Host::builder(filter_wasm(m))
            .profile(Profile::Kong)
            .config("{\"version\": 2, \"model\": {\"unmatched\": \"pass\", \"routes\": []}}")
            .start()
            .map(|_| ())
            .or_else(|e| {
                let e = format!("{e:#}");
                if e.contains("proxy_get_log_level") {
                    Err(e)
                } else {
                    Ok(())
                }
            })
            .unwrap();
    }
}

#[test]
fn on_configure_returning_false_is_fatal_on_kong() {
    let bad = r#"{"no_such_field": 1}"#;
    let err = Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(Profile::Kong)
        .config(bad)
        .start()
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("exits for good"), "{err:#}");
    let err = Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(Profile::Envoy)
        .config(bad)
        .start()
        .err()
        .expect("refused");
    assert!(!format!("{err:#}").contains("exits for good"), "{err:#}");
}

fn zone_write(h: &mut Host, key: &str, bytes: usize) -> Result<Option<String>, String> {
    let n = bytes.to_string();
    op(
        h,
        "zone-write",
        &[("x-probe-key", key), ("x-probe-bytes", &n)],
    )
    .1
}

#[test]
fn a_key_lives_in_the_zone_its_prefix_names_and_a_full_zone_traps_the_write_on_kong() {
    let mut h = Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(Profile::Kong)
        .cluster("mock")
        .property("plugin_root_id", b"cxgate-probe")
        .kong_zones(&[("cxgate", 4096), ("*", 1 << 20)])
        .start()
        .unwrap();
    let before = h.zone_bytes("cxgate");
    assert_eq!(
        zone_write(&mut h, "cxgate/a", 1000).unwrap().as_deref(),
        Some("Ok(())")
    );
    assert!(h.zone_bytes("cxgate") >= before + 1000);
    let star = h.zone_bytes("*");
    assert_eq!(
        zone_write(&mut h, "other/b", 3000).unwrap().as_deref(),
        Some("Ok(())")
    );
    assert!(
        h.zone_bytes("*") >= star + 3000,
        "no zone named other: the * zone"
    );
    let full = zone_write(&mut h, "cxgate/c", 3500).unwrap_err();
    assert!(full.contains("could not write to slab"), "{full}");
    // Envoy has no zones: the same writes fit.
    let mut h = probe(Profile::Envoy, "");
    assert_eq!(
        zone_write(&mut h, "cxgate/c", 3500).unwrap().as_deref(),
        Some("Ok(())")
    );
}

#[test]
fn shared_data_traps_on_kong_when_no_shm_kv_zone_takes_the_key() {
    let started = Host::builder(filter_wasm("cxgate-probe-filter"))
        .profile(Profile::Kong)
        .cluster("mock")
        .property("plugin_root_id", b"cxgate-probe")
        .kong_zones(&[])
        .start();
    // The kit probes the store's CAS rules at configure: with no zone, that traps.
    let e = format!("{:#}", started.err().expect("the module cannot configure"));
    assert!(e.contains("could not resolve namespace"), "{e}");
}

#[test]
fn the_kong_profiles_default_zone_is_the_one_kong_conf_declares() {
    let conf = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kong/kong.conf"),
    )
    .unwrap();
    assert!(
        conf.lines().any(|l| l.trim() == "nginx_wasm_shm_kv = 16m"),
        "kong.conf's zone and the profile's default (16 MiB) must agree"
    );
}
