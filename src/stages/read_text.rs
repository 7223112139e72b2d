//! `read_text`: a source of plain-text files (plain, `.gz`, `.zst`), split into documents.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::read_parquet::check_path;
use super::{
    BuildContext, ParamProblem, Shard, Source, SourceReader, Stage, StageConfig, StageKind,
};
use crate::error::Result;
pub use crate::io::plain::Split;
use crate::io::{plain, shards};

/// Reads plain-text files (WikiText, books, code): one file, every `.txt` (optionally `.gz` /
/// `.zst`) file below a directory, or a glob. Each file is one shard, split into documents by
/// `split`: `paragraph` (blocks separated by blank lines; the default), `line`, or `file` (the
/// whole file). Blank documents are skipped, not counted. Columns: `id` (`<file>/<n>`, n counting
/// documents from 0) and `text` (without the trailing newline). A document that is not UTF-8 is
/// rejected as `invalid_utf8` (its text decoded lossily).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadText {
    /// File, directory or glob (`data/*.txt`), relative to the working directory.
    pub path: String,
    /// How a file is cut into documents: `paragraph`, `line` or `file`.
    #[serde(default)]
    pub split: Split,
}

impl StageConfig for ReadText {
    const TYPE: &'static str = "read_text";
    const KIND: StageKind = StageKind::Source;

    fn check(&self) -> Vec<ParamProblem> {
        check_path(&self.path)
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Source(Arc::new(TextSource {
            pattern: self.path.clone(),
            split: self.split,
        })))
    }
}

struct TextSource {
    pattern: String,
    split: Split,
}

impl Source for TextSource {
    fn shards(&self) -> Result<Vec<Shard>> {
        shards::list(&self.pattern, plain::EXTENSIONS)
    }

    fn would_read(&self, path: &Path) -> bool {
        shards::would_list(&self.pattern, plain::EXTENSIONS, path)
    }

    fn schema(&self, _shard: &Shard) -> Result<SchemaRef> {
        Ok(plain::schema())
    }

    fn open(&self, shard: &Shard, batch_size: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(plain::open(shard, self.split, batch_size)?))
    }
}
