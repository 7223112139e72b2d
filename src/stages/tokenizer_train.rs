//! `tokenizer_train`: trains a tokenizer (byte-level BPE, Unigram or WordPiece) on the documents
//! reaching it. A barrier: `count` (one task per input shard) splits documents into words and
//! counts them, `train` (one task) merges the counts and trains, so memory grows with the
//! distinct words, not with the corpus.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind, for_each_stored_batch, text_values,
};
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic;
use crate::io::stats::StageStats;
use crate::tokens::tokenizer::{LongWords, TokenizerParams, WordCounter, WordCounts};

/// Trains a tokenizer on its input documents and writes a `tokenizer.json` that Python
/// `tokenizers` and `transformers` (`PreTrainedTokenizerFast`) load unchanged. `bpe` (default) is
/// byte-level BPE with GPT-4's split regex, trained exactly as `tokenizers`' `BpeTrainer` (the
/// same vocabulary and merges as Python's `train_from_iterator` on the same documents); `unigram`
/// and `wordpiece` are the SentencePiece- and BERT-style models. With `byte_budget`, a seeded
/// sample of the documents (chosen by a hash of their id) of about that many text bytes is used;
/// the others are rejected as `outside_byte_budget`. Documents with a null text are rejected as
/// `null_text`. The stats hold the documents, bytes and distinct words trained on.
// Not `deny_unknown_fields`: serde cannot combine it with `flatten`. The config layer checks
// every key against the stage's schema (which lists the flattened parameters) before parsing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TokenizerTrain {
    /// Where to write the tokenizer, e.g. `out/tokenizer.json`.
    pub path: String,
    /// The tokenizer: model, sizes, special tokens, splitting.
    #[serde(flatten)]
    pub params: TokenizerParams,
    /// Train on a seeded sample of about this many bytes of text (default: everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_budget: Option<u64>,
    /// Seeds the `byte_budget` sample.
    #[serde(default)]
    pub seed: u64,
}

pub const OUTSIDE_BUDGET: &str = "outside_byte_budget";
pub const NULL_TEXT: &str = "null_text";

impl StageConfig for TokenizerTrain {
    const TYPE: &'static str = "tokenizer_train";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems: Vec<ParamProblem> = self
            .params
            .problems()
            .into_iter()
            .map(|(param, message)| ParamProblem { param, message })
            .collect();
        if self.path.trim().is_empty() {
            problems.push(ParamProblem {
                param: "path",
                message: "`path` is empty".into(),
            });
        }
        if self.byte_budget == Some(0) {
            problems.push(ParamProblem {
                param: "byte_budget",
                message: "`byte_budget` is 0: nothing to train on".into(),
            });
        }
        problems
    }

    fn makes_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.path)]
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Barrier(Arc::new(TrainBarrier {
            config: self.clone(),
        })))
    }
}

struct TrainBarrier {
    config: TokenizerTrain,
}

fn sizes_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("sizes/{shard:06}.json"))
}

fn counts_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("counts/{shard:06}.tsv.zst"))
}

impl Barrier for TrainBarrier {
    fn phases(&self) -> Vec<&'static str> {
        match self.config.byte_budget {
            Some(_) => vec!["sizes", "count", "train"],
            None => vec!["count", "train"],
        }
    }

    fn task_count(&self, phase: usize, inputs: &[BarrierInput]) -> usize {
        match self.phase_name(phase) {
            "train" => 1,
            _ => inputs.len(),
        }
    }

    fn output_schema(&self, _input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(None)
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        match self.phase_name(task.phase) {
            "sizes" => self.measure(task),
            "count" => self.count(task),
            _ => self.train(task),
        }
    }
}

/// Word counts of `texts`, split across the worker threads (a task may be the only one running),
/// and the words left out for their length.
fn count_parallel(
    tokenizer: &tokenizers::Tokenizer,
    texts: &[&str],
    max_word_bytes: usize,
) -> Result<(WordCounts, LongWords)> {
    use rayon::prelude::*;
    texts
        .par_chunks(64)
        .map(|chunk| {
            let mut counter = WordCounter::new(tokenizer).max_word_bytes(max_word_bytes);
            for t in chunk {
                counter.add(t)?;
            }
            Ok((counter.counts, counter.too_long))
        })
        .try_reduce(
            || (WordCounts::default(), LongWords::default()),
            |mut a, b| {
                a.0.merge(b.0);
                a.1.add(b.1);
                Ok(a)
            },
        )
}

impl TrainBarrier {
    fn phase_name(&self, phase: usize) -> &'static str {
        self.phases()[phase]
    }

    /// Text bytes of one input shard (for the sampling rate of `byte_budget`).
    fn measure(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let input = &task.inputs[task.index];
        let mut bytes = 0u64;
        for_each_stored_batch(&input.path, task.batch_size, |batch| {
            bytes += super::text_bytes(batch);
            Ok(())
        })?;
        let path = sizes_file(task.dir, task.index);
        atomic::write(
            &path,
            serde_json::json!({"bytes": bytes}).to_string().as_bytes(),
        )?;
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats: StageStats::default(),
        })
    }

    /// The share of documents to keep for the byte budget (1 without one).
    fn sampling_rate(&self, task: &BarrierTask) -> Result<f64> {
        let Some(budget) = self.config.byte_budget else {
            return Ok(1.0);
        };
        let mut total = 0u64;
        for k in 0..task.inputs.len() {
            let path = sizes_file(task.dir, k);
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).at(&path)?)
                .map_err(|e| GristError::data(&path, e))?;
            total += v["bytes"].as_u64().unwrap_or(0);
        }
        Ok(match total {
            0 => 1.0,
            t => (budget as f64 / t as f64).min(1.0),
        })
    }

    fn count(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let input = &task.inputs[task.index];
        let rate = self.sampling_rate(task)?;
        let threshold = (rate * u64::MAX as f64) as u64;
        let tokenizer = self.config.params.empty_tokenizer()?;
        let mut counts = WordCounts::default();
        let mut too_long = LongWords::default();
        let mut stats = StageStats::default();
        let mut row = 0u64;
        for_each_stored_batch(&input.path, task.batch_size, |batch| {
            let texts = text_values(batch)?;
            let ids = match batch.column_by_name(crate::io::ID_COLUMN) {
                Some(col) => Some(arrow::compute::cast(col, &DataType::Utf8)?),
                None => None,
            };
            let ids = ids.as_ref().map(|c| c.as_string::<i32>());
            let mut kept: Vec<&str> = Vec::with_capacity(texts.len());
            for (i, text) in texts.iter().enumerate() {
                row += 1;
                stats.rows_in += 1;
                let Some(text) = text else {
                    stats.reject(NULL_TEXT, 1);
                    continue;
                };
                stats.bytes_in += text.len() as u64;
                if rate < 1.0 {
                    let key = match &ids {
                        Some(ids) if ids.is_valid(i) => ids.value(i).to_string(),
                        _ => format!("{}#{row}", input.path.display()),
                    };
                    let h = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), self.config.seed);
                    if h > threshold {
                        stats.reject(OUTSIDE_BUDGET, 1);
                        continue;
                    }
                }
                kept.push(text);
                stats.rows_kept += 1;
                stats.bytes_kept += text.len() as u64;
            }
            let (c, long) = count_parallel(&tokenizer, &kept, self.config.params.max_word_bytes)?;
            counts.merge(c);
            too_long.add(long);
            Ok(())
        })?;
        let path = counts_file(task.dir, task.index);
        let pending = atomic::PendingFile::new(path.clone())?;
        let file = std::fs::File::create(&pending.tmp).at(&pending.tmp)?;
        let mut out = zstd::Encoder::new(BufWriter::new(file), 3).at(&pending.tmp)?;
        counts.write(&mut out).at(&pending.tmp)?;
        out.finish().at(&pending.tmp)?.flush().at(&pending.tmp)?;
        pending.commit()?;
        if too_long.words > 0 {
            tracing::warn!(
                "{}: {} word(s) over max_word_bytes ({}; {} bytes in all) left out of training",
                task.stage_id,
                too_long.words,
                self.config.params.max_word_bytes,
                too_long.bytes
            );
        }
        stats.metrics = BTreeMap::from([
            ("words_in_shards".into(), counts.len() as f64),
            ("words_over_max_word_bytes".into(), too_long.words as f64),
            (
                "bytes_in_words_over_max_word_bytes".into(),
                too_long.bytes as f64,
            ),
        ]);
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats,
        })
    }

    fn train(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let mut counts = WordCounts::default();
        for k in 0..task.inputs.len() {
            let path = counts_file(task.dir, k);
            let file = std::fs::File::open(&path).at(&path)?;
            let reader = BufReader::new(zstd::Decoder::new(file).at(&path)?);
            counts.merge(WordCounts::read(reader).map_err(|e| GristError::data(&path, e))?);
        }
        if counts.is_empty() {
            return Err(GristError::Stage {
                stage: task.stage_id.to_string(),
                message: "no text reached the tokenizer: nothing to train on".into(),
            });
        }
        let params = &self.config.params;
        let started = std::time::Instant::now();
        let tokenizer = params.train(&counts)?;
        let seconds = started.elapsed().as_secs_f64();
        let json = tokenizer
            .to_string(true)
            .map_err(|e| GristError::Usage(format!("tokenizer does not serialize: {e}")))?;
        let path = PathBuf::from(&self.config.path);
        atomic::write(&path, json.as_bytes())?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab < self.config.params.vocab_size {
            tracing::warn!(
                "{}: the corpus gave a vocabulary of {vocab}, below `vocab_size` {} (too little text or `min_frequency` too high)",
                task.stage_id,
                self.config.params.vocab_size
            );
        }
        tracing::info!(
            "{}: trained a {} tokenizer of {vocab} tokens on {} distinct words in {seconds:.1} s",
            task.stage_id,
            params.model.name(),
            counts.len()
        );
        let stats = StageStats {
            metrics: BTreeMap::from([
                ("distinct_words".into(), counts.len() as f64),
                ("vocab_size".into(), vocab as f64),
                ("train_seconds".into(), seconds),
            ]),
            ..StageStats::default()
        };
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats,
        })
    }
}
