//! A loaded fastText supervised model, shared by every task and thread: language ID (`langid`)
//! and quality classifiers (`quality_classifier`, `classifier_train`'s validation).

use std::path::{Path, PathBuf};

use super::fasttext_file::{self, ModelInfo, ModelKind};

/// fastText's label prefix, as in `__label__en`.
pub const LABEL_PREFIX: &str = "__label__";

pub struct FastTextModel {
    inner: fasttext::FastText,
    /// Label names without the prefix, in the model's order.
    labels: Vec<String>,
    info: ModelInfo,
    path: PathBuf,
}

// SAFETY: fastText's prediction (`FastText::predictLine`) is a const method that keeps its state
// on the stack, so one model can serve many threads, as the Python binding does; the model is
// never mutated after loading.
unsafe impl Send for FastTextModel {}
unsafe impl Sync for FastTextModel {}

impl FastTextModel {
    /// Loads a supervised model. The file is checked in Rust first (format, sizes, kind), so a
    /// missing, truncated or wrong file is a clear error rather than whatever fastText makes of it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let info = fasttext_file::inspect(path).map_err(|e| e.to_string())?;
        if info.model != ModelKind::Supervised {
            return Err(format!(
                "`{}` is a fastText {} (word vector) model, not a supervised classifier",
                path.display(),
                info.model.name()
            ));
        }
        if info.labels.is_empty() {
            return Err(format!(
                "`{}` has no labels: not a supervised model",
                path.display()
            ));
        }
        let path_str = path
            .to_str()
            .ok_or_else(|| format!("model path `{}` is not UTF-8", path.display()))?;
        let mut inner = fasttext::FastText::new();
        inner
            .load_model(path_str)
            .map_err(|e| format!("cannot load fastText model `{}`: {e}", path.display()))?;
        Ok(FastTextModel {
            inner,
            labels: info.label_names(),
            info,
            path: path.to_path_buf(),
        })
    }

    /// Label names without `__label__`.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// An error naming the label if the model does not have it.
    pub fn require_label(&self, label: &str) -> Result<(), String> {
        if self.labels.iter().any(|l| l == label) {
            return Ok(());
        }
        let mut shown: Vec<&str> = self.labels.iter().map(String::as_str).take(12).collect();
        if self.labels.len() > shown.len() {
            shown.push("...");
        }
        Err(format!(
            "`{}` has no label `{label}`; its labels are: {}",
            self.path.display(),
            shown.join(", ")
        ))
    }

    /// Labels (without `__label__`) and probabilities, best first, as Python fastText's
    /// `predict(line, k)` gives them for a `line` without newlines. NUL is a word separator to
    /// fastText, as a space is, and cannot cross into C, so it becomes a space.
    pub fn predict_line(&self, line: &str, k: i32) -> Result<Vec<(String, f32)>, String> {
        // Python's predict appends "\n" (the end-of-sentence token, which fastText counts).
        let mut text = match line.contains('\0') {
            true => line.replace('\0', " "),
            false => String::with_capacity(line.len() + 1) + line,
        };
        text.push('\n');
        let predictions = self
            .inner
            .predict(&text, k, 0.0)
            .map_err(|e| format!("fastText `{}`: {e}", self.path.display()))?;
        Ok(predictions
            .into_iter()
            .map(|p| (strip_label(&p.label).to_string(), p.prob))
            .collect())
    }

    /// The probability of `label` for `line` (0 when fastText gives it none).
    pub fn probability(&self, line: &str, label: &str) -> Result<f32, String> {
        Ok(self
            .predict_line(line, -1)?
            .into_iter()
            .find(|(l, _)| l == label)
            .map_or(0.0, |(_, p)| p))
    }
}

pub fn strip_label(label: &str) -> &str {
    label.strip_prefix(LABEL_PREFIX).unwrap_or(label)
}

/// Text as DCLM's classifiers see it: whitespace runs (Python's `str.split`, so Unicode
/// whitespace too) become one space, leading and trailing whitespace goes.
pub fn normalize_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in crate::text::python::split_whitespace(text) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_unicode_whitespace() {
        assert_eq!(normalize_text("  a\n\nb\u{a0}c\u{2029}d\t"), "a b c d");
        assert_eq!(normalize_text("\n \u{3000}"), "");
    }
}
