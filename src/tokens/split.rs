//! GPT-4's pre-tokenizer split ([`GPT4_SPLIT`]), hand-written. `tokenizers` runs the regex
//! through Oniguruma with offset tracking on every character; this walks the text once and gives
//! exactly the same pieces (the character classes come from Oniguruma itself, see
//! `split_tables.rs`; tests compare both on real and random text). Also GPT-2's byte-to-unicode
//! map of byte-level BPE.
//!
//! [`GPT4_SPLIT`]: super::tokenizer::GPT4_SPLIT

use std::sync::OnceLock;

use super::split_tables::{LETTER, NUMBER, SPACE};
use crate::text::python::in_ranges;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn ascii_classes() -> &'static [Class; 128] {
    static TABLE: OnceLock<[Class; 128]> = OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|c| slow_class(char::from(c as u8))))
}

fn slow_class(c: char) -> Class {
    if in_ranges(LETTER, c) {
        Class::Letter
    } else if in_ranges(NUMBER, c) {
        Class::Number
    } else if in_ranges(SPACE, c) {
        Class::Space
    } else {
        Class::Other
    }
}

#[inline]
fn class(c: char) -> Class {
    match c.is_ascii() {
        true => ascii_classes()[c as usize],
        false => slow_class(c),
    }
}

/// The character at byte `i` and the byte after it.
#[inline]
fn char_at(text: &str, i: usize) -> Option<(char, usize)> {
    let c = text[i..].chars().next()?;
    Some((c, i + c.len_utf8()))
}

/// End of the run of characters of class `cls` starting at byte `i`.
fn run_end(text: &str, mut i: usize, cls: Class) -> usize {
    while let Some((c, next)) = char_at(text, i) {
        if class(c) != cls {
            break;
        }
        i = next;
    }
    i
}

/// Calls `piece` with each piece of `text`, in order; the pieces cover the text.
pub fn split_gpt4(text: &str, mut piece: impl FnMut(&str)) {
    let mut i = 0;
    while i < text.len() {
        let end = match_at(text, i);
        piece(&text[i..end]);
        i = end;
    }
}

/// The end of the regex match at `i`: the first alternative that matches, as Oniguruma tries
/// them (`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
/// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`).
fn match_at(text: &str, i: usize) -> usize {
    let (c0, n0) = char_at(text, i).expect("i < len");
    let next = char_at(text, n0);
    // 1. Contractions, case-insensitive (`ſ` folds to `s`).
    if c0 == '\''
        && let Some((c1, n1)) = next
    {
        match c1 {
            's' | 'S' | 'ſ' | 't' | 'T' | 'm' | 'M' | 'd' | 'D' => return n1,
            'r' | 'R' | 'v' | 'V' | 'l' | 'L' => {
                let second = if matches!(c1, 'l' | 'L') {
                    ['l', 'L']
                } else {
                    ['e', 'E']
                };
                if let Some((c2, n2)) = char_at(text, n1)
                    && second.contains(&c2)
                {
                    return n2;
                }
            }
            _ => {}
        }
    }
    let cls0 = class(c0);
    // 2. Letters, with one leading character that is not a newline, letter or number.
    if cls0 == Class::Letter {
        return run_end(text, n0, Class::Letter);
    }
    if cls0 != Class::Number
        && c0 != '\r'
        && c0 != '\n'
        && let Some((c1, n1)) = next
        && class(c1) == Class::Letter
    {
        return run_end(text, n1, Class::Letter);
    }
    // 3. One to three numbers.
    if cls0 == Class::Number {
        let mut end = n0;
        for _ in 0..2 {
            match char_at(text, end) {
                Some((c, n)) if class(c) == Class::Number => end = n,
                _ => break,
            }
        }
        return end;
    }
    // 4. Punctuation and symbols, one leading space, trailing newlines.
    let other_from = match (c0, next) {
        (' ', Some((c1, n1))) if class(c1) == Class::Other => Some(n1),
        _ if cls0 == Class::Other => Some(n0),
        _ => None,
    };
    if let Some(from) = other_from {
        let mut end = run_end(text, from, Class::Other);
        while let Some((c, n)) = char_at(text, end) {
            if c != '\r' && c != '\n' {
                break;
            }
            end = n;
        }
        return end;
    }
    // c0 is a space. 5. Spaces up to the last newline among them.
    let run = run_end(text, i, Class::Space);
    if let Some(k) = text[i..run].rfind(['\r', '\n']) {
        return i + k + 1;
    }
    // 6. Spaces not followed by a non-space: all of them at the end of the text, else all but
    // the last (which a following word takes). 7. A single space.
    if run == text.len() {
        return run;
    }
    let last = text[i..run]
        .chars()
        .next_back()
        .expect("non-empty")
        .len_utf8();
    if run - last > i { run - last } else { run }
}

/// GPT-2's byte-to-character map of byte-level BPE (`bytes_to_unicode`).
pub fn byte_chars() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u32| {
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b)
        };
        let mut extra = 0;
        std::array::from_fn(|b| {
            let b = b as u32;
            if printable(b) {
                char::from_u32(b).expect("valid")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("valid")
            }
        })
    })
}

/// Appends the byte-level form of `piece` to `out`.
pub fn byte_level(piece: &str, out: &mut String) {
    let table = byte_chars();
    for &b in piece.as_bytes() {
        out.push(table[b as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{
        OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior,
    };

    fn onig(text: &str) -> Vec<String> {
        let split = Split::new(
            SplitPattern::Regex(super::super::tokenizer::GPT4_SPLIT.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .unwrap();
        let mut pre = PreTokenizedString::from(text);
        split.pre_tokenize(&mut pre).unwrap();
        pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect()
    }

    fn ours(text: &str) -> Vec<String> {
        let mut v = Vec::new();
        split_gpt4(text, |p| v.push(p.to_string()));
        v
    }

    #[test]
    fn splits_like_oniguruma_on_tricky_text() {
        let cases = [
            "Hello world, it's 12345!\n\nHello",
            "I'M here; we'LL see 'Re 'ſ 'x 'lL",
            "  leading   spaces\t\ttabs \r\n\r\n  x  ",
            "trailing   ",
            "a\u{a0}b\u{3000}c\u{2028}d \u{85}e",
            "數學 123４５６ ½⅓ Ⅻ 🎉🎉 !!\n\n",
            "(parens) [x] ...\n\n\n- item\n  - sub",
            " ",
            "\n",
            "'",
            "''s",
            "x'",
            "  \n",
            " \n ",
            "\u{301}e\u{301}",
        ];
        for t in cases {
            assert_eq!(ours(t), onig(t), "{t:?}");
        }
    }

    #[test]
    fn splits_like_oniguruma_on_random_text() {
        let alphabet: Vec<char> = "aZé數 \t\n\r'sStTrRvVlLeEmMdD1٣½!.,-_\u{a0}\u{2003}\u{300}🎉ſ"
            .chars()
            .collect();
        let mut rng = crate::util::SplitMix64(11);
        for _ in 0..3000 {
            let n = (rng.next_u64() % 24) as usize;
            let t: String = (0..n)
                .map(|_| alphabet[(rng.next_u64() % alphabet.len() as u64) as usize])
                .collect();
            assert_eq!(ours(&t), onig(&t), "{t:?}");
        }
    }

    #[test]
    fn byte_level_table_is_gpt2s() {
        let t = byte_chars();
        assert_eq!(
            (t[b'!' as usize], t[b' ' as usize], t[b'\n' as usize], t[0]),
            ('!', 'Ġ', 'Ċ', 'Ā')
        );
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
    }
}
