//! `langid`: language identification with a fastText model (lid.176), as datatrove's
//! `LanguageFilter` does it for FineWeb.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, SchemaRef};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BuildContext, Filtered, ParamProblem, Stage, StageConfig, StageKind, Transform, TransformTask,
    batch_with_added, schema_with_added, text_values,
};
use crate::classifier::model::FastTextModel;
use crate::error::{GristError, Result};
use crate::io::stats::{Drops, Histogram, Scale, StageStats};

/// Identifies the language of each document with a fastText model and adds the `language` and
/// `language_score` columns (the best label and its probability). Newlines become spaces before
/// prediction, over the whole text, as in datatrove. A document is kept when its best score is
/// above `min_score`, or, with `languages`, when one of those languages scores above it (a
/// language outside the top `k` labels scores 0). Reasons: `wrong_language`, `low_language_score`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Langid {
    /// fastText language-ID model: `lid.176.ftz` (bundled) or `lid.176.bin`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Languages to keep, as the model's labels (`en`, `de`, ...); unset keeps any language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    /// Score a document must exceed (strictly), as datatrove's `language_threshold`.
    #[serde(default = "default_min_score")]
    pub min_score: f64,
    /// Labels predicted per document; -1 for all of them.
    #[serde(default = "default_k")]
    pub k: i32,
    /// Only add the columns; keep every document.
    #[serde(default)]
    pub label_only: bool,
}

fn default_model() -> String {
    "filters/models/lid.176.ftz".into()
}

fn default_min_score() -> f64 {
    0.65
}

fn default_k() -> i32 {
    -1
}

impl StageConfig for Langid {
    const TYPE: &'static str = "langid";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(0.0..1.0).contains(&self.min_score) {
            problems.push(ParamProblem {
                param: "min_score",
                message: format!("`min_score` {} is not in [0, 1)", self.min_score),
            });
        }
        if self.k == 0 || self.k < -1 {
            problems.push(ParamProblem {
                param: "k",
                message: "`k` is -1 (all labels) or at least 1".into(),
            });
        }
        if self.languages.as_ref().is_some_and(|l| l.is_empty()) {
            problems.push(ParamProblem {
                param: "languages",
                message: "`languages` is empty; leave it unset to keep every language".into(),
            });
        }
        problems
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.model)]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        let model = LanguageModel::load(Path::new(&self.model))
            .map_err(|e| GristError::param(stage_id, "model", e))?;
        if let Some(langs) = &self.languages {
            let unknown: Vec<&str> = langs
                .iter()
                .filter(|l| !model.labels().contains(l))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(GristError::param(
                    stage_id,
                    "languages",
                    format!("`{}` has no label {}", self.model, unknown.join(", ")),
                ));
            }
        }
        Ok(Stage::Transform(Arc::new(LangidTransform {
            stage_id: stage_id.to_string(),
            model: Arc::new(model),
            config: self.clone(),
        })))
    }
}

/// lid.176 (or another language-ID model), predicting on whole documents.
pub struct LanguageModel {
    model: FastTextModel,
}

impl LanguageModel {
    pub fn load(path: &Path) -> std::result::Result<Self, String> {
        Ok(LanguageModel {
            model: FastTextModel::load(path)?,
        })
    }

    pub fn labels(&self) -> &[String] {
        self.model.labels()
    }

    /// Labels (without `__label__`) and probabilities, best first, as Python fastText's
    /// `predict(text.replace("\n", " "), k)` gives them.
    pub fn predict(&self, text: &str, k: i32) -> std::result::Result<Vec<(String, f32)>, String> {
        self.model.predict_line(&text.replace('\n', " "), k)
    }
}

struct LangidTransform {
    stage_id: String,
    model: Arc<LanguageModel>,
    config: Langid,
}

impl Transform for LangidTransform {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        let output = schema_with_added(
            &input,
            vec![
                Field::new("language", DataType::Utf8, true),
                Field::new("language_score", DataType::Float64, true),
            ],
        );
        Ok(Box::new(LangidTask {
            stage_id: self.stage_id.clone(),
            model: self.model.clone(),
            config: self.config.clone(),
            output,
            observed: StageStats::default(),
        }))
    }
}

struct LangidTask {
    stage_id: String,
    model: Arc<LanguageModel>,
    config: Langid,
    output: SchemaRef,
    /// Languages and top scores since the last `observe`.
    observed: StageStats,
}

/// What became of one document.
enum Verdict {
    Keep,
    Drop(&'static str),
}

impl LangidTask {
    fn judge(&self, predictions: &[(String, f32)]) -> (Option<String>, Option<f64>, Verdict) {
        let Some((best, best_score)) = predictions.first() else {
            return (
                None,
                None,
                if self.config.label_only {
                    Verdict::Keep
                } else {
                    Verdict::Drop("low_language_score")
                },
            );
        };
        let best_score = f64::from(*best_score);
        let min = self.config.min_score;
        let verdict = if self.config.label_only {
            Verdict::Keep
        } else if let Some(langs) = &self.config.languages {
            let passes = langs.iter().any(|l| {
                predictions
                    .iter()
                    .find(|(p, _)| p == l)
                    .is_some_and(|(_, s)| f64::from(*s) > min)
            });
            match passes {
                true => Verdict::Keep,
                false if langs.contains(best) => Verdict::Drop("low_language_score"),
                false => Verdict::Drop("wrong_language"),
            }
        } else if best_score > min {
            Verdict::Keep
        } else {
            Verdict::Drop("low_language_score")
        };
        (Some(best.clone()), Some(best_score), verdict)
    }
}

impl TransformTask for LangidTask {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn observe(&mut self, stats: &mut StageStats) {
        stats.merge(&std::mem::take(&mut self.observed));
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let texts = text_values(&batch)?;
        let k = self.config.k;
        let predictions: Vec<Vec<(String, f32)>> = texts
            .par_iter()
            .map(|t| self.model.predict(t.unwrap_or(""), k))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| GristError::stage(&self.stage_id, e))?;
        let mut languages = Vec::with_capacity(texts.len());
        let mut scores = Vec::with_capacity(texts.len());
        let mut keep = Vec::with_capacity(texts.len());
        let mut reasons = Vec::new();
        for p in &predictions {
            let (language, score, verdict) = self.judge(p);
            self.observed
                .count("language", language.as_deref().unwrap_or("none"), 1);
            if let Some(score) = score {
                let threshold = (!self.config.label_only).then_some(self.config.min_score);
                self.observed.record("language_score", score, || {
                    Histogram::new("top language score", 0.0, 1.0 + 1e-9, 20, Scale::Linear)
                        .threshold(threshold, Drops::Below)
                });
            }
            languages.push(language);
            scores.push(score);
            match verdict {
                Verdict::Keep => keep.push(true),
                Verdict::Drop(reason) => {
                    keep.push(false);
                    reasons.push(reason);
                }
            }
        }
        let labelled = batch_with_added(
            &batch,
            &self.output,
            vec![
                Arc::new(StringArray::from(languages)),
                Arc::new(Float64Array::from(scores)),
            ],
        )?;
        if reasons.is_empty() {
            return Ok(Filtered::all_kept(labelled));
        }
        Filtered::split(
            &labelled,
            &BooleanArray::from(keep),
            StringArray::from(reasons),
        )
    }
}
