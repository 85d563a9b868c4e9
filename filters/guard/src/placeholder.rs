//! Reversible prompt redaction (`placeholders: true` on a route with `redact_prompts`): each
//! entity in a prompt becomes a token that stands for it in this request only (`[EMAIL_A]`,
//! the same token for the same value), so the model never sees it, and the consumer's answer
//! gets the value back wherever the model wrote the token, streamed too, across any chunk
//! boundary. The mapping lives in the request's memory: never logged, never stored.
//!
//! Tokens count in letters (`_A` … `_Z`, `_AA` …): a token holds no digit and no `@`, as no
//! redaction marker does, so the scanner never takes one for an entity.

use crate::pii::{Kind, Scanner};
use std::borrow::Cow;

/// The longest a token can be: `[` + the longest kind name + `_` + letters + `]`.
const MAX_TOKEN: usize = 32;

/// This request's tokens and what they stand for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Placeholders {
    entries: Vec<(String, String)>,
}

fn letters(mut n: usize) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

impl Placeholders {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn token(&mut self, kind: Kind, original: &str) -> String {
        if let Some((t, _)) = self.entries.iter().find(|(_, o)| o == original) {
            return t.clone();
        }
        let name = kind.name().to_ascii_uppercase();
        let n = self
            .entries
            .iter()
            .filter(|(t, _)| t.starts_with(&format!("[{name}_")))
            .count();
        let token = format!("[{name}_{}]", letters(n));
        self.entries.push((token.clone(), original.to_string()));
        token
    }

    /// `text` with every entity replaced by its token, and the kinds replaced. What is still
    /// found after a few rounds (a chain that replacing keeps freeing) gets the plain marker.
    pub fn substitute(&mut self, scanner: &Scanner, text: &str) -> (String, Vec<Kind>) {
        let mut cur = text.to_string();
        let mut kinds = Vec::new();
        for _ in 0..4 {
            let spans = scanner.find(&cur);
            if spans.is_empty() {
                return (cur, kinds);
            }
            let mut out = String::with_capacity(cur.len());
            let mut at = 0;
            for s in &spans {
                out.push_str(cur.get(at..s.start).unwrap_or(""));
                let original = cur.get(s.start..s.end).unwrap_or("").to_string();
                out.push_str(&self.token(s.kind, &original));
                kinds.push(s.kind);
                at = s.end;
            }
            out.push_str(cur.get(at..).unwrap_or(""));
            cur = out;
        }
        let (rest, more) = scanner.redact(&cur);
        kinds.extend(more);
        (rest, kinds)
    }

    /// `text` with every token put back (borrowed when there is none).
    pub fn restore<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.entries.is_empty() || !text.contains('[') {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('[') {
            out.push_str(rest.get(..at).unwrap_or(""));
            let tail = rest.get(at..).unwrap_or("");
            match self
                .entries
                .iter()
                .find(|(t, _)| tail.starts_with(t.as_str()))
            {
                Some((t, original)) => {
                    out.push_str(original);
                    rest = tail.get(t.len()..).unwrap_or("");
                }
                None => {
                    out.push('[');
                    rest = tail.get(1..).unwrap_or("");
                }
            }
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    /// Could `tail` (from a `[` to the end of what arrived) still become a token?
    fn could_be_token(&self, tail: &str) -> bool {
        tail.len() < MAX_TOKEN && self.entries.iter().any(|(t, _)| t.starts_with(tail))
    }
}

/// Puts tokens back in a text that arrives in pieces: a `[` that may still start a token is
/// held until the token is whole (at most [`MAX_TOKEN`] bytes).
#[derive(Debug, Default)]
pub struct Restorer {
    held: String,
}

impl Restorer {
    pub fn push(&mut self, p: &Placeholders, piece: &str) -> String {
        if p.is_empty() {
            return piece.to_string();
        }
        self.held.push_str(piece);
        let keep = match self.held.rfind('[') {
            Some(at) if p.could_be_token(self.held.get(at..).unwrap_or("")) => at,
            _ => self.held.len(),
        };
        let rest = self.held.split_off(keep);
        let out = p.restore(&self.held).into_owned();
        self.held = rest;
        out
    }

    pub fn finish(&mut self, p: &Placeholders) -> String {
        let held = std::mem::take(&mut self.held);
        p.restore(&held).into_owned()
    }
}
