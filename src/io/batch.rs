//! The data every layer passes around: a shard (one input file), a reader of its batches, and
//! what a stage makes of a batch (kept rows, rejected rows with their reasons), with the helpers
//! that read and extend batches.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;

use crate::error::Result;

/// One input file of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub path: PathBuf,
    /// Path relative to the fixed (non-glob) prefix of the pattern; used in derived ids.
    pub name: String,
}

pub trait SourceReader: Send {
    fn schema(&self) -> SchemaRef;
    /// The next batch of rows read; rows that could not be read come back as rejected.
    fn next_batch(&mut self) -> Result<Option<Filtered>>;
}

/// The outcome of a stage on one batch.
#[derive(Debug, Clone)]
pub struct Filtered {
    pub kept: RecordBatch,
    pub rejected: Option<Rejected>,
}

impl Filtered {
    pub fn all_kept(kept: RecordBatch) -> Self {
        Filtered {
            kept,
            rejected: None,
        }
    }

    /// Splits `batch` by `keep`; `reasons` holds one reason per dropped row, in order.
    pub fn split(
        batch: &RecordBatch,
        keep: &arrow::array::BooleanArray,
        reasons: StringArray,
    ) -> Result<Self> {
        let dropped = arrow::compute::not(keep)?;
        Ok(Filtered {
            kept: arrow::compute::filter_record_batch(batch, keep)?,
            rejected: Some(Rejected::new(
                arrow::compute::filter_record_batch(batch, &dropped)?,
                reasons,
            )),
        })
    }
}

/// Rows a stage did not keep, each with the reason why.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub rows: RecordBatch,
    pub reasons: StringArray,
}

impl Rejected {
    pub fn new(rows: RecordBatch, reasons: StringArray) -> Self {
        debug_assert_eq!(rows.num_rows(), reasons.len());
        Rejected { rows, reasons }
    }

    /// All rows rejected for the same reason.
    pub fn uniform(rows: RecordBatch, reason: &str) -> Self {
        let reasons = StringArray::from(vec![reason; rows.num_rows()]);
        Rejected { rows, reasons }
    }

    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }
}

/// The schema of a stage that adds columns: `input` without any column of the same name as an
/// added one (it is replaced), then the added ones.
pub fn schema_with_added(input: &SchemaRef, added: Vec<arrow::datatypes::Field>) -> SchemaRef {
    let mut fields: Vec<arrow::datatypes::Field> = input
        .fields()
        .iter()
        .filter(|f| !added.iter().any(|a| a.name() == f.name()))
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(added);
    Arc::new(arrow::datatypes::Schema::new(fields))
}

/// `batch` in the `output` schema made by [`schema_with_added`]: its columns pass through, the
/// `added` ones (in order) go last.
pub fn batch_with_added(
    batch: &RecordBatch,
    output: &SchemaRef,
    added: Vec<arrow::array::ArrayRef>,
) -> Result<RecordBatch> {
    let passed = output.fields().len() - added.len();
    let mut columns: Vec<arrow::array::ArrayRef> = output.fields()[..passed]
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .expect("input columns pass through")
                .clone()
        })
        .collect();
    columns.extend(added);
    Ok(RecordBatch::try_new(output.clone(), columns)?)
}

/// Byte length of the `text` column of a batch (0 when absent), for throughput stats.
pub fn text_bytes(batch: &RecordBatch) -> u64 {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let Some(col) = batch.column_by_name(super::TEXT_COLUMN) else {
        return 0;
    };
    match col.data_type() {
        DataType::Utf8 => {
            let a = col.as_string::<i32>();
            let offsets = a.value_offsets();
            (offsets[offsets.len() - 1] - offsets[0]) as u64
        }
        DataType::LargeUtf8 => {
            let a = col.as_string::<i64>();
            let offsets = a.value_offsets();
            (offsets[offsets.len() - 1] - offsets[0]) as u64
        }
        _ => 0,
    }
}

/// Column `name` of a batch as strings, whatever its type (an `id` may be an integer, a large
/// string, a dictionary...): `None` when the batch has no such column, an error naming it when
/// its values have no string form (a list, a struct).
pub fn string_column(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let cast = arrow::compute::cast(col, &DataType::Utf8).map_err(|e| {
        crate::GristError::Usage(format!(
            "column `{name}` is {} and has no string form: {e}",
            col.data_type()
        ))
    })?;
    Ok(Some(cast.as_string::<i32>().clone()))
}

/// The `text` column of a batch, as string slices (null for a null text).
pub fn text_values(batch: &RecordBatch) -> Result<Vec<Option<&str>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let col = batch
        .column_by_name(super::TEXT_COLUMN)
        .ok_or_else(|| crate::GristError::Usage("the batch has no `text` column".into()))?;
    match col.data_type() {
        DataType::Utf8 => Ok(col.as_string::<i32>().iter().collect()),
        DataType::LargeUtf8 => Ok(col.as_string::<i64>().iter().collect()),
        other => Err(crate::GristError::Usage(format!(
            "the `text` column is {other}, not a string"
        ))),
    }
}
