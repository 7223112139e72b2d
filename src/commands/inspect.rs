//! `grist inspect PATH`: what a data file holds (format, counts, schema, a few rows). A directory
//! or glob lists each file with its row count. Token files are handled by `tokens::inspect`.

use std::fmt::Write;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchReader, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{GristError, IoContext, Result};
use crate::io::shards;

const TEXT_WIDTH: usize = 60;

pub fn inspect(path: &str, rows: usize, tokenizer: Option<&Path>) -> Result<String> {
    if let Some(file) = crate::tokens::inspect::detect(path) {
        return crate::tokens::inspect::inspect(file, rows, tokenizer);
    }
    let p = Path::new(path);
    if p.is_file() {
        return inspect_file(p, rows);
    }
    let files = shards::list(
        path,
        &[
            ".parquet",
            ".jsonl",
            ".jsonl.gz",
            ".jsonl.zst",
            ".json",
            ".json.gz",
        ],
    )?;
    if files.is_empty() {
        return Err(GristError::Usage(format!("nothing to inspect at `{path}`")));
    }
    let mut out = String::new();
    let mut total = 0u64;
    for f in &files {
        let n = count_rows(&f.path)?;
        total += n;
        let _ = writeln!(out, "{:>12}  {}", n, f.path.display());
    }
    let _ = writeln!(out, "{total:>12}  rows in {} file(s)", files.len());
    Ok(out)
}

fn is_parquet(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "parquet")
}

fn count_rows(p: &Path) -> Result<u64> {
    if is_parquet(p) {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(p).at(p)?)
            .map_err(|e| GristError::data(p, e))?;
        return Ok(b.metadata().file_metadata().num_rows() as u64);
    }
    let mut input = crate::io::compress::open_read(p)?;
    let mut n = 0u64;
    let mut buf = Vec::new();
    // Lines are only counted: keep a few bytes of each, however long.
    loop {
        let (len, cut) = crate::io::read_line_capped(&mut *input, &mut buf, 4096).at(p)?;
        if len == 0 {
            break;
        }
        if cut || !buf.iter().all(u8::is_ascii_whitespace) {
            n += 1;
        }
        buf.clear();
    }
    Ok(n)
}

fn inspect_file(p: &Path, rows: usize) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "file: {}", p.display());
    let sample: Vec<RecordBatch> = if is_parquet(p) {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(p).at(p)?)
            .map_err(|e| GristError::data(p, format!("not a readable Parquet file: {e}")))?;
        let meta = b.metadata().clone();
        let fm = meta.file_metadata();
        let _ = writeln!(
            out,
            "format: parquet, {} rows in {} row group(s), created by {}",
            fm.num_rows(),
            meta.num_row_groups(),
            fm.created_by().unwrap_or("?")
        );
        if let Some(rg) = meta.row_groups().first()
            && let Some(col) = rg.columns().first()
        {
            let _ = writeln!(out, "compression: {:?}", col.compression());
        }
        let reader = b
            .with_batch_size(rows.max(1))
            .build()
            .map_err(|e| GristError::data(p, e))?;
        write_schema(&mut out, &reader.schema());
        reader
            .take(1)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| GristError::data(p, e))?
    } else {
        let schema = crate::io::jsonl::infer_schema(p, Some(1000), crate::io::MAX_DOCUMENT_BYTES)?;
        let _ = writeln!(out, "format: json lines, {} rows", count_rows(p)?);
        let schema = Arc::new(schema);
        write_schema(&mut out, &schema);
        let reader = arrow::json::ReaderBuilder::new(schema)
            .with_batch_size(rows.max(1))
            .with_coerce_primitive(true)
            .build(crate::io::compress::open_read(p)?)?;
        reader.take(1).filter_map(|b| b.ok()).collect()
    };
    if rows > 0 {
        let shown: Vec<RecordBatch> = sample.iter().map(shorten).collect::<Result<_>>()?;
        let table = arrow::util::pretty::pretty_format_batches(&shown)?;
        let _ = writeln!(
            out,
            "first {} row(s):\n{table}",
            shown.iter().map(|b| b.num_rows()).sum::<usize>()
        );
    }
    Ok(out)
}

fn write_schema(out: &mut String, schema: &arrow::datatypes::Schema) {
    let _ = writeln!(out, "schema:");
    for f in schema.fields() {
        let _ = writeln!(
            out,
            "  {}: {}{}",
            f.name(),
            f.data_type(),
            if f.is_nullable() { "" } else { " (not null)" }
        );
    }
}

/// Cuts long strings so a sample fits a terminal.
fn shorten(batch: &RecordBatch) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8 => {
                let s: StringArray = c.as_string::<i32>().iter().map(|v| v.map(cut)).collect();
                Arc::new(s) as ArrayRef
            }
            _ => c.clone(),
        })
        .collect();
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn cut(s: &str) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= TEXT_WIDTH {
        return flat;
    }
    let head: String = flat.chars().take(TEXT_WIDTH - 1).collect();
    format!("{head}…")
}
