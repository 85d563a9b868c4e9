//! An LLM request body through the guard's request side, for every operation it reads (the
//! first byte picks one): never a panic; a body it forwards holds no entity the scanner
//! would redact in any text field, and no deny phrase in a screened role.
#![no_main]

use cxgate_guard::api::Api;
use cxgate_guard::config::Config;
use cxgate_guard::prompt::screen_request;
use cxgate_guard::slots::{self, Walk};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::sync::OnceLock;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let section = json!({"routes": {"llm": {"redact_prompts": true}},
            "redact": ["ssn", "card", "phone", "email", "iban", "passport", "driver_license", "birth_date", "ipv4"]});
        Config::compile(section).unwrap_or_else(|_| unreachable!())
    })
}

fuzz_target!(|input: (u8, &str)| {
    let (pick, body) = input;
    let api = match pick % 5 {
        0 => Api::Chat,
        1 => Api::Responses,
        2 => Api::Completions,
        3 => Api::Embeddings,
        _ => Api::Messages,
    };
    let cfg = config();
    let Some((_, route)) = cfg.routes.first() else {
        return;
    };
    let Ok(screened) = screen_request(cfg, api, route, body.as_bytes()) else {
        return;
    };
    let forwarded = screened.body.unwrap_or_else(|| body.as_bytes().to_vec());
    let Ok(mut v) = serde_json::from_slice::<Value>(&forwarded) else {
        unreachable!("a forwarded body is JSON")
    };
    let Walk::Slots(list) = slots::request(api, &mut v, false) else {
        unreachable!("a forwarded body was readable")
    };
    for slot in list {
        let text = slot.text.as_str().unwrap_or("");
        assert!(cfg.scanner.find(text).is_empty(), "{api:?} {}: {text:?}", slot.pointer);
        if cfg.roles.iter().any(|r| *r == slot.role) {
            assert!(cfg.screen.hits(text).is_empty(), "{api:?} {}: {text:?}", slot.pointer);
        }
    }
});
