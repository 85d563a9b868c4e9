//! The mock processes, started on free ports for one test and stopped when it ends.
// Each test binary uses part of it.
#![allow(dead_code)]

use cxgate_e2e::{Service, free_port, wait_ready};
use reqwest::blocking::Client;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub struct Mocks {
    _svc: Service,
    pub genesys: String,
    pub cxone: String,
    pub llm: String,
    pub http: Client,
}

pub fn start(extra: &[&str]) -> Mocks {
    let (g, c, l) = (free_port(), free_port(), free_port());
    let mut args: Vec<String> = [
        "--genesys",
        &format!("127.0.0.1:{g}"),
        "--cxone",
        &format!("127.0.0.1:{c}"),
        "--llm",
        &format!("127.0.0.1:{l}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let dir = std::env::temp_dir().join(format!("cxgate-mocks-test-{}-{g}", std::process::id()));
    let mut svc = Service::spawn(
        "mocks",
        Path::new(env!("CARGO_BIN_EXE_cxgate-mocks")),
        &args,
        &[],
        &dir,
    )
    .unwrap();
    for p in [g, c, l] {
        wait_ready(
            &mut svc,
            &format!("http://127.0.0.1:{p}/__mock/health"),
            &[],
            Duration::from_secs(20),
        )
        .unwrap();
    }
    Mocks {
        _svc: svc,
        genesys: format!("http://127.0.0.1:{g}"),
        cxone: format!("http://127.0.0.1:{c}"),
        llm: format!("http://127.0.0.1:{l}"),
        http: Client::new(),
    }
}

/// A CXone token by the password grant with the demo access key.
pub fn cxone_token(m: &Mocks) -> String {
    let v: Value = m
        .http
        .post(format!("{}/auth/token", m.cxone))
        .basic_auth("demo-cxone-client", Some("demo-cxone-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "demo-access-key"),
            ("password", "demo-access-key-secret"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}
