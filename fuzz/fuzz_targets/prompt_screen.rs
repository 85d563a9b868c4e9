//! Prompt screening: after filtering, no deny phrase is left in the text, however it was
//! folded, spaced or marked up.
#![no_main]

use cxgate_guard::screen::{Screen, default_rules};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn screen() -> &'static Screen {
    static S: OnceLock<Screen> = OnceLock::new();
    S.get_or_init(|| Screen::new(default_rules()).unwrap_or_else(|_| unreachable!()))
}

fuzz_target!(|text: &str| {
    let s = screen();
    let hits = s.hits(text);
    let filtered = s.filter(text, &hits);
    let left = s.hits(&filtered);
    assert!(left.is_empty(), "{filtered:?} still matches");
    assert!(!filtered.contains(['<', '>', '\0']));
});
