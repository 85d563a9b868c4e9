//! Identifiers that are only PII beside a word that says so: US passport and driver's licence
//! numbers, and dates of birth (`born 04/12/1985`, not a delivery date). The words are looked
//! for in the [`LOOKBACK`] bytes before the number, which the stream redactor keeps as
//! context, so a stream and a whole answer decide alike. IPv4 addresses need no word (and are
//! off unless configured).

use super::{digits_at, ends_clean};

/// How far before a number its context word may start (bytes).
pub const LOOKBACK: usize = 32;

const PASSPORT: &[&str] = &["passport"];
const LICENSE: &[&str] = &[
    "driver's license",
    "drivers license",
    "driver license",
    "driver's licence",
    "drivers licence",
    "driving licence",
    "driving license",
    "license number",
    "licence number",
    "license no",
    "licence no",
    "license #",
    "license#",
    "dl number",
    "dl no",
    "dl#",
    "dl #",
    "dl:",
];
const BIRTH: &[&str] = &[
    "born",
    "dob",
    "d.o.b",
    "date of birth",
    "birth date",
    "birthdate",
    "birthday",
];

/// One of `words` in the bytes before `i` (case-insensitive, a whole word, not inside a
/// redaction marker such as `[PASSPORT REDACTED]`).
pub(crate) fn said_before(b: &[u8], i: usize, words: &[&str]) -> bool {
    let from = i.saturating_sub(LOOKBACK);
    let window = b.get(from..i).unwrap_or(&[]);
    for w in words {
        let w = w.as_bytes();
        let Some(&first) = w.first() else {
            continue;
        };
        for (at, c) in window.iter().enumerate() {
            if c.to_ascii_lowercase() != first {
                continue;
            }
            let Some(seen) = window.get(at..at + w.len()) else {
                break;
            };
            let before = at.checked_sub(1).and_then(|p| window.get(p));
            let after = b.get(from + at + w.len());
            if seen.eq_ignore_ascii_case(w)
                && !before.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'[')
                && !after.is_some_and(|c| c.is_ascii_alphabetic())
            {
                return true;
            }
        }
    }
    false
}

fn alone_after(b: &[u8], end: usize) -> bool {
    ends_clean(b, end)
        && !(b.get(end) == Some(&b'-') && b.get(end + 1).is_some_and(u8::is_ascii_alphanumeric))
}

/// A US passport number (9 digits, or a letter and 8 digits) after `passport`.
pub(crate) fn passport(b: &[u8], i: usize) -> Option<usize> {
    let lead = usize::from(b.get(i).is_some_and(u8::is_ascii_uppercase));
    digits_at(b, i + lead, 9 - lead)?;
    let end = i + 9;
    (alone_after(b, end) && said_before(b, i, PASSPORT)).then_some(end)
}

/// A driver's licence number (5 to 14 letters, digits and dashes, 4 digits at least, which
/// covers the states' formats) after a licence word.
pub(crate) fn license(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut digits = 0;
    while let Some(c) = b.get(j) {
        let dash = *c == b'-' && b.get(j + 1).is_some_and(u8::is_ascii_alphanumeric) && j > i;
        if !(c.is_ascii_digit() || c.is_ascii_uppercase() || dash) || j - i > 14 {
            break;
        }
        digits += usize::from(c.is_ascii_digit());
        j += 1;
    }
    let ok = (5..=14).contains(&(j - i)) && digits >= 4 && ends_clean(b, j);
    (ok && said_before(b, i, LICENSE)).then_some(j)
}

/// A date of birth after a birth word: `MM/DD/YYYY`, `M/D/YYYY`, `DD.MM.YYYY`,
/// `YYYY-MM-DD` or `MM-DD-YYYY`, with a plausible month, day and year.
pub(crate) fn birth_date(b: &[u8], i: usize) -> Option<usize> {
    let (end, y, m, d) = date(b, i)?;
    let ok = (1900..=2030).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&d)
        && alone_after(b, end)
        && said_before(b, i, BIRTH);
    ok.then_some(end)
}

fn number(b: &[u8], i: usize, min: usize, max: usize) -> Option<(u32, usize)> {
    let n = b
        .get(i..)
        .unwrap_or(&[])
        .iter()
        .take(max + 1)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(min..=max).contains(&n) {
        return None;
    }
    let v = b
        .get(i..i + n)?
        .iter()
        .fold(0u32, |a, c| a * 10 + u32::from(c - b'0'));
    Some((v, i + n))
}

/// (end, year, month, day) of a date at `i`.
fn date(b: &[u8], i: usize) -> Option<(usize, u32, u32, u32)> {
    let (first, j) = number(b, i, 1, 4)?;
    let sep = *b.get(j)?;
    if !b"/.-".contains(&sep) {
        return None;
    }
    let (second, k) = number(b, j + 1, 1, 2)?;
    if b.get(k) != Some(&sep) {
        return None;
    }
    if j - i == 4 {
        let (day, end) = number(b, k + 1, 1, 2)?;
        return Some((end, first, second, day));
    }
    let (year, end) = number(b, k + 1, 4, 4)?;
    // Dotted dates are day first (Europe); slashed and dashed ones month first (US).
    let (m, d) = if sep == b'.' {
        (second, first)
    } else {
        (first, second)
    };
    Some((end, year, m, d))
}

/// An IPv4 address: four dotted numbers of at most 255, not part of a longer dotted run.
pub(crate) fn ipv4(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b.get(i - 1) == Some(&b'.') {
        return None;
    }
    let mut j = i;
    for part in 0..4 {
        if part > 0 {
            (b.get(j) == Some(&b'.')).then_some(())?;
            j += 1;
        }
        let (v, end) = number(b, j, 1, 3)?;
        let leading_zero = end - j > 1 && b.get(j) == Some(&b'0');
        if v > 255 || leading_zero {
            return None;
        }
        j = end;
    }
    let longer = b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit);
    (ends_clean(b, j) && !longer).then_some(j)
}
