//! Pipelines that commands stand for (`grist classifier train`, `grist tokenizer train|encode`):
//! each command writes the pipeline beside its output and runs it, so it behaves exactly as the
//! stages do, resumably. These are the pieces those pipelines share.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{GristError, Result};

/// `<output>.work/`: where a command's pipeline, markers and stored input live.
pub fn workdir_beside(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".work");
    output.with_file_name(name)
}

pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| GristError::Usage(format!("path `{}` is not UTF-8", path.display())))
}

/// A source stage for `path`, by its extension: Parquet, plain text, or JSON Lines.
pub fn source_stage(path: &str, text_column: &str) -> Value {
    use crate::io::documents::Format;
    match Format::of(path) {
        Format::Parquet => {
            json!({"type": "read_parquet", "path": path, "text_column": text_column})
        }
        Format::PlainText => json!({"type": "read_text", "path": path}),
        Format::JsonLines => {
            json!({"type": "read_jsonl", "path": path, "text_column": text_column})
        }
    }
}
