use cxgate_sidecar_wire::{
    MAX_ERROR_TEXT, MAX_LIFETIME_S, cxone_api_endpoint, oidc_token_endpoint, token_failure,
    token_response,
};

#[test]
fn a_genesys_and_a_cxone_grant_read() {
    let g = token_response(
        br#"{"access_token":"aB3-_.~+/x==","token_type":"bearer","expires_in":86400}"#,
    )
    .unwrap();
    assert_eq!(
        (g.access_token.as_str(), g.token_type.as_str(), g.expires_in),
        ("aB3-_.~+/x==", "bearer", 86400)
    );
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let body = format!(
        r#"{{"access_token":"{jwt}","token_type":"Bearer","expires_in":"3600","refresh_token":"r","id_token":"i"}}"#
    );
    let g = token_response(body.as_bytes()).unwrap();
    assert_eq!((g.access_token.as_str(), g.expires_in), (jwt, 3600));
    let g = token_response(br#"{"access_token":"t","expires_in":60}"#).unwrap();
    assert_eq!(g.token_type, "Bearer", "the type defaults as RFC 6750 does");
}

#[test]
fn a_grant_that_could_not_go_in_a_header_is_refused() {
    for body in [
        r#"{"access_token":"abc\r\nX-Injected: 1","expires_in":60}"#,
        r#"{"access_token":"a b","expires_in":60}"#,
        r#"{"access_token":"","expires_in":60}"#,
        r#"{"access_token":"===","expires_in":60}"#,
        r#"{"access_token":42,"expires_in":60}"#,
        r#"{"access_token":"t","token_type":"Bearer x","expires_in":60}"#,
        r#"{"access_token":"t","token_type":7,"expires_in":60}"#,
        r#"{"access_token":"t","expires_in":0}"#,
        r#"{"access_token":"t","expires_in":-5}"#,
        r#"{"access_token":"t","expires_in":"soon"}"#,
        r#"{"access_token":"t"}"#,
        r#"[]"#,
    ] {
        let e = token_response(body.as_bytes()).unwrap_err();
        assert!(e.starts_with("malformed token response"), "{body}: {e}");
    }
}

#[test]
fn an_error_never_quotes_the_body() {
    // The token in the wrong field, the type in the token's: nothing of either is logged.
    for body in [
        r#"{"access_token":["secret-token-value"],"expires_in":60}"#,
        r#"{"access_token":"secret-token-value","expires_in":"secret-token-value"}"#,
        r#"{"access_token":"secret-token-value","expires_in":1e99}"#,
        r#"{"access_token":"secret-token-value""#,
        r#"secret-token-value"#,
    ] {
        let e = token_response(body.as_bytes()).unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }
    let e = oidc_token_endpoint(br#"{"token_endpoint": "secret-value"#).unwrap_err();
    assert!(e.contains("truncated") && !e.contains("secret"), "{e}");
}

#[test]
fn a_lifetime_is_capped() {
    let g = token_response(br#"{"access_token":"t","expires_in":18446744073709551615}"#).unwrap();
    assert_eq!(g.expires_in, MAX_LIFETIME_S);
}

#[test]
fn an_oauth_error_is_described_printably_and_briefly() {
    let d = token_failure(
        401,
        br#"{"error":"invalid_client","error_description":"Client authentication failed"}"#,
    );
    assert_eq!(d, "HTTP 401 invalid_client Client authentication failed");
    assert_eq!(token_failure(503, b"<html>busy</html>"), "HTTP 503");
    let forged = format!(
        r#"{{"error":"bad\n{{\"level\":\"INFO\"}}","error_description":"{}"}}"#,
        "x".repeat(5000)
    );
    let d = token_failure(400, forged.as_bytes());
    assert!(!d.chars().any(char::is_control), "{d}");
    assert!(
        d.len() <= "HTTP 400  ".len() + 2 * MAX_ERROR_TEXT,
        "{}",
        d.len()
    );
}

#[test]
fn discovery_names_http_endpoints_only() {
    let oidc = br#"{"issuer":"https://cxone.niceincontact.com","token_endpoint":"https://cxone.niceincontact.com/auth/token"}"#;
    assert_eq!(
        oidc_token_endpoint(oidc).unwrap(),
        "https://cxone.niceincontact.com/auth/token"
    );
    let conf = br#"{"api_endpoint":"https://api-na1.niceincontact.com/","area":"na1"}"#;
    assert_eq!(
        cxone_api_endpoint(conf).unwrap(),
        "https://api-na1.niceincontact.com"
    );
    for bad in [
        r#"{"api_endpoint":"file:///etc/passwd"}"#,
        r#"{"api_endpoint":"https://user:pw@api.example.com"}"#,
        r#"{"api_endpoint":"https://api.example.com/#frag"}"#,
        r#"{"api_endpoint":"api.example.com"}"#,
        r#"{"api_endpoint":7}"#,
        r#"{}"#,
    ] {
        assert!(cxone_api_endpoint(bad.as_bytes()).is_err(), "{bad}");
    }
}
