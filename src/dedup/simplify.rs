//! datatrove 0.10.1's `simplify_text` with its default `TextNormConfig` (tests/parity/MINHASH.md
//! §1): lowercase, numbers to `0`, punctuation to spaces, whitespace collapsed, NFD without
//! nonspacing marks (not recomposed), stripped.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::text::python::is_space;

/// `\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?`: a number, with at most one decimal or grouping separator.
static NUMBERS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\p{Nd}+(?:[.,\x{060C}\x{066B}\x{2396}\x{2397}\x{2398}]\p{Nd}+)?")
        .expect("a valid pattern")
});

static NONSPACING_MARKS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\p{Mn}+").expect("a valid pattern"));

/// datatrove's `PUNCTUATION` table: each of these becomes one space.
fn is_removed_punctuation(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '!'..='/' | ':'..='@' | '['..='`' | '{'..='~'
        | '\u{ab}' | '\u{b4}' | '\u{bb}'
        | '\u{2013}' | '\u{2014}' | '\u{2019}' | '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{2026}'
        | '\u{2236}' | '\u{2501}' | '\u{25ba}'
        | '\u{3001}' | '\u{3002}' | '\u{3008}'..='\u{300d}' | '\u{3010}' | '\u{3011}'
        | '\u{ff01}' | '\u{ff05}' | '\u{ff08}' | '\u{ff09}' | '\u{ff0c}' | '\u{ff0e}' | '\u{ff11}'
        | '\u{ff1a}' | '\u{ff1b}' | '\u{ff1f}' | '\u{ff5e}')
}

/// Whitespace runs become one space; leading and trailing whitespace goes (Python's `\s` / strip).
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The text MinHash shingles are made from.
pub fn simplify_text(text: &str) -> String {
    let lower = text.to_lowercase();
    let numbers = NUMBERS.replace_all(&lower, "0");
    let punct: String = numbers
        .chars()
        .map(|c| if is_removed_punctuation(c) { ' ' } else { c })
        .collect();
    let spaced = collapse_whitespace(&punct);
    if spaced.is_ascii() {
        return spaced;
    }
    // Python strips with the same set it collapsed with; dropping marks can leave two spaces
    // side by side, which stay.
    let nfd: String = spaced.nfd().collect();
    let unmarked = NONSPACING_MARKS.replace_all(&nfd, "");
    unmarked.trim_matches(is_space).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_datatrove_examples() {
        assert_eq!(
            simplify_text("Don't stop—it's e.g. U.S. $5.00 well-known..."),
            "don t stop it s e g u s 0 well known"
        );
        assert_eq!(
            simplify_text("café naïve Ｆｕｌｌ ① ² 3.14 1,000,000 1.2.3 ٣٫٥ ＡＢＣ１２"),
            "cafe naive ｆｕｌｌ ① ² 0 0 0 0 0 0 ａｂｃ0"
        );
        assert_eq!(
            simplify_text("a\u{a0}b\u{200b}c\td\u{3000}e"),
            "a b\u{200b}c d e"
        );
        assert_eq!(simplify_text("10:30pm 12."), "0 0pm 0");
        assert_eq!(simplify_text("a \u{301} b"), "a  b");
        assert_eq!(
            simplify_text("한국어"),
            "\u{1112}\u{1161}\u{11ab}\u{1100}\u{116e}\u{11a8}\u{110b}\u{1165}"
        );
        assert_eq!(simplify_text("  \n "), "");
    }
}
