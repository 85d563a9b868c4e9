//! PII scanners, hand-written (a `regex` build would cost ~880 KB of module). Every entity
//! they find is at most [`MAX_ENTITY`] bytes long and made of [`viable`] bytes only: that is
//! what lets the stream redactor hold back a bounded tail and still never emit a part of one.

use std::borrow::Cow;

/// The longest entity any scanner matches (an email address, RFC 5321's path limit).
pub const MAX_ENTITY: usize = 254;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ssn,
    Card,
    Phone,
    Email,
    Iban,
    Passport,
    DriverLicense,
    BirthDate,
    Ipv4,
}

/// How many kinds there are.
const KINDS: usize = 9;

impl Kind {
    pub const ALL: [Kind; KINDS] = [
        Kind::Ssn,
        Kind::Card,
        Kind::Phone,
        Kind::Email,
        Kind::Iban,
        Kind::Passport,
        Kind::DriverLicense,
        Kind::BirthDate,
        Kind::Ipv4,
    ];

    /// What the guard redacts when the config names nothing (IBANs and IP addresses are
    /// configured where they matter).
    pub const DEFAULT: [Kind; 7] = [
        Kind::Ssn,
        Kind::Card,
        Kind::Phone,
        Kind::Email,
        Kind::Passport,
        Kind::DriverLicense,
        Kind::BirthDate,
    ];

    /// The config and metric name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ssn => "ssn",
            Kind::Card => "card",
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::Iban => "iban",
            Kind::Passport => "passport",
            Kind::DriverLicense => "driver_license",
            Kind::BirthDate => "birth_date",
            Kind::Ipv4 => "ipv4",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
    /// What replaces an entity of this kind.
    pub fn marker(self) -> &'static str {
        match self {
            Kind::Ssn => "[SSN REDACTED]",
            Kind::Card => "[CARD REDACTED]",
            Kind::Phone => "[PHONE REDACTED]",
            Kind::Email => "[EMAIL REDACTED]",
            Kind::Iban => "[IBAN REDACTED]",
            Kind::Passport => "[PASSPORT REDACTED]",
            Kind::DriverLicense => "[DRIVER_LICENSE REDACTED]",
            Kind::BirthDate => "[BIRTH_DATE REDACTED]",
            Kind::Ipv4 => "[IP REDACTED]",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// Can this byte be part of some entity? (Spaces only next to a digit or parenthesis.)
pub fn viable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-@()/".contains(&b)
}

/// The enabled scanners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanner {
    on: [bool; KINDS],
}

impl Scanner {
    pub fn new(kinds: &[Kind]) -> Self {
        let mut on = [false; KINDS];
        for k in kinds {
            if let Some(slot) = on.get_mut(*k as usize) {
                *slot = true;
            }
        }
        Scanner { on }
    }
    /// Bytes before an entity its recognizers read (context words need [`LOOKBACK`]).
    pub fn lookback(&self) -> usize {
        let words = [
            Kind::Passport,
            Kind::DriverLicense,
            Kind::BirthDate,
            Kind::Ssn,
        ];
        if words.iter().any(|k| self.has(*k)) {
            LOOKBACK
        } else {
            0
        }
    }

    fn has(&self, k: Kind) -> bool {
        self.on.get(k as usize).copied().unwrap_or(false)
    }

    /// Every entity in `text`, in order, not overlapping.
    pub fn find(&self, text: &str) -> Vec<Span> {
        self.find_from(text, 0)
    }

    /// Every entity starting at or past `context`. `text[..context]` was decided before (a
    /// stream sent it): it is only read as what precedes, and what starts in it neither counts
    /// nor bounds what follows, so the answer is the one the whole text gets.
    pub fn find_from(&self, text: &str, context: usize) -> Vec<Span> {
        let b = text.as_bytes();
        let mut emails = Vec::new();
        if self.has(Kind::Email) {
            let mut from = 0;
            for at in memchr_all(b, b'@') {
                if let Some(s) = email(b, at, from)
                    && s.start >= context
                {
                    from = s.end;
                    emails.push(s);
                }
            }
        }
        let mut out = Vec::new();
        let mut next_email = emails.into_iter().peekable();
        let mut i = context;
        while i < b.len() {
            if let Some(e) = next_email.peek().copied()
                && i >= e.start
            {
                out.push(e);
                next_email.next();
                i = i.max(e.end);
                continue;
            }
            let limit = next_email.peek().map_or(b.len(), |e| e.start);
            // Right after an entity a new one may start: once the first is replaced by its
            // marker, the second no longer follows a letter or digit.
            let after_entity = out.last().is_some_and(|s: &Span| s.end == i);
            match self.at(b, i, after_entity).filter(|s| s.end <= limit) {
                Some(s) => {
                    out.push(s);
                    i = s.end;
                }
                None => i += 1,
            }
        }
        out.extend(next_email);
        out
    }

    fn at(&self, b: &[u8], i: usize, after_entity: bool) -> Option<Span> {
        let c = *b.get(i)?;
        if !after_entity && i > 0 && b.get(i - 1).is_some_and(|p| p.is_ascii_alphanumeric()) {
            return None;
        }
        let span = |end: usize, kind: Kind| Span {
            start: i,
            end,
            kind,
        };
        // Beside their context words first: those words say what the number is.
        if self.has(Kind::BirthDate)
            && let Some(e) = birth_date(b, i)
        {
            return Some(span(e, Kind::BirthDate));
        }
        if self.has(Kind::Passport)
            && let Some(e) = passport(b, i)
        {
            return Some(span(e, Kind::Passport));
        }
        if self.has(Kind::DriverLicense)
            && let Some(e) = license(b, i)
        {
            return Some(span(e, Kind::DriverLicense));
        }
        if c.is_ascii_digit() {
            if self.has(Kind::Card)
                && let Some(e) = card(b, i)
            {
                return Some(span(e, Kind::Card));
            }
            if self.has(Kind::Ssn)
                && let Some(e) = ssn(b, i)
            {
                return Some(span(e, Kind::Ssn));
            }
        }
        if c.is_ascii_uppercase()
            && self.has(Kind::Iban)
            && let Some(e) = iban(b, i)
        {
            return Some(span(e, Kind::Iban));
        }
        if c.is_ascii_digit()
            && self.has(Kind::Ipv4)
            && let Some(e) = ipv4(b, i)
        {
            return Some(span(e, Kind::Ipv4));
        }
        if self.has(Kind::Phone)
            && let Some(e) = phone(b, i)
        {
            return Some(span(e, Kind::Phone));
        }
        None
    }

    /// `text` with every entity replaced by its marker, and the kinds replaced.
    pub fn redact(&self, text: &str) -> (String, Vec<Kind>) {
        let (out, kinds, _) = self.redact_within(text, 0, text.len());
        (out.into_owned(), kinds)
    }

    /// Replaces the entities that start in `context..cut` by their markers (an entity that
    /// crosses `cut` moves it to its end); returns the text, the kinds replaced and where
    /// `cut` now is. Replacing can still free a candidate that was refused only because its
    /// extent ran into a later entity, so it scans again while the last scan found something:
    /// what comes out holds nothing the scanner would redact there.
    pub fn redact_within<'t>(
        &self,
        text: &'t str,
        context: usize,
        cut: usize,
    ) -> (Cow<'t, str>, Vec<Kind>, usize) {
        // The text is copied only once something is replaced.
        let mut out: Option<String> = None;
        let mut cut = cut;
        let mut kinds = Vec::new();
        let mut rounds = 0;
        loop {
            let cur = out.as_deref().unwrap_or(text);
            let found: Vec<Span> = self
                .find_from(cur, context)
                .into_iter()
                .take_while(|s| s.start < cut)
                .collect();
            if found.is_empty() {
                break;
            }
            // A long chain frees one link per scan: past a few scans, take each finding's
            // whole word, which ends the chain. Every round removes a digit or an `@` (every
            // entity has one, no marker does), so the loop ends.
            let found = if rounds < REDACT_ROUNDS {
                found
            } else {
                widened(cur.as_bytes(), &found, context)
            };
            let (again, k) = apply(cur, &found);
            cut = moved(cut, &found);
            out = Some(again);
            kinds.extend(k);
            rounds += 1;
        }
        (out.map_or(Cow::Borrowed(text), Cow::Owned), kinds, cut)
    }
}

/// Where `cut` is once `spans` are replaced: past an entity that crosses it.
fn moved(cut: usize, spans: &[Span]) -> usize {
    let mut at = cut;
    let mut shift: isize = 0;
    for s in spans {
        let grown = s.kind.marker().len() as isize - (s.end - s.start) as isize;
        if s.end <= cut {
            shift += grown;
        } else if s.start < cut {
            at = s.end;
            shift += grown;
        }
    }
    at.saturating_add_signed(shift)
}

/// Scans after the first that replace only what they find. One frees at most the candidates
/// next to a marker; a crafted chain of them (found by the fuzz target `redact`) frees one
/// per scan, and is cut short by [`widened`].
const REDACT_ROUNDS: usize = 4;

/// Each span grown to the whitespace around it (not back into `context`), overlapping ones
/// merged (the first's kind).
fn widened(b: &[u8], spans: &[Span], context: usize) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        let start = b
            .get(..s.start)
            .and_then(|head| head.iter().rposition(u8::is_ascii_whitespace))
            .map_or(0, |i| i + 1)
            .max(context.min(s.start));
        let end = b
            .get(s.end..)
            .and_then(|tail| tail.iter().position(u8::is_ascii_whitespace))
            .map_or(b.len(), |i| s.end + i);
        match out.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => out.push(Span {
                start,
                end,
                kind: s.kind,
            }),
        }
    }
    out
}

/// Replaces `spans` (in order) in `text`.
pub fn apply(text: &str, spans: &[Span]) -> (String, Vec<Kind>) {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut kinds = Vec::with_capacity(spans.len());
    for s in spans {
        out.push_str(text.get(at..s.start).unwrap_or(""));
        out.push_str(s.kind.marker());
        kinds.push(s.kind);
        at = s.end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    (out, kinds)
}

fn memchr_all(b: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter(move |(_, c)| **c == needle)
        .map(|(i, _)| i)
}

mod context;
mod email;
mod numbers;
mod phone;

pub use phone::extension_marker_before;

pub use context::LOOKBACK;

use context::{birth_date, ipv4, license, passport};
use email::email;
use numbers::{card, iban, ssn};
use phone::phone;

pub(crate) fn digit(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

/// No letter or digit right after `end` (a word boundary).
pub(crate) fn ends_clean(b: &[u8], end: usize) -> bool {
    !b.get(end).is_some_and(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn digits_at(b: &[u8], i: usize, n: usize) -> Option<&[u8]> {
    let s = b.get(i..i + n)?;
    s.iter().all(u8::is_ascii_digit).then_some(s)
}

pub(crate) fn num(d: &[u8]) -> u32 {
    d.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'))
}

/// Digit groups split by single spaces or dashes from `i`: the digits and where each group
/// ends (at most 40 bytes are read, so the answer never depends on text further away).
pub(crate) fn digit_groups(b: &[u8], i: usize, seps: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut digits = Vec::new();
    let mut ends = Vec::new();
    let mut j = i;
    while j < b.len() && j - i < 40 {
        match b.get(j) {
            Some(c) if c.is_ascii_digit() => {
                digits.push(c - b'0');
                j += 1;
            }
            Some(c) if seps.contains(c) && digit(b, j + 1) && !digits.is_empty() => {
                ends.push((j, digits.len()));
                j += 1;
            }
            _ => break,
        }
    }
    ends.push((j, digits.len()));
    (digits, ends)
}
