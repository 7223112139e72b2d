//! `quality_classifier`: scores documents with a fastText classifier (DCLM, FineWeb-Edu style)
//! and keeps them by a threshold or a top fraction.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, SchemaRef};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::classifier_train::{check_label, default_positive_label};
use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, Filtered, ParamProblem,
    Stage, StageConfig, StageKind, Transform, TransformTask, batch_with_added,
    for_each_stored_batch, schema_with_added, text_values,
};
use crate::classifier::model::{FastTextModel, normalize_text};
use crate::error::{GristError, Result};
use crate::io::atomic;
use crate::io::stats::{Drops, Histogram, Scale, StageStats};

/// Why a document scored too low.
pub const BELOW_THRESHOLD: &str = "quality_below_threshold";

/// Scores each document with a supervised fastText model and adds the probability of `label` as
/// the column `column`. The text is normalised as the classifier was trained on (whitespace runs
/// become one space), then predicted as Python fastText's `predict` does. With `threshold`, a
/// document is kept when its score is at least the threshold; with `keep_top`, the threshold is
/// the score that keeps that fraction of a uniform sample of `sample_size` documents (hashed by
/// text), so the stage first reads its whole input (it becomes a barrier with a `sample` phase);
/// with neither, every document is kept and only scored. Reason: `quality_below_threshold`. Any
/// fastText supervised model works: one from `classifier_train`, DCLM's `fasttext-oh-eli5`, a
/// FineWeb-Edu-style classifier; several can run in one pipeline, each with its own `column`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QualityClassifier {
    /// fastText supervised model (`.bin` or quantized `.ftz`); may be one a `classifier_train`
    /// stage of the same pipeline writes.
    pub model: String,
    /// The label whose probability is the score (without `__label__`).
    #[serde(default = "default_positive_label")]
    pub label: String,
    /// Column the score goes into.
    #[serde(default = "default_column")]
    pub column: String,
    /// Keep documents scoring at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Keep this fraction of documents, the best scored (the cut is computed over a sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_top: Option<f64>,
    /// Documents in the sample `keep_top` is computed over.
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
}

fn default_column() -> String {
    "quality_score".into()
}

fn default_sample_size() -> usize {
    100_000
}

impl StageConfig for QualityClassifier {
    const TYPE: &'static str = "quality_classifier";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut problem = |param, message| problems.push(ParamProblem { param, message });
        if let Some(message) = check_label(&self.label) {
            problem("label", message);
        }
        if self.column.is_empty() || ["text", "id"].contains(&self.column.as_str()) {
            problem(
                "column",
                format!("`column` `{}` would replace a document column", self.column),
            );
        }
        if let Some(t) = self.threshold
            && !(0.0..=1.0).contains(&t)
        {
            problem("threshold", format!("`threshold` {t} is not in [0, 1]"));
        }
        if let Some(k) = self.keep_top {
            if !(k > 0.0 && k <= 1.0) {
                problem("keep_top", format!("`keep_top` {k} is not in (0, 1]"));
            }
            if self.threshold.is_some() {
                problem(
                    "keep_top",
                    "`threshold` and `keep_top` are two ways to set the cut; give one".into(),
                );
            }
        }
        if self.sample_size == 0 {
            problem("sample_size", "`sample_size` must be at least 1".into());
        }
        problems
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.model)]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let model = Arc::new(SharedModel {
            path: PathBuf::from(&self.model),
            label: self.label.clone(),
            loaded: OnceLock::new(),
        });
        // A model another stage of the pipeline writes is checked when it is there.
        if !ctx.made_by_pipeline(&model.path) {
            model
                .get()
                .map_err(|e| GristError::param(ctx.stage_id, "model", e))?;
        }
        let stage = Arc::new(QualityStage {
            stage_id: ctx.stage_id.to_string(),
            config: self.clone(),
            model,
        });
        Ok(match self.keep_top {
            Some(_) => Stage::Barrier(stage),
            None => Stage::Transform(stage),
        })
    }
}

/// The model, loaded on first use and shared by every task.
struct SharedModel {
    path: PathBuf,
    label: String,
    loaded: OnceLock<std::result::Result<Arc<FastTextModel>, String>>,
}

impl SharedModel {
    fn get(&self) -> std::result::Result<&Arc<FastTextModel>, String> {
        self.loaded
            .get_or_init(|| {
                let model = FastTextModel::load(&self.path)?;
                model.require_label(&self.label)?;
                Ok(Arc::new(model))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn score(&self, text: &str) -> std::result::Result<f64, String> {
        let model = self.get()?;
        Ok(f64::from(
            model.probability(&normalize_text(text), &self.label)?,
        ))
    }
}

struct QualityStage {
    stage_id: String,
    config: QualityClassifier,
    model: Arc<SharedModel>,
}

impl QualityStage {
    fn output(&self, input: &SchemaRef) -> SchemaRef {
        schema_with_added(
            input,
            vec![Field::new(&self.config.column, DataType::Float64, false)],
        )
    }

    fn task(&self, input: SchemaRef, threshold: Option<f64>) -> Box<dyn TransformTask> {
        Box::new(ScoreTask {
            stage_id: self.stage_id.clone(),
            model: self.model.clone(),
            threshold,
            output: self.output(&input),
            observed: StageStats::default(),
        })
    }

    fn threshold_file(dir: &Path) -> PathBuf {
        dir.join("threshold.json")
    }
}

impl Transform for QualityStage {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        Ok(self.task(input, self.config.threshold))
    }
}

/// With `keep_top`: a `sample` phase finds the cut, then every shard streams through the cut.
impl Barrier for QualityStage {
    fn phases(&self) -> Vec<&'static str> {
        vec!["sample"]
    }

    fn task_count(&self, _phase: usize, _inputs: &[BarrierInput]) -> usize {
        1
    }

    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(Some(self.output(&input)))
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let keep_top = self.config.keep_top.expect("a barrier only with keep_top");
        let mut sample = BottomK::new(self.config.sample_size);
        let mut stats = StageStats::default();
        for input in task.inputs {
            for_each_stored_batch(&input.path, task.batch_size, |batch| {
                for text in text_values(batch)?.into_iter().flatten() {
                    sample.offer(text);
                }
                Ok(())
            })?;
        }
        let texts = sample.into_texts();
        let mut scores: Vec<f64> = texts
            .par_iter()
            .map(|t| self.model.score(t))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| GristError::stage(&self.stage_id, e))?;
        scores.sort_by(|a, b| b.total_cmp(a));
        let threshold = match scores.len() {
            0 => 0.0,
            n => scores[((keep_top * n as f64).ceil() as usize).clamp(1, n) - 1],
        };
        let path = Self::threshold_file(task.dir);
        let json = serde_json::json!({
            "keep_top": keep_top, "sample": scores.len(), "threshold": threshold,
        });
        atomic::write(&path, format!("{json:#}\n").as_bytes())?;
        stats
            .metrics
            .insert("sample_docs".into(), scores.len() as f64);
        stats.metrics.insert("threshold".into(), threshold);
        tracing::info!(
            "{}: keeping the top {keep_top} means a score of at least {threshold} ({} documents sampled)",
            self.stage_id,
            scores.len()
        );
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats,
        })
    }

    fn start_output(
        &self,
        dir: &Path,
        _shard: usize,
        input: SchemaRef,
    ) -> Result<Box<dyn TransformTask>> {
        let path = Self::threshold_file(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| GristError::io(&path, e))?;
        let threshold = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["threshold"].as_f64())
            .ok_or_else(|| GristError::data(&path, "no `threshold` in it"))?;
        Ok(self.task(input, Some(threshold)))
    }
}

/// A uniform sample of fixed size, the same whatever the order documents come in: the `k` texts
/// with the smallest hashes.
struct BottomK {
    k: usize,
    heap: std::collections::BinaryHeap<(u64, String)>,
}

impl BottomK {
    fn new(k: usize) -> Self {
        BottomK {
            k,
            heap: Default::default(),
        }
    }

    fn offer(&mut self, text: &str) {
        let h = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        if self.heap.len() < self.k {
            self.heap.push((h, text.to_string()));
        } else if self.heap.peek().is_some_and(|(top, _)| h < *top) {
            self.heap.pop();
            self.heap.push((h, text.to_string()));
        }
    }

    fn into_texts(self) -> Vec<String> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }
}

struct ScoreTask {
    stage_id: String,
    model: Arc<SharedModel>,
    threshold: Option<f64>,
    output: SchemaRef,
    /// Scores since the last `observe`.
    observed: StageStats,
}

impl TransformTask for ScoreTask {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn observe(&mut self, stats: &mut StageStats) {
        stats.merge(&std::mem::take(&mut self.observed));
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let texts = text_values(&batch)?;
        let scores: Vec<f64> = texts
            .par_iter()
            .map(|t| self.model.score(t.unwrap_or("")))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| GristError::stage(&self.stage_id, e))?;
        for &score in &scores {
            let threshold = self.threshold;
            self.observed.record("quality_score", score, || {
                Histogram::new("quality score", 0.0, 1.0 + 1e-9, 20, Scale::Linear)
                    .threshold(threshold, Drops::Below)
            });
        }
        let keep: Option<BooleanArray> = self
            .threshold
            .map(|t| scores.iter().map(|&s| Some(s >= t)).collect());
        let scored = batch_with_added(
            &batch,
            &self.output,
            vec![Arc::new(Float64Array::from(scores))],
        )?;
        let Some(keep) = keep else {
            return Ok(Filtered::all_kept(scored));
        };
        let dropped = keep.false_count();
        if dropped == 0 {
            return Ok(Filtered::all_kept(scored));
        }
        Filtered::split(
            &scored,
            &keep,
            StringArray::from(vec![BELOW_THRESHOLD; dropped]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bottom_k_is_order_independent() {
        let texts: Vec<String> = (0..1000).map(|i| format!("doc {i}")).collect();
        let mut a = BottomK::new(50);
        texts.iter().for_each(|t| a.offer(t));
        let mut b = BottomK::new(50);
        texts.iter().rev().for_each(|t| b.offer(t));
        let (a, b) = (a.into_texts(), b.into_texts());
        assert_eq!(a.len(), 50);
        assert_eq!(a, b);
    }
}
