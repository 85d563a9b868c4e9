//! `demo --real` without the platforms' credentials starts nothing and says what is missing.

use std::process::Command;

const NEEDED: [&str; 9] = [
    "GENESYS_REGION",
    "GENESYS_CLIENT_ID",
    "GENESYS_CLIENT_SECRET",
    "CXONE_TENANT_ID",
    "CXONE_CLIENT_ID",
    "CXONE_CLIENT_SECRET",
    "CXONE_ACCESS_KEY_ID",
    "CXONE_ACCESS_KEY_SECRET",
    "LLM_API_KEY",
];

fn demo_real(set: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(["demo", "--real"]);
    for name in NEEDED {
        cmd.env_remove(name);
    }
    for (k, v) in set {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_credentials_it_refuses_and_lists_every_missing_variable() {
    let (code, err) = demo_real(&[]);
    assert_eq!(code, 1, "{err}");
    for name in NEEDED {
        assert!(err.contains(name), "{name} not listed:\n{err}");
    }
    assert!(err.contains("Nothing was started"), "{err}");

    // What is set is not listed; an empty value counts as missing.
    let (code, err) = demo_real(&[("GENESYS_REGION", "mypurecloud.com"), ("LLM_API_KEY", " ")]);
    assert_eq!(code, 1);
    assert!(!err.contains("GENESYS_REGION"), "{err}");
    assert!(err.contains("LLM_API_KEY"), "{err}");
    assert!(err.contains("GENESYS_CLIENT_SECRET"), "{err}");
}
