//! `gopher_quality`: the quality rules of Gopher (Rae et al. 2021), as datatrove 0.10.1's
//! `GopherQualityFilter` applies them.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{self, DocFilter, Measured, Verdict, enabled, ratio_histogram};
use super::{BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::io::stats::{Drops, Histogram, Scale};
use crate::text::{self, python};

/// Drops documents that do not look like prose (too few or too long words, symbols, bullet lists,
/// few letters or stop words) as datatrove 0.10.1's `GopherQualityFilter` does, with the same
/// rules, defaults (FineWeb's) and reasons. The rules are Gopher's (Rae et al. 2021). Words are
/// datatrove's English words (spaCy's tokenizer), in which punctuation marks are words too;
/// "non-symbol" words have a character outside datatrove's punctuation set. The checks run in this
/// order and the first that fails is the reason: `gopher_short_doc` / `gopher_long_doc` (non-symbol
/// words outside [`min_doc_words`, `max_doc_words`]); `gopher_below_avg_threshold` /
/// `gopher_above_avg_threshold` (their mean length in characters outside [`min_avg_word_length`,
/// `max_avg_word_length`]); `gopher_too_many_hashes` / `gopher_too_many_ellipsis` (`#`, or `...`
/// and `…`, per word above `max_symbol_word_ratio`); `gopher_too_many_bullets` (more than
/// `max_bullet_lines_ratio` of the lines start with `•` or `-`); `gopher_too_many_end_ellipsis`
/// (more than `max_ellipsis_lines_ratio` of the lines end with `...` or `…`);
/// `gopher_below_alpha_threshold` (fewer than `max_non_alpha_words_ratio` of the words hold a
/// letter; datatrove's name for what is a minimum); `gopher_enough_stop_words` (sic: fewer than
/// `min_stop_words` of `stop_words` appear, matched case-sensitively). Lines are Python's
/// `splitlines()`. A threshold set to null (or 0, as in datatrove) switches its check off; a ratio
/// whose denominator is 0 (possible only with `min_doc_words` off, where datatrove would raise
/// `ZeroDivisionError`) passes. datatrove's `language` (always English here) and `exclusion_writer`
/// (use the writer's `rejects`) have no equivalent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GopherQuality {
    /// Fewest non-symbol words.
    pub min_doc_words: Option<u64>,
    /// Most non-symbol words.
    pub max_doc_words: Option<u64>,
    /// Smallest mean length of the non-symbol words, in characters.
    pub min_avg_word_length: Option<f64>,
    /// Largest mean length of the non-symbol words, in characters.
    pub max_avg_word_length: Option<f64>,
    /// Largest count of `#`, and of `...` plus `…`, per word (all words, punctuation included).
    pub max_symbol_word_ratio: Option<f64>,
    /// Largest share of lines starting with `•` or `-` (after leading whitespace).
    pub max_bullet_lines_ratio: Option<f64>,
    /// Largest share of lines ending with `...` or `…` (before trailing whitespace).
    pub max_ellipsis_lines_ratio: Option<f64>,
    /// Smallest share of words (punctuation included) with at least one letter. The name is
    /// datatrove's.
    pub max_non_alpha_words_ratio: Option<f64>,
    /// Fewest distinct `stop_words` the document must contain.
    pub min_stop_words: Option<u64>,
    /// The stop words, matched case-sensitively against whole words.
    pub stop_words: Vec<String>,
}

/// datatrove's `STOP_WORDS`.
const STOP_WORDS: [&str; 8] = ["the", "be", "to", "of", "and", "that", "have", "with"];

impl Default for GopherQuality {
    fn default() -> Self {
        GopherQuality {
            min_doc_words: Some(50),
            max_doc_words: Some(100_000),
            min_avg_word_length: Some(3.0),
            max_avg_word_length: Some(10.0),
            max_symbol_word_ratio: Some(0.1),
            max_bullet_lines_ratio: Some(0.9),
            max_ellipsis_lines_ratio: Some(0.3),
            max_non_alpha_words_ratio: Some(0.8),
            min_stop_words: Some(2),
            stop_words: STOP_WORDS.iter().map(|w| w.to_string()).collect(),
        }
    }
}

impl StageConfig for GopherQuality {
    const TYPE: &'static str = "gopher_quality";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut problem =
            |param: &'static str, message: String| problems.push(ParamProblem { param, message });
        if let (Some(min), Some(max)) = (self.min_doc_words, self.max_doc_words)
            && min > 0
            && max > 0
            && min > max
        {
            problem(
                "max_doc_words",
                format!("`max_doc_words` {max} is below `min_doc_words` {min}"),
            );
        }
        for (param, value) in [
            ("min_avg_word_length", self.min_avg_word_length),
            ("max_avg_word_length", self.max_avg_word_length),
            ("max_symbol_word_ratio", self.max_symbol_word_ratio),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v >= 0.0)
            {
                problem(param, format!("`{param}` {v} is not a number >= 0"));
            }
        }
        if let (Some(min), Some(max)) = (
            enabled(self.min_avg_word_length),
            enabled(self.max_avg_word_length),
        ) && min > max
        {
            problem(
                "max_avg_word_length",
                format!("`max_avg_word_length` {max} is below `min_avg_word_length` {min}"),
            );
        }
        for (param, value) in [
            ("max_bullet_lines_ratio", self.max_bullet_lines_ratio),
            ("max_ellipsis_lines_ratio", self.max_ellipsis_lines_ratio),
            ("max_non_alpha_words_ratio", self.max_non_alpha_words_ratio),
        ] {
            if let Some(v) = value
                && !(0.0..=1.0).contains(&v)
            {
                problem(param, format!("`{param}` {v} is not in [0, 1]"));
            }
        }
        let distinct_stop_words = self.stop_words.iter().collect::<HashSet<_>>().len();
        if let Some(min) = self.min_stop_words
            && min as usize > distinct_stop_words
        {
            problem(
                "min_stop_words",
                format!(
                    "`min_stop_words` {min} is more than the {distinct_stop_words} distinct \
                     `stop_words`: every document would be dropped"
                ),
            );
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        Ok(doc_filter::stage(stage_id, self.clone()))
    }
}

fn enabled_count(threshold: Option<u64>) -> Option<u64> {
    threshold.filter(|t| *t != 0)
}

/// `part / whole`, or `None` where Python would divide by zero.
fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Slots of the figures `gopher_quality` measures.
const WORDS: usize = 0;
const MEAN_WORD: usize = 1;
const HASHES: usize = 2;
const ELLIPSES: usize = 3;
const BULLETS: usize = 4;
const END_ELLIPSIS: usize = 5;
const ALPHA: usize = 6;
const STOP: usize = 7;

impl DocFilter for GopherQuality {
    fn measures(&self) -> Vec<(String, Histogram)> {
        let count = |c: Option<u64>| enabled_count(c).map(|c| c as f64);
        let max = self.max_symbol_word_ratio;
        vec![
            (
                "non_symbol_words".into(),
                Histogram::new("non-symbol words", 1.0, 1e6, 24, Scale::Log10)
                    .threshold(count(self.min_doc_words), Drops::Below)
                    .threshold(count(self.max_doc_words), Drops::Above),
            ),
            (
                "mean_word_length".into(),
                Histogram::new(
                    "mean word length (characters)",
                    0.0,
                    20.0,
                    40,
                    Scale::Linear,
                )
                .threshold(enabled(self.min_avg_word_length), Drops::Below)
                .threshold(enabled(self.max_avg_word_length), Drops::Above),
            ),
            (
                "hash_word_ratio".into(),
                ratio_histogram("# per word", enabled(max), Drops::Above),
            ),
            (
                "ellipsis_word_ratio".into(),
                ratio_histogram("... and … per word", enabled(max), Drops::Above),
            ),
            (
                "bullet_lines_ratio".into(),
                ratio_histogram(
                    "share of lines starting with a bullet",
                    enabled(self.max_bullet_lines_ratio),
                    Drops::Above,
                ),
            ),
            (
                "ellipsis_lines_ratio".into(),
                ratio_histogram(
                    "share of lines ending with an ellipsis",
                    enabled(self.max_ellipsis_lines_ratio),
                    Drops::Above,
                ),
            ),
            (
                "alpha_words_ratio".into(),
                ratio_histogram(
                    "share of words with a letter",
                    enabled(self.max_non_alpha_words_ratio),
                    Drops::Below,
                ),
            ),
            (
                "stop_words".into(),
                Histogram::new(
                    "distinct stop words (counting stops at the minimum)",
                    0.0,
                    10.0,
                    10,
                    Scale::Linear,
                )
                .threshold(count(self.min_stop_words), Drops::Below),
            ),
        ]
    }

    fn judge_measured(&self, text: &str, m: &mut Measured) -> Verdict {
        let words = text::words(text);
        let n_words = words.len();
        // Lengths of the words with a character outside datatrove's punctuation set.
        let non_symbol_lengths: Vec<usize> = words
            .iter()
            .filter(|w| w.chars().any(|c| !python::is_datatrove_punct(c)))
            .map(|w| python::len(w))
            .collect();
        let n_non_symbol = non_symbol_lengths.len() as u64;
        m.set(WORDS, n_non_symbol as f64);

        if let Some(min) = enabled_count(self.min_doc_words)
            && n_non_symbol < min
        {
            return Verdict::drop("gopher_short_doc");
        }
        if let Some(max) = enabled_count(self.max_doc_words)
            && n_non_symbol > max
        {
            return Verdict::drop("gopher_long_doc");
        }

        // numpy's mean of no words is NaN, which fails no comparison.
        let mean_length = ratio(non_symbol_lengths.iter().sum(), non_symbol_lengths.len());
        if let Some(mean) = mean_length {
            m.set(MEAN_WORD, mean);
        }
        if let (Some(min), Some(mean)) = (enabled(self.min_avg_word_length), mean_length)
            && mean < min
        {
            return Verdict::drop("gopher_below_avg_threshold");
        }
        if let (Some(max), Some(mean)) = (enabled(self.max_avg_word_length), mean_length)
            && mean > max
        {
            return Verdict::drop("gopher_above_avg_threshold");
        }

        if let Some(max) = enabled(self.max_symbol_word_ratio) {
            let hashes = ratio(python::count(text, "#"), n_words);
            hashes.inspect(|&r| m.set(HASHES, r));
            if hashes.is_some_and(|r| r > max) {
                return Verdict::drop("gopher_too_many_hashes");
            }
            let ellipses = python::count(text, "...") + python::count(text, "…");
            let ellipses = ratio(ellipses, n_words);
            ellipses.inspect(|&r| m.set(ELLIPSES, r));
            if ellipses.is_some_and(|r| r > max) {
                return Verdict::drop("gopher_too_many_ellipsis");
            }
        }

        let lines = python::splitlines(text);
        if let Some(max) = enabled(self.max_bullet_lines_ratio) {
            let bullets = lines
                .iter()
                .filter(|l| {
                    let l = python::lstrip(l);
                    l.starts_with('•') || l.starts_with('-')
                })
                .count();
            let bullets = ratio(bullets, lines.len());
            bullets.inspect(|&r| m.set(BULLETS, r));
            if bullets.is_some_and(|r| r > max) {
                return Verdict::drop("gopher_too_many_bullets");
            }
        }
        if let Some(max) = enabled(self.max_ellipsis_lines_ratio) {
            let ellipsis_ends = lines
                .iter()
                .filter(|l| {
                    let l = python::rstrip(l);
                    l.ends_with("...") || l.ends_with('…')
                })
                .count();
            let ellipsis_ends = ratio(ellipsis_ends, lines.len());
            ellipsis_ends.inspect(|&r| m.set(END_ELLIPSIS, r));
            if ellipsis_ends.is_some_and(|r| r > max) {
                return Verdict::drop("gopher_too_many_end_ellipsis");
            }
        }

        if let Some(min) = enabled(self.max_non_alpha_words_ratio) {
            let alpha_words = words
                .iter()
                .filter(|w| w.chars().any(python::is_alpha))
                .count();
            let alpha_words = ratio(alpha_words, n_words);
            alpha_words.inspect(|&r| m.set(ALPHA, r));
            if alpha_words.is_some_and(|r| r < min) {
                return Verdict::drop("gopher_below_alpha_threshold");
            }
        }

        if let Some(min) = enabled_count(self.min_stop_words) {
            let stop_words: HashSet<&str> = self.stop_words.iter().map(String::as_str).collect();
            let mut found = HashSet::new();
            for word in &words {
                if stop_words.contains(word) {
                    found.insert(*word);
                    if found.len() as u64 >= min {
                        break;
                    }
                }
            }
            m.set(STOP, found.len() as f64);
            if (found.len() as u64) < min {
                return Verdict::drop("gopher_enough_stop_words");
            }
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(text: &str) -> Option<String> {
        GopherQuality::default()
            .judge(text)
            .reason()
            .map(str::to_string)
    }

    /// A plain English sentence of 10 words, 2 of them stop words.
    const SENTENCE: &str = "The quick brown fox jumps over the lazy dog with joy.";

    fn prose(sentences: usize) -> String {
        vec![SENTENCE; sentences].join(" ")
    }

    #[test]
    fn prose_is_kept() {
        assert_eq!(judge(&prose(6)), None);
        assert_eq!(judge(&prose(6).replace(". ", ".\n")), None);
    }

    #[test]
    fn word_count_and_length_reasons() {
        assert_eq!(judge(&prose(4)).as_deref(), Some("gopher_short_doc"));
        assert_eq!(judge("").as_deref(), Some("gopher_short_doc"));
        // Punctuation marks are not counted as words here.
        assert_eq!(
            judge(&format!("{} . . . , , , ; ;", prose(4))).as_deref(),
            Some("gopher_short_doc")
        );
        let small = GopherQuality {
            max_doc_words: Some(20),
            ..Default::default()
        };
        assert_eq!(small.judge(&prose(6)).reason(), Some("gopher_long_doc"));
        assert_eq!(
            judge(&"to be or no it is an ox, ".repeat(10)).as_deref(),
            Some("gopher_below_avg_threshold")
        );
        assert_eq!(
            judge(&"extraordinarily incomprehensible characteristics the of ".repeat(20))
                .as_deref(),
            Some("gopher_above_avg_threshold")
        );
    }

    #[test]
    fn symbol_line_and_alpha_reasons() {
        let p = prose(6);
        // 12 `#` for 90 words (`#` is a word of its own).
        assert_eq!(
            judge(&format!("{p} {}", "#tag ".repeat(12))).as_deref(),
            Some("gopher_too_many_hashes")
        );
        assert_eq!(
            judge(&format!("{} {p}", "wait... ".repeat(12))).as_deref(),
            Some("gopher_too_many_ellipsis")
        );
        let bullets: Vec<String> = (0..60)
            .map(|i| format!("- important element {i} regarding the catalogue"))
            .collect();
        assert_eq!(
            judge(&bullets.join("\n")).as_deref(),
            Some("gopher_too_many_bullets")
        );
        let trailing: Vec<String> = (0..10)
            .map(|i| format!("{SENTENCE} {i} more\u{2026}  "))
            .collect();
        assert_eq!(
            judge(&trailing.join("\r\n")).as_deref(),
            Some("gopher_too_many_end_ellipsis")
        );
        // Numbers hold no letter: 30 of 90 words.
        assert_eq!(
            judge(&format!("{p} {}", "2024 12 31 ".repeat(10))).as_deref(),
            Some("gopher_below_alpha_threshold")
        );
        assert_eq!(
            judge(&"quick brown foxes jump over lazy dogs again. ".repeat(10)).as_deref(),
            Some("gopher_enough_stop_words")
        );
        // Stop words match case-sensitively: "The" and "With" do not count.
        assert_eq!(
            judge(&"The quick brown fox jumps over lazy dogs With joy. ".repeat(10)).as_deref(),
            Some("gopher_enough_stop_words")
        );
    }

    #[test]
    fn switched_off_checks_and_zero_denominators() {
        let all_off = GopherQuality {
            min_doc_words: None,
            max_doc_words: None,
            min_avg_word_length: None,
            max_avg_word_length: Some(0.0),
            max_symbol_word_ratio: None,
            max_bullet_lines_ratio: None,
            max_ellipsis_lines_ratio: None,
            max_non_alpha_words_ratio: None,
            min_stop_words: Some(0),
            stop_words: vec![],
        };
        assert_eq!(all_off.judge("#"), Verdict::Keep);
        let no_min = GopherQuality {
            min_doc_words: None,
            min_stop_words: None,
            ..Default::default()
        };
        for text in ["", " ", "\n", "...", "\u{0}"] {
            let _ = no_min.judge(text);
        }
        assert_eq!(no_min.judge(""), Verdict::Keep);
    }

    #[test]
    fn check_rejects_bad_params() {
        let bad = GopherQuality {
            min_doc_words: Some(10),
            max_doc_words: Some(5),
            max_non_alpha_words_ratio: Some(2.0),
            min_stop_words: Some(3),
            stop_words: vec!["a".into(), "a".into()],
            ..Default::default()
        };
        let params: Vec<&str> = bad.check().iter().map(|p| p.param).collect();
        assert_eq!(
            params,
            [
                "max_doc_words",
                "max_non_alpha_words_ratio",
                "min_stop_words"
            ]
        );
        assert!(GopherQuality::default().check().is_empty());
    }
}
