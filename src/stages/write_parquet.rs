//! `write_parquet`: writes each task's rows to one zstd-compressed Parquet file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BuildContext, ParamProblem, Sink, SinkWriter, Stage, StageConfig, StageKind};
use crate::error::Result;
use crate::io::parquet::{ParquetFileWriter, WriteOptions};

/// Writes one Parquet file per input shard into `path`, named `<source id>-<shard index>.parquet`
/// (deterministic, so a re-run overwrites rather than duplicates). With `rejects`, the rows every
/// upstream stage rejected go to `<rejects>/<stage id>/` in the same format, with `stage` and
/// `reason` columns added.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteParquet {
    /// Output directory.
    pub path: String,
    /// Directory for rejected rows; none are written when unset (they are still counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<String>,
    /// zstd compression level (1-22).
    #[serde(default = "default_zstd_level")]
    pub compression_level: i32,
    /// Most rows in one row group.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Most (estimated, encoded) bytes in one row group; bounds the writer's memory.
    #[serde(default = "default_row_group_bytes")]
    pub row_group_bytes: usize,
}

fn default_zstd_level() -> i32 {
    3
}

fn default_row_group_rows() -> usize {
    1 << 20
}

fn default_row_group_bytes() -> usize {
    128 << 20
}

/// Problems common to every writer's `path` / `rejects`.
pub fn check_paths(path: &str, rejects: Option<&str>) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    if path.trim().is_empty() {
        problems.push(ParamProblem {
            param: "path",
            message: "`path` is empty".into(),
        });
    }
    if rejects.is_some_and(|r| Path::new(r) == Path::new(path)) {
        problems.push(ParamProblem {
            param: "rejects",
            message: "`rejects` must differ from `path`, or rejected rows would mix with kept ones"
                .into(),
        });
    }
    problems
}

impl StageConfig for WriteParquet {
    const TYPE: &'static str = "write_parquet";
    const KIND: StageKind = StageKind::Sink;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = check_paths(&self.path, self.rejects.as_deref());
        if !(1..=22).contains(&self.compression_level) {
            problems.push(ParamProblem {
                param: "compression_level",
                message: format!("zstd level {} is outside 1..=22", self.compression_level),
            });
        }
        for (param, value) in [
            ("row_group_rows", self.row_group_rows),
            ("row_group_bytes", self.row_group_bytes),
        ] {
            if value == 0 {
                problems.push(ParamProblem {
                    param,
                    message: format!("`{param}` must be at least 1"),
                });
            }
        }
        problems
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Sink(Arc::new(ParquetSink {
            dir: PathBuf::from(&self.path),
            rejects: self.rejects.as_ref().map(PathBuf::from),
            opts: WriteOptions {
                zstd_level: self.compression_level,
                row_group_rows: self.row_group_rows,
                row_group_bytes: self.row_group_bytes,
            },
        })))
    }
}

struct ParquetSink {
    dir: PathBuf,
    rejects: Option<PathBuf>,
    opts: WriteOptions,
}

impl Sink for ParquetSink {
    fn output_dir(&self) -> &Path {
        &self.dir
    }

    fn rejects_dir(&self) -> Option<&Path> {
        self.rejects.as_deref()
    }

    fn extension(&self) -> &str {
        "parquet"
    }

    fn create(&self, path: &Path, schema: SchemaRef) -> Result<Box<dyn SinkWriter>> {
        Ok(Box::new(ParquetFileWriter::create(
            path, schema, &self.opts,
        )?))
    }
}

impl SinkWriter for ParquetFileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        ParquetFileWriter::write(self, batch)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        ParquetFileWriter::finish(*self)
    }
}
