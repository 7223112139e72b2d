//! Plain-text files (plain, `.gz`, `.zst`) cut into documents: by blank lines, by line, or one
//! document per file. Columns `id` (`<file>/<n>`) and `text`. A document that is not UTF-8 is
//! rejected as `invalid_utf8` (its text decoded lossily), one over the size limit as
//! `document_too_large`; blank documents are skipped.

use std::io::BufRead;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::batch::{Filtered, Rejected, Shard, SourceReader};
use super::{ID_COLUMN, TEXT_COLUMN, compress};
use crate::error::{IoContext, Result};

/// How a file is cut into documents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    #[default]
    Paragraph,
    Line,
    File,
}

/// The file names a directory input lists as plain text.
pub const EXTENSIONS: &[&str] = &[".txt", ".txt.gz", ".txt.zst"];

/// The columns of the batches: `id`, `text`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(ID_COLUMN, DataType::Utf8, false),
        Field::new(TEXT_COLUMN, DataType::Utf8, false),
    ]))
}

/// Opens a shard: its documents, `batch_size` at a time.
pub fn open(shard: &Shard, split: Split, batch_size: usize) -> Result<TextReader> {
    Ok(TextReader {
        input: compress::open_read(&shard.path)?,
        shard: shard.clone(),
        split,
        batch_size: batch_size.max(1),
        max_doc: super::MAX_DOCUMENT_BYTES,
        next_doc: 0,
        done: false,
    })
}

pub struct TextReader {
    input: Box<dyn BufRead + Send>,
    shard: Shard,
    split: Split,
    batch_size: usize,
    /// Longer documents are rejected as `document_too_large`, their first kilobyte kept.
    max_doc: usize,
    next_doc: u64,
    done: bool,
}

/// A document read: its bytes, or the first bytes of one too large to hold.
enum Doc {
    Whole(Vec<u8>),
    TooLarge(Vec<u8>),
}

impl TextReader {
    /// The next document, without its final newline; `None` at the end.
    fn next_doc(&mut self) -> Result<Option<Doc>> {
        let mut doc = Vec::new();
        let mut too_large = false;
        let mut line = Vec::new();
        loop {
            line.clear();
            let room = self.max_doc.saturating_sub(doc.len()).max(1);
            let (n, cut) =
                super::read_line_capped(&mut *self.input, &mut line, room).at(&self.shard.path)?;
            if n == 0 {
                self.done = true;
                break;
            }
            let blank = !cut && line.iter().all(|b| b.is_ascii_whitespace());
            let ends = match self.split {
                Split::Line if blank => continue,
                Split::Line => true,
                Split::Paragraph if blank && doc.is_empty() => continue,
                Split::Paragraph if blank => break,
                Split::Paragraph | Split::File => false,
            };
            if too_large {
                // Past the limit: the rest of the document is read and dropped.
            } else if cut {
                too_large = true;
                doc.truncate(super::OVERSIZED_EXCERPT_BYTES);
                doc.shrink_to_fit();
                let room = super::OVERSIZED_EXCERPT_BYTES.saturating_sub(doc.len());
                doc.extend_from_slice(&line[..room.min(line.len())]);
            } else {
                doc.extend_from_slice(&line);
            }
            if ends {
                break;
            }
        }
        if too_large {
            return Ok(Some(Doc::TooLarge(doc)));
        }
        while doc.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
            doc.pop();
        }
        if doc.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(None);
        }
        Ok(Some(Doc::Whole(doc)))
    }
}

impl SourceReader for TextReader {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn next_batch(&mut self) -> Result<Option<Filtered>> {
        let (mut ids, mut texts) = (Vec::new(), Vec::new());
        let (mut bad_ids, mut bad_texts, mut bad_reasons) = (Vec::new(), Vec::new(), Vec::new());
        // Bytes of this batch so far: a batch stops short of what a 32-bit string column holds.
        let mut bytes = 0usize;
        while ids.len() + bad_ids.len() < self.batch_size && bytes < self.max_doc && !self.done {
            let Some(doc) = self.next_doc()? else {
                continue;
            };
            let id = format!("{}/{}", self.shard.name, self.next_doc);
            self.next_doc += 1;
            match doc {
                Doc::TooLarge(excerpt) => {
                    bad_ids.push(id);
                    bad_texts.push(String::from_utf8_lossy(&excerpt).into_owned());
                    bad_reasons.push(super::DOCUMENT_TOO_LARGE);
                }
                Doc::Whole(doc) => match String::from_utf8(doc) {
                    Ok(text) => {
                        bytes += text.len();
                        ids.push(id);
                        texts.push(text);
                    }
                    Err(e) => {
                        // Replacing invalid bytes may triple the text: cut to the limit.
                        let text = super::lossy_text(e.as_bytes(), self.max_doc);
                        bytes += text.len();
                        bad_ids.push(id);
                        bad_texts.push(text);
                        bad_reasons.push("invalid_utf8");
                    }
                },
            }
        }
        if ids.is_empty() && bad_ids.is_empty() {
            return Ok(None);
        }
        let batch = |ids: Vec<String>, texts: Vec<String>| {
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(StringArray::from(texts)),
                ],
            )
        };
        let bad = bad_ids.len();
        Ok(Some(Filtered {
            kept: batch(ids, texts)?,
            rejected: (bad > 0)
                .then(|| -> Result<Rejected> {
                    Ok(Rejected::new(
                        batch(bad_ids, bad_texts)?,
                        StringArray::from(bad_reasons),
                    ))
                })
                .transpose()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a reader gives: kept texts, and (reason, text length) of each rejected row.
    fn drain(reader: &mut dyn SourceReader) -> (Vec<String>, Vec<(String, usize)>) {
        let strings = |b: &RecordBatch| -> Vec<String> {
            let col = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            col.iter().map(|t| t.unwrap().to_string()).collect()
        };
        let (mut texts, mut rejected) = (Vec::new(), Vec::new());
        while let Some(out) = reader.next_batch().unwrap() {
            texts.extend(strings(&out.kept));
            if let Some(r) = out.rejected {
                for (i, t) in strings(&r.rows).into_iter().enumerate() {
                    rejected.push((r.reasons.value(i).to_string(), t.len()));
                }
            }
        }
        (texts, rejected)
    }

    fn read(content: &[u8], split: Split) -> (Vec<String>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, content).unwrap();
        let shard = Shard {
            path: path.clone(),
            name: "a.txt".into(),
        };
        let mut reader = open(&shard, split, 2).unwrap();
        let (texts, rejected) = drain(&mut reader);
        (texts, rejected.len())
    }

    #[test]
    fn splits_paragraphs_lines_and_files() {
        let text = b" \n = Title = \n \n First para .\nstill first\n\n\n Second .\n";
        assert_eq!(
            read(text, Split::Paragraph).0,
            [" = Title = ", " First para .\nstill first", " Second ."]
        );
        assert_eq!(read(text, Split::Line).0.len(), 4);
        assert_eq!(read(text, Split::File).0.len(), 1);
        assert_eq!(read(b"", Split::File).0.len(), 0);
        assert_eq!(read(b"no newline", Split::Line).0, ["no newline"]);
    }

    #[test]
    fn invalid_utf8_is_rejected_not_lost() {
        let (texts, bad) = read(b"good\n\nbad \xff\xfe\n\nalso good\n", Split::Paragraph);
        assert_eq!(texts, ["good", "also good"]);
        assert_eq!(bad, 1);
    }

    /// Issue 16: a document past the size limit (2 GiB would overflow a string column) is
    /// rejected with its first kilobyte, the documents around it read as usual.
    #[test]
    fn oversized_documents_are_rejected_with_an_excerpt() {
        let big = "y".repeat(3000);
        let text = format!("first para\n\n{big}\nstill big\n\nlast one\n");
        for (split, kept) in [
            (Split::Paragraph, vec!["first para", "last one"]),
            (Split::Line, vec!["first para", "still big", "last one"]),
        ] {
            let mut reader = TextReader {
                input: Box::new(std::io::BufReader::with_capacity(
                    64,
                    std::io::Cursor::new(text.clone().into_bytes()),
                )),
                shard: Shard {
                    path: "t.txt".into(),
                    name: "t.txt".into(),
                },
                split,
                batch_size: 2,
                max_doc: 2000,
                next_doc: 0,
                done: false,
            };
            let (texts, rejected) = drain(&mut reader);
            assert_eq!(texts, kept);
            assert_eq!(
                rejected,
                [(
                    "document_too_large".to_string(),
                    crate::io::OVERSIZED_EXCERPT_BYTES
                )]
            );
        }
    }
}
