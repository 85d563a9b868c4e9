//! The redactor against the labelled PII corpus (BENCHMARKS.md, "PII recall and precision"):
//! per type, recall (the entity's every byte redacted), precision (redactions of that type that
//! are a labelled entity of that type), and per lookalike family the share of benign sentences
//! altered. `filters/guard/corpus/presidio_eval.py` prints the same table for Presidio.
//!
//! `cargo run --release -p cxgate-guard --example pii_eval -- [corpus.jsonl] [-v]`

// A benchmark, not filter code: serde_json's `Value` index answers `Null` for what is missing.
#![allow(clippy::indexing_slicing)]

use cxgate_guard::pii::{Kind, Scanner};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Default)]
struct Counts {
    n: u32,
    found: u32,
    typed: u32,
    tp: u32,
    fp: u32,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let path = args
        .iter()
        .find(|a| *a != "-v")
        .cloned()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/pii.jsonl").to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    });
    let scanner = Scanner::new(&Kind::ALL);
    let mut types: BTreeMap<String, Counts> = BTreeMap::new();
    let mut benign: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let sentence = v["text"].as_str().unwrap_or("");
        let spans = scanner.find(sentence);
        if v["kind"] == "benign" {
            let family = v["family"].as_str().unwrap_or("").to_string();
            let e = benign.entry(family).or_default();
            e.0 += 1;
            e.1 += u32::from(!spans.is_empty());
            for s in &spans {
                types.entry(s.kind.name().to_string()).or_default().fp += 1;
                if verbose {
                    println!("ALTERED {:?}: {sentence}", s.kind);
                }
            }
            continue;
        }
        let ty = v["type"].as_str().unwrap_or("").to_string();
        let value = v["value"].as_str().unwrap_or("");
        let start = sentence.find(value).unwrap_or(0);
        let end = start + value.len();
        let covered = (start..end).all(|i| spans.iter().any(|s| s.start <= i && i < s.end));
        let typed = spans
            .iter()
            .any(|s| s.kind.name() == ty && s.start < end && start < s.end);
        for s in &spans {
            let hit = s.kind.name() == ty && s.start < end && start < s.end;
            let c = types.entry(s.kind.name().to_string()).or_default();
            if hit {
                c.tp += 1;
            } else {
                c.fp += 1;
            }
        }
        let c = types.entry(ty.clone()).or_default();
        c.n += 1;
        c.found += u32::from(covered);
        c.typed += u32::from(typed);
        if verbose && !covered {
            println!("MISSED {ty}: {sentence}");
        }
    }
    let pct = |a: u32, n: u32| 100.0 * f64::from(a) / f64::from(n.max(1));
    println!("| type | entities | recall | as its type | precision |");
    println!("|---|---:|---:|---:|---:|");
    for (t, c) in &types {
        println!(
            "| {t} | {} | {:.1} % | {:.1} % | {:.1} % |",
            c.n,
            pct(c.found, c.n),
            pct(c.typed, c.n),
            pct(c.tp, c.tp + c.fp)
        );
    }
    println!();
    println!("| lookalike family | sentences | altered |");
    println!("|---|---:|---:|");
    let (mut n, mut altered) = (0, 0);
    for (f, (k, a)) in &benign {
        println!("| {f} | {k} | {:.1} % |", pct(*a, *k));
        n += k;
        altered += a;
    }
    println!("| **all** | {n} | **{:.1} %** |", pct(altered, n));
}
