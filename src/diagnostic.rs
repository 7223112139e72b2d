//! Errors that point at the source of a file (a pipeline, a train config): `FILE:LINE:COL:
//! error: ...`, the offending line, and a hint ("did you mean ...") where one fits. All errors of
//! a file are collected and shown together. At the bottom of the layers: the error type carries
//! them, and the engine reports its checks through them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub span: Option<Span>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            span: span.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

/// Every diagnostic of one pipeline file, with the source to quote from.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub source: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, source: &str) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            source: source.to_string(),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Warning)
    }

    /// Renders one diagnostic with its source line.
    pub fn render(&self, d: &Diagnostic) -> String {
        let mut out = String::new();
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match d.span {
            Some(span) => {
                out.push_str(&format!(
                    "{}:{}:{}: {kind}: {}\n",
                    self.file.display(),
                    span.line,
                    span.col,
                    d.message
                ));
                if let Some(line) = self.source.lines().nth(span.line.saturating_sub(1)) {
                    let gutter = span.line.to_string();
                    let pad = " ".repeat(gutter.len());
                    let width = underline_width(line, span.col);
                    out.push_str(&format!("{pad} |\n{gutter} | {line}\n"));
                    out.push_str(&format!(
                        "{pad} | {}{}\n",
                        " ".repeat(span.col.saturating_sub(1)),
                        "^".repeat(width)
                    ));
                }
            }
            None => out.push_str(&format!("{}: {kind}: {}\n", self.file.display(), d.message)),
        }
        if let Some(hint) = &d.hint {
            out.push_str(&format!("  = help: {hint}\n"));
        }
        out
    }
}

/// Underlines the token that starts at `col` (up to the next separator).
fn underline_width(line: &str, col: usize) -> usize {
    let rest: String = line.chars().skip(col.saturating_sub(1)).collect();
    let n = rest
        .chars()
        .take_while(|c| !matches!(c, ':' | ',' | '}' | ']' | '#') && !c.is_whitespace())
        .count();
    n.max(1)
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<&Diagnostic> = self.items.iter().collect();
        items.sort_by_key(|d| d.span.map(|s| (s.line, s.col)).unwrap_or((usize::MAX, 0)));
        for d in items {
            write!(f, "{}", self.render(d))?;
        }
        let errors = self.error_count();
        if errors > 0 {
            write!(
                f,
                "{}: {errors} error{} found",
                self.file.display(),
                if errors == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// The closest candidate to `name`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("min_scroe", ["min_score", "languages"]).as_deref(),
            Some("did you mean `min_score`?")
        );
        assert_eq!(did_you_mean("zzz", ["min_score", "languages"]), None);
    }

    #[test]
    fn renders_file_line_col_and_caret() {
        let mut diags = Diagnostics::new(Path::new("p.yaml"), "a: 1\n  bad_key: 2\n");
        diags.push(
            Diagnostic::error(Span { line: 2, col: 3 }, "unknown key `bad_key`").with_hint("h"),
        );
        let text = diags.to_string();
        assert!(
            text.starts_with("p.yaml:2:3: error: unknown key `bad_key`"),
            "{text}"
        );
        assert!(text.contains("  |   ^^^^^^^"), "{text}");
        assert!(text.contains("= help: h"));
    }
}
