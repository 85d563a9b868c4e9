//! Redaction of text that arrives in pieces (a stream's deltas). Text is released only once no
//! entity can still grow through it: the held tail is the trailing run of bytes that could be
//! part of one, and never longer than [`MAX_ENTITY`]. So an entity split across any number of
//! pieces is caught whole, and nothing released is ever redacted later.

use crate::pii::{self, Kind, MAX_ENTITY, Scanner};
use std::borrow::Cow;

/// Bytes of released text kept for the scanners' left-boundary checks, beside the context
/// words' [`Scanner::lookback`].
const CONTEXT: usize = 8;

#[derive(Debug, Default)]
pub struct Holdback {
    buf: String,
    /// `buf[..released]` has been sent (kept only as context).
    released: usize,
    /// Bytes of sent text kept as context: [`CONTEXT`] and the scanner's lookback.
    context: usize,
}

/// Text safe to send now, and the kinds redacted in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Release {
    pub text: String,
    pub redacted: Vec<Kind>,
}

impl Holdback {
    /// Adds a piece; returns what can be sent.
    pub fn push(&mut self, scanner: &Scanner, piece: &str) -> Release {
        self.buf.push_str(piece);
        let cut = self.safe_cut();
        self.release(scanner, cut)
    }

    /// The stream ended: releases everything held.
    pub fn finish(&mut self, scanner: &Scanner) -> Release {
        let end = self.buf.len();
        self.release(scanner, end)
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.released
    }

    /// Where the trailing run that could still be (part of) an entity starts.
    fn safe_cut(&self) -> usize {
        let b = self.buf.as_bytes();
        let mut at = b.len();
        while at > self.released {
            let c = b.get(at - 1).copied().unwrap_or(0);
            let spaced = c == b' '
                && (b
                    .get(at.wrapping_sub(2))
                    .is_some_and(|p| p.is_ascii_digit() || *p == b')')
                    || b.get(at).is_some_and(|n| n.is_ascii_digit() || *n == b'(')
                    || pii::extension_marker_before(b, at - 1));
            if !(pii::viable(c) || spaced) {
                break;
            }
            at -= 1;
        }
        let mut floor = b.len().saturating_sub(MAX_ENTITY + 1);
        while !self.buf.is_char_boundary(floor) {
            floor -= 1;
        }
        at.max(floor).max(self.released)
    }

    fn release(&mut self, scanner: &Scanner, cut: usize) -> Release {
        self.context = CONTEXT + scanner.lookback();
        let from = self.released.saturating_sub(self.context);
        let from = (0..=from)
            .rev()
            .find(|i| self.buf.is_char_boundary(*i))
            .unwrap_or(0);
        let context = self.released - from;
        let window = self.buf.get(from..).unwrap_or("");
        // Redacted to a fixpoint, as a whole answer is; what was sent (markers included) is
        // only the left context, so a name that ran into a replaced address stands alone.
        let (window, redacted, end) = scanner.redact_within(window, context, cut - from);
        let text = window.get(context..end).unwrap_or("").to_owned();
        // The buffer keeps what was sent as it was sent: rewritten only if something was.
        if let Cow::Owned(window) = window {
            self.buf.truncate(from);
            self.buf.push_str(&window);
        }
        self.released = from + end;
        self.trim();
        Release { text, redacted }
    }

    /// Drops released text beyond the context the scanners need.
    fn trim(&mut self) {
        let mut keep_from = self.released.saturating_sub(self.context);
        while !self.buf.is_char_boundary(keep_from) {
            keep_from -= 1;
        }
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.released -= keep_from;
        }
    }
}
