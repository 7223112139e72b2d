//! Supervised fastText training for quality classifiers, as DCLM does it: labelled documents,
//! text normalised (whitespace runs to one space), a seeded train / validation split, fastText's
//! own trainer (the C++ library, through the `fasttext` crate), then precision / recall / F1 of
//! the positive label on the validation split.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{FastTextModel, LABEL_PREFIX, normalize_text};
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic::PendingFile;

/// fastText's training parameters (names as fastText's command line has them) and the split.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Size of word vectors.
    #[serde(default = "default_dim")]
    pub dim: i32,
    /// Passes over the training data.
    #[serde(default = "default_epoch")]
    pub epoch: i32,
    /// Learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Max length of word n-grams (2: words and word pairs, DCLM's setting).
    #[serde(default = "default_word_ngrams", rename = "wordNgrams")]
    pub word_ngrams: i32,
    /// Minimal number of word occurrences.
    #[serde(default = "default_min_count", rename = "minCount")]
    pub min_count: i32,
    /// Number of hash buckets for word n-grams (the model file holds `bucket × dim` floats).
    #[serde(default = "default_bucket")]
    pub bucket: i32,
    /// Loss: `softmax`, `hs` (hierarchical softmax), `ns` (negative sampling) or `ova`.
    #[serde(default = "default_loss")]
    pub loss: String,
    /// Training threads. With 1, training is deterministic for a given input.
    #[serde(default = "default_thread")]
    pub thread: i32,
}

fn default_dim() -> i32 {
    100
}
fn default_epoch() -> i32 {
    5
}
fn default_lr() -> f64 {
    0.1
}
fn default_word_ngrams() -> i32 {
    2
}
fn default_min_count() -> i32 {
    1
}
fn default_bucket() -> i32 {
    2_000_000
}
fn default_loss() -> String {
    "softmax".into()
}
fn default_thread() -> i32 {
    1
}
pub fn default_validation_fraction() -> f64 {
    0.1
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            dim: default_dim(),
            epoch: default_epoch(),
            lr: default_lr(),
            word_ngrams: default_word_ngrams(),
            min_count: default_min_count(),
            bucket: default_bucket(),
            loss: default_loss(),
            thread: default_thread(),
        }
    }
}

/// The n-gram hash matrix fastText allocates (`bucket × dim` floats), at most.
const MAX_NGRAM_MATRIX_BYTES: u64 = 16_000_000_000;

impl TrainParams {
    /// Every problem, as (parameter, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let positive = [
            ("dim", self.dim),
            ("epoch", self.epoch),
            ("wordNgrams", self.word_ngrams),
            ("minCount", self.min_count),
            ("thread", self.thread),
        ];
        for (name, v) in positive {
            if v < 1 {
                out.push((name, format!("`{name}` must be at least 1, not {v}")));
            }
        }
        // Past these, fastText aborts the process (a failed allocation, a thread it cannot
        // start) instead of returning an error.
        for (name, v, max) in [
            ("dim", self.dim, 4096),
            ("wordNgrams", self.word_ngrams, 100),
            ("thread", self.thread, 1024),
        ] {
            if v > max {
                out.push((name, format!("`{name}` {v} is more than {max}")));
            }
        }
        if self.bucket < 0 {
            out.push(("bucket", format!("`bucket` {} is negative", self.bucket)));
        } else if self.bucket == 0 && self.word_ngrams > 1 {
            // fastText hashes each n-gram modulo `bucket`: 0 divides by zero (SIGFPE).
            out.push((
                "bucket",
                "`bucket` 0 leaves word n-grams nowhere to go: set wordNgrams to 1 or bucket to at least 1"
                    .into(),
            ));
        } else if self.dim > 0 && self.bucket as u64 * self.dim as u64 * 4 > MAX_NGRAM_MATRIX_BYTES
        {
            out.push((
                "bucket",
                format!(
                    "`bucket` × `dim` ({} × {}) is a matrix of {} GB; at most {} GB",
                    self.bucket,
                    self.dim,
                    self.bucket as u64 * self.dim as u64 * 4 / 1_000_000_000,
                    MAX_NGRAM_MATRIX_BYTES / 1_000_000_000
                ),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            out.push(("lr", format!("`lr` {} is not positive", self.lr)));
        }
        if loss_name(&self.loss).is_none() {
            out.push((
                "loss",
                format!("unknown loss `{}`; one of softmax, hs, ns, ova", self.loss),
            ));
        }
        out
    }
}

fn loss_name(name: &str) -> Option<fasttext::LossName> {
    Some(match name {
        "softmax" => fasttext::LossName::SOFTMAX,
        "hs" => fasttext::LossName::HS,
        "ns" => fasttext::LossName::NS,
        "ova" => fasttext::LossName::OVA,
        _ => return None,
    })
}

/// Whether a document goes to the validation split: a hash of its id and the seed, so the split
/// does not depend on the order documents arrive in.
pub fn is_validation(id: &str, seed: u64, fraction: f64) -> bool {
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), seed);
    (h as f64) < fraction * (u64::MAX as f64)
}

/// Labelled documents on their way to fastText: the train split goes to fastText's input file,
/// the validation split to a file of its own.
pub struct Examples {
    seed: u64,
    validation_fraction: f64,
    train: (BufWriter<std::fs::File>, PathBuf),
    validation: (BufWriter<std::fs::File>, PathBuf),
    pub train_count: BTreeMap<String, u64>,
    pub validation_count: BTreeMap<String, u64>,
}

/// Why a document was not used.
pub const EMPTY_TEXT: &str = "empty_text";

impl Examples {
    /// Writes the example files into `dir`; `validation_fraction` of the documents (chosen by a
    /// hash of their id and `seed`) are held out.
    pub fn create(dir: &Path, seed: u64, validation_fraction: f64) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let open = |name: &str| -> Result<(BufWriter<std::fs::File>, PathBuf)> {
            let path = dir.join(name);
            let file = std::fs::File::create(&path).at(&path)?;
            Ok((BufWriter::with_capacity(1 << 20, file), path))
        };
        Ok(Examples {
            seed,
            validation_fraction,
            train: open("train.txt")?,
            validation: open("validation.txt")?,
            train_count: BTreeMap::new(),
            validation_count: BTreeMap::new(),
        })
    }

    /// Adds one document; `Ok(false)` when its text is empty once normalised (not used).
    pub fn add(&mut self, id: &str, label: &str, text: &str) -> Result<bool> {
        let text = normalize_text(text);
        if text.is_empty() {
            return Ok(false);
        }
        let validation = is_validation(id, self.seed, self.validation_fraction);
        let ((out, path), counts) = match validation {
            true => (&mut self.validation, &mut self.validation_count),
            false => (&mut self.train, &mut self.train_count),
        };
        // NUL ends a C string and is a word separator to fastText: a space is the same to it.
        let text = text.replace('\0', " ");
        writeln!(out, "{LABEL_PREFIX}{label} {text}").at(path)?;
        *counts.entry(label.to_string()).or_default() += 1;
        Ok(true)
    }
}

/// What training produced, as `report.json` beside the model and in the stage's stats.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainReport {
    pub model: PathBuf,
    pub positive_label: String,
    pub train_examples: BTreeMap<String, u64>,
    pub validation_examples: BTreeMap<String, u64>,
    /// Of the positive label, on the validation split (top-1 predictions).
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Share of validation documents whose top label is right.
    pub accuracy: f64,
    pub seconds: f64,
}

/// Trains on the examples and writes the model to `output` (whole or not at all).
pub fn train(
    examples: Examples,
    params: &TrainParams,
    positive_label: &str,
    output: &Path,
) -> Result<TrainReport> {
    let started = Instant::now();
    let Examples {
        train: (mut train_out, train_path),
        validation: (mut validation_out, validation_path),
        train_count,
        validation_count,
        ..
    } = examples;
    train_out.flush().at(&train_path)?;
    validation_out.flush().at(&validation_path)?;
    drop((train_out, validation_out));
    if train_count.len() < 2 {
        return Err(GristError::Usage(format!(
            "a classifier needs documents of at least two labels to train on; the training split has {}",
            describe_counts(&train_count)
        )));
    }
    if !train_count.contains_key(positive_label) {
        return Err(GristError::Usage(format!(
            "no training document has the positive label `{positive_label}`; labels: {}",
            describe_counts(&train_count)
        )));
    }
    let pending = PendingFile::new(output.to_path_buf())?;
    let fail = |e: String| GristError::Usage(format!("fastText training failed: {e}"));
    let mut args = fasttext::Args::new();
    args.set_input(path_str(&train_path)?).map_err(fail)?;
    args.set_model(fasttext::ModelName::SUP);
    // fastText's `supervised` command defaults, then the parameters.
    args.set_minn(0);
    args.set_maxn(0);
    args.set_verbose(0);
    args.set_dim(params.dim);
    args.set_epoch(params.epoch);
    args.set_lr(params.lr);
    args.set_word_ngrams(params.word_ngrams);
    args.set_min_count(params.min_count);
    args.set_bucket(params.bucket);
    args.set_thread(params.thread);
    args.set_loss(loss_name(&params.loss).ok_or_else(|| fail(format!("loss `{}`", params.loss)))?);
    let mut model = fasttext::FastText::new();
    model.train(&args).map_err(fail)?;
    model.save_model(path_str(&pending.tmp)?).map_err(|e| {
        GristError::Usage(format!(
            "cannot save the model to {}: {e}",
            output.display()
        ))
    })?;
    drop(model);
    let saved = pending.commit()?;
    let mut report = TrainReport {
        model: saved.clone(),
        positive_label: positive_label.to_string(),
        train_examples: train_count,
        validation_examples: validation_count,
        ..Default::default()
    };
    evaluate(&saved, &validation_path, positive_label, &mut report)?;
    let _ = std::fs::remove_file(&train_path);
    let _ = std::fs::remove_file(&validation_path);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| GristError::Usage(format!("path `{}` is not UTF-8", path.display())))
}

fn describe_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "no documents".into();
    }
    counts
        .iter()
        .map(|(l, n)| format!("{l}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Top-1 precision / recall / F1 of `positive` over the validation file.
fn evaluate(
    model: &Path,
    validation: &Path,
    positive: &str,
    report: &mut TrainReport,
) -> Result<()> {
    let model = FastTextModel::load(model).map_err(GristError::Usage)?;
    let file = std::fs::File::open(validation).at(validation)?;
    let (mut tp, mut fp, mut fneg, mut right, mut total) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for line in BufReader::new(file).lines() {
        let line = line.at(validation)?;
        let Some((label, text)) = line.split_once(' ') else {
            continue;
        };
        let truth = label.strip_prefix(LABEL_PREFIX).unwrap_or(label);
        let predicted = model
            .predict_line(text, 1)
            .map_err(GristError::Usage)?
            .into_iter()
            .next()
            .map(|(l, _)| l)
            .unwrap_or_default();
        total += 1;
        right += u64::from(predicted == truth);
        match (predicted == positive, truth == positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    report.precision = ratio(tp, tp + fp);
    report.recall = ratio(tp, tp + fneg);
    report.f1 = match report.precision + report.recall {
        s if s > 0.0 => 2.0 * report.precision * report.recall / s,
        _ => 0.0,
    };
    report.accuracy = ratio(right, total);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_and_near_the_fraction() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("doc/{i}")).collect();
        let held = ids.iter().filter(|id| is_validation(id, 7, 0.1)).count();
        assert!((1_800..2_200).contains(&held), "{held}");
        let again = ids.iter().filter(|id| is_validation(id, 7, 0.1)).count();
        assert_eq!(held, again);
        let other_seed = ids.iter().filter(|id| is_validation(id, 8, 0.1)).count();
        assert_ne!(
            ids.iter()
                .map(|id| is_validation(id, 7, 0.1))
                .collect::<Vec<_>>(),
            ids.iter()
                .map(|id| is_validation(id, 8, 0.1))
                .collect::<Vec<_>>()
        );
        assert!(other_seed > 0);
        assert!(!ids.iter().any(|id| is_validation(id, 7, 0.0)));
    }

    #[test]
    fn trains_a_separable_classifier_and_reports_f1() {
        let dir = tempfile::tempdir().unwrap();
        let params = TrainParams {
            dim: 8,
            bucket: 1000,
            epoch: 20,
            ..Default::default()
        };
        let mut ex = Examples::create(dir.path(), 0, 0.2).unwrap();
        for i in 0..400 {
            let (label, text) = match i % 2 {
                0 => (
                    "hq",
                    format!("the theorem follows from lemma {i} by induction on n"),
                ),
                _ => (
                    "cc",
                    format!("click here to buy cheap pills {i} free shipping now"),
                ),
            };
            assert!(ex.add(&format!("d{i}"), label, &text).unwrap());
        }
        assert!(!ex.add("empty", "hq", " \n\t ").unwrap());
        let out = dir.path().join("m/model.bin");
        let report = train(ex, &params, "hq", &out).unwrap();
        assert!(out.exists());
        assert!(report.f1 > 0.95, "{report:?}");
        let held: u64 = report.validation_examples.values().sum();
        let trained: u64 = report.train_examples.values().sum();
        assert_eq!(held + trained, 400);
        let model = FastTextModel::load(&out).unwrap();
        assert_eq!(model.info().word_ngrams, 2);
        let p = model.probability("by induction on n", "hq").unwrap();
        assert!(p > 0.5, "{p}");
    }

    #[test]
    fn one_label_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let params = TrainParams::default();
        let mut ex = Examples::create(dir.path(), 0, 0.1).unwrap();
        ex.add("a", "hq", "some text").unwrap();
        let err = train(ex, &params, "hq", &dir.path().join("m.bin")).unwrap_err();
        assert!(err.to_string().contains("at least two labels"), "{err}");
    }
}
