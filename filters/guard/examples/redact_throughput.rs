//! Redaction throughput on a mixed answer (BENCHMARKS.md): whole-text and streamed through
//! the hold-back in 16-byte deltas. Run it in wasmtime as the filters run:
//! `CARGO_TARGET_WASM32_WASIP1_RUNNER=target/debug/cxgate-wasi-runner \
//!  cargo run --release --target wasm32-wasip1 -p cxgate-guard --example redact_throughput`

use cxgate_guard::hold::Holdback;
use cxgate_guard::pii::{Kind, Scanner};
use std::time::Instant;

const PARAGRAPH: &str = "Thanks for calling. I found the booking for flight 2041 on 12 March; the change fee is 75 dollars. \
Your SSN 123-45-6789 is not needed, nor card 4111 1111 1111 1111. We will write to jane.doe@example.com \
or call (415) 555-2671 within 2 business days. Is there anything else I can help you with today? ";

fn main() {
    // The seed's four types, then the default set (with the context-word types); an argument
    // (`seed` or `default`) runs one (for callgrind).
    let only = std::env::args().nth(1);
    for (name, kinds) in [
        (
            "seed",
            &[Kind::Ssn, Kind::Card, Kind::Phone, Kind::Email][..],
        ),
        ("default", &Kind::DEFAULT[..]),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        println!("{name}:");
        run(&Scanner::new(kinds));
    }
}

fn run(scanner: &Scanner) {
    let text = PARAGRAPH.repeat(2_000);
    let mb = text.len() as f64 / 1e6;
    let mut found = 0;
    let t = Instant::now();
    for _ in 0..5 {
        found += scanner.redact(&text).1.len();
    }
    let whole = 5.0 * mb / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut streamed = 0;
    let mut h = Holdback::default();
    for piece in text.as_bytes().chunks(16) {
        let piece = std::str::from_utf8(piece).unwrap_or("");
        streamed += h.push(scanner, piece).redacted.len();
    }
    streamed += h.finish(scanner).redacted.len();
    let stream = mb / t.elapsed().as_secs_f64();
    println!("{mb:.2} MB mixed text, {} entities per pass", found / 5);
    println!(
        "whole text: {whole:.1} MB/s; streamed in 16-byte deltas: {stream:.1} MB/s ({streamed} entities)"
    );
}
