//! `classifier_train`: trains a fastText quality classifier from the documents reaching it (a
//! barrier: it needs all of them), as DCLM trains its `fasttext-oh-eli5` filter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind, for_each_stored_batch, text_values,
};
use crate::classifier::train::{self, EMPTY_TEXT, Examples, TrainParams};
use crate::error::{GristError, Result};
use crate::io::atomic;
use crate::io::stats::StageStats;

/// Trains a supervised fastText classifier on the documents of its inputs and writes the model
/// (`.bin`) to `model`, for `quality_classifier` stages to use. Each document's label comes
/// either from the input stage it arrives through (`labels`: DCLM's recipe, e.g. reference text
/// `hq` vs random web text `cc`) or from a column (`label_column`). Texts are normalised as DCLM
/// does (whitespace runs become one space). A seeded share of the documents, chosen by id, is held
/// out: precision, recall and F1 of `positive_label` on it are in the stage's stats and in
/// `report.json` beside the model. Documents with an empty text (`empty_text`) or no label
/// (`no_label`), or a label with whitespace in it (`invalid_label`) are not used. With `fasttext.thread: 1` (the default) training is deterministic.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifierTrain {
    /// Where to write the trained model, e.g. `models/quality.bin`.
    pub model: String,
    /// Label of the documents arriving through each input stage, by stage id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Column holding each document's label (instead of `labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// The label of good documents: validation metrics are about it.
    #[serde(default = "default_positive_label")]
    pub positive_label: String,
    /// Share of the documents held out for validation.
    #[serde(default = "train::default_validation_fraction")]
    pub validation_fraction: f64,
    /// Seeds the train / validation split.
    #[serde(default)]
    pub seed: u64,
    /// fastText's training parameters (`dim`, `epoch`, `lr`, `wordNgrams`, `minCount`, `bucket`,
    /// `loss`, `thread`), fastText's defaults except `wordNgrams: 2`.
    #[serde(default)]
    pub fasttext: TrainParams,
}

pub fn default_positive_label() -> String {
    "hq".into()
}

/// A fastText label is one whitespace-free token.
pub fn check_label(label: &str) -> Option<String> {
    (label.is_empty() || label.chars().any(crate::text::python::is_space))
        .then(|| format!("label `{label}` must be one word without whitespace"))
}

impl StageConfig for ClassifierTrain {
    const TYPE: &'static str = "classifier_train";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems: Vec<ParamProblem> = self
            .fasttext
            .problems()
            .into_iter()
            .map(|(_, message)| ParamProblem {
                param: "fasttext",
                message,
            })
            .collect();
        let mut problem = |param, message| problems.push(ParamProblem { param, message });
        if self.model.trim().is_empty() {
            problem("model", "`model` is empty".into());
        }
        match (&self.labels, &self.label_column) {
            (None, None) => problem(
                "labels",
                "give `labels` (a label per input stage) or `label_column`".into(),
            ),
            (Some(_), Some(_)) => problem(
                "label_column",
                "`labels` and `label_column` are two ways to label documents; give one".into(),
            ),
            (Some(labels), None) => {
                for message in labels.values().filter_map(|l| check_label(l)) {
                    problem("labels", message);
                }
            }
            _ => {}
        }
        if let Some(message) = check_label(&self.positive_label) {
            problem("positive_label", message);
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            problem(
                "validation_fraction",
                format!(
                    "`validation_fraction` {} is not in [0, 1)",
                    self.validation_fraction
                ),
            );
        }
        problems
    }

    fn makes_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.model)]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Barrier(Arc::new(TrainBarrier {
            config: self.clone(),
            stage_id: ctx.stage_id.to_string(),
        })))
    }
}

struct TrainBarrier {
    config: ClassifierTrain,
    stage_id: String,
}

impl Barrier for TrainBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["train"]
    }

    fn task_count(&self, _phase: usize, _inputs: &[BarrierInput]) -> usize {
        1
    }

    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>> {
        if let Some(column) = &self.config.label_column {
            match input.field_with_name(column) {
                Ok(f) if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8) => {}
                Ok(f) => {
                    return Err(GristError::param(
                        &self.stage_id,
                        "label_column",
                        format!("column `{column}` is {}, not a string", f.data_type()),
                    ));
                }
                Err(_) => {
                    return Err(GristError::param(
                        &self.stage_id,
                        "label_column",
                        format!("the input has no column `{column}`"),
                    ));
                }
            }
        }
        Ok(None)
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let c = &self.config;
        if let Some(labels) = &c.labels {
            let inputs: Vec<&String> = labels.keys().collect();
            for input in task.inputs {
                if !labels.contains_key(&input.via) {
                    return Err(GristError::param(
                        task.stage_id,
                        "labels",
                        format!(
                            "documents arrive through `{}`, which `labels` does not label (it labels {})",
                            input.via,
                            inputs
                                .iter()
                                .map(|s| format!("`{s}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
        let mut stats = StageStats::default();
        let work = task.dir.join("examples");
        let mut examples = Examples::create(&work, c.seed, c.validation_fraction)?;
        for input in task.inputs {
            let input_label = c.labels.as_ref().map(|l| l[&input.via].as_str());
            for_each_stored_batch(&input.path, task.batch_size, |batch| {
                add_batch(&mut examples, &mut stats, batch, input_label, c)
            })?;
        }
        let report = train::train(examples, &c.fasttext, &c.positive_label, c.model.as_ref())?;
        let _ = std::fs::remove_dir(&work);
        let report_path = PathBuf::from(&c.model).with_extension("report.json");
        let mut json = serde_json::to_vec_pretty(&report).expect("reports serialize");
        json.push(b'\n');
        atomic::write(&report_path, &json)?;
        let held: u64 = report.validation_examples.values().sum();
        let trained: u64 = report.train_examples.values().sum();
        stats.metrics = BTreeMap::from([
            ("train_docs".into(), trained as f64),
            ("validation_docs".into(), held as f64),
            ("validation_precision".into(), report.precision),
            ("validation_recall".into(), report.recall),
            ("validation_f1".into(), report.f1),
            ("validation_accuracy".into(), report.accuracy),
        ]);
        tracing::info!(
            "{}: trained on {trained} documents; validation ({held}): precision {:.4}, recall {:.4}, F1 {:.4} for `{}`",
            task.stage_id,
            report.precision,
            report.recall,
            report.f1,
            c.positive_label
        );
        Ok(BarrierOutcome {
            outputs: vec![report.model, report_path],
            stats,
        })
    }
}

fn add_batch(
    examples: &mut Examples,
    stats: &mut StageStats,
    batch: &RecordBatch,
    input_label: Option<&str>,
    c: &ClassifierTrain,
) -> Result<()> {
    let texts = text_values(batch)?;
    let ids = match batch.column_by_name(crate::io::ID_COLUMN) {
        Some(col) => Some(arrow::compute::cast(col, &DataType::Utf8)?),
        None => None,
    };
    let ids = ids.as_ref().map(|c| c.as_string::<i32>());
    let labels = match &c.label_column {
        Some(name) => {
            let col = batch.column_by_name(name).ok_or_else(|| {
                GristError::param(
                    "classifier_train",
                    "label_column",
                    format!("no column `{name}`"),
                )
            })?;
            Some(arrow::compute::cast(col, &DataType::Utf8)?)
        }
        None => None,
    };
    let labels = labels.as_ref().map(|l| l.as_string::<i32>());
    for (row, text) in texts.iter().enumerate() {
        stats.rows_in += 1;
        let label = match (input_label, labels) {
            (Some(l), _) => Some(l),
            (None, Some(col)) if col.is_valid(row) => Some(col.value(row)),
            _ => None,
        };
        let Some(label) = label else {
            stats.reject("no_label", 1);
            continue;
        };
        if check_label(label).is_some() {
            stats.reject("invalid_label", 1);
            continue;
        }
        let id = match &ids {
            Some(ids) if ids.is_valid(row) => ids.value(row).to_string(),
            _ => format!("{}", stats.rows_in),
        };
        if examples.add(&id, label, text.unwrap_or(""))? {
            stats.rows_kept += 1;
            stats.bytes_kept += text.map_or(0, |t| t.len() as u64);
        } else {
            stats.reject(EMPTY_TEXT, 1);
        }
    }
    Ok(())
}
