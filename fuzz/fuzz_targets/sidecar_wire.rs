//! What the sidecar reads from the identity endpoints: a grant it accepts fits a header, an
//! error never quotes the body, and a discovered endpoint is a plain http(s) URL that reads
//! back the same.
#![no_main]

use cxgate_sidecar_wire::{
    MAX_ERROR_TEXT, MAX_LIFETIME_S, cxone_api_endpoint, oidc_token_endpoint, token_failure,
    token_response,
};
use libfuzzer_sys::fuzz_target;

/// `malformed <what>: <kind> at line N column M`, or one of the fixed messages.
fn quotes_nothing(e: &str, what: &str) -> bool {
    let Some(rest) = e.strip_prefix(&format!("malformed {what}: ")) else {
        return false;
    };
    let fixed = [
        "no usable access_token",
        "no positive expires_in",
        "token_type is not a scheme name",
    ];
    fixed.contains(&rest)
        || ["not JSON", "truncated", "not an object", "unreadable"]
            .iter()
            .any(|kind| {
                rest.strip_prefix(kind)
                    .and_then(|r| r.strip_prefix(" at line "))
                    .and_then(|r| r.split_once(" column "))
                    .is_some_and(|(l, c)| {
                        l.bytes().all(|b| b.is_ascii_digit()) && c.bytes().all(|b| b.is_ascii_digit())
                    })
            })
}

fn endpoint_holds(found: Result<String, String>, trailing_slash_ok: bool) {
    let Ok(u) = found else { return };
    assert!(u.starts_with("https://") || u.starts_with("http://"), "{u}");
    assert!(!u.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()), "{u:?}");
    assert!(!u.contains('@') || u.find('@') > u[8..].find('/').map(|i| i + 8), "{u}");
    assert!(trailing_slash_ok || !u.ends_with('/'), "{u}");
    // What was accepted, named again, reads back the same.
    let again = serde_json::json!({ "token_endpoint": u, "api_endpoint": u }).to_string();
    let back = if trailing_slash_ok {
        oidc_token_endpoint(again.as_bytes())
    } else {
        cxone_api_endpoint(again.as_bytes())
    };
    assert_eq!(back.as_deref(), Ok(u.as_str()));
}

fuzz_target!(|data: &[u8]| {
    match token_response(data) {
        Ok(g) => {
            assert!((1..=MAX_LIFETIME_S).contains(&g.expires_in));
            let header = format!("{} {}", g.token_type, g.access_token);
            assert!(
                header.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                    && header.matches(' ').count() == 1,
                "{header:?}"
            );
        }
        Err(e) => assert!(quotes_nothing(&e, "token response"), "{e}"),
    }
    let status = data.first().map_or(400, |b| 400 + u16::from(*b));
    let d = token_failure(status, data);
    assert!(d.starts_with(&format!("HTTP {status}")), "{d}");
    assert!(!d.chars().any(char::is_control), "{d:?}");
    assert!(d.len() <= 10 + 2 * MAX_ERROR_TEXT, "{}", d.len());
    endpoint_holds(oidc_token_endpoint(data), true);
    endpoint_holds(cxone_api_endpoint(data), false);
});
