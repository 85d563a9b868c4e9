//! Prompt screening: deny phrases found case-insensitively, across whitespace runs, after
//! Unicode compatibility folding ([`crate::fold`]: NFKC's decompositions, combining marks and
//! zero-width characters dropped). Matching runs on the folded text; filtering edits the original, so
//! the words around a match reach the model exactly as written.

use crate::fold::fold_char;
use aho_corasick::{AhoCorasick, MatchKind};

/// A deny rule: its id (logged and counted, never the text) and its phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub phrase: String,
}

/// The seed's six phrases.
pub fn default_rules() -> Vec<Rule> {
    [
        (
            "ignore_previous_instructions",
            "ignore previous instructions",
        ),
        ("system_prompt", "system prompt"),
        ("reset_context", "reset context"),
        ("you_are_now", "you are now"),
        ("disregard_all_rules", "disregard all rules"),
        ("print_the_prompt", "print the prompt"),
    ]
    .into_iter()
    .map(|(id, phrase)| Rule {
        id: id.to_string(),
        phrase: phrase.to_string(),
    })
    .collect()
}

pub const MARKER: &str = "[FILTERED_INJECTION_ATTEMPT]";

pub struct Screen {
    rules: Vec<Rule>,
    matcher: Option<AhoCorasick>,
}

/// Text folded for matching, with each folded byte's source range in the original.
pub(crate) struct Folded {
    pub(crate) text: String,
    pub(crate) from: Vec<(usize, usize)>,
}

fn zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

pub(crate) fn fold(original: &str) -> Folded {
    let mut text = String::with_capacity(original.len());
    let mut from = Vec::with_capacity(original.len());
    let mut space = false;
    for (at, c) in original.char_indices() {
        let range = (at, at + c.len_utf8());
        // Stripped from forwarded text anyway, so they cannot split a phrase either.
        if zero_width(c) || matches!(c, '<' | '>' | '\0') {
            continue;
        }
        let push = |d: char| {
            if d.is_whitespace() {
                if !space && !text.is_empty() {
                    text.push(' ');
                    from.push(range);
                }
                space = true;
                return;
            }
            space = false;
            for l in d.to_lowercase() {
                text.push(l);
                from.extend(std::iter::repeat_n(range, l.len_utf8()));
            }
        };
        fold_char(c, push);
    }
    Folded { text, from }
}

/// One match: the rule and the original byte range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

impl Screen {
    /// Phrases are folded like the text, so rules may be written in any case or spacing.
    pub fn new(rules: Vec<Rule>) -> Result<Screen, String> {
        let phrases: Vec<String> = rules
            .iter()
            .map(|r| fold(&r.phrase).text.trim().to_string())
            .collect();
        if let Some(i) = phrases.iter().position(String::is_empty) {
            return Err(format!("rule {i} has an empty phrase"));
        }
        let matcher = if phrases.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&phrases)
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Screen { rules, matcher })
    }

    pub fn rule_id(&self, hit: &Hit) -> &str {
        self.rules
            .get(hit.rule)
            .map_or("unknown", |r| r.id.as_str())
    }

    /// Every match in `text`, in order.
    pub fn hits(&self, text: &str) -> Vec<Hit> {
        let Some(m) = &self.matcher else {
            return Vec::new();
        };
        let folded = fold(text);
        m.find_iter(&folded.text)
            .filter_map(|h| {
                let start = folded.from.get(h.start())?.0;
                let end = folded.from.get(h.end().checked_sub(1)?)?.1;
                Some(Hit {
                    rule: h.pattern().as_usize(),
                    start,
                    end,
                })
            })
            .collect()
    }

    /// `text` with each hit replaced by the marker, and `<`, `>` and NUL stripped.
    pub fn filter(&self, text: &str, hits: &[Hit]) -> String {
        self.filter_spans(text, hits.iter().map(|h| (h.start, h.end)).collect())
    }

    /// `text` with each byte range replaced by the marker (overlapping ranges merged), and
    /// `<`, `>` and NUL stripped.
    pub fn filter_spans(&self, text: &str, mut spans: Vec<(usize, usize)>) -> String {
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        let mut open: Option<(usize, usize)> = None;
        for (start, end) in spans {
            match &mut open {
                Some((_, e)) if start <= *e => *e = (*e).max(end),
                _ => {
                    if let Some((s, e)) = open.replace((start, end)) {
                        out.push_str(text.get(at..s).unwrap_or(""));
                        out.push_str(MARKER);
                        at = e;
                    }
                }
            }
        }
        if let Some((s, e)) = open {
            out.push_str(text.get(at..s).unwrap_or(""));
            out.push_str(MARKER);
            at = e;
        }
        out.push_str(text.get(at..).unwrap_or(""));
        out.retain(|c| !matches!(c, '<' | '>' | '\0'));
        out
    }
}
