//! Numbers with a checksum or a fixed shape: US social security numbers, payment cards
//! (Luhn, issuer prefixes) and IBANs (mod 97).

use super::context::said_before;
use super::{digit, digit_groups, digits_at, ends_clean, num};

/// `ddd-dd-dddd` or `ddd dd dddd` (one separator throughout), or nine bare digits after
/// `SSN` or `social security`; never area 000, 666 or 9xx, group 00 or serial 0000.
pub(crate) fn ssn(b: &[u8], i: usize) -> Option<usize> {
    let area = digits_at(b, i, 3)?;
    let (group, serial, end) = match b.get(i + 3).copied() {
        Some(sep @ (b'-' | b' ')) => {
            let group = digits_at(b, i + 4, 2)?;
            (b.get(i + 6) == Some(&sep)).then_some(())?;
            (group, digits_at(b, i + 7, 4)?, i + 11)
        }
        _ => {
            let group = digits_at(b, i + 3, 2)?;
            let serial = digits_at(b, i + 5, 4)?;
            said_before(b, i, SSN_WORDS).then_some(())?;
            (group, serial, i + 9)
        }
    };
    if !ends_clean(b, end) || (b.get(end) == Some(&b'-') && digit(b, end + 1)) {
        return None;
    }
    let a = num(area);
    (a != 0 && a != 666 && a < 900 && num(group) != 0 && num(serial) != 0).then_some(end)
}

const SSN_WORDS: &[&str] = &["ssn", "social security", "ss#", "ss #", "ss no"];

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
pub(crate) fn card(b: &[u8], i: usize) -> Option<usize> {
    let (digits, ends) = digit_groups(b, i, b" -");
    ends.iter().rev().find_map(|&(end, n)| {
        let d = digits.get(..n)?;
        ((13..=19).contains(&n) && ends_clean(b, end) && luhn(d) && brand(d)).then_some(end)
    })
}

/// Country code, check digits, then 11–30 letters or digits (spaced in groups of four or
/// not), mod-97 valid.
pub(crate) fn iban(b: &[u8], i: usize) -> Option<usize> {
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
