//! The injection detector against the labelled corpus (BENCHMARKS.md, "Prompt injection"):
//! per family, the share of attacks caught (blocked or filtered) and of benign prompts
//! altered, by the seed's six phrases alone and with the detector.
//!
//! `cargo run -p cxgate-guard --example injection_eval -- [tune|holdout|all] [corpus.jsonl]`
//! (default: holdout, `filters/guard/corpus/injection.jsonl`). With `-v`, every miss and false
//! alarm is printed (tuning looks at `tune` only).

// A benchmark, not filter code: serde_json's `Value` index answers `Null` for what is missing.
#![allow(clippy::indexing_slicing)]

use cxgate_guard::detect::{Thresholds, scan};
use cxgate_guard::screen::{Screen, default_rules};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Default)]
struct Row {
    n: u32,
    seed: u32,
    filtered: u32,
    blocked: u32,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "-v");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "-v").collect();
    let split = rest.first().map_or("holdout", |s| s.as_str());
    let path = rest.get(1).map_or_else(
        || concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/injection.jsonl").to_string(),
        |s| s.to_string(),
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2)
    });
    let Ok(seed) = Screen::new(default_rules()) else {
        std::process::exit(2)
    };
    let th = Thresholds::default();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let s = v["split"].as_str().unwrap_or("");
        if split != "all" && s != split {
            continue;
        }
        let prompt = v["text"].as_str().unwrap_or("");
        let label = v["label"].as_str().unwrap_or("").to_string();
        let family = v["family"].as_str().unwrap_or("").to_string();
        let f = scan(prompt, th);
        let seed_hit = !seed.hits(prompt).is_empty();
        let row = rows.entry((label.clone(), family)).or_default();
        row.n += 1;
        row.seed += u32::from(seed_hit);
        let caught = seed_hit || f.score >= th.filter_at;
        row.blocked += u32::from(f.score >= th.block_at);
        row.filtered += u32::from(caught && f.score < th.block_at);
        if verbose && caught != (label == "attack") {
            println!(
                "{} score {:3} {:?}: {prompt}",
                if caught { "FALSE ALARM" } else { "MISS" },
                f.score,
                f.features
            );
        }
    }
    println!("split: {split}");
    println!("| label | family | prompts | seed phrases | detector: blocked | filtered | caught |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut totals: BTreeMap<String, Row> = BTreeMap::new();
    let pct = |a: u32, n: u32| 100.0 * f64::from(a) / f64::from(n.max(1));
    for ((label, family), r) in &rows {
        println!(
            "| {label} | {family} | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
            r.n,
            pct(r.seed, r.n),
            pct(r.blocked, r.n),
            pct(r.filtered, r.n),
            pct(r.blocked + r.filtered, r.n)
        );
        let t = totals.entry(label.clone()).or_default();
        t.n += r.n;
        t.seed += r.seed;
        t.blocked += r.blocked;
        t.filtered += r.filtered;
    }
    for (label, r) in &totals {
        println!(
            "| **{label}** | all | {} | {:.1} % | {:.1} % | {:.1} % | **{:.1} %** |",
            r.n,
            pct(r.seed, r.n),
            pct(r.blocked, r.n),
            pct(r.filtered, r.n),
            pct(r.blocked + r.filtered, r.n)
        );
    }
}
