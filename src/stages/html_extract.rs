//! `html_extract`: the main text of each HTML document, as FineWeb's datatrove `Trafilatura` step
//! extracts it, through the `trafilatura` crate (a Rust port of go-trafilatura).

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::doc_filter::{self, DocFilter, Verdict};
use super::{BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::Result;

/// Replaces each document's HTML `text` with its main text, as datatrove's
/// `Trafilatura(favour_precision=True)` step does for FineWeb (Python `trafilatura.extract(html,
/// favor_precision=True, include_comments=False, deduplicate=True)`): boilerplate (menus,
/// headers, footers, comments, sharing widgets) removed, paragraphs, headings, lists and tables
/// kept as lines of text. grist uses the `trafilatura` crate 0.6.0 (a port of go-trafilatura,
/// with its readability and jusText fallbacks); on the web-content-extraction benchmark its
/// word-shingle F1 is within noise of Python trafilatura's (see `tests/bench/RESULTS.md`), but its
/// text is not byte-identical to Python's.
///
/// Rejected: `no_main_text` (nothing extracted, or only a duplicate), `html_too_large` (more than
/// `max_html_bytes`), `html_too_deep` (elements nested deeper than `max_depth`; the extractor's
/// time grows with the square of the depth and its recursion would overflow the stack, and
/// Python's lxml gives up on such pages too), `extraction_failed` (the extractor failed or
/// panicked), `extraction_timeout` (over `timeout_s`, when set).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HtmlExtract {
    /// `precision` (FineWeb's choice: less boilerplate, some text lost), `balanced` or `recall`.
    pub focus: Focus,
    /// Keep the text of tables.
    pub include_tables: bool,
    /// Keep links (their text is kept either way).
    pub include_links: bool,
    /// Keep user comments below the main text.
    pub include_comments: bool,
    /// Drop text blocks repeated within the page.
    pub deduplicate: bool,
    /// Compare with the readability and jusText extractions and keep the better one, as Python
    /// trafilatura does by default; off is about 1.7 times faster and extracts less.
    pub fallback: bool,
    /// Larger documents are rejected as `html_too_large` (bytes).
    pub max_html_bytes: usize,
    /// Documents whose elements nest deeper than this are rejected as `html_too_deep`.
    pub max_depth: usize,
    /// A document taking longer is rejected as `extraction_timeout` (seconds). Unset (the
    /// default): no limit, so the output does not depend on the machine's speed; the size and
    /// depth caps bound the time a document can take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Focus {
    #[default]
    Precision,
    Balanced,
    Recall,
}

impl Default for HtmlExtract {
    fn default() -> Self {
        HtmlExtract {
            focus: Focus::Precision,
            include_tables: true,
            include_links: false,
            include_comments: false,
            deduplicate: true,
            fallback: true,
            max_html_bytes: 16 << 20,
            max_depth: 256,
            timeout_s: None,
        }
    }
}

pub const NO_MAIN_TEXT: &str = "no_main_text";
pub const HTML_TOO_LARGE: &str = "html_too_large";
pub const HTML_TOO_DEEP: &str = "html_too_deep";
pub const EXTRACTION_FAILED: &str = "extraction_failed";
pub const EXTRACTION_TIMEOUT: &str = "extraction_timeout";

impl StageConfig for HtmlExtract {
    const TYPE: &'static str = "html_extract";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if self.max_html_bytes == 0 {
            problems.push(ParamProblem {
                param: "max_html_bytes",
                message: "`max_html_bytes` must be at least 1".into(),
            });
        }
        if self.max_depth == 0 || self.max_depth > 4096 {
            problems.push(ParamProblem {
                param: "max_depth",
                message: "`max_depth` must be between 1 and 4096 (deeper pages overflow the \
                          extractor's stack)"
                    .into(),
            });
        }
        if let Some(t) = self.timeout_s
            && !(t.is_finite() && t > 0.0 && t <= 3600.0)
        {
            problems.push(ParamProblem {
                param: "timeout_s",
                message: format!("`timeout_s` is {t}: give seconds between 0 and 3600"),
            });
        }
        problems
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        Ok(doc_filter::stage(ctx.stage_id, Extractor::new(self)))
    }
}

/// The extractor with its options, shared by every worker.
struct Extractor {
    options: trafilatura::Options,
    max_html_bytes: usize,
    max_depth: usize,
    timeout: Option<Duration>,
}

impl Extractor {
    fn new(config: &HtmlExtract) -> Self {
        let mut options = trafilatura::Options::default();
        options.focus = match config.focus {
            Focus::Precision => trafilatura::ExtractionFocus::FavorPrecision,
            Focus::Balanced => trafilatura::ExtractionFocus::Balanced,
            Focus::Recall => trafilatura::ExtractionFocus::FavorRecall,
        };
        options.exclude_tables = !config.include_tables;
        options.include_links = config.include_links;
        options.exclude_comments = !config.include_comments;
        options.deduplicate = config.deduplicate;
        options.enable_fallback = config.fallback;
        // Dates are metadata; the text does not need them.
        options.html_date_mode = trafilatura::HtmlDateMode::Disabled;
        Extractor {
            options,
            max_html_bytes: config.max_html_bytes,
            max_depth: config.max_depth,
            timeout: config.timeout_s.map(Duration::from_secs_f64),
        }
    }

    /// The main text, or why there is none.
    fn run(
        options: &trafilatura::Options,
        html: &str,
    ) -> std::result::Result<String, &'static str> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| trafilatura::extract(html, options))) {
            Ok(Ok(result)) => {
                let text = html_to_lines(&result.content_html);
                if text.is_empty() {
                    Err(NO_MAIN_TEXT)
                } else {
                    Ok(text)
                }
            }
            Ok(Err(
                trafilatura::TrafilaturaError::InsufficientContent { .. }
                | trafilatura::TrafilaturaError::DuplicateContent,
            )) => Err(NO_MAIN_TEXT),
            Ok(Err(e)) => {
                tracing::debug!("html_extract: {e}");
                Err(EXTRACTION_FAILED)
            }
            Err(_) => Err(EXTRACTION_FAILED),
        }
    }

    /// [`Self::run`] on its own thread, abandoned when it takes longer than `timeout` (a thread
    /// cannot be stopped; the caps on size and depth bound how long it goes on).
    fn run_with_timeout(
        &self,
        html: &str,
        timeout: Duration,
    ) -> std::result::Result<String, &'static str> {
        let (send, receive) = std::sync::mpsc::channel();
        let options = self.options.clone();
        let html = html.to_string();
        let spawned = std::thread::Builder::new()
            .name("html_extract".into())
            .stack_size(16 << 20)
            .spawn(move || {
                let _ = send.send(Self::run(&options, &html));
            });
        if spawned.is_err() {
            return Err(EXTRACTION_FAILED);
        }
        receive
            .recv_timeout(timeout)
            .unwrap_or(Err(EXTRACTION_TIMEOUT))
    }
}

impl DocFilter for Extractor {
    fn judge_measured(&self, html: &str, _: &mut doc_filter::Measured) -> Verdict {
        if html.len() > self.max_html_bytes {
            return Verdict::drop(HTML_TOO_LARGE);
        }
        if nesting_depth(html, self.max_depth) > self.max_depth {
            return Verdict::drop(HTML_TOO_DEEP);
        }
        let extracted = match self.timeout {
            Some(timeout) => self.run_with_timeout(html, timeout),
            None => Self::run(&self.options, html),
        };
        match extracted {
            Ok(text) => Verdict::Rewrite(text),
            Err(reason) => Verdict::drop(reason),
        }
    }
}

/// Elements that start a new line of text (Python trafilatura's text output puts each
/// paragraph, heading, list item, table row, quote and code block on its own line; the crate's
/// `content_text` runs them together, which the line-based filters after extraction would see
/// as one long line).
const LINE_BREAKING: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "blockquote",
    "pre",
    "br",
    "hr",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "figure",
    "figcaption",
    "details",
    "summary",
    "address",
    "caption",
    "thead",
    "tbody",
    "tfoot",
];

/// The text of the extractor's cleaned HTML, one line per block: tags at block edges become
/// line breaks, table cells are separated by ` | `, the entities an HTML serializer writes are
/// decoded, runs of white space inside a line become one space, and empty lines are dropped.
pub fn html_to_lines(html: &str) -> String {
    let mut raw = String::with_capacity(html.len());
    let mut rest = html;
    // Line ends inside text are only source formatting: white space, as in HTML.
    let push_text = |raw: &mut String, text: &str| {
        raw.extend(
            text.chars()
                .map(|c| if c.is_ascii_whitespace() { ' ' } else { c }),
        );
    };
    while let Some(open) = rest.find('<') {
        push_text(&mut raw, &rest[..open]);
        rest = &rest[open..];
        let Some(close) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if LINE_BREAKING.contains(&name.as_str()) {
            raw.push('\n');
        } else if closing && (name == "td" || name == "th") {
            raw.push_str(" | ");
        }
    }
    push_text(&mut raw, rest);
    let decoded = raw
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let mut out = String::with_capacity(decoded.len());
    for line in decoded.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let line = words.join(" ");
        let line = line.trim_end_matches(" |").trim_start_matches("| ");
        if line.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// Elements without content or whose end tag the parser supplies when the next sibling starts:
/// they do not deepen the tree, so the scan does not count them.
const NON_NESTING: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th", "thead",
    "tbody", "tfoot", "colgroup", "rb", "rt", "rp", "image",
];

/// Elements whose content is text, not markup.
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title", "xmp", "plaintext"];

/// How deep elements nest, as a quick scan of the tags sees it (stopping once past `limit`):
/// start tags deepen, end tags close back to their element, void and self-closing elements and
/// those with optional end tags do not count, comments and raw text are skipped. It undercounts
/// nested tables (only `table` counts per level) and never overcounts well-formed markup, so a
/// page it passes is no deeper than a few times `limit` for the extractor.
pub fn nesting_depth(html: &str, limit: usize) -> usize {
    let bytes = html.as_bytes();
    let mut stack: Vec<&str> = Vec::new();
    let mut deepest = 0;
    let mut i = 0;
    while let Some(offset) = memchr(b'<', &bytes[i..]) {
        i += offset + 1;
        if bytes[i..].starts_with(b"!--") {
            match find(&bytes[i + 3..], b"-->") {
                Some(end) => i += 3 + end + 3,
                None => break,
            }
            continue;
        }
        let closing = bytes.get(i) == Some(&b'/');
        let start = if closing { i + 1 } else { i };
        let name_len = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b':')
            .count();
        if name_len == 0 || !bytes[start].is_ascii_alphabetic() {
            continue;
        }
        let name = &html[start..start + name_len];
        let Some(tag_end) = memchr(b'>', &bytes[start + name_len..]) else {
            break;
        };
        let self_closing = tag_end > 0 && bytes[start + name_len + tag_end - 1] == b'/';
        i = start + name_len + tag_end + 1;
        let lower = name.to_ascii_lowercase();
        if closing {
            if let Some(at) = stack
                .iter()
                .rposition(|open| open.eq_ignore_ascii_case(name))
            {
                stack.truncate(at);
            }
            continue;
        }
        if RAW_TEXT.contains(&lower.as_str()) {
            let close = format!("</{lower}");
            match find_ignore_case(&bytes[i..], close.as_bytes()) {
                Some(end) => i += end,
                None => break,
            }
            continue;
        }
        if self_closing || NON_NESTING.contains(&lower.as_str()) {
            continue;
        }
        stack.push(name);
        deepest = deepest.max(stack.len());
        if deepest > limit {
            break;
        }
    }
    deepest
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(html: &str) -> Verdict {
        Extractor::new(&HtmlExtract::default()).judge(html)
    }

    #[test]
    fn extracts_the_article_and_drops_the_boilerplate() {
        let paragraph = "The committee met on Tuesday to review the budget for the new library, \
                         which will open next spring with a larger children's section and a café.";
        let html = format!(
            "<html><head><title>News</title><script>var x = '<div>';</script></head><body>\
             <nav><ul><li><a href='/'>Home</a></li><li><a href='/about'>About us</a></li></ul></nav>\
             <article><h1>Library budget approved</h1><p>{paragraph}</p><p>{paragraph} Again, \
             with more detail about the opening hours and the staff.</p></article>\
             <footer>© 2026 Example News. All rights reserved. Privacy policy.</footer></body></html>"
        );
        let Verdict::Rewrite(text) = judge(&html) else {
            panic!("no text: {:?}", judge(&html));
        };
        assert!(text.contains("committee met on Tuesday"), "{text}");
        assert!(!text.contains("All rights reserved"), "{text}");
        assert!(!text.contains("About us"), "{text}");
        // One line per block, as the line-based filters after it expect.
        assert!(text.lines().count() >= 3, "{text}");
    }

    #[test]
    fn empty_garbage_deep_and_huge_pages_are_rejected_with_reasons() {
        assert_eq!(judge(""), Verdict::drop(NO_MAIN_TEXT));
        // Text without markup comes back as it is (the baseline fallback), without a panic.
        assert_eq!(
            judge("\u{0}\u{1}binary\u{fffd}"),
            Verdict::Rewrite("\u{1}binary\u{fffd}".into())
        );
        assert_eq!(
            judge("<html><body></body></html>"),
            Verdict::drop(NO_MAIN_TEXT)
        );
        let deep = format!(
            "{}text{}",
            "<div>".repeat(100_000),
            "</div>".repeat(100_000)
        );
        assert_eq!(judge(&deep), Verdict::drop(HTML_TOO_DEEP));
        let spans = "<span>".repeat(300);
        assert_eq!(judge(&spans), Verdict::drop(HTML_TOO_DEEP));
        let huge = format!("<p>{}</p>", "word ".repeat(4 << 20));
        assert_eq!(judge(&huge), Verdict::drop(HTML_TOO_LARGE));
    }

    #[test]
    fn cleaned_html_becomes_one_line_per_block() {
        let html = "<h2>Title</h2><p>First  para&amp;graph\n with <b>bold</b>.</p><ul><li>one</li>\
                    <li>two &lt;3</li></ul><table><tr><td>a</td><td>b</td></tr></table><p>x<br>y</p>";
        assert_eq!(
            html_to_lines(html),
            "Title\nFirst para&graph with bold.\none\ntwo <3\na | b\nx\ny"
        );
        assert_eq!(html_to_lines("<p> </p><div></div>"), "");
    }

    #[test]
    fn the_depth_scan_skips_what_does_not_nest() {
        assert_eq!(
            nesting_depth("<div><p>a<p>b<br><img src=x /></div><div></div>", 99),
            1
        );
        assert_eq!(nesting_depth("<ul><li>a<li>b</ul>", 99), 1);
        assert_eq!(
            nesting_depth(
                "<div><!-- <div><div> --><script>'<div><div>'</script></div>",
                99
            ),
            1
        );
        assert_eq!(nesting_depth("<a><b><c></c></b></a>", 99), 3);
        assert_eq!(nesting_depth("<a><b><c></a><d>", 99), 3);
        assert_eq!(nesting_depth("a < b and c<3", 99), 0);
        assert_eq!(nesting_depth(&"<div>".repeat(1000), 10), 11);
    }

    #[test]
    fn a_timeout_rejects_instead_of_waiting() {
        let config = HtmlExtract {
            timeout_s: Some(1e-6),
            ..HtmlExtract::default()
        };
        let html = format!(
            "<article>{}</article>",
            "<p>Some sentence of text here.</p>".repeat(20_000)
        );
        assert_eq!(
            Extractor::new(&config).judge(&html),
            Verdict::drop(EXTRACTION_TIMEOUT)
        );
    }
}
