//! `gopher_repetition`: the repetition rules of Gopher (Rae et al. 2021, table A1), as datatrove
//! 0.10.1's `GopherRepetitionFilter` applies them.

use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{
    self, DocFilter, Measured, Verdict, enabled, find_duplicates, ratio_histogram,
};
use super::{BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::io::stats::{Drops, Histogram};
use crate::text::{self, python};

/// Drops documents that repeat themselves (duplicated lines, paragraphs and word n-grams) as
/// datatrove 0.10.1's `GopherRepetitionFilter` does, with the same rules, defaults (FineWeb's) and
/// reasons. The rules are Gopher's (Rae et al. 2021, table A1). Lengths are counted in characters
/// (code points). The checks run in this order and the first that fails is the reason: `empty` (the
/// text is empty); `dup_para_frac` / `dup_para_char_frac` (paragraphs, split at two or more
/// newlines, that repeat an earlier paragraph: their share of paragraphs / their characters' share
/// of the text); `dup_line_frac` / `dup_line_char_frac` (the same over lines, split at newlines);
/// `top_{n}_gram` (for each `[n, frac]` of `top_n_grams`: the most frequent word n-gram, times its
/// count, covers more than `frac` of the characters); `duplicated_{n}_n_grams` (for each `[n,
/// frac]` of `dup_n_grams`: the characters of n-grams that repeat an earlier one, counted greedily
/// without overlaps, exceed `frac` of the text). Words are datatrove's English words (spaCy's
/// tokenizer; punctuation marks are words too). A fraction set to null (or 0, as in datatrove)
/// switches its check off. datatrove's `language` (always English here) and `exclusion_writer` (use
/// the writer's `rejects`) have no equivalent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GopherRepetition {
    /// Largest share of duplicated lines.
    pub dup_line_frac: Option<f64>,
    /// Largest share of duplicated paragraphs.
    pub dup_para_frac: Option<f64>,
    /// Largest share of the text's characters in duplicated lines.
    pub dup_line_char_frac: Option<f64>,
    /// Largest share of the text's characters in duplicated paragraphs.
    pub dup_para_char_frac: Option<f64>,
    /// `[n, frac]` pairs: the most frequent word n-gram (joined with spaces), times its count,
    /// may cover at most `frac` of the text's characters.
    pub top_n_grams: Vec<(usize, f64)>,
    /// `[n, frac]` pairs: the characters of word n-grams (joined without spaces) that repeat an
    /// earlier n-gram may be at most `frac` of the text's characters.
    pub dup_n_grams: Vec<(usize, f64)>,
}

impl Default for GopherRepetition {
    fn default() -> Self {
        GopherRepetition {
            dup_line_frac: Some(0.3),
            dup_para_frac: Some(0.3),
            dup_line_char_frac: Some(0.2),
            dup_para_char_frac: Some(0.2),
            top_n_grams: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            dup_n_grams: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

impl StageConfig for GopherRepetition {
    const TYPE: &'static str = "gopher_repetition";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (param, frac) in [
            ("dup_line_frac", self.dup_line_frac),
            ("dup_para_frac", self.dup_para_frac),
            ("dup_line_char_frac", self.dup_line_char_frac),
            ("dup_para_char_frac", self.dup_para_char_frac),
        ] {
            if let Some(frac) = frac {
                check_fraction(&mut problems, param, frac);
            }
        }
        for (param, pairs) in [
            ("top_n_grams", &self.top_n_grams),
            ("dup_n_grams", &self.dup_n_grams),
        ] {
            for &(n, frac) in pairs {
                if n == 0 {
                    problems.push(ParamProblem {
                        param,
                        message: format!("`{param}` has n = 0; n-grams have at least 1 word"),
                    });
                }
                check_fraction(&mut problems, param, frac);
            }
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        Ok(doc_filter::stage(stage_id, self.clone()))
    }
}

fn check_fraction(problems: &mut Vec<ParamProblem>, param: &'static str, frac: f64) {
    if !(0.0..=1.0).contains(&frac) {
        problems.push(ParamProblem {
            param,
            message: format!("`{param}` has the fraction {frac}, not in [0, 1]"),
        });
    }
}

impl DocFilter for GopherRepetition {
    /// Slots: the four line and paragraph fractions, then each `top_n_grams` entry, then each
    /// `dup_n_grams` entry.
    fn measures(&self) -> Vec<(String, Histogram)> {
        let mut m = vec![
            (
                "dup_para_frac".into(),
                ratio_histogram(
                    "share of paragraphs that repeat one",
                    enabled(self.dup_para_frac),
                    Drops::Above,
                ),
            ),
            (
                "dup_para_char_frac".into(),
                ratio_histogram(
                    "share of characters in repeated paragraphs",
                    enabled(self.dup_para_char_frac),
                    Drops::Above,
                ),
            ),
            (
                "dup_line_frac".into(),
                ratio_histogram(
                    "share of lines that repeat one",
                    enabled(self.dup_line_frac),
                    Drops::Above,
                ),
            ),
            (
                "dup_line_char_frac".into(),
                ratio_histogram(
                    "share of characters in repeated lines",
                    enabled(self.dup_line_char_frac),
                    Drops::Above,
                ),
            ),
        ];
        for &(n, max) in &self.top_n_grams {
            m.push((
                format!("top_{n}_gram"),
                ratio_histogram(
                    &format!("share of characters in the most frequent {n}-gram"),
                    Some(max),
                    Drops::Above,
                ),
            ));
        }
        for &(n, max) in &self.dup_n_grams {
            m.push((
                format!("duplicated_{n}_n_grams"),
                ratio_histogram(
                    &format!("share of characters in repeated {n}-grams"),
                    Some(max),
                    Drops::Above,
                ),
            ));
        }
        m
    }

    fn judge_measured(&self, text: &str, m: &mut Measured) -> Verdict {
        if text.is_empty() {
            return Verdict::drop("empty");
        }
        let text_chars = python::len(text) as f64;

        let paragraphs = split_newline_runs(python::strip(text), 2);
        let (duplicates, duplicate_chars) = find_duplicates(&paragraphs);
        m.set(0, duplicates as f64 / paragraphs.len() as f64);
        if let Some(max) = enabled(self.dup_para_frac)
            && duplicates as f64 / paragraphs.len() as f64 > max
        {
            return Verdict::drop("dup_para_frac");
        }
        // The unstripped text is the denominator, as in datatrove.
        m.set(1, duplicate_chars as f64 / text_chars);
        if let Some(max) = enabled(self.dup_para_char_frac)
            && duplicate_chars as f64 / text_chars > max
        {
            return Verdict::drop("dup_para_char_frac");
        }

        let lines = split_newline_runs(text, 1);
        let (duplicates, duplicate_chars) = find_duplicates(&lines);
        m.set(2, duplicates as f64 / lines.len() as f64);
        if let Some(max) = enabled(self.dup_line_frac)
            && duplicates as f64 / lines.len() as f64 > max
        {
            return Verdict::drop("dup_line_frac");
        }
        m.set(3, duplicate_chars as f64 / text_chars);
        if let Some(max) = enabled(self.dup_line_char_frac)
            && duplicate_chars as f64 / text_chars > max
        {
            return Verdict::drop("dup_line_char_frac");
        }

        if self.top_n_grams.is_empty() && self.dup_n_grams.is_empty() {
            return Verdict::Keep;
        }
        let words = Words::new(text::words(text));
        let top = self.top_n_grams.len();
        for (k, &(n, max)) in self.top_n_grams.iter().enumerate() {
            // No n-grams: datatrove skips the check.
            if n == 0 || words.len() < n {
                continue;
            }
            let share = top_ngram_chars(&words, n) as f64 / text_chars;
            m.set(4 + k, share);
            if share > max {
                return Verdict::drop(format!("top_{n}_gram"));
            }
        }
        for (k, &(n, max)) in self.dup_n_grams.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let share = duplicated_ngram_chars(&words, n) as f64 / text_chars;
            m.set(4 + top + k, share);
            if share > max {
                return Verdict::drop(format!("duplicated_{n}_n_grams"));
            }
        }
        Verdict::Keep
    }
}

/// `re.split("\n{min_run,}", text)`: splits at every run of at least `min_run` newlines.
fn split_newline_runs(text: &str, min_run: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut parts = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\n' {
            i += 1;
            continue;
        }
        let run_start = i;
        while i < bytes.len() && bytes[i] == b'\n' {
            i += 1;
        }
        if i - run_start >= min_run {
            parts.push(&text[start..run_start]);
            start = i;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A document's words, with what n-gram counting needs of each.
struct Words<'a> {
    words: Vec<&'a str>,
    /// Characters (code points) of each word.
    chars: Vec<usize>,
    /// Polynomial hash of each word's bytes, and BASE to the power of its byte length, so the
    /// hash of a joined n-gram composes from its words' without reading their bytes again.
    hashes: Vec<(u64, u64)>,
}

/// Polynomial hashing modulo the Mersenne prime 2^61 - 1. Hash equality is only a hint: equal
/// n-grams are confirmed by comparing their text.
const MODULUS: u64 = (1 << 61) - 1;
const BASE: u64 = 0x1f2e_3d4c_5b6a_7988 % MODULUS;

fn mul_mod(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    let folded = (product & u128::from(MODULUS)) + (product >> 61);
    let folded = folded as u64;
    if folded >= MODULUS {
        folded - MODULUS
    } else {
        folded
    }
}

fn add_mod(a: u64, b: u64) -> u64 {
    let sum = a + b;
    if sum >= MODULUS { sum - MODULUS } else { sum }
}

/// Hash and BASE^len of `bytes`.
fn hash_bytes(bytes: &[u8]) -> (u64, u64) {
    bytes.iter().fold((0, 1), |(hash, power), &b| {
        (
            add_mod(mul_mod(hash, BASE), byte_hash(b)),
            mul_mod(power, BASE),
        )
    })
}

/// A byte's digit in the polynomial: never 0, so that leading bytes count.
const fn byte_hash(b: u8) -> u64 {
    b as u64 + 1
}

const SPACE_HASH: u64 = byte_hash(b' ');

impl<'a> Words<'a> {
    fn new(words: Vec<&'a str>) -> Self {
        let chars = words.iter().map(|w| python::len(w)).collect();
        let hashes = words.iter().map(|w| hash_bytes(w.as_bytes())).collect();
        Words {
            words,
            chars,
            hashes,
        }
    }

    fn len(&self) -> usize {
        self.words.len()
    }

    /// The n-gram of `n` words at `start`, as a hash-map key for the text joined with a space
    /// (`SPACED`) or with nothing.
    fn ngram<const SPACED: bool>(&self, start: usize, n: usize) -> NGram<'_, SPACED> {
        let mut hash = 0;
        for (i, &(word_hash, word_power)) in self.hashes[start..start + n].iter().enumerate() {
            if SPACED && i > 0 {
                hash = add_mod(mul_mod(hash, BASE), SPACE_HASH);
            }
            hash = add_mod(mul_mod(hash, word_power), word_hash);
        }
        NGram {
            words: &self.words[start..start + n],
            hash,
        }
    }

    /// `len()` of the joined n-gram.
    fn ngram_chars(&self, start: usize, n: usize, spaced: bool) -> usize {
        let words: usize = self.chars[start..start + n].iter().sum();
        words + if spaced { n - 1 } else { 0 }
    }
}

/// A word n-gram that hashes and compares as its words joined with a space (`SPACED`) or with
/// nothing, as datatrove's `" ".join` / `"".join` strings would.
struct NGram<'a, const SPACED: bool> {
    words: &'a [&'a str],
    hash: u64,
}

impl<const SPACED: bool> NGram<'_, SPACED> {
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.words.iter().enumerate().flat_map(|(i, w)| {
            let space: &[u8] = if SPACED && i > 0 { b" " } else { b"" };
            space.iter().chain(w.as_bytes()).copied()
        })
    }
}

impl<const SPACED: bool> PartialEq for NGram<'_, SPACED> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (self.words == other.words || self.bytes().eq(other.bytes()))
    }
}

impl<const SPACED: bool> Eq for NGram<'_, SPACED> {}

impl<const SPACED: bool> Hash for NGram<'_, SPACED> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// datatrove's `find_top_duplicate` over `get_n_grams(words, n)`: the length of the most
/// frequent space-joined n-gram times its count. On a tie in count, `Counter.most_common(1)`
/// picks the n-gram seen first.
fn top_ngram_chars(words: &Words, n: usize) -> usize {
    let count = words.len() + 1 - n;
    // Per distinct n-gram: (occurrences, first start).
    let mut counts: FxHashMap<NGram<'_, true>, (usize, usize)> =
        FxHashMap::with_capacity_and_hasher(count, Default::default());
    for start in 0..count {
        counts
            .entry(words.ngram::<true>(start, n))
            .or_insert((0, start))
            .0 += 1;
    }
    let (occurrences, first) = counts
        .into_values()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .expect("at least one n-gram");
    words.ngram_chars(first, n, true) * occurrences
}

/// datatrove's `find_all_duplicate`: scanning left to right, an n-gram (joined without spaces)
/// seen before adds its length and the scan jumps past it; otherwise the scan moves one word.
fn duplicated_ngram_chars(words: &Words, n: usize) -> usize {
    let mut seen: FxHashSet<NGram<'_, false>> =
        FxHashSet::with_capacity_and_hasher(words.len(), Default::default());
    let (mut repeated_chars, mut start) = (0, 0);
    while start + n <= words.len() {
        let ngram = words.ngram::<false>(start, n);
        if seen.contains(&ngram) {
            repeated_chars += words.ngram_chars(start, n, false);
            start += n;
        } else {
            seen.insert(ngram);
            start += 1;
        }
    }
    repeated_chars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(text: &str) -> Option<String> {
        GopherRepetition::default()
            .judge(text)
            .reason()
            .map(str::to_string)
    }

    /// `n` distinct words `<prefix>0x <prefix>1x ...`, so that word n-gram checks stay quiet.
    fn distinct_words(prefix: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("{prefix}{i}x"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn splits_like_python_re_split() {
        // re.split(r"\n{2,}", "a\n\n\nb\nc\n\nd") == ['a', 'b\nc', 'd']
        assert_eq!(
            split_newline_runs("a\n\n\nb\nc\n\nd", 2),
            ["a", "b\nc", "d"]
        );
        // re.split("\n+", "\na\n\nb\n") == ['', 'a', 'b', '']
        assert_eq!(split_newline_runs("\na\n\nb\n", 1), ["", "a", "b", ""]);
        assert_eq!(split_newline_runs("", 2), [""]);
    }

    #[test]
    fn paragraph_and_line_reasons_in_order() {
        assert_eq!(judge("").as_deref(), Some("empty"));
        // 2 of 4 paragraphs repeat the first: 0.5 > 0.3.
        assert_eq!(
            judge("same para\n\nsame para\n\nsame para\n\nother one").as_deref(),
            Some("dup_para_frac")
        );
        // 1 of 4 paragraphs repeats (0.25), but it holds 150 of the 307 characters.
        let long = "long paragraph ".repeat(10);
        assert_eq!(
            judge(&format!("{long}\n\n{long}\n\nb\n\nc")).as_deref(),
            Some("dup_para_char_frac")
        );
        // Lines: 2 of 5 repeat (single newlines are not paragraph breaks).
        assert_eq!(
            judge("one line\nrepeat\nrepeat\nrepeat\nthe end").as_deref(),
            Some("dup_line_frac")
        );
        // 1 of 5 lines repeats, but with most of the characters.
        let long = "a long line that repeats ".repeat(4);
        assert_eq!(
            judge(&format!("{long}\nb\n{long}\nc\nd")).as_deref(),
            Some("dup_line_char_frac")
        );
        // Leading and trailing newlines give empty lines, which repeat each other: 1 of 42.
        let text = format!("\n{}\n", distinct_words("w", 40).replace(' ', "\n"));
        assert_eq!(judge(&text), None);
    }

    #[test]
    fn top_and_duplicated_ngram_reasons() {
        // "a b" 6 times in 55 chars: 3 * 6 / 55 > 0.2.
        let text = format!("{} a b a b a b a b a b a b", distinct_words("w", 8));
        assert_eq!(judge(&text).as_deref(), Some("top_2_gram"));
        // A run of 20 words seen twice: its second time is 70 of 369 characters (> 0.15),
        // while its most frequent 4-gram covers only 30.
        let run = distinct_words("r", 20);
        let text = format!("{run} {} {run}", distinct_words("w", 40));
        assert_eq!(judge(&text).as_deref(), Some("duplicated_5_n_grams"));
        // A run of 5: 15 of 229 characters.
        let run = distinct_words("r", 5);
        assert_eq!(
            judge(&format!("{run} {} {run}", distinct_words("w", 40))),
            None
        );
        assert_eq!(judge(&distinct_words("w", 200)), None);
    }

    #[test]
    fn ngrams_join_without_spaces_for_duplicates() {
        // ["ab", "c"] and ["a", "bc"] are the same "" -joined 2-gram.
        let words = Words::new(vec!["ab", "c", "a", "bc"]);
        assert_eq!(duplicated_ngram_chars(&words, 2), 3);
        // ... but different " "-joined 2-grams.
        assert!(words.ngram::<true>(0, 2) != words.ngram::<true>(2, 2));
        // The top n-gram on a count tie is the first seen: "xx yy" (5 chars) before "z w" (3).
        let words = Words::new(vec![
            "xx", "yy", "q", "z", "w", "r", "xx", "yy", "s", "z", "w",
        ]);
        assert_eq!(top_ngram_chars(&words, 2), 10);
        let words = Words::new(vec![
            "z", "w", "q", "xx", "yy", "r", "z", "w", "s", "xx", "yy",
        ]);
        assert_eq!(top_ngram_chars(&words, 2), 6);
    }

    #[test]
    fn greedy_scan_jumps_past_a_repeat() {
        // 1-grams: a b a a a → a repeats at 2, jump to 3: a repeats, jump to 4: a repeats.
        let words = Words::new(vec!["a", "b", "a", "a", "a"]);
        assert_eq!(duplicated_ngram_chars(&words, 1), 3);
        // 2-grams over x y x y x y: "xy" at 0, "yx" at 1, "xy" at 2 repeats → jump to 4: "xy".
        let words = Words::new(vec!["x", "y", "x", "y", "x", "y"]);
        assert_eq!(duplicated_ngram_chars(&words, 2), 4);
        assert_eq!(duplicated_ngram_chars(&words, 7), 0);
    }

    #[test]
    fn null_or_zero_switches_a_check_off() {
        let text = "same para\n\nsame para\n\nsame para\n\nother one";
        let off = GopherRepetition {
            dup_para_frac: None,
            dup_para_char_frac: Some(0.0),
            ..Default::default()
        };
        assert_eq!(off.judge(text).reason(), Some("dup_line_frac"));
    }

    #[test]
    fn odd_texts_do_not_panic() {
        for text in ["\n", "\n\n\n", " ", "\0\u{1}\u{fffd}", "é\n\né", "\r\n\r\n"] {
            let _ = GopherRepetition::default().judge(text);
        }
    }

    #[test]
    fn check_rejects_bad_params() {
        let bad = GopherRepetition {
            dup_line_frac: Some(1.5),
            top_n_grams: vec![(0, 0.2)],
            dup_n_grams: vec![(5, -0.1)],
            ..Default::default()
        };
        let params: Vec<&str> = bad.check().iter().map(|p| p.param).collect();
        assert_eq!(params, ["dup_line_frac", "top_n_grams", "dup_n_grams"]);
        assert!(GopherRepetition::default().check().is_empty());
    }
}
