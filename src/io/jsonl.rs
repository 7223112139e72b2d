//! JSON Lines shards (plain, `.gz`, `.zst`). Lines are checked one by one: a line that is not
//! UTF-8, not a JSON object, or does not fit the shard's schema is rejected with a reason instead of
//! failing the shard. Blank lines are not documents and are skipped.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::json::reader::{Decoder, ReaderBuilder, infer_json_schema_from_iterator};

use super::batch::{Filtered, Rejected, Shard, SourceReader};
use super::compress::{CompressedWriter, Compression, open_read};
use super::normalize::{ColumnMapping, Normalizer};
use crate::error::{GristError, IoContext, Result};

/// The file names a directory input lists as JSON Lines.
pub const EXTENSIONS: &[&str] = &[
    ".jsonl",
    ".json",
    ".jsonl.gz",
    ".json.gz",
    ".jsonl.zst",
    ".json.zst",
];

#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub mapping: ColumnMapping,
    /// Lines read to infer the schema; `None` reads the whole shard first, so no field is missed.
    pub infer_rows: Option<usize>,
    /// Longer lines are rejected as `document_too_large` (see [`super::MAX_DOCUMENT_BYTES`]).
    pub max_line_bytes: usize,
}

/// Columns of a rejected line: where it was, what it held, what was wrong.
pub fn raw_rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("line_index", DataType::UInt64, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
    ]))
}

/// Reads a line as bytes, dropping the line terminator; `None` at the end, `Some(true)` for a
/// line longer than `max` (of which `buf` holds the first bytes).
fn next_line(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
    path: &Path,
) -> Result<Option<bool>> {
    buf.clear();
    let (n, cut) = super::read_line_capped(input, buf, max)
        .map_err(|e| GristError::data(path, format!("cannot read: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(cut))
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

/// Infers the Arrow schema of a shard from its JSON objects. A line whose fields contradict the
/// lines before it (an object where the others have a number) does not fail the shard: it is
/// left out of the schema, and reading rejects it as `schema_mismatch`.
pub fn infer_schema(path: &Path, infer_rows: Option<usize>, max_line: usize) -> Result<Schema> {
    let mut input = open_read(path)?;
    let mut buf = Vec::new();
    let mut values = Vec::new();
    let mut seen = 0usize;
    let limit = infer_rows.unwrap_or(usize::MAX);
    // The schema so far, as one example object, so chunks of lines carry it forward.
    let mut so_far: Option<serde_json::Value> = None;
    while seen < limit {
        match next_line(&mut *input, &mut buf, max_line, path)? {
            None => break,
            Some(true) => continue,
            Some(false) => {}
        }
        if is_blank(&buf) {
            continue;
        }
        if let Ok(v @ serde_json::Value::Object(_)) =
            serde_json::from_slice::<serde_json::Value>(&buf)
        {
            values.push(v);
            seen += 1;
        }
        // In chunks, to keep memory bounded on whole-file inference.
        if values.len() >= 4096 {
            so_far = Some(infer_chunk(so_far, std::mem::take(&mut values)));
        }
    }
    if !values.is_empty() || so_far.is_none() {
        so_far = Some(infer_chunk(so_far, values));
    }
    let example = so_far.expect("set above");
    infer_json_schema_from_iterator(std::iter::once(Ok(example)))
        .map_err(|e| GristError::data(path, e))
}

/// The schema (as an example object) of `so_far` and `values`; values that contradict it are
/// left out, one at a time.
fn infer_chunk(
    so_far: Option<serde_json::Value>,
    values: Vec<serde_json::Value>,
) -> serde_json::Value {
    let all = so_far.iter().cloned().chain(values.iter().cloned()).map(Ok);
    if let Ok(schema) = infer_json_schema_from_iterator(all) {
        return schema_to_example(&schema);
    }
    let mut acc = so_far.unwrap_or_else(|| serde_json::json!({}));
    for v in values {
        if let Ok(schema) = infer_json_schema_from_iterator([Ok(acc.clone()), Ok(v)].into_iter()) {
            acc = schema_to_example(&schema);
        }
    }
    acc
}

/// A JSON object whose inferred schema is `schema`, so chunked inference can carry state forward.
fn schema_to_example(schema: &Schema) -> serde_json::Value {
    fn example(dt: &DataType) -> serde_json::Value {
        use serde_json::Value as V;
        match dt {
            DataType::Boolean => V::Bool(true),
            DataType::Int64 => V::from(1),
            DataType::Float64 => V::from(1.5),
            DataType::Utf8 => V::from("s"),
            DataType::List(f) => V::Array(vec![example(f.data_type())]),
            DataType::Struct(fields) => V::Object(
                fields
                    .iter()
                    .map(|f| (f.name().clone(), example(f.data_type())))
                    .collect(),
            ),
            _ => V::Null,
        }
    }
    serde_json::Value::Object(
        schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), example(f.data_type())))
            .collect(),
    )
}

pub struct JsonlShardReader {
    input: Box<dyn BufRead + Send>,
    path: PathBuf,
    max_line: usize,
    raw_schema: SchemaRef,
    normalizer: Normalizer,
    batch_size: usize,
    line_index: u64,
    buf: Vec<u8>,
    done: bool,
}

/// Opens a shard. A shard with no JSON object at all (empty, blank lines, only bad lines) takes
/// `fallback` as its schema, so it yields an empty output like its siblings' rather than failing.
pub fn open(
    shard: &Shard,
    opts: &ReadOptions,
    batch_size: usize,
    fallback: Option<SchemaRef>,
) -> Result<JsonlShardReader> {
    let inferred = Arc::new(infer_schema(
        &shard.path,
        opts.infer_rows,
        opts.max_line_bytes,
    )?);
    let raw_schema = match fallback {
        Some(f) if inferred.fields().is_empty() => f,
        _ => inferred,
    };
    let normalizer = Normalizer::new(raw_schema.clone(), &opts.mapping, &shard.path, &shard.name)?;
    Ok(JsonlShardReader {
        input: open_read(&shard.path)?,
        path: shard.path.clone(),
        max_line: opts.max_line_bytes.max(1),
        raw_schema,
        normalizer,
        batch_size: batch_size.max(1),
        line_index: 0,
        buf: Vec::new(),
        done: false,
    })
}

/// Lines that could not be read, collected for one batch: (line index, raw, error, reason).
#[derive(Default)]
struct LineRejects(Vec<(u64, String, String, &'static str)>);

impl LineRejects {
    /// Records a rejected line; returns the bytes its raw text takes (at most `max`: invalid
    /// UTF-8 grows when replaced, and a batch's strings must stay within 2 GiB).
    fn push(
        &mut self,
        line: u64,
        raw: &[u8],
        reason: &'static str,
        error: String,
        max: usize,
    ) -> usize {
        let text = super::lossy_text(raw, max);
        let len = text.len();
        self.0.push((line, text, error, reason));
        len
    }

    fn into_rejected(mut self) -> Result<Option<Rejected>> {
        if self.0.is_empty() {
            return Ok(None);
        }
        // Collected in two passes (unreadable lines, then lines without text): report in file order.
        self.0.sort_by_key(|r| r.0);
        let lines: UInt64Array = self.0.iter().map(|r| Some(r.0)).collect();
        let raw: StringArray = self.0.iter().map(|r| Some(r.1.as_str())).collect();
        let errors: StringArray = self.0.iter().map(|r| Some(r.2.as_str())).collect();
        let reasons: StringArray = self.0.iter().map(|r| Some(r.3)).collect();
        let rows = RecordBatch::try_new(
            raw_rejects_schema(),
            vec![Arc::new(lines), Arc::new(raw), Arc::new(errors)],
        )?;
        Ok(Some(Rejected::new(rows, reasons)))
    }
}

impl JsonlShardReader {
    fn decoder(&self) -> Result<Decoder> {
        Ok(ReaderBuilder::new(self.raw_schema.clone())
            .with_batch_size(self.batch_size)
            .with_strict_mode(true)
            .with_coerce_primitive(true)
            .build_decoder()?)
    }

    /// Decodes `lines` in one go; on failure, line by line so only the bad lines are rejected.
    fn decode(
        &self,
        lines: &mut Vec<(u64, Vec<u8>)>,
        rejects: &mut LineRejects,
    ) -> Result<Option<RecordBatch>> {
        let mut decoder = self.decoder()?;
        let whole = lines.iter().try_for_each(|(_, l)| {
            decoder.decode(l)?;
            decoder.decode(b"\n").map(|_| ())
        });
        if let Ok(()) = whole
            && let Ok(batch) = decoder.flush()
        {
            return Ok(batch);
        }
        let mut good = Vec::with_capacity(lines.len());
        let mut batches = Vec::new();
        for (index, line) in lines.drain(..) {
            let mut one = self.decoder()?;
            let decoded = one
                .decode(&line)
                .and_then(|_| one.decode(b"\n"))
                .and_then(|_| one.flush());
            match decoded {
                Ok(Some(batch)) if batch.num_rows() == 1 => {
                    batches.push(batch);
                    good.push((index, line));
                }
                Ok(_) => {
                    let error = "not one JSON object".to_string();
                    rejects.push(index, &line, "invalid_json", error, self.max_line);
                }
                Err(e) => {
                    let reason = match serde_json::from_slice::<serde_json::Value>(&line) {
                        Ok(serde_json::Value::Object(_)) => "schema_mismatch",
                        _ => "invalid_json",
                    };
                    rejects.push(index, &line, reason, e.to_string(), self.max_line);
                }
            }
        }
        *lines = good;
        if batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(arrow::compute::concat_batches(
            &self.raw_schema,
            &batches,
        )?))
    }
}

impl SourceReader for JsonlShardReader {
    fn schema(&self) -> SchemaRef {
        self.normalizer.output_schema()
    }

    fn next_batch(&mut self) -> Result<Option<Filtered>> {
        if self.done {
            return Ok(None);
        }
        let mut lines: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut rejects = LineRejects::default();
        // Bytes of this batch so far: a batch stops short of what a 32-bit string column holds.
        let mut bytes = 0usize;
        while lines.len() < self.batch_size && bytes < self.max_line {
            let cut = match next_line(&mut *self.input, &mut self.buf, self.max_line, &self.path)? {
                None => {
                    self.done = true;
                    break;
                }
                Some(cut) => cut,
            };
            let index = self.line_index;
            self.line_index += 1;
            if cut {
                let error = format!("the line is longer than {} bytes", self.max_line);
                bytes += rejects.push(
                    index,
                    &self.buf,
                    super::DOCUMENT_TOO_LARGE,
                    error,
                    self.max_line,
                );
                continue;
            }
            if is_blank(&self.buf) {
                continue;
            }
            bytes += self.buf.len();
            match std::str::from_utf8(&self.buf) {
                Ok(_) => lines.push((index, std::mem::take(&mut self.buf))),
                Err(e) => {
                    let raw = std::mem::take(&mut self.buf);
                    bytes -= raw.len();
                    bytes +=
                        rejects.push(index, &raw, "invalid_utf8", e.to_string(), self.max_line);
                }
            }
        }
        let decoded = if lines.is_empty() {
            None
        } else {
            self.decode(&mut lines, &mut rejects)?
        };
        let kept = match decoded {
            None => RecordBatch::new_empty(self.normalizer.output_schema()),
            Some(batch) => {
                // Rows without text are rejected here, as raw lines, so that all rejects of this
                // source share one schema.
                let text = batch.column(self.raw_schema.index_of(&self.normalizer_text_name())?);
                let has_text: BooleanArray = (0..batch.num_rows())
                    .map(|i| Some(text.is_valid(i)))
                    .collect();
                let mut kept_lines = Vec::with_capacity(lines.len());
                for (i, (index, line)) in lines.into_iter().enumerate() {
                    if has_text.value(i) {
                        kept_lines.push(index);
                    } else {
                        let error = "no text".to_string();
                        rejects.push(index, &line, "null_text", error, self.max_line);
                    }
                }
                let batch = if text.null_count() > 0 {
                    filter_record_batch(&batch, &has_text)?
                } else {
                    batch
                };
                self.normalizer.apply(batch, kept_lines.into_iter())?.kept
            }
        };
        if self.done && kept.num_rows() == 0 && rejects.0.is_empty() {
            return Ok(None);
        }
        Ok(Some(Filtered {
            kept,
            rejected: rejects.into_rejected()?,
        }))
    }
}

impl JsonlShardReader {
    fn normalizer_text_name(&self) -> String {
        self.normalizer.text_source_name().to_string()
    }
}

/// Writes batches as JSON Lines, compressed by `compression`.
pub struct JsonlFileWriter {
    writer: arrow::json::LineDelimitedWriter<CompressedWriter>,
    path: PathBuf,
}

impl JsonlFileWriter {
    pub fn create(path: &Path, compression: Compression) -> Result<Self> {
        let out = CompressedWriter::create(path, compression)?;
        Ok(JsonlFileWriter {
            writer: arrow::json::LineDelimitedWriter::new(out),
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.writer.write(batch)?)
    }

    pub fn finish(mut self) -> Result<()> {
        self.writer.finish()?;
        self.writer.into_inner().finish().at(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz (issue 16): mutated JSON Lines shards and random bytes read to rows and rejected
    /// lines that add up to the shard's non-blank lines, or to an error naming the file; never
    /// a panic, and memory in proportion to the shard.
    #[test]
    fn fuzz_json_lines_shards() {
        let seeds: Vec<Vec<u8>> = [
            &b"{\"text\": \"hello world\", \"id\": \"a\", \"n\": 1, \"meta\": {\"x\": [1, 2]}}\n{\"text\": \"second\", \"id\": \"b\", \"n\": 2.5}\n"[..],
            b"{\"text\": \"a\", \"meta\": 1}\n{\"text\": \"b\", \"meta\": {\"x\": 1}}\n\n{\"text\": null}\n[1, 2]\n{\"text\": \"bad \xff\"}\n",
            b"{\"id\": 3, \"text\": \"x\", \"list\": [[1], [2, 3]], \"deep\": {\"a\": {\"b\": {\"c\": \"d\"}}}}\r\n{\"id\": \"4\", \"text\": \"y\"}",
        ]
        .iter()
        .map(|s| s.to_vec())
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.jsonl");
        crate::fuzz::fuzz("json lines", 2000, crate::fuzz::inputs(seeds), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            let shard = Shard {
                path: path.clone(),
                name: "shard.jsonl".into(),
            };
            let opts = ReadOptions {
                mapping: ColumnMapping::default(),
                infer_rows: None,
                max_line_bytes: 200,
            };
            let (result, peak) = crate::fuzz::peak_bytes(|| -> Result<u64> {
                let mut reader = open(&shard, &opts, 16, None)?;
                let mut rows = 0u64;
                while let Some(f) = reader.next_batch()? {
                    rows += f.kept.num_rows() as u64;
                    rows += f.rejected.map_or(0, |r| r.num_rows() as u64);
                }
                Ok(rows)
            });
            // Non-blank lines, and lines too long to read (those are rejected whatever they hold).
            let pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
            let last = pieces.len() - 1;
            let lines = pieces
                .iter()
                .enumerate()
                .filter(|(k, l)| {
                    let read = l.len() + usize::from(*k < last);
                    read > opts.max_line_bytes || !l.iter().all(|b| b.is_ascii_whitespace())
                })
                .count() as u64;
            match result {
                Ok(rows) if rows != lines => {
                    return Err(format!("{rows} rows read of {lines} lines"));
                }
                Ok(_) => {}
                Err(e) if !e.to_string().contains("shard.jsonl") => {
                    return Err(format!("an error that does not name the file: {e}"));
                }
                Err(_) => {}
            }
            crate::fuzz::within(
                "json lines",
                peak,
                512 * bytes.len() + (16 << 20),
                bytes.len(),
            )
        });
    }
}
