//! `tokenize`: encodes documents with a `tokenizer.json` and writes one token dataset per source
//! (Megatron `.idx/.bin`, or llm.c `.bin`). A barrier: `encode` (one task per input shard, the
//! documents of a shard encoded in parallel) writes a dataset part per shard, `merge` (one task
//! per source) joins a source's parts in input order; then the documents pass on with
//! `token_count`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, SchemaRef};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, Filtered, ParamProblem,
    Stage, StageConfig, StageKind, TransformTask, batch_with_added, for_each_stored_batch,
    schema_with_added, text_values,
};
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic;
use crate::io::stats::StageStats;
use crate::tokens::encoder::Encoder;
use crate::tokens::llmc::LlmcWriter;
use crate::tokens::megatron::{self, Dataset, DatasetWriter, Dtype};

/// Encodes documents with a trained `tokenizer` and writes, per input stage (source), one token
/// dataset under `path`: `<path>/<source>.idx` + `.bin` (Megatron-LM `MMIDIDX`, uint16 when the
/// vocabulary has fewer than 65,500 tokens, else int32), or with `format: llmc` an llm.c
/// `<path>/<source>.bin`. Each document is one sequence: `bos` (if set), its ids, `eos` (set by
/// default). Documents keep input order. Special-token strings inside a text are encoded as text.
/// The documents pass on with `column` (default `token_count`: ids of the text, without BOS /
/// EOS). Null and empty texts are rejected (`null_text`, `empty_text`), as Megatron's
/// preprocessing skips empty documents. Layout: `schemas/packed-format.md`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tokenize {
    /// The `tokenizer.json` to encode with (e.g. from a `tokenizer_train` stage).
    pub tokenizer: String,
    /// Directory of the datasets, one per source.
    pub path: String,
    /// `megatron` (`.idx` + `.bin`) or `llmc` (`.bin` with llm.c's header).
    #[serde(default)]
    pub format: TokenFormat,
    /// Token appended to every document (`null`: none).
    #[serde(default = "default_eos")]
    pub eos: Option<String>,
    /// Token put before every document (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos: Option<String>,
    /// Column added to the documents passed on.
    #[serde(default = "default_column")]
    pub column: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    #[default]
    Megatron,
    Llmc,
}

fn default_eos() -> Option<String> {
    Some("<|endoftext|>".into())
}
fn default_column() -> String {
    "token_count".into()
}

pub const NULL_TEXT: &str = "null_text";
pub const EMPTY_TEXT: &str = "empty_text";

impl StageConfig for Tokenize {
    const TYPE: &'static str = "tokenize";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (param, value) in [
            ("tokenizer", &self.tokenizer),
            ("path", &self.path),
            ("column", &self.column),
        ] {
            if value.trim().is_empty() {
                problems.push(ParamProblem {
                    param,
                    message: format!("`{param}` is empty"),
                });
            }
        }
        problems
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.tokenizer)]
    }

    fn makes_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.path)]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        // A tokenizer made by this pipeline is checked when the tasks start.
        if !ctx.made_by_pipeline(Path::new(&self.tokenizer)) {
            self.encoder()
                .map_err(|e| GristError::param(ctx.stage_id, "tokenizer", e.to_string()))?;
        }
        Ok(Stage::Barrier(Arc::new(TokenizeBarrier {
            config: self.clone(),
        })))
    }
}

impl Tokenize {
    fn encoder(&self) -> Result<Encoder> {
        Encoder::load(
            Path::new(&self.tokenizer),
            self.bos.as_deref(),
            self.eos.as_deref(),
        )
    }
}

struct TokenizeBarrier {
    config: Tokenize,
}

fn part_prefix(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("parts/{shard:06}"))
}

fn counts_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("counts/{shard:06}.i64"))
}

/// The sources in order of first appearance among the input shards.
fn sources(inputs: &[BarrierInput]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for i in inputs {
        if !out.contains(&i.via.as_str()) {
            out.push(&i.via);
        }
    }
    out
}

impl Barrier for TokenizeBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["encode", "merge"]
    }

    fn task_count(&self, phase: usize, inputs: &[BarrierInput]) -> usize {
        match phase {
            0 => inputs.len(),
            _ => sources(inputs).len(),
        }
    }

    fn counts_rows_in_phases(&self) -> bool {
        true
    }

    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(Some(schema_with_added(
            &input,
            vec![Field::new(&self.config.column, DataType::Int64, false)],
        )))
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        match task.phase {
            0 => self.encode(task),
            _ => self.merge(task),
        }
    }

    fn start_output(
        &self,
        dir: &Path,
        shard: usize,
        input: SchemaRef,
    ) -> Result<Box<dyn TransformTask>> {
        let path = counts_file(dir, shard);
        let bytes = std::fs::read(&path).at(&path)?;
        let counts = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let output = self.output_schema(input)?.expect("tokenize passes rows on");
        Ok(Box::new(TokenCounts {
            counts,
            next: 0,
            output,
            path,
        }))
    }
}

/// What encoding one document gave.
enum Encoded {
    Ids(Vec<u32>, usize),
    Rejected(&'static str),
}

impl TokenizeBarrier {
    fn encode(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let encoder = self
            .config
            .encoder()
            .map_err(|e| GristError::param(task.stage_id, "tokenizer", e.to_string()))?;
        let input = &task.inputs[task.index];
        let prefix = part_prefix(task.dir, task.index);
        let mut writer = DatasetWriter::create(&prefix, Dtype::for_vocab(encoder.vocab_size))?;
        let mut counts: Vec<u8> = Vec::new();
        let mut stats = StageStats::default();
        let mut text_tokens = 0u64;
        for_each_stored_batch(&input.path, task.batch_size, |batch| {
            let texts = text_values(batch)?;
            let encoded: Vec<Result<Encoded>> = texts
                .par_iter()
                .map(|t| match t {
                    None => Ok(Encoded::Rejected(NULL_TEXT)),
                    Some("") => Ok(Encoded::Rejected(EMPTY_TEXT)),
                    Some(t) => encoder
                        .encode_document(t)
                        .map(|(ids, n)| Encoded::Ids(ids, n)),
                })
                .collect();
            for (e, text) in encoded.into_iter().zip(&texts) {
                stats.rows_in += 1;
                stats.bytes_in += text.map_or(0, |t| t.len() as u64);
                match e? {
                    Encoded::Rejected(reason) => {
                        stats.reject(reason, 1);
                        counts.extend_from_slice(&(-1i64).to_le_bytes());
                    }
                    Encoded::Ids(ids, n) => {
                        writer.add_document(&ids)?;
                        stats.rows_kept += 1;
                        stats.bytes_kept += text.map_or(0, |t| t.len() as u64);
                        text_tokens += n as u64;
                        counts.extend_from_slice(&(n as i64).to_le_bytes());
                    }
                }
            }
            Ok(())
        })?;
        let tokens = writer.tokens();
        writer.finish()?;
        let counts_path = counts_file(task.dir, task.index);
        atomic::write(&counts_path, &counts)?;
        // Per input stage too (the mixture's sources), for bytes per token by source.
        let via = &input.via;
        stats.metrics = BTreeMap::from([
            ("tokens".into(), tokens as f64),
            ("text_tokens".into(), text_tokens as f64),
            (format!("tokens.{via}"), tokens as f64),
            (format!("text_tokens.{via}"), text_tokens as f64),
            (format!("bytes.{via}"), stats.bytes_kept as f64),
            (format!("documents.{via}"), stats.rows_kept as f64),
        ]);
        Ok(BarrierOutcome {
            outputs: vec![
                megatron::idx_path(&prefix),
                megatron::bin_path(&prefix),
                counts_path,
            ],
            stats,
        })
    }

    /// Joins the parts of source `task.index`, in input order, into its dataset.
    fn merge(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let source = sources(task.inputs)[task.index];
        let parts: Vec<Dataset> = task
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, i)| i.via == source)
            .map(|(k, _)| Dataset::open(&part_prefix(task.dir, k)))
            .collect::<Result<_>>()?;
        let out_prefix = Path::new(&self.config.path).join(source);
        let dtype = parts.first().map_or(Dtype::U16, Dataset::dtype);
        let mut stats = StageStats::default();
        let outputs = match self.config.format {
            TokenFormat::Megatron => {
                let mut writer = DatasetWriter::create(&out_prefix, dtype)?;
                for part in &parts {
                    writer.append(part)?;
                }
                stats
                    .metrics
                    .insert("documents".into(), writer.sequences() as f64);
                writer.finish()?;
                vec![
                    megatron::idx_path(&out_prefix),
                    megatron::bin_path(&out_prefix),
                ]
            }
            TokenFormat::Llmc => {
                let encoder = self.config.encoder()?;
                let path = megatron::bin_path(&out_prefix);
                let mut writer = LlmcWriter::create(&path, encoder.vocab_size)?;
                let mut documents = 0;
                for part in &parts {
                    for i in 0..part.num_sequences() {
                        writer.write(&part.sequence(i))?;
                        documents += 1;
                    }
                }
                writer.finish()?;
                stats.metrics.insert("documents".into(), documents as f64);
                vec![path]
            }
        };
        Ok(BarrierOutcome { outputs, stats })
    }
}

/// Adds `token_count` to the rows passed on and drops those that were not encoded.
struct TokenCounts {
    counts: Vec<i64>,
    next: usize,
    output: SchemaRef,
    path: PathBuf,
}

impl TransformTask for TokenCounts {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let n = batch.num_rows();
        let Some(counts) = self.counts.get(self.next..self.next + n) else {
            return Err(GristError::data(
                &self.path,
                "token counts do not match the stored input: run the stage again",
            ));
        };
        self.next += n;
        let keep: arrow::array::BooleanArray = counts.iter().map(|&c| Some(c >= 0)).collect();
        let texts = text_values(&batch)?;
        let reasons: arrow::array::StringArray = counts
            .iter()
            .zip(&texts)
            .filter(|(c, _)| **c < 0)
            .map(|(_, t)| Some(if t.is_none() { NULL_TEXT } else { EMPTY_TEXT }))
            .collect();
        let kept_counts: Int64Array = counts.iter().copied().filter(|&c| c >= 0).collect();
        let filtered = Filtered::split(&batch, &keep, reasons)?;
        let kept = batch_with_added(
            &filtered.kept,
            &self.output,
            vec![Arc::new(kept_counts) as ArrayRef],
        )?;
        Ok(Filtered {
            kept,
            rejected: filtered.rejected.filter(|r| r.num_rows() > 0),
        })
    }
}
