//! Every file grist writes appears whole or not at all: it is written under a temporary name in
//! the same directory and renamed into place.

use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// A file being written: `tmp` now, `dest` once committed.
#[derive(Debug)]
pub struct PendingFile {
    pub tmp: PathBuf,
    pub dest: PathBuf,
}

impl PendingFile {
    /// Creates the destination directory and picks a temporary name unique to this process.
    pub fn new(dest: PathBuf) -> Result<Self> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).at(dir)?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        Ok(PendingFile { tmp, dest })
    }

    pub fn commit(self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
        Ok(self.dest)
    }

    /// Removes the temporary file (after a failure).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let pending = PendingFile::new(dest.to_path_buf())?;
    std::fs::write(&pending.tmp, bytes).at(&pending.tmp)?;
    pending.commit()?;
    Ok(())
}

/// Removes temporary files left in `dir` by killed writers of `dest_name`.
pub fn remove_stale_tmp(dir: &Path, dest_name: &str) {
    let prefix = format!(".{dest_name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_rename() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b.json");
        write(&dest, b"x").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"x");
        std::fs::write(dir.path().join("a/.b.json.1.tmp"), b"junk").unwrap();
        remove_stale_tmp(&dir.path().join("a"), "b.json");
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);
    }
}
