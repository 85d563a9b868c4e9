//! The mocks over HTTPS: served only to a client that trusts their CA and asks for their name
//! by SNI, as the platforms' fronts; what was asked is recorded.

use cxgate_e2e::pki::{Pki, TLS_NAME};
use cxgate_e2e::{Service, free_port, wait_ready_with};
use reqwest::blocking::Client;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

#[test]
fn https_is_served_to_the_right_name_only_and_each_request_records_its_sni() {
    let dir = std::env::temp_dir().join(format!("cxgate-mocks-tls-{}", std::process::id()));
    let pki = Pki::create(&dir.join("pki")).unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let mut args = vec!["--cxone".to_string(), format!("127.0.0.1:{port}")];
    args.extend(pki.mock_args());
    let bin = Path::new(env!("CARGO_BIN_EXE_cxgate-mocks"));
    let mut svc = Service::spawn("mocks", bin, &args, &[], &dir).unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let trusting = Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let base = format!("https://{TLS_NAME}:{port}");
    wait_ready_with(
        &mut svc,
        &trusting,
        &format!("{base}/__mock/health"),
        &[],
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Discovery hands out the HTTPS name, and a request records the SNI it came with.
    let conf: Value = trusting
        .get(format!(
            "{base}/.well-known/cxone-configuration?tenantId=t1"
        ))
        .send()
        .and_then(|r| r.json())
        .unwrap();
    assert_eq!(conf["api_endpoint"], base);
    let seen: Vec<Value> = trusting
        .get(format!("{base}/__mock/requests"))
        .send()
        .and_then(|r| r.json())
        .unwrap();
    let last = seen.last().expect("the discovery request");
    assert_eq!(last["sni"], TLS_NAME);
    assert_eq!(last["authority"], format!("{TLS_NAME}:{port}"));

    // A client that does not trust the CA gets nothing; nor does one that asks for no name
    // (an IP address sends no SNI), even when it accepts any certificate.
    assert!(
        Client::new()
            .get(format!("{base}/__mock/health"))
            .send()
            .is_err()
    );
    let careless = Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let by_ip = careless
        .get(format!("https://127.0.0.1:{port}/__mock/health"))
        .send();
    assert!(
        by_ip.is_err(),
        "served without SNI: {:?}",
        by_ip.map(|r| r.status())
    );
    let stats: Value = trusting
        .get(format!("{base}/__mock/stats"))
        .send()
        .and_then(|r| r.json())
        .unwrap();
    assert_eq!(stats["tls_handshakes_refused"], 2, "{stats}");
    drop(svc);
    let _ = std::fs::remove_dir_all(&dir);
}
