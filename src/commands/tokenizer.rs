//! `grist tokenizer train` and `grist tokenizer encode`: the `tokenizer_train` and `tokenize`
//! stages without writing a pipeline. Each command writes the pipeline it stands for beside its
//! output and runs it, so it behaves exactly as the stage does, resumably.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::generated::{path_str, source_stage, workdir_beside};
use crate::error::{GristError, Result};
use crate::tokens::tokenizer::TokenizerParams;

/// What `grist tokenizer train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainCommand {
    pub inputs: Vec<String>,
    pub text_column: String,
    pub output: PathBuf,
    pub params: TokenizerParams,
    pub byte_budget: Option<u64>,
    pub seed: u64,
}

impl TrainCommand {
    /// `<output>.work/`.
    pub fn workdir(&self) -> PathBuf {
        workdir_beside(&self.output)
    }

    /// The pipeline (JSON, which YAML reads as is) this command runs.
    pub fn pipeline(&self) -> Result<String> {
        if self.inputs.is_empty() {
            return Err(GristError::Usage(
                "nothing to train on: give --input files".into(),
            ));
        }
        let (mut stages, inputs) = projected_sources(&self.inputs, &self.text_column);
        let mut train = json!({
            "id": "train",
            "type": "tokenizer_train",
            "inputs": inputs,
            "path": path_str(&self.output)?,
            "seed": self.seed,
        });
        // The stage takes the tokenizer's parameters as they are (flattened).
        let params = serde_json::to_value(&self.params).expect("parameters serialize");
        for (k, v) in params.as_object().expect("a struct").clone() {
            train[k] = v;
        }
        if let Some(b) = self.byte_budget {
            train["byte_budget"] = json!(b);
        }
        stages.push(train);
        let pipeline = json!({
            "name": "tokenizer-train",
            "workdir": path_str(&self.workdir())?,
            "stages": stages,
        });
        Ok(serde_json::to_string_pretty(&pipeline).expect("pipelines serialize"))
    }
}

/// One source per input, each projected to `id, text` so inputs of any columns can merge.
fn projected_sources(inputs: &[String], text_column: &str) -> (Vec<Value>, Vec<String>) {
    let mut stages = Vec::new();
    let mut ids = Vec::new();
    for (k, path) in inputs.iter().enumerate() {
        let id = format!("input_{k}");
        let mut source = source_stage(path, text_column);
        source["id"] = json!(id);
        stages.push(source);
        let cols = format!("{id}_cols");
        stages.push(json!({"id": cols, "type": "sql", "inputs": [id], "query": "SELECT id, text FROM docs"}));
        ids.push(cols);
    }
    (stages, ids)
}

/// What `grist tokenizer encode` was asked to do.
#[derive(Debug, Clone)]
pub struct EncodeCommand {
    pub tokenizer: PathBuf,
    /// A file or glob: all of it goes into one dataset.
    pub input: String,
    pub text_column: String,
    /// Output directory; the dataset is `<output>/<name>.idx/.bin`.
    pub output: PathBuf,
    pub name: String,
    pub llmc: bool,
    pub eos: Option<String>,
    pub bos: Option<String>,
}

impl EncodeCommand {
    /// `<output>.work/`.
    pub fn workdir(&self) -> PathBuf {
        workdir_beside(&self.output)
    }

    pub fn pipeline(&self) -> Result<String> {
        let ok_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_name {
            return Err(GristError::Usage(format!(
                "--name `{}` must be letters, digits, `_` and `-`",
                self.name
            )));
        }
        let mut source = source_stage(&self.input, &self.text_column);
        source["id"] = json!(self.name);
        let mut tokenize = json!({
            "id": "tokenize",
            "type": "tokenize",
            "inputs": [self.name],
            "tokenizer": path_str(&self.tokenizer)?,
            "path": path_str(&self.output)?,
            "format": if self.llmc { "llmc" } else { "megatron" },
            "eos": self.eos,
        });
        if let Some(b) = &self.bos {
            tokenize["bos"] = json!(b);
        }
        let pipeline = json!({
            "name": "tokenizer-encode",
            "workdir": path_str(&self.workdir())?,
            "stages": [source, tokenize],
        });
        Ok(serde_json::to_string_pretty(&pipeline).expect("pipelines serialize"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_inputs_are_projected_and_feed_the_stage() {
        let c = TrainCommand {
            inputs: vec!["a.txt".into(), "b/*.jsonl.gz".into()],
            text_column: "text".into(),
            output: "out/tok.json".into(),
            params: TokenizerParams::default(),
            byte_budget: Some(100),
            seed: 3,
        };
        let p: Value = serde_json::from_str(&c.pipeline().unwrap()).unwrap();
        let stages = p["stages"].as_array().unwrap();
        assert_eq!(stages[0]["type"], "read_text");
        assert_eq!(stages[2]["type"], "read_jsonl");
        assert_eq!(stages[4]["inputs"], json!(["input_0_cols", "input_1_cols"]));
        assert_eq!(stages[4]["byte_budget"], 100);
        assert_eq!(p["workdir"], "out/tok.json.work");
    }

    #[test]
    fn encode_names_the_dataset() {
        let c = EncodeCommand {
            tokenizer: "t.json".into(),
            input: "docs.parquet".into(),
            text_column: "content".into(),
            output: "out".into(),
            name: "web".into(),
            llmc: false,
            eos: Some("<|endoftext|>".into()),
            bos: None,
        };
        let p: Value = serde_json::from_str(&c.pipeline().unwrap()).unwrap();
        assert_eq!(p["stages"][0]["id"], "web");
        assert_eq!(p["stages"][0]["text_column"], "content");
        assert_eq!(p["stages"][1]["format"], "megatron");
        let bad = EncodeCommand {
            name: "a/b".into(),
            ..c
        };
        assert!(bad.pipeline().is_err());
    }
}
