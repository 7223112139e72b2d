//! `c4_quality`: the line and page rules of C4 (Raffel et al. 2020), as datatrove 0.10.1's
//! `C4QualityFilter` applies them. Kept documents lose their filtered lines.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{self, DocFilter, Verdict};
use super::{BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::text::{self, python};

/// Removes boilerplate lines from documents and drops the documents left with too few sentences as
/// datatrove 0.10.1's `C4QualityFilter` does, with the same rules, defaults and reasons (FineWeb
/// sets `filter_no_terminal_punct: false`). The rules are C4's (Raffel et al. 2020). Lines are
/// Python's `splitlines()`, each stripped. A line is removed when a word (split at whitespace) is
/// longer than `max_word_length`, when (after `[1]`, `[edit]` and `[citation needed]` citations are
/// removed) it does not end with `.`, `?`, `!`, `"` or `'` or ends with `...`, when it has fewer
/// than `min_words_per_line` words, when it mentions `javascript`, or when it mentions a cookie or
/// terms-of-use policy. The whole document is dropped with reason `lorem_ipsum` when a line left so
/// far holds "lorem ipsum", `curly_bracket` when one holds `{`, and `too_few_sentences` when the
/// kept lines hold fewer than `min_num_sentences` sentences (spaCy's sentencizer, as datatrove
/// counts them). A kept document's `text` becomes its kept lines, joined with newlines. datatrove's
/// `split_paragraph: false` (sentences instead of lines), `language` (always English here) and
/// `exclusion_writer` (use the writer's `rejects`) have no equivalent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct C4Quality {
    /// Remove Wikipedia-style citations (`[1]`, `[]`, `[edit]`, `[citation needed]`) from lines.
    pub remove_citations: bool,
    /// Remove lines that do not end with terminal punctuation (`.`, `?`, `!`, `"`, `'`) or that
    /// end with `...`. FineWeb sets this to false.
    pub filter_no_terminal_punct: bool,
    /// Fewest sentences in the kept lines; -1 switches the check off.
    pub min_num_sentences: i64,
    /// Fewest words a line must have; -1 switches the check off.
    pub min_words_per_line: i64,
    /// Remove lines with a word longer than this (in characters); -1 switches the check off.
    pub max_word_length: i64,
    /// Drop documents with "lorem ipsum" (any case) in a line not removed before that check.
    pub filter_lorem_ipsum: bool,
    /// Remove lines that mention "javascript" (any case).
    pub filter_javascript: bool,
    /// Drop documents with `{` in a line not removed before that check.
    pub filter_curly_bracket: bool,
    /// Remove lines that mention "terms of use", "privacy policy", "cookie policy", "uses
    /// cookies", "use of cookies" or "use cookies" (any case).
    pub filter_policy: bool,
}

impl Default for C4Quality {
    fn default() -> Self {
        C4Quality {
            remove_citations: true,
            filter_no_terminal_punct: true,
            min_num_sentences: 5,
            min_words_per_line: 3,
            max_word_length: 1000,
            filter_lorem_ipsum: true,
            filter_javascript: true,
            filter_curly_bracket: true,
            filter_policy: true,
        }
    }
}

const END_PUNCTUATION: [char; 5] = ['.', '?', '!', '"', '\''];
const POLICY_SUBSTRINGS: [&str; 6] = [
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
];

impl StageConfig for C4Quality {
    const TYPE: &'static str = "c4_quality";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (param, value) in [
            ("min_num_sentences", self.min_num_sentences),
            ("min_words_per_line", self.min_words_per_line),
            ("max_word_length", self.max_word_length),
        ] {
            if value < -1 {
                problems.push(ParamProblem {
                    param,
                    message: format!("`{param}` is {value}: use -1 to switch the check off"),
                });
            }
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        Ok(doc_filter::stage(stage_id, self.clone()))
    }
}

impl DocFilter for C4Quality {
    fn judge_measured(&self, text: &str, _: &mut doc_filter::Measured) -> Verdict {
        let mut sentences: i64 = 0;
        let mut kept_lines: Vec<std::borrow::Cow<'_, str>> = Vec::new();
        for line in python::splitlines(text) {
            let line = python::strip(line);
            // Counted before citations are removed, and not recounted after.
            let mut words = 0i64;
            let mut longest_word = 0;
            for word in python::split_whitespace(line) {
                words += 1;
                longest_word = longest_word.max(python::len(word));
            }
            if self.max_word_length != -1 && longest_word as i64 > self.max_word_length {
                continue;
            }
            let line = if self.remove_citations {
                remove_citations(line)
            } else {
                line.into()
            };
            if self.filter_no_terminal_punct
                && (!line.ends_with(END_PUNCTUATION) || line.ends_with("..."))
            {
                continue;
            }
            if words < self.min_words_per_line {
                continue;
            }
            // Only ASCII phrases are looked for, so only lowercasing that can produce ASCII
            // matters (`K` KELVIN SIGN → `k`); `to_lowercase` does it as Python's `lower()` does.
            let lower = line.to_lowercase();
            if self.filter_lorem_ipsum && lower.contains("lorem ipsum") {
                return Verdict::drop("lorem_ipsum");
            }
            if self.filter_javascript && lower.contains("javascript") {
                continue;
            }
            if self.filter_curly_bracket && line.contains('{') {
                return Verdict::drop("curly_bracket");
            }
            if self.filter_policy && POLICY_SUBSTRINGS.iter().any(|p| lower.contains(p)) {
                continue;
            }
            if self.min_num_sentences != -1 {
                sentences += text::sentence_count(&line) as i64;
            }
            kept_lines.push(line);
        }
        if sentences < self.min_num_sentences {
            return Verdict::drop("too_few_sentences");
        }
        let kept = python::strip(&kept_lines.join("\n")).to_string();
        if kept == text {
            Verdict::Keep
        } else {
            Verdict::Rewrite(kept)
        }
    }
}

/// `CITATION_REGEX.sub("", line)` with `CITATION_REGEX = \[\d*]|\[edit]|\[citation needed]`:
/// matches are found left to right without overlaps, and what removing one joins up is not
/// searched again. `\d` is any Unicode decimal digit, as in Python's `re`.
fn remove_citations(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains('[') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut copied_to = 0;
    let mut search_from = 0;
    while let Some(offset) = line[search_from..].find('[') {
        let open = search_from + offset;
        let rest = &line[open + 1..];
        let digits = rest.len() - rest.trim_start_matches(python::is_decimal).len();
        let matched = if rest[digits..].starts_with(']') {
            Some(digits + 1)
        } else if rest.starts_with("edit]") {
            Some("edit]".len())
        } else if rest.starts_with("citation needed]") {
            Some("citation needed]".len())
        } else {
            None
        };
        match matched {
            Some(len) => {
                out.push_str(&line[copied_to..open]);
                copied_to = open + 1 + len;
                search_from = copied_to;
            }
            None => search_from = open + 1,
        }
    }
    if copied_to == 0 {
        return line.into();
    }
    out.push_str(&line[copied_to..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fineweb() -> C4Quality {
        C4Quality {
            filter_no_terminal_punct: false,
            ..Default::default()
        }
    }

    const GOOD: &str = "This line is a fine sentence.";

    fn good_lines(n: usize) -> String {
        vec![GOOD; n].join("\n")
    }

    #[test]
    fn citations_are_removed_like_python_re_sub() {
        assert_eq!(remove_citations("a[1] b[23][edit] c"), "a b c");
        assert_eq!(remove_citations("x[] y[citation needed]."), "x y.");
        // Arabic-Indic digits are `\d`; letters and "[Edit]" are not citations.
        assert_eq!(
            remove_citations("a[\u{661}\u{662}] b[1a] [Edit]"),
            "a b[1a] [Edit]"
        );
        // What a removal joins up is not searched again: "[[1]1]" → "[1]".
        assert_eq!(remove_citations("[[1]1]"), "[1]");
        assert_eq!(remove_citations("[ unclosed [2"), "[ unclosed [2");
        assert_eq!(remove_citations("é[3]ü"), "éü");
    }

    #[test]
    fn keeps_five_sentences_and_rewrites_the_text() {
        let text = format!("  Menu\n{}\nHome | About\r\n{GOOD}  \n", good_lines(4));
        assert_eq!(
            C4Quality::default().judge(&text),
            Verdict::Rewrite(good_lines(5))
        );
        // Nothing to remove: kept as is.
        assert_eq!(C4Quality::default().judge(&good_lines(5)), Verdict::Keep);
        assert_eq!(
            C4Quality::default().judge(&good_lines(4)).reason(),
            Some("too_few_sentences")
        );
        assert_eq!(
            C4Quality::default().judge("").reason(),
            Some("too_few_sentences")
        );
    }

    #[test]
    fn line_rules() {
        let c4 = C4Quality::default();
        let judge = |extra: &str| c4.judge(&format!("{}\n{extra}", good_lines(5)));
        let kept = Verdict::Rewrite(good_lines(5));
        // No terminal punctuation, an ellipsis, too few words, javascript, policy, long word.
        for line in [
            "No terminal punctuation here",
            "It ends with an ellipsis...",
            "Too short.",
            "Please enable JavaScript to view this page.",
            "This site uses Cookies to work.",
            "Read our Privacy Policy now.",
            &format!("A {} word.", "x".repeat(1001)),
            // The citation is removed after the words are counted: this ends with a space.
            "Three words here. [1]",
        ] {
            assert_eq!(judge(line), kept, "{line:?}");
        }
        // A citation at the end goes; the line stays.
        assert_eq!(
            judge("Citations are removed[12]."),
            Verdict::Rewrite(format!("{}\nCitations are removed.", good_lines(5)))
        );
        // Curly quotes and the ellipsis character are not terminal punctuation.
        assert_eq!(judge("She said \u{201c}hello\u{201d}"), kept);
        // Nothing removed: kept unchanged.
        assert_eq!(judge("She said \"hello there.\""), Verdict::Keep);
    }

    #[test]
    fn document_rules() {
        let c4 = C4Quality::default();
        let text = format!("{}\nLorem ipsum dolor sit amet.", good_lines(5));
        assert_eq!(c4.judge(&text).reason(), Some("lorem_ipsum"));
        let text = format!("{}\nThe code is {{ x }} here.", good_lines(5));
        assert_eq!(c4.judge(&text).reason(), Some("curly_bracket"));
        // A `{` in a line already removed for its missing punctuation does not count...
        let text = format!("{}\nfunction f() {{", good_lines(5));
        assert_eq!(c4.judge(&text), Verdict::Rewrite(good_lines(5)));
        // ... unless that check is off, as in FineWeb.
        assert_eq!(fineweb().judge(&text).reason(), Some("curly_bracket"));
        // Lorem ipsum is checked before javascript, which is checked before `{`.
        let text = format!("{}\njavascript {{ lorem ipsum.", good_lines(5));
        assert_eq!(c4.judge(&text).reason(), Some("lorem_ipsum"));
        let text = format!("{}\njavascript {{ here.", good_lines(5));
        assert_eq!(c4.judge(&text), Verdict::Rewrite(good_lines(5)));
    }

    #[test]
    fn switches() {
        let off = C4Quality {
            remove_citations: false,
            filter_no_terminal_punct: false,
            min_num_sentences: -1,
            min_words_per_line: -1,
            max_word_length: -1,
            filter_lorem_ipsum: false,
            filter_javascript: false,
            filter_curly_bracket: false,
            filter_policy: false,
        };
        let text = "lorem ipsum {javascript} [1]\nx";
        assert_eq!(off.judge(text), Verdict::Keep);
        assert_eq!(off.judge(""), Verdict::Keep);
        assert_eq!(off.judge(" a \n"), Verdict::Rewrite("a".into()));
    }

    #[test]
    fn check_rejects_bad_params() {
        let bad = C4Quality {
            max_word_length: -2,
            ..Default::default()
        };
        assert_eq!(bad.check()[0].param, "max_word_length");
        assert!(C4Quality::default().check().is_empty());
    }
}
