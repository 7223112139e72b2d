//! The rows the generating stages write: every item the LLM produced, kept or rejected with a
//! reason, with its provenance. The stage's phase writes them all to one Parquet file; the output
//! stream then passes the kept ones on and sends the others to the rejects with their reason.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::{GristError, Result};
use crate::io::batch::Filtered;

/// The column holding a row's rejection reason (null: kept); not passed on.
pub const REASON: &str = "reject_reason";

/// One generated item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SynthRow {
    pub id: String,
    pub instruction: String,
    pub input: Option<String>,
    pub output: Option<String>,
    /// The model that wrote the row.
    pub generator: String,
    /// Hash of the request that produced the instruction (the request cache key).
    pub prompt_hash: Option<String>,
    /// `self_instruct`, or the Evol-Instruct operation (`constraints`, `breadth`, ...).
    pub operation: String,
    /// Self-Instruct: the request round; Evol-Instruct: the evolution round (1..M).
    pub round: u32,
    /// Evol-Instruct: the instruction this one evolved from, and the lineage's first one.
    pub parent: Option<String>,
    pub root_id: Option<String>,
    pub is_classification: Option<bool>,
    /// ROUGE-L against the pool when it was checked: highest, mean, and the most similar
    /// instructions as JSON `[[text, score], ...]`.
    pub rouge_max: Option<f64>,
    pub rouge_mean: Option<f64>,
    pub most_similar: Option<String>,
    pub finish_reason: Option<String>,
    pub reject_reason: Option<String>,
}

pub fn schema() -> SchemaRef {
    let s = |n: &str, null: bool| Field::new(n, DataType::Utf8, null);
    Arc::new(Schema::new(vec![
        s("id", false),
        s(crate::io::TEXT_COLUMN, false),
        s("instruction", false),
        s("input", true),
        s("output", true),
        s("generator", false),
        s("prompt_hash", true),
        s("operation", false),
        Field::new("round", DataType::UInt32, false),
        s("parent", true),
        s("root_id", true),
        Field::new("is_classification", DataType::Boolean, true),
        Field::new("rouge_max", DataType::Float64, true),
        Field::new("rouge_mean", DataType::Float64, true),
        s("most_similar", true),
        s("finish_reason", true),
        s(REASON, true),
    ]))
}

/// How kept rows become training text in the `text` column.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TextFormat {
    /// `<|im_start|>user\n{instruction}\n\n{input}<|im_end|>\n<|im_start|>assistant\n{output}<|im_end|>\n`
    Chatml,
    /// Alpaca's `### Instruction:` / `### Input:` / `### Response:` layout.
    Alpaca,
}

impl TextFormat {
    pub fn render(self, instruction: &str, input: Option<&str>, output: Option<&str>) -> String {
        let input = input.filter(|i| !i.trim().is_empty());
        let output = output.unwrap_or("");
        match self {
            TextFormat::Chatml => {
                let user = match input {
                    Some(i) => format!("{instruction}\n\n{i}"),
                    None => instruction.to_string(),
                };
                format!(
                    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{output}<|im_end|>\n"
                )
            }
            TextFormat::Alpaca => match input {
                Some(i) => format!(
                    "### Instruction:\n{instruction}\n\n### Input:\n{i}\n\n### Response:\n{output}"
                ),
                None => format!("### Instruction:\n{instruction}\n\n### Response:\n{output}"),
            },
        }
    }
}

/// The rows as one batch of [`schema`].
pub fn batch(rows: &[SynthRow], format: TextFormat) -> Result<RecordBatch> {
    let strings = |f: &dyn Fn(&SynthRow) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(r.id.clone())),
        strings(&|r| {
            Some(match r.reject_reason {
                None => format.render(&r.instruction, r.input.as_deref(), r.output.as_deref()),
                Some(_) => r.instruction.clone(),
            })
        }),
        strings(&|r| Some(r.instruction.clone())),
        strings(&|r| r.input.clone()),
        strings(&|r| r.output.clone()),
        strings(&|r| Some(r.generator.clone())),
        strings(&|r| r.prompt_hash.clone()),
        strings(&|r| Some(r.operation.clone())),
        Arc::new(rows.iter().map(|r| r.round).collect::<UInt32Array>()),
        strings(&|r| r.parent.clone()),
        strings(&|r| r.root_id.clone()),
        Arc::new(
            rows.iter()
                .map(|r| r.is_classification)
                .collect::<BooleanArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.rouge_max).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.rouge_mean).collect::<Float64Array>()),
        strings(&|r| r.most_similar.clone()),
        strings(&|r| r.finish_reason.clone()),
        strings(&|r| r.reject_reason.clone()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

/// Writes the rows to `path` (temporary name, then renamed).
pub fn write(path: &Path, rows: &[SynthRow], format: TextFormat) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| GristError::io(dir, e))?;
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| GristError::io(&tmp, e))?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema(), None)?;
    for chunk in rows.chunks(4096) {
        w.write(&batch(chunk, format)?)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path).map_err(|e| GristError::io(path, e))
}

/// The output schema: every column but the reason.
pub fn output_schema() -> SchemaRef {
    let s = schema();
    let fields: Vec<Field> = s
        .fields()
        .iter()
        .filter(|f| f.name() != REASON)
        .map(|f| f.as_ref().clone())
        .collect();
    Arc::new(Schema::new(fields))
}

/// The stored rows as the stage passes them on: kept ones pass, rejected ones go out with their
/// reason (in [`output_schema`]).
pub fn split_by_reason(batch: RecordBatch) -> Result<Filtered> {
    let reason = batch
        .column_by_name(REASON)
        .ok_or_else(|| GristError::Usage(format!("stored rows lack `{REASON}`")))?
        .as_string::<i32>()
        .clone();
    let keep: BooleanArray = (0..reason.len()).map(|i| Some(reason.is_null(i))).collect();
    let reasons: StringArray = reason.iter().flatten().map(Some).collect();
    let out = output_schema();
    let projected: Vec<ArrayRef> = out
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .expect("stored schema")
                .clone()
        })
        .collect();
    let projected = RecordBatch::try_new(out, projected)?;
    Filtered::split(&projected, &keep, reasons)
}

/// Mean, median, 90th percentile and maximum of `xs` as metrics `<name>_{mean,p50,p90,max}`.
pub fn distribution(name: &str, xs: &mut [f64]) -> Vec<(String, f64)> {
    if xs.is_empty() {
        return Vec::new();
    }
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    vec![
        (
            format!("{name}_mean"),
            xs.iter().sum::<f64>() / xs.len() as f64,
        ),
        (format!("{name}_p50"), at(0.5)),
        (format!("{name}_p90"), at(0.9)),
        (format!("{name}_max"), at(1.0)),
    ]
}

/// A histogram of scores in [0, 1] by tenths, as metrics `<name>_0.0-0.1`, ... (the last bin
/// holds 1.0).
pub fn histogram(name: &str, xs: &[f64]) -> Vec<(String, f64)> {
    let mut bins = [0u64; 10];
    for x in xs {
        bins[((x * 10.0).floor() as usize).min(9)] += 1;
    }
    bins.iter()
        .enumerate()
        .map(|(i, &n)| {
            (
                format!("{name}_{:.1}-{:.1}", i as f64 / 10.0, (i + 1) as f64 / 10.0),
                n as f64,
            )
        })
        .collect()
}

/// The stage's report: the client's counters, the ROUGE-L histogram of the distinct kept
/// instructions against the seeds (highest score each), and word-count distributions of the
/// kept instructions, inputs and outputs. Rejection counts come from the rows themselves.
pub fn report(
    rows: &[SynthRow],
    client: &super::llm::ClientStats,
    seeds: &[String],
) -> crate::io::stats::StageStats {
    let mut stats = crate::io::stats::StageStats::default();
    stats.metrics.extend(client.metrics());
    let kept: Vec<&SynthRow> = rows.iter().filter(|r| r.reject_reason.is_none()).collect();
    let mut pool = super::rouge::Pool::new();
    for s in seeds {
        let ids = pool.tokens(s);
        pool.push(ids);
    }
    let mut seen = std::collections::HashSet::new();
    let mut scores = Vec::new();
    let mut too_long = 0u64;
    for r in &kept {
        if seen.insert(r.instruction.as_str()) {
            let ids = pool.tokens(&r.instruction);
            // An instruction (or a seed) of thousands of tokens would make the report's pool
            // check slow: the report leaves such instructions out and counts them.
            if ids.len() > super::rouge::LONG_CANDIDATE {
                too_long += 1;
                continue;
            }
            scores.push(pool.compare(&ids, 0).max);
        }
    }
    stats.metrics.extend(histogram("rouge_vs_seeds", &scores));
    use crate::io::stats::{Histogram, Scale};
    let mut rouge = Histogram::new(
        "ROUGE-L of each distinct kept instruction against the seeds (highest)",
        0.0,
        1.0 + 1e-9,
        10,
        Scale::Linear,
    );
    scores.iter().for_each(|&s| rouge.record(s));
    stats.histograms.insert("rouge_vs_seeds".into(), rouge);
    if too_long > 0 {
        stats
            .metrics
            .insert("rouge_vs_seeds_skipped_long".into(), too_long as f64);
    }
    let words = |s: Option<&str>| s.map_or(0, |s| s.split_whitespace().count()) as f64;
    let mut inst: Vec<f64> = kept.iter().map(|r| words(Some(&r.instruction))).collect();
    let mut input: Vec<f64> = kept.iter().map(|r| words(r.input.as_deref())).collect();
    let mut output: Vec<f64> = kept.iter().map(|r| words(r.output.as_deref())).collect();
    for (name, label, xs) in [
        ("instruction_words", "words per kept instruction", &inst),
        ("input_words", "words per kept input", &input),
        ("output_words", "words per kept output", &output),
    ] {
        let mut h = Histogram::new(label, 1.0, 1e4, 16, Scale::Log10);
        xs.iter().for_each(|&x| h.record(x));
        stats.histograms.insert(name.into(), h);
    }
    stats
        .metrics
        .extend(distribution("instruction_words", &mut inst));
    stats
        .metrics
        .extend(distribution("input_words", &mut input));
    stats
        .metrics
        .extend(distribution("output_words", &mut output));
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_passes_kept_rows_and_rejects_the_rest_with_reasons() {
        let rows = vec![
            SynthRow {
                id: "a".into(),
                instruction: "Do x.".into(),
                output: Some("done".into()),
                ..Default::default()
            },
            SynthRow {
                id: "b".into(),
                instruction: "Draw a map.".into(),
                reject_reason: Some("keyword_blacklist".into()),
                ..Default::default()
            },
        ];
        let b = batch(&rows, TextFormat::Chatml).unwrap();
        let out = split_by_reason(b).unwrap();
        assert_eq!(out.kept.num_rows(), 1);
        assert!(out.kept.column_by_name(REASON).is_none());
        let text = out
            .kept
            .column_by_name("text")
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string();
        assert_eq!(
            text,
            "<|im_start|>user\nDo x.<|im_end|>\n<|im_start|>assistant\ndone<|im_end|>\n"
        );
        let rej = out.rejected.unwrap();
        assert_eq!(rej.reasons.value(0), "keyword_blacklist");
    }

    #[test]
    fn histograms_and_distributions() {
        let h = histogram("r", &[0.0, 0.05, 0.7, 1.0]);
        assert_eq!(h[0], ("r_0.0-0.1".into(), 2.0));
        assert_eq!(h[7].1, 1.0);
        assert_eq!(h[9].1, 1.0);
        let d = distribution("w", &mut [3.0, 1.0, 2.0]);
        assert_eq!(d[1], ("w_p50".into(), 2.0));
        assert_eq!(d[3], ("w_max".into(), 3.0));
    }
}
