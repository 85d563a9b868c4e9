//! `cxgate-wasi-runner <module.wasm> [args...]`: runs a wasm32-wasip1 command (a cargo test
//! binary) under wasmtime with the caller's args, env and stdio, and the current directory
//! preopened. Exits with the module's exit code. Cargo uses it as the wasm32-wasip1 runner, so
//! `cargo test --target wasm32-wasip1` runs the pure-core tests inside wasmtime.

use std::process::ExitCode;
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cxgate-wasi-runner: {e:#}");
            ExitCode::from(101)
        }
    }
}

fn run() -> wasmtime::Result<u8> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        wasmtime::bail!("usage: cxgate-wasi-runner <module.wasm> [args...]");
    };
    let engine = Engine::default();
    let module = Module::from_file(&engine, path)?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    let mut builder = WasiCtxBuilder::new();
    builder.inherit_stdio().inherit_env().args(&args);
    builder.preopened_dir(".", ".", FsPerms::ReadOnly)?;
    let mut store = Store::new(&engine, builder.build_p1());
    let instance = linker.instantiate(&mut store, &module)?;
    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(u8::try_from(exit.0).unwrap_or(1)),
            // A trap is how a panicking test ends under panic=abort.
            None => {
                eprintln!("cxgate-wasi-runner: {e:#}");
                Ok(101)
            }
        },
    }
}
