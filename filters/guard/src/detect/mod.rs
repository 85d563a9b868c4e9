//! A scored prompt-injection detector, beside the deny phrases of [`crate::screen`] (which
//! stay the floor). It reads the prompt as words after the same Unicode folding, and adds up
//! the points of the features it finds (capped at 100):
//!
//! | feature | points | what |
//! |---|---|---|
//! | `override` | 60 | an instruction-override verb with its object: *ignore / disregard / forget / override … (all, previous, your, system …) instructions / rules / guidelines / policies* |
//! | `extraction` | 55 | asking for the hidden prompt: *repeat / print / reveal … the system prompt, the text above, your initial instructions* |
//! | `delimiter` | 45 | a fake role delimiter: `<\|im_start\|>`, `[INST]`, `<<SYS>>`, `</s>`, `### System:`, a line starting `system:` |
//! | `mode` | 40 | a mode switch: *developer mode, DAN (in capitals), jailbreak, do anything now, uncensored* |
//! | `encoded` | 40 | a base64 run that decodes to text scoring `filter_at` or more (its features count too) |
//! | `persona` | 25 | a persona switch: *act as, pretend to be, roleplay, from now on you, you are now, stay in character* |
//! | `question` | 20 | asking what its instructions or rules are (innocent on its own) |
//! | `unbound` | 20 | *no / without (any) restrictions, filters, limits, rules* (a data plan on its own) |
//! | `obfuscated` | 15 | the features above found only once spaced-out letters (`i g n o r e`) or digits for letters (`1gn0r3`) are read as words |
//!
//! A route blocks at `block_at` (default 70) and filters from `filter_at` (default 40): each
//! matched span becomes the screen's marker. The weights were set on the tuning part of the
//! labelled corpus (`filters/guard/corpus/`); BENCHMARKS.md has the rates on the part set
//! aside. Logs and metrics carry the score and the feature names, never the text.

mod words;

use crate::screen::{Folded, fold};
use base64::Engine;
use words::*;

/// What the detector found in one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finding {
    /// 0..=100.
    pub score: u32,
    /// Feature names, each once, in the order found.
    pub features: Vec<&'static str>,
    /// Original byte ranges of what matched (for filtering).
    pub spans: Vec<(usize, usize)>,
}

impl Finding {
    fn add(&mut self, feature: &'static str, points: u32, span: (usize, usize)) {
        if !self.features.contains(&feature) {
            self.features.push(feature);
            self.score = (self.score + points).min(100);
        }
        self.spans.push(span);
    }
}

/// Thresholds of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub filter_at: u32,
    pub block_at: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            filter_at: 40,
            block_at: 70,
        }
    }
}

/// One word of the folded text and the original bytes it came from.
struct Word {
    text: String,
    start: usize,
    end: usize,
}

fn words(f: &Folded) -> Vec<Word> {
    let mut out = Vec::new();
    let mut cur: Option<Word> = None;
    for (i, c) in f.text.char_indices() {
        let range = f.from.get(i).copied().unwrap_or((0, 0));
        if c.is_alphanumeric() || c == '\'' {
            let w = cur.get_or_insert_with(|| Word {
                text: String::new(),
                start: range.0,
                end: range.1,
            });
            if c != '\'' {
                w.text.push(c);
            }
            w.end = range.1;
        } else if let Some(w) = cur.take() {
            out.push(w);
        }
    }
    out.extend(cur);
    out
}

fn is(w: Option<&Word>, list: &[&str]) -> bool {
    w.is_some_and(|w| list.contains(&w.text.as_str()))
}

/// An override verb at `i`: its object within six words, strong, or weak with a qualifier
/// anywhere in the window; not when the words say the instructions are the customer's own.
fn overriding(ws: &[Word], i: usize, f: &mut Finding) {
    let Some(w) = ws.get(i) else { return };
    let window = ws.get(i + 1..(i + 7).min(ws.len())).unwrap_or(&[]);
    let qualified = window.iter().any(|o| QUALIFIERS.contains(&o.text.as_str()));
    for (k, o) in window.iter().enumerate() {
        let t = o.text.as_str();
        if OWN.contains(&t) {
            return;
        }
        let strong = STRONG_OBJECTS.contains(&t);
        if !(strong || qualified && WEAK_OBJECTS.contains(&t)) {
            continue;
        }
        let after = window.get(k + 1);
        if is(after, OWN_AFTER) || !qualified && is(after, ABOUT_AFTER) {
            return;
        }
        f.add("override", 60, (w.start, o.end));
        return;
    }
}

/// Spaced-out letters joined (`i g n o r e` → `ignore`) and digits read as letters
/// (`1gn0r3` → `ignore`); `None` when nothing changed.
fn deobfuscated(ws: &[Word]) -> Option<Vec<Word>> {
    let mut out: Vec<Word> = Vec::with_capacity(ws.len());
    let mut changed = false;
    let mut i = 0;
    while let Some(w) = ws.get(i) {
        let single = |k: usize| ws.get(k).is_some_and(|w| w.text.chars().count() == 1);
        let mut j = i;
        while single(j) {
            j += 1;
        }
        if j - i >= 3 {
            // One space between letters joins them; a wider gap ends a word.
            let mut cur = Word {
                text: String::new(),
                start: w.start,
                end: w.start,
            };
            for l in ws.get(i..j).into_iter().flatten() {
                if !cur.text.is_empty() && l.start > cur.end + 1 {
                    let start = l.start;
                    out.push(std::mem::replace(
                        &mut cur,
                        Word {
                            text: String::new(),
                            start,
                            end: start,
                        },
                    ));
                }
                cur.text.push_str(&l.text);
                cur.end = l.end;
            }
            out.push(cur);
            changed = true;
            i = j;
            continue;
        }
        let leet =
            w.text.chars().any(|c| c.is_ascii_digit()) && w.text.chars().any(char::is_alphabetic);
        let text = if leet {
            changed = true;
            w.text
                .chars()
                .map(|c| match c {
                    '0' => 'o',
                    '1' => 'i',
                    '3' => 'e',
                    '4' => 'a',
                    '5' => 's',
                    '7' => 't',
                    '8' => 'b',
                    c => c,
                })
                .collect()
        } else {
            w.text.clone()
        };
        out.push(Word {
            text,
            start: w.start,
            end: w.end,
        });
        i += 1;
    }
    changed.then_some(out)
}

/// The word features over one list of words.
fn word_features(ws: &[Word], original: &str, f: &mut Finding) {
    for (i, w) in ws.iter().enumerate() {
        let at = |k: usize| ws.get(i + k);
        let span = |k: usize| (w.start, ws.get(i + k).map_or(w.end, |e| e.end));
        if OVERRIDE_VERBS.contains(&w.text.as_str()) {
            overriding(ws, i, f);
        }
        if EXTRACT_VERBS.contains(&w.text.as_str()) {
            for k in 1..=6 {
                let (Some(a), b) = (at(k), at(k + 1)) else {
                    break;
                };
                let hidden = HIDDEN.contains(&a.text.as_str()) && is(b, PROMPTISH);
                let above = PROMPTISH.contains(&a.text.as_str())
                    && is(b, &["above", "verbatim", "preceding", "before"]);
                let verbatim =
                    a.text == "verbatim" || (a.text == "word" && is(at(k + 2), &["word"]));
                if hidden || above || (verbatim && k > 1) {
                    f.add("extraction", 55, span(k + 1));
                    break;
                }
                let yours = a.text == "your"
                    && is(
                        b,
                        &[
                            "instructions",
                            "prompt",
                            "rules",
                            "guidelines",
                            "directives",
                            "programming",
                        ],
                    );
                if yours {
                    f.add("question", 20, span(k + 1));
                    break;
                }
            }
        }
        mode_and_persona(ws, i, original, f);
    }
}

fn mode_and_persona(ws: &[Word], i: usize, original: &str, f: &mut Finding) {
    let Some(w) = ws.get(i) else { return };
    let at = |k: usize| ws.get(i + k);
    let span = |k: usize| (w.start, ws.get(i + k).map_or(w.end, |e| e.end));
    let t = w.text.as_str();
    let next = |k: usize, list: &[&str]| is(at(k), list);
    // `DAN` only as written in capitals: Dan is a name.
    let dan = t == "dan" && original.get(w.start..w.end) == Some("DAN");
    let mode = MODE_WORDS.contains(&t)
        || dan
        || matches!(
            t,
            "developer" | "god" | "dan" | "sudo" | "debug" | "maintenance"
        ) && next(1, &["mode"])
        || (t == "do" && next(1, &["anything"]) && next(2, &["now"]));
    if mode {
        f.add("mode", 40, span(1));
    }
    // `no limits` alone is a data plan; beside a persona or an override it is not.
    let lacks = matches!(t, "no" | "without" | "zero" | "free")
        && (next(1, LACKS)
            || next(1, &["any", "your", "more", "all", "from", "of"]) && next(2, LACKS)
            || next(1, &["from", "of"]) && next(2, &["all", "any", "your"]) && next(3, LACKS));
    // `the rules do not apply`, `never refuses`, `must comply`.
    let lifted = LACKS.contains(&t)
        && (next(1, &["don't", "dont"]) && next(2, &["apply", "matter", "exist"])
            || next(1, &["do", "no"])
                && next(2, &["not", "longer"])
                && next(3, &["apply", "matter", "exist"]));
    let complies = (t == "never" && next(1, &["refuse", "refuses", "declines", "decline"]))
        || (matches!(t, "always" | "must" | "unconditionally")
            && next(1, &["comply", "obey", "complies", "obeys"]));
    if lacks || lifted || complies {
        f.add("unbound", 20, span(3));
    }
    let persona = (t == "act" && next(1, &["as"]) && !next(2, &["soon", "well", "if", "though"]))
        || t == "pretend"
        || t == "roleplay"
        || (t == "role" && next(1, &["play", "playing"]))
        || (t == "from" && next(1, &["now"]) && next(2, &["on"]))
        || (t == "you" && next(1, &["are", "will"]) && next(2, &["now"]))
        || (t == "stay" && next(1, &["in"]) && next(2, &["character"]))
        || (t == "new" && next(1, &["persona", "identity", "personality"]))
        || (t == "simulate" && next(2, &["mode", "ai", "model", "assistant"]))
        || t == "impersonate";
    if persona {
        f.add("persona", 25, span(2));
    }
}

/// Fake role delimiters, on the lowercased original (the folding drops `<` and `>`).
fn delimiters(text: &str, f: &mut Finding) {
    let lower = text.to_ascii_lowercase();
    for d in DELIMITERS {
        if let Some(at) = lower.find(d) {
            f.add("delimiter", 45, (at, at + d.len()));
        }
    }
    let mut at = 0;
    for line in lower.split_inclusive('\n') {
        let t = line.trim_start();
        let role = ["system:", "assistant:", "developer:"]
            .iter()
            .find(|r| t.starts_with(**r));
        if let Some(r) = role
            && at > 0
        {
            let start = at + (line.len() - t.len());
            f.add("delimiter", 45, (start, start + r.len()));
        }
        at += line.len();
    }
}

/// Base64 runs that decode to text, scanned once more (no deeper).
fn encoded(text: &str, depth: u8, th: Thresholds, f: &mut Finding) {
    if depth > 0 {
        return;
    }
    let b = text.as_bytes();
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_');
    let mut i = 0;
    let mut runs = 0;
    while i < b.len() && runs < 8 {
        if !b.get(i).is_some_and(b64) {
            i += 1;
            continue;
        }
        let start = i;
        while b.get(i).is_some_and(b64) {
            i += 1;
        }
        if i - start < 20 || i - start > 8192 {
            continue;
        }
        runs += 1;
        let run = text.get(start..i).unwrap_or("").trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(run)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(run));
        let Ok(bytes) = decoded else { continue };
        let Ok(inner) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let printable = inner
            .chars()
            .filter(|c| !c.is_control() || c.is_whitespace())
            .count();
        if printable * 10 < inner.chars().count() * 9 {
            continue;
        }
        let found = scan_at(inner, depth + 1, th);
        if found.score >= th.filter_at {
            f.add("encoded", 40, (start, i));
            for feat in found.features {
                f.add(feat, 0, (start, i));
            }
            f.score = (f.score + found.score).min(100);
        }
    }
}

fn scan_at(text: &str, depth: u8, th: Thresholds) -> Finding {
    let mut f = Finding::default();
    let folded = fold(text);
    let ws = words(&folded);
    word_features(&ws, text, &mut f);
    if let Some(plain) = deobfuscated(&ws) {
        let mut g = Finding::default();
        word_features(&plain, text, &mut g);
        let new: Vec<&'static str> = g
            .features
            .iter()
            .copied()
            .filter(|x| !f.features.contains(x))
            .collect();
        if !new.is_empty() {
            let first = g.spans.first().copied().unwrap_or((0, 0));
            f.add("obfuscated", 15, first);
            for feat in new {
                f.add(feat, points_of(feat), first);
            }
            f.spans.extend(g.spans);
        }
    }
    delimiters(text, &mut f);
    encoded(text, depth, th, &mut f);
    f
}

fn points_of(feature: &str) -> u32 {
    match feature {
        "override" => 60,
        "extraction" => 55,
        "delimiter" => 45,
        "mode" | "encoded" => 40,
        "persona" => 25,
        "question" | "unbound" => 20,
        _ => 15,
    }
}

/// The detector's finding on `text` with the thresholds `th` (which bound the nested scan).
pub fn scan(text: &str, th: Thresholds) -> Finding {
    let mut f = scan_at(text, 0, th);
    f.spans.sort_unstable();
    f
}
