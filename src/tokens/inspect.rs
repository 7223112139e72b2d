//! `grist inspect` for token files: Megatron datasets (`.idx` / `.bin` / the prefix), llm.c
//! `.bin` files and `mix.json` reports. Counts, dtype, and a sample (decoded when given a
//! tokenizer).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::encoder::load_tokenizer;
use super::{llmc, megatron};
use crate::error::{GristError, IoContext, Result};

/// What kind of token file `path` names, if any.
pub enum TokenFile {
    Megatron(PathBuf),
    Llmc(PathBuf),
    MixReport(PathBuf),
}

pub fn detect(path: &str) -> Option<TokenFile> {
    let p = Path::new(path);
    let strip = |ext: &str| path.strip_suffix(ext).map(PathBuf::from);
    if let Some(prefix) = strip(".idx") {
        return Some(TokenFile::Megatron(prefix));
    }
    if let Some(prefix) = strip(".bin") {
        if megatron::idx_path(&prefix).is_file() {
            return Some(TokenFile::Megatron(prefix));
        }
        return Some(TokenFile::Llmc(p.to_path_buf()));
    }
    if p.file_name().is_some_and(|n| n == "mix.json") {
        return Some(TokenFile::MixReport(p.to_path_buf()));
    }
    if !p.exists() && megatron::idx_path(p).is_file() {
        return Some(TokenFile::Megatron(p.to_path_buf()));
    }
    None
}

pub fn inspect(file: TokenFile, samples: usize, tokenizer: Option<&Path>) -> Result<String> {
    let decoder = tokenizer.map(load_tokenizer).transpose()?;
    let show = |ids: &[u32]| -> String {
        match &decoder {
            Some(t) => match t.decode(ids, false) {
                Ok(text) => format!("{:?}", cut(&text, 300)),
                Err(e) => format!("(does not decode: {e})"),
            },
            None => {
                let head: Vec<String> = ids.iter().take(24).map(u32::to_string).collect();
                format!(
                    "[{}{}]",
                    head.join(", "),
                    if ids.len() > 24 { ", …" } else { "" }
                )
            }
        }
    };
    let mut out = String::new();
    match file {
        TokenFile::Megatron(prefix) => {
            let ds = megatron::Dataset::open(&prefix)?;
            let _ = writeln!(out, "dataset: {} (.idx + .bin)", prefix.display());
            let _ = writeln!(
                out,
                "format: Megatron MMIDIDX v1, dtype {}, {} documents, {} sequences, {} tokens",
                ds.dtype().name(),
                ds.num_documents(),
                ds.num_sequences(),
                ds.total_tokens()
            );
            let (mut min, mut max) = (u64::MAX, 0u64);
            for d in 0..ds.num_documents() {
                let n: u64 = ds.document_sequences(d).map(|s| ds.length(s) as u64).sum();
                min = min.min(n);
                max = max.max(n);
            }
            if ds.num_documents() > 0 {
                let _ = writeln!(out, "document tokens: min {min}, max {max}");
            }
            for d in 0..ds.num_documents().min(samples) {
                let seqs = ds.document_sequences(d);
                let _ = writeln!(out, "document {d}: {} sequence(s)", seqs.len());
                for s in seqs.take(4) {
                    let ids = ds.sequence(s);
                    let _ = writeln!(out, "  sequence {s}: {} tokens {}", ids.len(), show(&ids));
                }
            }
        }
        TokenFile::Llmc(path) => {
            let ids = llmc::read(&path)?;
            let _ = writeln!(out, "file: {}", path.display());
            let _ = writeln!(out, "format: llm.c token file, {} tokens", ids.len());
            if samples > 0 {
                let head = &ids[..ids.len().min(256)];
                let _ = writeln!(out, "first tokens: {}", show(head));
            }
        }
        TokenFile::MixReport(path) => {
            let bytes = std::fs::read(&path).at(&path)?;
            let v: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| GristError::data(&path, e))?;
            let _ = writeln!(out, "mix report: {}", path.display());
            let _ = writeln!(
                out,
                "seq_len {}, packing {}, seed {}, dtype {}",
                v["seq_len"], v["packing"], v["seed"], v["dtype"]
            );
            for split in ["train", "valid"] {
                let s = &v[split];
                let _ = writeln!(
                    out,
                    "{split}: {} samples, {} tokens, {} fragments, {} padding, {} dropped",
                    s["samples"],
                    s["tokens"],
                    s["fragments"],
                    s["padding_tokens"],
                    s["dropped_tokens"]
                );
            }
            let _ = writeln!(
                out,
                "{:<16} {:>12} {:>13} {:>13} {:>8}",
                "source", "tokens", "target share", "realised", "epochs"
            );
            if let Some(sources) = v["sources"].as_object() {
                for (name, s) in sources {
                    let t = &s["train"];
                    let _ = writeln!(
                        out,
                        "{:<16} {:>12} {:>12.4}% {:>12.4}% {:>8.3}",
                        name,
                        s["tokens"],
                        100.0 * t["target_share"].as_f64().unwrap_or(0.0),
                        100.0 * t["realised_share"].as_f64().unwrap_or(0.0),
                        t["epochs"].as_f64().unwrap_or(0.0)
                    );
                }
            }
        }
    }
    Ok(out)
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
