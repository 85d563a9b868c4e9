//! The safety check: configured keywords, ASCII case-insensitive, on the assembled output.
//! On a stream it sees each released piece with the tail of what came before, so a keyword
//! split across pieces is still found before its end is sent.

use aho_corasick::AhoCorasick;

/// The seed's list.
pub const DEFAULT_KEYWORDS: [&str; 5] = [
    "illegal",
    "self-harm",
    "violence",
    "bypass security",
    "exploit",
];

pub struct Safety {
    keywords: Vec<String>,
    matcher: Option<AhoCorasick>,
    longest: usize,
}

impl Safety {
    pub fn new(keywords: Vec<String>) -> Result<Safety, String> {
        if keywords.iter().any(|k| k.trim().is_empty()) {
            return Err("a keyword is empty".into());
        }
        let matcher = if keywords.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&keywords)
                    .map_err(|e| e.to_string())?,
            )
        };
        let longest = keywords.iter().map(String::len).max().unwrap_or(0);
        Ok(Safety {
            keywords,
            matcher,
            longest,
        })
    }

    /// The first keyword in `text`.
    pub fn check(&self, text: &str) -> Option<&str> {
        let m = self.matcher.as_ref()?.find(text)?;
        self.keywords
            .get(m.pattern().as_usize())
            .map(String::as_str)
    }

    /// Checks `piece` as the continuation of `tail`, then keeps the new tail.
    pub fn check_piece(&self, tail: &mut String, piece: &str) -> Option<&str> {
        if self.matcher.is_none() || piece.is_empty() {
            return None;
        }
        tail.push_str(piece);
        let hit = self.check(tail);
        let keep = self.longest.saturating_sub(1);
        if tail.len() > keep {
            let mut from = tail.len() - keep;
            while !tail.is_char_boundary(from) {
                from += 1;
            }
            tail.drain(..from);
        }
        hit
    }
}
