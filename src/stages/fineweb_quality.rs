//! `fineweb_quality`: FineWeb's own line-level rules, as datatrove 0.10.1's
//! `FineWebQualityFilter` applies them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{self, DocFilter, Measured, Verdict, find_duplicates, ratio_histogram};
use super::{BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::io::stats::{Drops, Histogram};
use crate::text::{self, python};

/// Drops documents made of unpunctuated, short or repeated lines, or of lists, as datatrove
/// 0.10.1's `FineWebQualityFilter` does, with the same rules, defaults and reasons. The rules are
/// FineWeb's (Penedo et al. 2024). Lines are split at `\n` only, and lines that are blank are
/// ignored; lines are not stripped, so trailing spaces count. The checks run in this order and the
/// first that fails is the reason: `empty` (no non-blank line); `line_punct_ratio` (fewer than
/// `line_punct_thr` of the lines end with one of `stop_chars`); `short_line_ratio` (more than
/// `short_line_thr` of the lines have at most `short_line_length` characters); `char_dup_ratio`
/// (the characters of lines that repeat an earlier line exceed `char_duplicates_ratio` of the
/// text's characters, newlines not counted); `list_ratio` (more than `new_line_ratio` newlines per
/// word, punctuation marks counting as words as in datatrove's spaCy word splitting; a text with no
/// word passes, where datatrove would raise `ZeroDivisionError`). datatrove's `language` (always
/// English here) and `exclusion_writer` (use the writer's `rejects`) have no equivalent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FinewebQuality {
    /// Smallest share of lines that end with one of `stop_chars`.
    pub line_punct_thr: f64,
    /// Do not drop a document none of whose lines ends with one of `stop_chars`.
    pub line_punct_exclude_zero: bool,
    /// Line endings that count as punctuation; unset: datatrove's `TERMINAL_PUNCTUATION` (about
    /// 150 sentence-ending characters of many scripts, `.`, `!` and `?` among them).
    pub stop_chars: Option<Vec<String>>,
    /// Largest share of short lines.
    pub short_line_thr: f64,
    /// A line of at most this many characters is short.
    pub short_line_length: u64,
    /// Largest share of the text's characters (newlines not counted) in lines that repeat an
    /// earlier line.
    pub char_duplicates_ratio: f64,
    /// Largest number of newlines per word.
    pub new_line_ratio: f64,
}

impl Default for FinewebQuality {
    fn default() -> Self {
        FinewebQuality {
            line_punct_thr: 0.12,
            line_punct_exclude_zero: false,
            stop_chars: None,
            short_line_thr: 0.67,
            short_line_length: 30,
            char_duplicates_ratio: 0.01,
            new_line_ratio: 0.3,
        }
    }
}

impl StageConfig for FinewebQuality {
    const TYPE: &'static str = "fineweb_quality";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (param, value) in [
            ("line_punct_thr", self.line_punct_thr),
            ("short_line_thr", self.short_line_thr),
            ("char_duplicates_ratio", self.char_duplicates_ratio),
            ("new_line_ratio", self.new_line_ratio),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(ParamProblem {
                    param,
                    message: format!("`{param}` {value} is not a number >= 0"),
                });
            }
        }
        match &self.stop_chars {
            Some(chars) if chars.is_empty() => problems.push(ParamProblem {
                param: "stop_chars",
                message: "`stop_chars` is empty; leave it unset for datatrove's terminal \
                          punctuation"
                    .into(),
            }),
            Some(chars) if chars.iter().any(String::is_empty) => problems.push(ParamProblem {
                param: "stop_chars",
                message: "`stop_chars` has an empty string, which every line ends with".into(),
            }),
            _ => {}
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        Ok(doc_filter::stage(stage_id, self.clone()))
    }
}

impl FinewebQuality {
    fn ends_with_stop_char(&self, line: &str) -> bool {
        match &self.stop_chars {
            Some(chars) => chars.iter().any(|c| line.ends_with(c.as_str())),
            None => line
                .chars()
                .next_back()
                .is_some_and(python::is_terminal_punct),
        }
    }
}

impl DocFilter for FinewebQuality {
    fn measures(&self) -> Vec<(String, Histogram)> {
        vec![
            (
                "line_punct_ratio".into(),
                ratio_histogram(
                    "share of lines ending in terminal punctuation",
                    Some(self.line_punct_thr),
                    Drops::Below,
                ),
            ),
            (
                "short_line_ratio".into(),
                ratio_histogram(
                    &format!(
                        "share of lines of at most {} characters",
                        self.short_line_length
                    ),
                    Some(self.short_line_thr),
                    Drops::Above,
                ),
            ),
            (
                "char_dup_ratio".into(),
                ratio_histogram(
                    "share of characters in duplicated lines",
                    Some(self.char_duplicates_ratio),
                    Drops::Above,
                ),
            ),
            (
                "list_ratio".into(),
                ratio_histogram("newlines per word", Some(self.new_line_ratio), Drops::Above),
            ),
        ]
    }

    fn judge_measured(&self, text: &str, m: &mut Measured) -> Verdict {
        let lines: Vec<&str> = text
            .split('\n')
            .filter(|line| !python::strip(line).is_empty())
            .collect();
        if lines.is_empty() {
            return Verdict::drop("empty");
        }
        let share = |n: usize| n as f64 / lines.len() as f64;

        let punctuated = share(
            lines
                .iter()
                .filter(|line| self.ends_with_stop_char(line))
                .count(),
        );
        m.set(0, punctuated);
        if punctuated < self.line_punct_thr && !(punctuated == 0.0 && self.line_punct_exclude_zero)
        {
            return Verdict::drop("line_punct_ratio");
        }

        let short = share(
            lines
                .iter()
                .filter(|line| python::len(line) as u64 <= self.short_line_length)
                .count(),
        );
        m.set(1, short);
        if short > self.short_line_thr {
            return Verdict::drop("short_line_ratio");
        }

        let (_, duplicate_chars) = find_duplicates(&lines);
        let chars_without_newlines = python::len(text) - python::count(text, "\n");
        // Never 0: a non-blank line has a character that is not a newline.
        let dup = duplicate_chars as f64 / chars_without_newlines as f64;
        m.set(2, dup);
        if dup > self.char_duplicates_ratio {
            return Verdict::drop("char_dup_ratio");
        }

        let words = text::words(text).len();
        let newlines = python::count(text, "\n");
        if words > 0 {
            m.set(3, newlines as f64 / words as f64);
        }
        if words > 0 && newlines as f64 / words as f64 > self.new_line_ratio {
            return Verdict::drop("list_ratio");
        }
        Verdict::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(text: &str) -> Option<String> {
        FinewebQuality::default()
            .judge(text)
            .reason()
            .map(str::to_string)
    }

    const GOOD: &str = "This line is a long enough sentence to be kept by the filter.";

    #[test]
    fn prose_is_kept() {
        let lines: Vec<String> = (0..5).map(|i| format!("{GOOD} Number {i}.")).collect();
        assert_eq!(judge(&lines.join("\n")), None);
    }

    #[test]
    fn each_reason_in_order() {
        assert_eq!(judge("").as_deref(), Some("empty"));
        assert_eq!(judge(" \n\t\n\u{3000}").as_deref(), Some("empty"));
        // No line ends with terminal punctuation; a trailing space defeats it too.
        assert_eq!(
            judge("First line without a stop\nSecond line with a space. ").as_deref(),
            Some("line_punct_ratio")
        );
        // A full-width full stop and a Devanagari danda are terminal punctuation.
        assert_eq!(
            judge("\u{5168}\u{89d2}\u{ff0e}\nHindi sentence \u{964}").as_deref(),
            Some("short_line_ratio")
        );
        // 2 of 3 lines are short: 0.667 is not above 0.67.
        let text = format!("Short one.\nShort two.\n{GOOD}");
        assert_eq!(judge(&text), None);
        let text = format!("Short one.\nShort two.\nShort three.\n{GOOD}");
        assert_eq!(judge(&text).as_deref(), Some("short_line_ratio"));
        // A repeated line; blank lines between are ignored.
        let text = format!("{GOOD} One.\n\n\n{GOOD} Two.\n{GOOD} One.");
        assert_eq!(judge(&text).as_deref(), Some("char_dup_ratio"));
        // Many newlines for few words: blank lines are newlines too.
        let text = format!("{GOOD} One.\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n{GOOD} Two.");
        assert_eq!(judge(&text).as_deref(), Some("list_ratio"));
    }

    #[test]
    fn params() {
        let exclude_zero = FinewebQuality {
            line_punct_exclude_zero: true,
            ..Default::default()
        };
        let text = format!("{GOOD} A\n{GOOD} B");
        assert_eq!(judge(&text).as_deref(), Some("line_punct_ratio"));
        assert_eq!(exclude_zero.judge(&text), Verdict::Keep);
        let custom = FinewebQuality {
            stop_chars: Some(vec![" A".into(), " B".into()]),
            ..Default::default()
        };
        assert_eq!(custom.judge(&text), Verdict::Keep);
        // Only `\n` splits lines: `\r` stays inside one.
        assert_eq!(judge(&format!("{GOOD}\r{GOOD}\r{GOOD}")).as_deref(), None);
        let bad = FinewebQuality {
            short_line_thr: f64::NAN,
            stop_chars: Some(vec![]),
            ..Default::default()
        };
        let params: Vec<&str> = bad.check().iter().map(|p| p.param).collect();
        assert_eq!(params, ["short_line_thr", "stop_chars"]);
        assert!(FinewebQuality::default().check().is_empty());
    }
}
