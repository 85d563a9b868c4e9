//! Email addresses, decided the same way whatever part of the text a scan sees.

use super::{Kind, MAX_ENTITY, Span, ends_clean};

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
pub(crate) fn email(b: &[u8], at: usize, from: usize) -> Option<Span> {
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
