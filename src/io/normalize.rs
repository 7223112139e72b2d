//! Brings every source's batches to the data model: the document column is named `text` and is a
//! string (Utf8 / LargeUtf8; dictionary and view encodings are cast), `id` exists (derived from
//! file and row when absent), and rows without text are rejected with reason `null_text`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::batch::Filtered;
use super::{ID_COLUMN, TEXT_COLUMN};
use crate::error::{GristError, Result};

/// Which input columns hold the document text and id.
#[derive(Debug, Clone)]
pub struct ColumnMapping {
    pub text_column: String,
    pub id_column: String,
}

impl Default for ColumnMapping {
    /// grist's own column names.
    fn default() -> Self {
        ColumnMapping {
            text_column: super::TEXT_COLUMN.into(),
            id_column: "id".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Normalizer {
    input: SchemaRef,
    output: SchemaRef,
    text_index: usize,
    text_type: DataType,
    derive_id: bool,
    /// Prefix of derived ids: the shard name.
    id_prefix: String,
}

impl Normalizer {
    pub fn new(
        input: SchemaRef,
        mapping: &ColumnMapping,
        path: &Path,
        shard_name: &str,
    ) -> Result<Self> {
        let Ok(text_index) = input.index_of(&mapping.text_column) else {
            let columns: Vec<_> = input.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(GristError::data(
                path,
                format!(
                    "no text column `{}` (columns: {}); set `text_column` to the column that holds the documents",
                    mapping.text_column,
                    columns.join(", ")
                ),
            ));
        };
        let in_type = input.field(text_index).data_type().clone();
        let text_type = match &in_type {
            DataType::Utf8 | DataType::LargeUtf8 => in_type.clone(),
            DataType::Utf8View => DataType::Utf8,
            DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::Utf8View) => {
                DataType::Utf8
            }
            DataType::Dictionary(_, v) if **v == DataType::LargeUtf8 => DataType::LargeUtf8,
            other => {
                return Err(GristError::data(
                    path,
                    format!(
                        "text column `{}` has type {other}, expected a string",
                        mapping.text_column
                    ),
                ));
            }
        };
        let id_name = if input.index_of(&mapping.id_column).is_ok() {
            Some(mapping.id_column.as_str())
        } else {
            None
        };
        let mut fields: Vec<Field> = Vec::with_capacity(input.fields().len() + 1);
        for (i, f) in input.fields().iter().enumerate() {
            let field = if i == text_index {
                Field::new(TEXT_COLUMN, text_type.clone(), true)
            } else if Some(f.name().as_str()) == id_name {
                f.as_ref().clone().with_name(ID_COLUMN)
            } else {
                f.as_ref().clone()
            };
            fields.push(field);
        }
        let derive_id = id_name.is_none();
        if derive_id {
            fields.push(Field::new(ID_COLUMN, DataType::Utf8, false));
        }
        let names: Vec<&String> = fields.iter().map(|f| f.name()).collect();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(GristError::data(
                    path,
                    format!("column `{n}` appears twice after mapping `text_column`/`id_column`"),
                ));
            }
        }
        Ok(Normalizer {
            input,
            output: Arc::new(Schema::new_with_metadata(fields, Default::default())),
            text_index,
            text_type,
            derive_id,
            id_prefix: shard_name.to_string(),
        })
    }

    /// Name of the text column in the input, before renaming.
    pub fn text_source_name(&self) -> &str {
        self.input.field(self.text_index).name()
    }

    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// `rows` gives each row's position in the file, for derived ids.
    pub fn apply(&self, batch: RecordBatch, rows: impl Iterator<Item = u64>) -> Result<Filtered> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let text = &columns[self.text_index];
        if text.data_type() != &self.text_type {
            columns[self.text_index] = cast(text, &self.text_type)?;
        }
        if self.derive_id {
            let ids: StringArray = rows
                .map(|r| Some(format!("{}/{r}", self.id_prefix)))
                .collect();
            columns.push(Arc::new(ids));
        }
        let batch = RecordBatch::try_new(self.output.clone(), columns)?;
        let text = batch.column(self.text_index);
        if text.null_count() == 0 {
            return Ok(Filtered::all_kept(batch));
        }
        let has_text =
            BooleanArray::from(text.logical_nulls().expect("nulls counted").inner().clone());
        let reasons = StringArray::from(vec!["null_text"; text.null_count()]);
        Filtered::split(&batch, &has_text, reasons)
    }
}
