//! Phone numbers: NANP in the ways real data writes them (separators, bare digits, trunk and
//! international prefixes, extensions) and E.164 for other countries.

use super::{digit, digit_groups, digits_at, ends_clean};

/// NANP (`(415) 555-2671`, `415-555-2671`, `415.555.2671`, `4155552671`, with `+1`, `1` or
/// `001` before it and an extension after it: `x123`, `ext. 123`) or E.164
/// (`+442079460958`, `+44 20 7946 0958`).
pub(crate) fn phone(b: &[u8], i: usize) -> Option<usize> {
    let c = *b.get(i)?;
    if c == b'+' {
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
    if c == b'(' {
        return nanp(b, i);
    }
    if !c.is_ascii_digit() {
        return None;
    }
    // A trunk or international prefix, then the national number (`1-415…`, `001 415…`,
    // `14155552671`).
    let sep = |k: usize| b.get(k).is_some_and(|c| b" -.".contains(c));
    let international = c == b'0' && b.get(i + 1) == Some(&b'0') && b.get(i + 2) == Some(&b'1');
    if international
        && sep(i + 3)
        && let Some(e) = nanp(b, i + 4)
    {
        return Some(e);
    }
    if c == b'1' {
        let after = if sep(i + 1) { i + 2 } else { i + 1 };
        if let Some(e) = nanp(b, after) {
            return Some(e);
        }
    }
    nanp(b, i)
}

fn nxx(b: &[u8], i: usize) -> bool {
    digits_at(b, i, 3).is_some_and(|d| d.first().is_some_and(|c| *c >= b'2'))
}

/// Ten bare digits are a number only where NANP would assign them: an area code that is no
/// `N11` service code and no `N9X` reserve, an exchange that is no `N11`, and no `#` before
/// (`order #2125551234`).
fn bare_nanp(b: &[u8], i: usize) -> Option<usize> {
    let d = digits_at(b, i, 10)?;
    let n11 = |k: usize| d.get(k + 1) == Some(&b'1') && d.get(k + 2) == Some(&b'1');
    let reserved = d.get(1) == Some(&b'9');
    let numbered = i > 0 && b.get(i - 1) == Some(&b'#')
        || i > 1 && b.get(i - 1) == Some(&b' ') && b.get(i - 2) == Some(&b'#');
    let ok = nxx(b, i) && nxx(b, i + 3) && !n11(0) && !n11(3) && !reserved && !numbered;
    ok.then_some(i + 10)
}

/// An extension right after a number (`x123`, `x 123`, `ext. 123`, `extension 123`): where it
/// ends, or `end` when there is none.
fn extension(b: &[u8], end: usize) -> usize {
    let mut j = end;
    if b.get(j) == Some(&b' ') {
        j += 1;
    }
    let word = b.get(j..).unwrap_or(&[]);
    let lower = |n: usize| -> Vec<u8> { word.iter().take(n).map(u8::to_ascii_lowercase).collect() };
    let marker = [&b"extension"[..], b"ext.", b"ext", b"x"]
        .into_iter()
        .find(|m| lower(m.len()) == *m);
    let Some(m) = marker else {
        return end;
    };
    j += m.len();
    if b.get(j) == Some(&b' ') {
        j += 1;
    }
    let digits = b
        .get(j..)
        .unwrap_or(&[])
        .iter()
        .take(7)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if (1..=6).contains(&digits) && ends_clean(b, j + digits) {
        j + digits
    } else {
        end
    }
}

fn nanp(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'(') {
        nxx(b, j + 1).then_some(())?;
        (b.get(j + 4) == Some(&b')')).then_some(())?;
        j += 5;
        if matches!(b.get(j), Some(b' ' | b'-')) {
            j += 1;
        }
    } else {
        if let Some(end) = bare_nanp(b, j) {
            return number_end(b, end);
        }
        nxx(b, j).then_some(())?;
        let sep = *b.get(j + 3)?;
        b" -./".contains(&sep).then_some(())?;
        j += 4;
    }
    nxx(b, j).then_some(())?;
    let sep = *b.get(j + 3)?;
    b" -.".contains(&sep).then_some(())?;
    digits_at(b, j + 4, 4)?;
    number_end(b, j + 8)
}

/// Where a national number ending at `end` ends with its extension, if it stands alone (no
/// letter, digit or `-digit` right after it but an extension).
fn number_end(b: &[u8], end: usize) -> Option<usize> {
    let ext = extension(b, end);
    let clean =
        ext > end || ends_clean(b, end) && !(b.get(end) == Some(&b'-') && digit(b, end + 1));
    clean.then_some(ext)
}

/// Does `b[..at]` end with an extension marker (`x`, `ext`, `ext.`, `extension`) right after a
/// number (a digit, or a digit and a space)? The stream redactor holds the space after one.
pub fn extension_marker_before(b: &[u8], at: usize) -> bool {
    let head = b.get(..at).unwrap_or(&[]);
    [&b"extension"[..], b"ext.", b"ext", b"x"]
        .into_iter()
        .any(|m| {
            let Some(start) = head.len().checked_sub(m.len()) else {
                return false;
            };
            let word = head.get(start..).unwrap_or(&[]);
            let before = head.get(..start).unwrap_or(&[]);
            let after_number = match before {
                [.., d] if d.is_ascii_digit() => true,
                [.., d, b' '] => d.is_ascii_digit(),
                _ => false,
            };
            word.eq_ignore_ascii_case(m) && after_number
        })
}
