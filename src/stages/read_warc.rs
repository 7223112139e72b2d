//! `read_warc`: a source of WARC files (Common Crawl's raw crawl), one document per HTML response.

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
use crate::io::{shards, warc};

/// Reads WARC 1.0 / 1.1 files (`.warc`, `.warc.gz` with a gzip member per record or for the
/// whole file, `.warc.zst` with or without a dictionary frame; `.wet`/`.wet.gz` too): one file,
/// every such file below a directory, or a glob. Each file is one shard.
///
/// `response`, `resource` and WET `conversion` records are documents; the other record types
/// (`warcinfo`, `request`, `metadata`, `revisit`) are not rows. A response's HTTP header is
/// parsed and its payload de-chunked and decompressed (gzip, deflate, br). Only HTML is kept
/// (`text/html`, `application/xhtml+xml`, judged by `WARC-Identified-Payload-Type`, else the
/// declared `Content-Type`, else a sniff of the bytes), plus the plain text of `conversion`
/// records. The payload is decoded to UTF-8: a byte-order mark, else UTF-8 when the bytes are
/// valid UTF-8, else the declared charset (HTTP header, then `<meta charset>`), else the charset
/// `chardetng` detects.
///
/// Columns, as FineWeb's: `text` (the HTML, until `html_extract`), `id` (`WARC-Record-ID`),
/// `url` (`WARC-Target-URI`), `date` (`WARC-Date`), `dump`, `file_path`, `content_type`.
///
/// Rejected rows (with their first kilobyte): `not_html`, `body_too_large`, `bad_http_header`,
/// `bad_content_encoding`, `undecodable`, `truncated_record` (the file ends inside it; every
/// record before is kept), `corrupt_gzip_member` (reading goes on at the next member),
/// `corrupt_zstd` (the rest of the file is lost), `bad_warc_header`, `not_warc` (bytes that are
/// not a record).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadWarc {
    /// File, directory or glob (`crawl/*.warc.gz`), relative to the working directory.
    pub path: String,
    /// The `dump` column. Unset: the first `CC-MAIN-YYYY-WW` in the file's path, else null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    /// Largest record block read (bytes); larger records are rejected as `body_too_large`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_max_body_bytes() -> usize {
    warc::DEFAULT_MAX_BODY_BYTES
}

impl StageConfig for ReadWarc {
    const TYPE: &'static str = "read_warc";
    const KIND: StageKind = StageKind::Source;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = check_path(&self.path);
        if self.max_body_bytes == 0 || self.max_body_bytes > crate::io::MAX_DOCUMENT_BYTES {
            problems.push(ParamProblem {
                param: "max_body_bytes",
                message: format!(
                    "`max_body_bytes` must be between 1 and {} (1 GiB)",
                    crate::io::MAX_DOCUMENT_BYTES
                ),
            });
        }
        problems
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Source(Arc::new(WarcSource {
            pattern: self.path.clone(),
            opts: warc::ReadOptions {
                dump: self.dump.clone(),
                max_body_bytes: self.max_body_bytes,
            },
        })))
    }
}

struct WarcSource {
    pattern: String,
    opts: warc::ReadOptions,
}

impl Source for WarcSource {
    fn shards(&self) -> Result<Vec<Shard>> {
        shards::list(&self.pattern, warc::EXTENSIONS)
    }

    fn would_read(&self, path: &Path) -> bool {
        shards::would_list(&self.pattern, warc::EXTENSIONS, path)
    }

    fn schema(&self, _shard: &Shard) -> Result<SchemaRef> {
        Ok(warc::schema())
    }

    fn open(&self, shard: &Shard, batch_size: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(warc::open(shard, &self.opts, batch_size)?))
    }
}
