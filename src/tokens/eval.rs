//! `grist tokenizer eval`: how well tokenizers compress given text. Bytes per token (higher is
//! better), tokens per word (lower is better), the share of the vocabulary the text uses, and
//! unknown tokens (for models that have one).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::encoder::Encoder;
use crate::error::Result;

/// One tokenizer's figures on the evaluation text.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub tokenizer: PathBuf,
    pub vocab_size: usize,
    pub documents: u64,
    pub bytes: u64,
    pub words: u64,
    pub tokens: u64,
    pub bytes_per_token: f64,
    pub tokens_per_word: f64,
    /// Distinct ids used / vocabulary size.
    pub vocab_used: f64,
    pub unknown_tokens: u64,
}

pub fn evaluate(tokenizer: &Path, texts: &[String]) -> Result<EvalRow> {
    let encoder = Encoder::load(tokenizer, None, None)?;
    let vocab_size = encoder.vocab_size;
    let unk = ["<unk>", "[UNK]", "<UNK>"]
        .iter()
        .find_map(|t| encoder.tokenizer().token_to_id(t));
    let per_doc: Vec<Result<(Vec<u32>, u64)>> = texts
        .par_iter()
        .map(|t| {
            encoder
                .encode_text(t)
                .map(|ids| (ids, t.split_whitespace().count() as u64))
        })
        .collect();
    let mut used = vec![false; vocab_size.max(1)];
    let (mut tokens, mut words, mut unknown) = (0u64, 0u64, 0u64);
    for r in per_doc {
        let (ids, w) = r?;
        tokens += ids.len() as u64;
        words += w;
        for id in ids {
            if let Some(u) = used.get_mut(id as usize) {
                *u = true;
            }
            unknown += u64::from(Some(id) == unk);
        }
    }
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(EvalRow {
        tokenizer: tokenizer.to_path_buf(),
        vocab_size,
        documents: texts.len() as u64,
        bytes,
        words,
        tokens,
        bytes_per_token: ratio(bytes, tokens),
        tokens_per_word: ratio(tokens, words),
        vocab_used: ratio(
            used.iter().filter(|&&u| u).count() as u64,
            vocab_size as u64,
        ),
        unknown_tokens: unknown,
    })
}

/// The rows as an aligned text table.
pub fn table(rows: &[EvalRow]) -> String {
    let mut out = String::new();
    let name_width = rows
        .iter()
        .map(|r| r.tokenizer.display().to_string().len())
        .max()
        .unwrap_or(9)
        .max(9);
    let _ = writeln!(
        out,
        "{:<name_width$}  {:>9}  {:>12}  {:>11}  {:>11}  {:>10}  {:>8}",
        "tokenizer", "vocab", "tokens", "bytes/token", "tokens/word", "vocab used", "unknown"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<name_width$}  {:>9}  {:>12}  {:>11.3}  {:>11.3}  {:>9.1}%  {:>8}",
            r.tokenizer.display(),
            r.vocab_size,
            r.tokens,
            r.bytes_per_token,
            r.tokens_per_word,
            100.0 * r.vocab_used,
            r.unknown_tokens
        );
    }
    if let Some(r) = rows.first() {
        let _ = writeln!(
            out,
            "on {} documents, {} bytes, {} words",
            r.documents, r.bytes, r.words
        );
    }
    out
}
