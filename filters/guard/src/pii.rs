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
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Ssn, Kind::Card, Kind::Phone, Kind::Email, Kind::Iban];

    /// The config and metric name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ssn => "ssn",
            Kind::Card => "card",
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::Iban => "iban",
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
    b.is_ascii_alphanumeric() || b"._%+-@()".contains(&b)
}

/// The enabled scanners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanner {
    on: [bool; 5],
}

impl Scanner {
    pub fn new(kinds: &[Kind]) -> Self {
        let mut on = [false; 5];
        for k in kinds {
            if let Some(slot) = on.get_mut(*k as usize) {
                *slot = true;
            }
        }
        Scanner { on }
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

fn digit(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

/// No letter or digit right after `end` (a word boundary).
fn ends_clean(b: &[u8], end: usize) -> bool {
    !b.get(end).is_some_and(|c| c.is_ascii_alphanumeric())
}

fn digits_at(b: &[u8], i: usize, n: usize) -> Option<&[u8]> {
    let s = b.get(i..i + n)?;
    s.iter().all(u8::is_ascii_digit).then_some(s)
}

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0, |n, c| n * 10 + u32::from(c - b'0'))
}

/// `ddd-dd-dddd`, without area 000, 666 or 9xx, group 00 or serial 0000.
fn ssn(b: &[u8], i: usize) -> Option<usize> {
    let area = digits_at(b, i, 3)?;
    (b.get(i + 3) == Some(&b'-')).then_some(())?;
    let group = digits_at(b, i + 4, 2)?;
    (b.get(i + 6) == Some(&b'-')).then_some(())?;
    let serial = digits_at(b, i + 7, 4)?;
    let end = i + 11;
    if !ends_clean(b, end) || (b.get(end) == Some(&b'-') && digit(b, end + 1)) {
        return None;
    }
    let a = num(area);
    (a != 0 && a != 666 && a < 900 && num(group) != 0 && num(serial) != 0).then_some(end)
}

/// Digit groups split by single spaces or dashes from `i`: the digits and where each group
/// ends (at most 40 bytes are read, so the answer never depends on text further away).
fn digit_groups(b: &[u8], i: usize, seps: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
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

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &x)| {
            let x = u32::from(x);
            if k % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Known issuer prefixes and their lengths (`d` holds digit values, not ASCII).
fn brand(d: &[u8]) -> bool {
    let p = |n: usize| d.iter().take(n).fold(0u32, |a, x| a * 10 + u32::from(*x));
    let len = d.len();
    let visa = p(1) == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4))) && len == 16;
    let amex = matches!(p(2), 34 | 37) && len == 15;
    let discover =
        (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3))) && (16..=19).contains(&len);
    let diners =
        ((300..=305).contains(&p(3)) || matches!(p(2), 36 | 38 | 39)) && (14..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p(4)) && (16..=19).contains(&len);
    let unionpay = p(2) == 62 && (16..=19).contains(&len);
    visa || mastercard || amex || discover || diners || jcb || unionpay
}

/// 13–19 digits, spaced or dashed, Luhn-valid, with a known brand prefix. The longest such
/// run of whole groups wins.
fn card(b: &[u8], i: usize) -> Option<usize> {
    let (digits, ends) = digit_groups(b, i, b" -");
    ends.iter().rev().find_map(|&(end, n)| {
        let d = digits.get(..n)?;
        ((13..=19).contains(&n) && ends_clean(b, end) && luhn(d) && brand(d)).then_some(end)
    })
}

/// NANP (`(415) 555-2671`, `415-555-2671`, `415.555.2671`, `+1 415 555 2671`) or E.164
/// (`+442079460958`, `+44 20 7946 0958`).
fn phone(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'+') {
        if b.get(i + 1) == Some(&b'1')
            && let Some(e) = b
                .get(i + 2)
                .filter(|c| b" -.".contains(c))
                .and_then(|_| nanp(b, i + 3))
        {
            return Some(e);
        }
        let (digits, ends) = digit_groups(b, i + 1, b" -");
        return ends.iter().rev().find_map(|&(end, n)| {
            let first = digits.first().copied().unwrap_or(0);
            ((8..=15).contains(&n) && first != 0 && ends_clean(b, end)).then_some(end)
        });
    }
    if b.get(i) == Some(&b'1')
        && b.get(i + 1).is_some_and(|c| b" -.".contains(c))
        && let Some(e) = nanp(b, i + 2)
    {
        return Some(e);
    }
    nanp(b, i)
}

fn nxx(b: &[u8], i: usize) -> bool {
    digits_at(b, i, 3).is_some_and(|d| d.first().is_some_and(|c| *c >= b'2'))
}

fn nanp(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'(') {
        nxx(b, j + 1).then_some(())?;
        (b.get(j + 4) == Some(&b')')).then_some(())?;
        j += 5;
        if b.get(j) == Some(&b' ') {
            j += 1;
        }
    } else {
        nxx(b, j).then_some(())?;
        let sep = *b.get(j + 3)?;
        b" -.".contains(&sep).then_some(())?;
        j += 4;
    }
    nxx(b, j).then_some(())?;
    let sep = *b.get(j + 3)?;
    b" -.".contains(&sep).then_some(())?;
    digits_at(b, j + 4, 4)?;
    let end = j + 8;
    (ends_clean(b, end) && !(b.get(end) == Some(&b'-') && digit(b, end + 1))).then_some(end)
}

/// Country code, check digits, then 11–30 letters or digits (spaced in groups of four or
/// not), mod-97 valid.
fn iban(b: &[u8], i: usize) -> Option<usize> {
    let head = b.get(i..i + 4)?;
    let ok = head.first().is_some_and(u8::is_ascii_uppercase)
        && head.get(1).is_some_and(u8::is_ascii_uppercase)
        && head.get(2).is_some_and(u8::is_ascii_digit)
        && head.get(3).is_some_and(u8::is_ascii_digit);
    ok.then_some(())?;
    let alnum = |c: &u8| c.is_ascii_digit() || c.is_ascii_uppercase();
    let mut chars = head.to_vec();
    let mut ends = Vec::new();
    let mut j = i + 4;
    while j < b.len() && j - i < 42 {
        match b.get(j) {
            Some(c) if alnum(c) => {
                chars.push(*c);
                j += 1;
            }
            Some(b' ') if b.get(j + 1).is_some_and(alnum) => {
                ends.push((j, chars.len()));
                j += 1;
            }
            _ => break,
        }
    }
    ends.push((j, chars.len()));
    ends.iter().rev().find_map(|&(end, n)| {
        let c = chars.get(..n)?;
        ((15..=34).contains(&n) && ends_clean(b, end) && mod97(c)).then_some(end)
    })
}

fn mod97(c: &[u8]) -> bool {
    let (head, rest) = c.split_at(4.min(c.len()));
    let mut r: u32 = 0;
    for &ch in rest.iter().chain(head) {
        let v = if ch.is_ascii_digit() {
            u32::from(ch - b'0')
        } else {
            u32::from(ch - b'A') + 10
        };
        r = if v >= 10 {
            (r * 100 + v) % 97
        } else {
            (r * 10 + v) % 97
        };
    }
    r == 1
}

fn marker_at(b: &[u8]) -> bool {
    Kind::ALL
        .into_iter()
        .any(|k| b.starts_with(k.marker().as_bytes()))
}

fn local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-".contains(&c)
}

/// `local@domain.tld` around the `@` at `at`, not reaching back before `from`. The name is
/// its whole run and the domain runs to where it must end, so the answer depends on neither
/// where a scan began nor what comes past the address: a stream scans from where it last
/// released and decides before it has seen the rest (FUZZING.md, findings 7 and 8). One past
/// [`MAX_ENTITY`] is no address.
fn email(b: &[u8], at: usize, from: usize) -> Option<Span> {
    let mut start = at;
    while start > from && b.get(start - 1).is_some_and(|c| local_char(*c)) {
        start -= 1;
    }
    while b.get(start) == Some(&b'.') {
        start += 1;
    }
    if start >= at || at - start >= MAX_ENTITY {
        return None;
    }
    // Labels are letters, digits and hyphens; a dot goes on only into the next label.
    let mut end = at + 1;
    loop {
        let c = b.get(end).copied().unwrap_or(0);
        let next = b.get(end + 1).copied().unwrap_or(0);
        if !(c.is_ascii_alphanumeric() || c == b'-' || (c == b'.' && next.is_ascii_alphanumeric()))
        {
            break;
        }
        if end - start >= MAX_ENTITY {
            return None;
        }
        end += 1;
    }
    // A domain that runs into a marker (past any dots or hyphens) was cut short by a
    // redaction to its right, and was no address before it: what a later replacement
    // shortens must stay refused, or a stream that already sent its start could never catch
    // it (FUZZING.md, finding 6).
    let rest = b.get(end..).unwrap_or(&[]);
    let tail = rest
        .iter()
        .take_while(|c| **c == b'.' || **c == b'-')
        .count();
    if rest.get(tail..).is_some_and(marker_at) {
        return None;
    }
    while end > at + 1 && b.get(end - 1) == Some(&b'-') {
        end -= 1;
    }
    let domain = b.get(at + 1..end)?;
    let labels: Vec<&[u8]> = domain.split(|c| *c == b'.').collect();
    let tld = labels.last()?;
    let ok = labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
        && ends_clean(b, end);
    ok.then_some(Span {
        start,
        end,
        kind: Kind::Email,
    })
}
