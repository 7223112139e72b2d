//! The text of every document in some files, whatever their format: for commands that read text
//! without running a pipeline (`grist tokenizer eval`).

use super::batch::{Shard, SourceReader, text_values};
use super::normalize::ColumnMapping;
use super::{jsonl, parquet, plain, shards};
use crate::error::{GristError, Result};

/// The formats, by file name: Parquet, plain text, or (anything else) JSON Lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    PlainText,
    JsonLines,
}

impl Format {
    /// The format of `path` (a file or a glob), by its extension.
    pub fn of(path: &str) -> Format {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".parquet") {
            Format::Parquet
        } else if plain::EXTENSIONS.iter().any(|e| lower.ends_with(e)) {
            Format::PlainText
        } else {
            Format::JsonLines
        }
    }
}

/// The `text` of every document of `inputs` (files or globs), in order: the `text_column` of
/// Parquet and JSON Lines files, paragraphs of plain-text files. Rows that cannot be read are
/// left out, as a pipeline's source would reject them.
pub fn read_texts(inputs: &[String], text_column: &str) -> Result<Vec<String>> {
    let mapping = ColumnMapping {
        text_column: text_column.to_string(),
        ..ColumnMapping::default()
    };
    let mut texts = Vec::new();
    for input in inputs {
        let format = Format::of(input);
        let extensions: &[&str] = match format {
            Format::Parquet => &[".parquet"],
            Format::PlainText => plain::EXTENSIONS,
            Format::JsonLines => jsonl::EXTENSIONS,
        };
        let list = shards::list(input, extensions)?;
        if list.is_empty() {
            return Err(GristError::Usage(format!("no files match `{input}`")));
        }
        for shard in list {
            let mut reader = open(&shard, format, &mapping)?;
            while let Some(batch) = reader.next_batch()? {
                texts.extend(
                    text_values(&batch.kept)?
                        .into_iter()
                        .flatten()
                        .map(str::to_string),
                );
            }
        }
    }
    Ok(texts)
}

fn open(shard: &Shard, format: Format, mapping: &ColumnMapping) -> Result<Box<dyn SourceReader>> {
    const BATCH: usize = 4096;
    Ok(match format {
        Format::Parquet => {
            let opts = parquet::ReadOptions {
                mapping: mapping.clone(),
                columns: None,
            };
            Box::new(parquet::open(shard, &opts, BATCH)?)
        }
        Format::PlainText => Box::new(plain::open(shard, plain::Split::Paragraph, BATCH)?),
        Format::JsonLines => {
            let opts = jsonl::ReadOptions {
                mapping: mapping.clone(),
                infer_rows: None,
                max_line_bytes: super::MAX_DOCUMENT_BYTES,
            };
            Box::new(jsonl::open(shard, &opts, BATCH, None)?)
        }
    })
}
