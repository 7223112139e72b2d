//! `read_parquet`: a source of Parquet shards.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BuildContext, ParamProblem, Shard, Source, SourceReader, Stage, StageConfig, StageKind,
};
use crate::error::Result;
use crate::io::normalize::ColumnMapping;
use crate::io::{parquet, shards};

/// Reads Parquet shards: one file, every `.parquet` file below a directory, or a glob. Each shard
/// is one task. Every column passes through; the text column is renamed `text`, and `id` is
/// derived as `<shard name>/<row>` when the input has no id column.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadParquet {
    /// File, directory or glob (`data/raw/*.parquet`), relative to the working directory.
    pub path: String,
    /// Column holding the document text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Column holding the document id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Top-level columns to read (the text and id columns are always read); all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

pub fn default_text_column() -> String {
    "text".into()
}

pub fn default_id_column() -> String {
    "id".into()
}

pub fn check_path(path: &str) -> Vec<ParamProblem> {
    if path.trim().is_empty() {
        vec![ParamProblem {
            param: "path",
            message: "`path` is empty".into(),
        }]
    } else {
        Vec::new()
    }
}

impl StageConfig for ReadParquet {
    const TYPE: &'static str = "read_parquet";
    const KIND: StageKind = StageKind::Source;

    fn check(&self) -> Vec<ParamProblem> {
        check_path(&self.path)
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Source(Arc::new(ParquetSource {
            pattern: self.path.clone(),
            opts: parquet::ReadOptions {
                mapping: ColumnMapping {
                    text_column: self.text_column.clone(),
                    id_column: self.id_column.clone(),
                },
                columns: self.columns.clone(),
            },
        })))
    }
}

struct ParquetSource {
    pattern: String,
    opts: parquet::ReadOptions,
}

impl Source for ParquetSource {
    fn shards(&self) -> Result<Vec<Shard>> {
        shards::list(&self.pattern, &[".parquet"])
    }

    fn would_read(&self, path: &Path) -> bool {
        shards::would_list(&self.pattern, &[".parquet"], path)
    }

    fn schema(&self, shard: &Shard) -> Result<SchemaRef> {
        parquet::shard_schema(shard, &self.opts)
    }

    fn open(&self, shard: &Shard, batch_size: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(parquet::open(shard, &self.opts, batch_size)?))
    }
}
