//! The generated folding table against `unicode-normalization` itself: for every character of
//! the first two planes, the table gives NFKD without combining marks, or the character
//! unchanged where that form reaches U+3000 or above (the documented CJK exception).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cxgate_guard::fold::fold_char;
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

fn table(c: char) -> Vec<char> {
    let mut v = Vec::new();
    fold_char(c, |x| v.push(x));
    v
}

fn reference(c: char) -> Vec<char> {
    let mut d = Vec::new();
    decompose_compatible(c, |x| {
        if !is_combining_mark(x) {
            d.push(x);
        }
    });
    if is_combining_mark(c) {
        return Vec::new();
    }
    let kept =
        d.iter().all(|x| u32::from(*x) < 0x3000) && (d.len() <= 1 || d.iter().all(char::is_ascii));
    if kept || d.is_empty() { d } else { vec![c] }
}

#[test]
fn the_table_agrees_with_the_crate_on_the_first_two_planes() {
    let mut folded = 0;
    for cp in 0..0x2_0000u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let (got, want) = (table(c), reference(c));
        assert_eq!(got, want, "U+{cp:04X}");
        folded += usize::from(got != [c]);
    }
    assert!(folded > 5000, "only {folded} characters fold");
}

#[test]
fn look_alikes_fold_to_ascii() {
    let fold = |s: &str| s.chars().flat_map(table).collect::<String>();
    assert_eq!(fold("ｉｇｎｏｒｅ"), "ignore");
    assert_eq!(fold("𝐬𝐲𝐬𝐭𝐞𝐦 𝓹𝓻𝓸𝓶𝓹𝓽"), "system prompt");
    assert_eq!(fold("ⓡⓔⓢⓔⓣ"), "reset");
    assert_eq!(fold("ｄｉｓｒｅｇａｒｄ\u{00A0}ａｌｌ"), "disregard all");
    assert_eq!(fold("i\u{0301}gno\u{0308}re ﬁle"), "ignore file");
    assert_eq!(fold("Ⅻ ㎞"), "XII km");
    assert_eq!(fold("日本 ㍿"), "日本 ㍿");
}
