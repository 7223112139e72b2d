//! Python 3 `str` semantics that datatrove's filters depend on, with Python's own Unicode tables
//! (generated into `tables.rs`): `isspace`, `isalpha`, `strip`, `split()`, `splitlines()`.
//! Rust's `char::is_whitespace` / `is_alphabetic` use other Unicode properties and disagree on
//! a few hundred code points, which would flip filter decisions.

use super::tables::{self, Ranges};

pub(crate) fn in_ranges(ranges: Ranges, c: char) -> bool {
    let c = c as u32;
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `c.isspace()`.
pub fn is_space(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, ' ' | '\t'..='\r' | '\x1c'..='\x1f');
    }
    in_ranges(tables::PY_SPACE, c)
}

/// `c.isalpha()`.
pub fn is_alpha(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    in_ranges(tables::PY_ALPHA, c)
}

/// `re.match(r"\w", c)`: a word character as Python's `re` sees it (`\b` is the edge between a
/// word character and anything else).
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    in_ranges(tables::PY_WORD, c)
}

/// `re.match(r"\d", c)`: a Unicode decimal digit (category Nd), as Python's `re` sees it.
pub fn is_decimal(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_ranges(tables::PY_DECIMAL, c)
}

/// Unicode general category P* (`unicodedata.category(c).startswith("P")`).
pub fn is_unicode_punct(c: char) -> bool {
    in_ranges(tables::UNICODE_PUNCT, c)
}

/// `c in datatrove.utils.text.PUNCTUATION_SET`.
pub fn is_datatrove_punct(c: char) -> bool {
    in_ranges(tables::DATATROVE_PUNCTUATION, c)
}

/// `c in datatrove.utils.text.TERMINAL_PUNCTUATION`.
pub fn is_terminal_punct(c: char) -> bool {
    in_ranges(tables::DATATROVE_TERMINAL_PUNCTUATION, c)
}

/// `s.strip()`.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// `s.lstrip()`.
pub fn lstrip(s: &str) -> &str {
    s.trim_start_matches(is_space)
}

/// `s.rstrip()`.
pub fn rstrip(s: &str) -> &str {
    s.trim_end_matches(is_space)
}

/// `s.split()`: runs of whitespace separate, no empty items.
pub fn split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|w| !w.is_empty())
}

/// `len(s)`: code points.
pub fn len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Python's universal line boundaries, as `str.splitlines` uses them (`\r\n` is one boundary).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\x0b'
            | '\x0c'
            | '\x1c'
            | '\x1d'
            | '\x1e'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// `s.splitlines()` (without `keepends`).
pub fn splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_break(c) {
            lines.push(&s[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && iter.peek().is_some_and(|&(_, n)| n == '\n') {
                iter.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// `s.count(sub)`: non-overlapping occurrences, left to right.
pub fn count(s: &str, sub: &str) -> usize {
    s.matches(sub).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitlines_matches_python() {
        // Python: "a\r\nb\rc\n\nd\x0be\u2028f\n".splitlines()
        assert_eq!(
            splitlines("a\r\nb\rc\n\nd\x0be\u{2028}f\n"),
            vec!["a", "b", "c", "", "d", "e", "f"]
        );
        assert_eq!(splitlines(""), Vec::<&str>::new());
        assert_eq!(splitlines("\n"), vec![""]);
        assert_eq!(splitlines("x"), vec!["x"]);
    }

    #[test]
    fn predicates_follow_python_not_rust() {
        // U+001C..U+001F are str.isspace() in Python but not Unicode White_Space.
        assert!(is_space('\x1c') && !'\x1c'.is_whitespace());
        // U+200B ZERO WIDTH SPACE is neither.
        assert!(!is_space('\u{200b}'));
        assert!(is_space('\u{a0}') && is_space('\u{3000}'));
        // Roman numeral Ⅻ (Nl) is alphabetic in Rust but not str.isalpha().
        assert!(!is_alpha('\u{216b}') && '\u{216b}'.is_alphabetic());
        assert!(is_alpha('é') && is_alpha('ж') && !is_alpha('1'));
        assert_eq!(strip("\u{a0} x \x1f"), "x");
        assert_eq!(
            split_whitespace(" a \u{3000}b  c ").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert!(is_unicode_punct('—') && !is_unicode_punct('$'));
    }
}
