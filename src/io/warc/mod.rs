//! WARC files (1.0 and 1.1; plain, `.gz` with a member per record or one for the whole file,
//! `.zst`) read as documents with FineWeb's columns: `text` (the decoded payload: HTML until
//! extraction, plain text for WET `conversion` records), `id` (`WARC-Record-ID`), `url`
//! (`WARC-Target-URI`), `date` (`WARC-Date`), `dump`, `file_path` and `content_type`.
//!
//! Only `response`, `resource` and `conversion` records are documents; `warcinfo`, `request`,
//! `metadata`, `revisit` and `continuation` records describe them and are not rows. A document
//! record that is not HTML (or, for `conversion`, plain text), has a broken HTTP header or
//! encoding, a payload over the size cap, or bytes no charset decodes, is a rejected row with
//! its reason; so are truncated records, corrupt gzip members and bytes that are not a record.
//! A record cannot span two files (the format has `continuation` records for segmented records;
//! Common Crawl does not write them, and grist does not join them), so every file is read alone.

mod payload;
mod records;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::batch::{Filtered, Rejected, Shard, SourceReader};
use super::{ID_COLUMN, TEXT_COLUMN};
use crate::error::{GristError, Result};
pub use records::EXTENSIONS;
use records::{Damage, Fields, Next, Record, RecordReader};

/// Why a document record is rejected, besides the reasons of [`records`] and [`payload`].
pub const BODY_TOO_LARGE: &str = "body_too_large";

/// The default cap on a record's block (Common Crawl cuts payloads at 1 MiB; other crawls less
/// often): larger records are rejected as `body_too_large` with their first kilobyte kept.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The `dump` column; `None` takes the first `CC-MAIN-YYYY-WW` in the file's path, if any.
    pub dump: Option<String>,
    pub max_body_bytes: usize,
}

/// The columns of the batches (kept and rejected rows alike).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(TEXT_COLUMN, DataType::Utf8, false),
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("date", DataType::Utf8, true),
        Field::new("dump", DataType::Utf8, true),
        Field::new("file_path", DataType::Utf8, false),
        Field::new("content_type", DataType::Utf8, true),
    ]))
}

/// The Common Crawl dump named in a path (`CC-MAIN-2024-10`), if any.
fn dump_in_path(path: &Path) -> Option<String> {
    static DUMP: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = DUMP.get_or_init(|| regex::Regex::new(r"CC-MAIN-\d{4}-\d{2}").expect("valid regex"));
    re.find(&path.to_string_lossy())
        .map(|m| m.as_str().to_string())
}

pub fn open(shard: &Shard, opts: &ReadOptions, batch_size: usize) -> Result<WarcReader> {
    let max_body = opts.max_body_bytes.clamp(1, super::MAX_DOCUMENT_BYTES);
    Ok(WarcReader {
        records: RecordReader::open(&shard.path, max_body)?,
        shard: shard.clone(),
        file_path: shard.path.to_string_lossy().into_owned(),
        dump: opts.dump.clone().or_else(|| dump_in_path(&shard.path)),
        max_body,
        batch_size: batch_size.max(1),
    })
}

pub struct WarcReader {
    records: RecordReader,
    shard: Shard,
    file_path: String,
    dump: Option<String>,
    max_body: usize,
    batch_size: usize,
}

/// One row: kept, or rejected with its reason.
struct Row {
    text: String,
    id: String,
    url: Option<String>,
    date: Option<String>,
    content_type: Option<String>,
    reason: Option<&'static str>,
}

/// Columns being filled for one batch.
#[derive(Default)]
struct Columns {
    text: Vec<String>,
    id: Vec<String>,
    url: Vec<Option<String>>,
    date: Vec<Option<String>>,
    content_type: Vec<Option<String>>,
    reasons: Vec<&'static str>,
}

impl Columns {
    fn push(&mut self, row: Row) {
        self.text.push(row.text);
        self.id.push(row.id);
        self.url.push(row.url);
        self.date.push(row.date);
        self.content_type.push(row.content_type);
        if let Some(reason) = row.reason {
            self.reasons.push(reason);
        }
    }

    fn len(&self) -> usize {
        self.id.len()
    }

    fn into_batch(self, dump: &Option<String>, file_path: &str) -> Result<RecordBatch> {
        let n = self.id.len();
        Ok(RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(self.text)),
                Arc::new(StringArray::from(self.id)),
                Arc::new(StringArray::from(self.url)),
                Arc::new(StringArray::from(self.date)),
                Arc::new(StringArray::from(vec![dump.clone(); n])),
                Arc::new(StringArray::from(vec![file_path; n])),
                Arc::new(StringArray::from(self.content_type)),
            ],
        )?)
    }
}

/// A field's value without the angle brackets WARC 1.0 writers put around URIs.
fn unbracket(value: &str) -> String {
    value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(value)
        .to_string()
}

impl WarcReader {
    fn id(&self, fields: Option<&Fields>, index: u64) -> String {
        fields
            .and_then(|f| f.get("WARC-Record-ID"))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/record-{index}", self.shard.name))
    }

    fn damaged(&self, damage: Damage) -> Row {
        let fields = damage.fields.as_ref();
        tracing::debug!(
            file = %self.shard.path.display(),
            record = damage.index,
            reason = damage.reason,
            "{}",
            damage.error
        );
        Row {
            text: super::lossy_text(&damage.excerpt, super::OVERSIZED_EXCERPT_BYTES),
            id: self.id(fields, damage.index),
            url: fields.and_then(|f| f.get("WARC-Target-URI")).map(unbracket),
            date: fields.and_then(|f| f.get("WARC-Date")).map(str::to_string),
            content_type: None,
            reason: Some(damage.reason),
        }
    }

    /// The row of a document record (`response`, `resource`, `conversion`); `None` for the
    /// records that are not documents.
    fn document(&self, record: Record) -> Option<Row> {
        let kind = record
            .fields
            .get("WARC-Type")
            .unwrap_or("")
            .to_ascii_lowercase();
        if !matches!(kind.as_str(), "response" | "resource" | "conversion") {
            return None;
        }
        let mut row = Row {
            text: String::new(),
            id: self.id(Some(&record.fields), record.index),
            url: record.fields.get("WARC-Target-URI").map(unbracket),
            date: record.fields.get("WARC-Date").map(str::to_string),
            content_type: None,
            reason: None,
        };
        let reject = |mut row: Row, reason: &'static str, bytes: &[u8]| {
            row.text = super::lossy_text(bytes, super::OVERSIZED_EXCERPT_BYTES);
            row.reason = Some(reason);
            row
        };
        if record.oversized {
            return Some(reject(row, BODY_TOO_LARGE, &record.block));
        }
        let declared_type;
        let payload = match kind.as_str() {
            "response" => {
                let http = match payload::parse_http(&record.block) {
                    Ok(http) => http,
                    Err(_) => return Some(reject(row, payload::BAD_HTTP_HEADER, &record.block)),
                };
                declared_type = http.content_type.clone();
                let mut body = record.block[http.header_len..].to_vec();
                if http
                    .transfer_encoding
                    .as_deref()
                    .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
                {
                    body = payload::dechunk(&body);
                }
                match http.content_encoding.as_deref() {
                    None => body,
                    Some(encoding) => match payload::decompress(body, encoding, self.max_body) {
                        Ok(Some(body)) => body,
                        Ok(None) => return Some(reject(row, BODY_TOO_LARGE, &record.block)),
                        Err(_) => {
                            return Some(reject(row, payload::BAD_CONTENT_ENCODING, &record.block));
                        }
                    },
                }
            }
            _ => {
                declared_type = record.fields.get("Content-Type").map(str::to_string);
                record.block
            }
        };
        let identified = record
            .fields
            .get("WARC-Identified-Payload-Type")
            .map(payload::essence)
            .filter(|t| !t.is_empty());
        let declared = declared_type
            .as_deref()
            .map(payload::essence)
            .filter(|t| !t.is_empty() && t != "application/octet-stream" && t != "unknown");
        let media = if kind == "conversion" {
            identified.unwrap_or_else(|| "text/plain".into())
        } else {
            match identified.or(declared) {
                Some(t) => t,
                None if payload::sniff_html(&payload) => "text/html".into(),
                None => String::new(),
            }
        };
        row.content_type = (!media.is_empty()).then(|| media.clone());
        let wanted =
            payload::is_html_type(&media) || (kind == "conversion" && media == "text/plain");
        if !wanted {
            return Some(reject(row, payload::NOT_HTML, &payload));
        }
        let charset = declared_type.as_deref().and_then(payload::charset_param);
        match payload::decode(&payload, charset.as_deref()) {
            Ok((text, _)) => {
                row.text = text;
                Some(row)
            }
            Err(_) => Some(reject(row, payload::UNDECODABLE, &payload)),
        }
    }
}

impl SourceReader for WarcReader {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn next_batch(&mut self) -> Result<Option<Filtered>> {
        let (mut kept, mut rejected) = (Columns::default(), Columns::default());
        // Bytes of this batch so far: a batch stops well short of what a 32-bit string column holds.
        let mut bytes = 0usize;
        while kept.len() + rejected.len() < self.batch_size && bytes < super::MAX_DOCUMENT_BYTES {
            let next = self
                .records
                .next()
                .map_err(|e| GristError::data(&self.shard.path, format!("cannot read: {e}")))?;
            let row = match next {
                None => break,
                Some(Next::Damaged(damage)) => self.damaged(damage),
                Some(Next::Record(record)) => match self.document(record) {
                    Some(row) => row,
                    None => continue,
                },
            };
            bytes += row.text.len();
            if row.reason.is_some() {
                rejected.push(row);
            } else {
                kept.push(row);
            }
        }
        if kept.len() + rejected.len() == 0 {
            return Ok(None);
        }
        let reasons = StringArray::from(std::mem::take(&mut rejected.reasons));
        let rejected = (!reasons.is_empty())
            .then(|| -> Result<Rejected> {
                Ok(Rejected::new(
                    rejected.into_batch(&self.dump, &self.file_path)?,
                    reasons,
                ))
            })
            .transpose()?;
        Ok(Some(Filtered {
            kept: kept.into_batch(&self.dump, &self.file_path)?,
            rejected,
        }))
    }
}

#[cfg(test)]
mod tests;
