//! `grist classifier train`: the `classifier_train` stage without writing a pipeline. The command
//! writes the pipeline it stands for (one source per input, a `sql` projection, the training
//! barrier) beside the model and runs it, so it behaves exactly as the stage does, resumably.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::generated::{path_str, source_stage, workdir_beside};
use crate::classifier::train::TrainParams;
use crate::error::{GristError, Result};

/// What `grist classifier train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainCommand {
    /// Inputs labelled `positive_label`.
    pub positive: Vec<String>,
    /// Inputs labelled `negative_label`.
    pub negative: Vec<String>,
    /// Inputs whose `label_column` holds each document's label.
    pub labelled: Vec<String>,
    pub label_column: Option<String>,
    pub text_column: String,
    pub positive_label: String,
    pub negative_label: String,
    pub output: PathBuf,
    pub validation_fraction: f64,
    pub seed: u64,
    pub fasttext: TrainParams,
}

impl TrainCommand {
    /// Where the pipeline, its markers and stored input live: `<model>.work/`.
    pub fn workdir(&self) -> PathBuf {
        workdir_beside(&self.output)
    }

    /// The pipeline (JSON, which YAML reads as is) this command runs.
    pub fn pipeline(&self) -> Result<String> {
        if self.positive.is_empty() != self.negative.is_empty() {
            return Err(GristError::Usage(
                "give both --positive and --negative inputs (or --input with --label-column)"
                    .into(),
            ));
        }
        if self.positive.is_empty() && self.labelled.is_empty() {
            return Err(GristError::Usage(
                "nothing to train on: give --positive and --negative, or --input with --label-column"
                    .into(),
            ));
        }
        if !self.labelled.is_empty() && self.label_column.is_none() {
            return Err(GristError::Usage("--input needs --label-column".into()));
        }
        let mut stages = Vec::new();
        let mut inputs = Vec::new();
        let mut labels = serde_json::Map::new();
        let groups = [
            ("positive", &self.positive, Some(&self.positive_label)),
            ("negative", &self.negative, Some(&self.negative_label)),
            ("input", &self.labelled, None),
        ];
        for (kind, paths, label) in groups {
            for (k, path) in paths.iter().enumerate() {
                let id = format!("{kind}_{k}");
                let mut source = source_stage(path, &self.text_column);
                source["id"] = json!(id);
                stages.push(source);
                let mut query = "SELECT id, text".to_string();
                if let (None, Some(col)) = (label, &self.label_column) {
                    query.push_str(&format!(", \"{}\" AS label", col.replace('"', "\"\"")));
                }
                query.push_str(" FROM docs");
                let cols = format!("{id}_cols");
                stages.push(json!({"id": cols, "type": "sql", "inputs": [id], "query": query}));
                if let Some(label) = label {
                    labels.insert(cols.clone(), json!(label));
                }
                inputs.push(cols);
            }
        }
        let mut train = json!({
            "id": "train",
            "type": "classifier_train",
            "inputs": inputs,
            "model": path_str(&self.output)?,
            "positive_label": self.positive_label,
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "fasttext": self.fasttext,
        });
        match self.labelled.is_empty() {
            true => train["labels"] = Value::Object(labels),
            false => train["label_column"] = json!("label"),
        }
        stages.push(train);
        let pipeline = json!({
            "name": "classifier-train",
            "workdir": path_str(&self.workdir())?,
            "stages": stages,
        });
        Ok(serde_json::to_string_pretty(&pipeline).expect("pipelines serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> TrainCommand {
        TrainCommand {
            positive: vec!["good.txt".into()],
            negative: vec!["web/*.jsonl.gz".into()],
            labelled: vec![],
            label_column: None,
            text_column: "text".into(),
            positive_label: "hq".into(),
            negative_label: "cc".into(),
            output: "m/q.bin".into(),
            validation_fraction: 0.1,
            seed: 0,
            fasttext: TrainParams::default(),
        }
    }

    #[test]
    fn positive_and_negative_inputs_become_labelled_stages() {
        let p: Value = serde_json::from_str(&command().pipeline().unwrap()).unwrap();
        let stages = p["stages"].as_array().unwrap();
        assert_eq!(stages[0]["type"], "read_text");
        assert_eq!(stages[2]["type"], "read_jsonl");
        let train = &stages[4];
        assert_eq!(train["labels"]["positive_0_cols"], "hq");
        assert_eq!(train["labels"]["negative_0_cols"], "cc");
        assert_eq!(p["workdir"], "m/q.bin.work");
    }

    #[test]
    fn a_label_column_is_projected_and_named() {
        let mut c = command();
        c.positive.clear();
        c.negative.clear();
        c.labelled = vec!["l.parquet".into()];
        c.label_column = Some("quality".into());
        let p: Value = serde_json::from_str(&c.pipeline().unwrap()).unwrap();
        assert_eq!(
            p["stages"][1]["query"],
            "SELECT id, text, \"quality\" AS label FROM docs"
        );
        assert_eq!(p["stages"][2]["label_column"], "label");
        c.label_column = None;
        assert!(c.pipeline().is_err());
    }
}
