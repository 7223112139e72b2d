//! Parquet shards: a streaming reader (column projection, text normalisation) and a writer that
//! bounds each row group by rows and by bytes, so memory stays flat whatever the shard size.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::TEXT_COLUMN;
use super::batch::{Filtered, Shard, SourceReader};
use super::normalize::{ColumnMapping, Normalizer};
use crate::error::{GristError, IoContext, Result};

/// What to read from each Parquet shard. The default reads every column of grist's own files.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub mapping: ColumnMapping,
    /// Top-level columns to read; `None` reads all. The text and id columns are always read.
    pub columns: Option<Vec<String>>,
}

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).at(path)?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| GristError::data(path, format!("not a readable Parquet file: {e}")))
}

fn projection(
    builder: &ParquetRecordBatchReaderBuilder<File>,
    opts: &ReadOptions,
    path: &Path,
) -> Result<ProjectionMask> {
    let Some(columns) = &opts.columns else {
        return Ok(ProjectionMask::all());
    };
    let schema = builder.schema();
    let mut wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
    wanted.push(&opts.mapping.text_column);
    if schema.index_of(&opts.mapping.id_column).is_ok() {
        wanted.push(&opts.mapping.id_column);
    }
    for name in &wanted {
        if schema.index_of(name).is_err() {
            return Err(GristError::data(
                path,
                format!("no column `{name}` to read"),
            ));
        }
    }
    let roots = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i);
    Ok(ProjectionMask::roots(builder.parquet_schema(), roots))
}

/// The normalised schema of one shard, read from its footer.
pub fn shard_schema(shard: &Shard, opts: &ReadOptions) -> Result<SchemaRef> {
    Ok(open(shard, opts, 1)?.normalizer.output_schema())
}

pub fn open(shard: &Shard, opts: &ReadOptions, batch_size: usize) -> Result<ParquetShardReader> {
    let path = &shard.path;
    let b = builder(path)?;
    let mask = projection(&b, opts, path)?;
    let reader = b
        .with_projection(mask)
        .with_batch_size(batch_size)
        .build()
        .map_err(|e| GristError::data(path, e))?;
    let normalizer = Normalizer::new(reader.schema(), &opts.mapping, path, &shard.name)?;
    Ok(ParquetShardReader {
        reader,
        normalizer,
        path: path.clone(),
        next_row: 0,
    })
}

pub struct ParquetShardReader {
    reader: ParquetRecordBatchReader,
    normalizer: Normalizer,
    path: PathBuf,
    next_row: u64,
}

impl SourceReader for ParquetShardReader {
    fn schema(&self) -> SchemaRef {
        self.normalizer.output_schema()
    }

    fn next_batch(&mut self) -> Result<Option<Filtered>> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch
            .map_err(|e| GristError::data(&self.path, format!("corrupt Parquet data: {e}")))?;
        let first = self.next_row;
        self.next_row += batch.num_rows() as u64;
        self.normalizer.apply(batch, first..self.next_row).map(Some)
    }
}

/// How Parquet files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
}

pub struct ParquetFileWriter {
    writer: ArrowWriter<BufWriter<File>>,
    path: PathBuf,
}

impl ParquetFileWriter {
    pub fn create(path: &Path, schema: SchemaRef, opts: &WriteOptions) -> Result<Self> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path).at(path)?);
        let level = ZstdLevel::try_new(opts.zstd_level)?;
        // Document text is unique per row: a dictionary for it is built only to be thrown away
        // at the first page, and page-level min/max of long strings help no reader.
        let text = ColumnPath::from(TEXT_COLUMN);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_column_dictionary_enabled(text.clone(), false)
            .set_column_statistics_enabled(text, EnabledStatistics::Chunk)
            .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
            .set_max_row_group_bytes(Some(opts.row_group_bytes.max(1)))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(ParquetFileWriter {
            writer,
            path: path.to_path_buf(),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        Ok(self.writer.write(batch)?)
    }

    pub fn finish(self) -> Result<()> {
        let file = self.writer.into_inner()?;
        let file = file
            .into_inner()
            .map_err(|e| GristError::io(&self.path, e.into_error()))?;
        file.sync_all().at(&self.path)
    }
}
