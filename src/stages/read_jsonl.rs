//! `read_jsonl`: a source of JSON Lines shards (plain, `.gz`, `.zst`).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::read_parquet::{check_path, default_id_column, default_text_column};
use super::{
    BuildContext, ParamProblem, Shard, Source, SourceReader, Stage, StageConfig, StageKind,
};
use crate::error::Result;
use crate::io::normalize::ColumnMapping;
use crate::io::{jsonl, shards};

/// Reads JSON Lines shards: one file, every `.jsonl`/`.json` (optionally `.gz`/`.zst`) file below
/// a directory, or a glob. Each shard is one task. The schema of a shard is inferred from its
/// objects as Arrow infers JSON (integers and floats widen to floats, mixed scalars to strings, a
/// scalar beside a list to a list); a line whose field cannot be merged with the lines before it
/// (an object where they have a scalar) is left out of the schema. A line that is not UTF-8 (`invalid_utf8`), not a JSON object (`invalid_json`), does not
/// fit the shard's schema (`schema_mismatch`), has no text (`null_text`) or is longer than 1 GiB
/// (`document_too_large`, its first kilobyte kept) is rejected, with its line index and raw
/// content, instead of failing the shard.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadJsonl {
    /// File, directory or glob (`data/*.jsonl.gz`), relative to the working directory.
    pub path: String,
    /// Field holding the document text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Field holding the document id.
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Lines read to infer each shard's schema. Unset: the whole shard (no field is missed).
    /// With a limit, a line with a field not seen in the first lines is rejected as
    /// `schema_mismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_rows: Option<usize>,
}

impl StageConfig for ReadJsonl {
    const TYPE: &'static str = "read_jsonl";
    const KIND: StageKind = StageKind::Source;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = check_path(&self.path);
        if self.infer_rows == Some(0) {
            problems.push(ParamProblem {
                param: "infer_rows",
                message: "`infer_rows` must be at least 1 (leave it unset to read the whole shard)"
                    .into(),
            });
        }
        problems
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Source(Arc::new(JsonlSource {
            pattern: self.path.clone(),
            opts: jsonl::ReadOptions {
                mapping: ColumnMapping {
                    text_column: self.text_column.clone(),
                    id_column: self.id_column.clone(),
                },
                infer_rows: self.infer_rows,
                max_line_bytes: crate::io::MAX_DOCUMENT_BYTES,
            },
            reference: OnceLock::new(),
        })))
    }
}

struct JsonlSource {
    pattern: String,
    opts: jsonl::ReadOptions,
    /// Raw schema of the first shard that has objects: the schema of shards that have none.
    reference: OnceLock<Option<SchemaRef>>,
}

impl JsonlSource {
    fn reference_schema(&self) -> Option<SchemaRef> {
        self.reference
            .get_or_init(|| {
                let limit = Some(self.opts.infer_rows.unwrap_or(1000));
                self.shards().ok()?.iter().find_map(|s| {
                    let schema =
                        jsonl::infer_schema(&s.path, limit, self.opts.max_line_bytes).ok()?;
                    (!schema.fields().is_empty()).then(|| Arc::new(schema))
                })
            })
            .clone()
    }
}

impl Source for JsonlSource {
    fn shards(&self) -> Result<Vec<Shard>> {
        shards::list(&self.pattern, jsonl::EXTENSIONS)
    }

    fn would_read(&self, path: &Path) -> bool {
        shards::would_list(&self.pattern, jsonl::EXTENSIONS, path)
    }

    fn schema(&self, shard: &Shard) -> Result<SchemaRef> {
        // Config-time check: a bounded look at the shard is enough to find the text column.
        let opts = jsonl::ReadOptions {
            infer_rows: Some(self.opts.infer_rows.unwrap_or(1000)),
            ..self.opts.clone()
        };
        Ok(jsonl::open(shard, &opts, 1, self.reference_schema())?.schema())
    }

    fn open(&self, shard: &Shard, batch_size: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(jsonl::open(
            shard,
            &self.opts,
            batch_size,
            self.reference_schema(),
        )?))
    }
}
