//! `write_jsonl`: writes each task's rows to one JSON Lines file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::write_parquet::check_paths;
use super::{BuildContext, ParamProblem, Sink, SinkWriter, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::io::compress::Compression;
use crate::io::jsonl::JsonlFileWriter;

/// Writes one JSON Lines file per input shard into `path`, named
/// `<source id>-<shard index>.jsonl[.gz|.zst]`. Null fields are left out of each object. With
/// `rejects`, rejected rows go to `<rejects>/<stage id>/` with `stage` and `reason` fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteJsonl {
    /// Output directory.
    pub path: String,
    /// Directory for rejected rows; none are written when unset (they are still counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<String>,
    /// `none`, `gzip` or `zstd`.
    #[serde(default)]
    pub compression: Compression,
}

impl StageConfig for WriteJsonl {
    const TYPE: &'static str = "write_jsonl";
    const KIND: StageKind = StageKind::Sink;

    fn check(&self) -> Vec<ParamProblem> {
        check_paths(&self.path, self.rejects.as_deref())
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Sink(Arc::new(JsonlSink {
            dir: PathBuf::from(&self.path),
            rejects: self.rejects.as_ref().map(PathBuf::from),
            compression: self.compression,
            extension: format!("jsonl{}", self.compression.suffix()),
        })))
    }
}

struct JsonlSink {
    dir: PathBuf,
    rejects: Option<PathBuf>,
    compression: Compression,
    extension: String,
}

impl Sink for JsonlSink {
    fn output_dir(&self) -> &Path {
        &self.dir
    }

    fn rejects_dir(&self) -> Option<&Path> {
        self.rejects.as_deref()
    }

    fn extension(&self) -> &str {
        &self.extension
    }

    fn create(&self, path: &Path, _schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(JsonlFileWriter::create(path, self.compression)?))
    }
}

impl SinkWriter for JsonlFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        JsonlFileWriter::write(self, batch)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        JsonlFileWriter::finish(*self)
    }
}
