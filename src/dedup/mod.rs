//! Deduplication building blocks: sorted binary runs and their k-way merge, union-find, the
//! per-shard membership records that the last phase hands to the output transform, and (in
//! `minhash`) datatrove-compatible MinHash signatures.

pub mod membership;
pub mod minhash;
pub mod runs;
pub mod simplify;
pub mod union_find;

use std::path::{Path, PathBuf};

use crate::error::{GristError, Result};

/// Row counts of each input shard, as the first dedup phase wrote them (one number per file).
pub fn read_counts(files: impl Iterator<Item = PathBuf>) -> Result<Vec<u64>> {
    files
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| GristError::io(&path, e))?;
            text.trim()
                .parse()
                .map_err(|_| GristError::data(&path, "not a row count"))
        })
        .collect()
}

/// Writes a shard's row count.
pub fn write_count(path: &Path, rows: u64) -> Result<()> {
    crate::io::atomic::write(path, format!("{rows}\n").as_bytes())
}

/// Where each shard's documents start in the global numbering (input order over all shards).
pub fn offsets(counts: &[u64]) -> Vec<u64> {
    counts
        .iter()
        .scan(0u64, |acc, &n| {
            let start = *acc;
            *acc += n;
            Some(start)
        })
        .collect()
}

/// Bins cluster sizes by powers of two: `clusters_of_2`, `clusters_of_3-4`, `clusters_of_5-8`...
pub fn size_bin(size: u64) -> String {
    if size <= 2 {
        return format!("clusters_of_{size}");
    }
    let hi = size.next_power_of_two();
    format!("clusters_of_{}-{hi}", hi / 2 + 1)
}

/// Removes the files in the subdirectories of `dir` whose names start with `prefix`: the sorted
/// runs a killed task left (a task writes its runs under numbered names and merges them).
pub fn remove_stale_runs(dir: &Path, prefix: &str) {
    let Ok(subdirs) = std::fs::read_dir(dir) else {
        return;
    };
    for sub in subdirs.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
}

/// Removes a file an earlier run left, which would otherwise be read as this run's.
pub fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(GristError::io(path, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_bins() {
        assert_eq!(super::size_bin(2), "clusters_of_2");
        assert_eq!(super::size_bin(3), "clusters_of_3-4");
        assert_eq!(super::size_bin(4), "clusters_of_3-4");
        assert_eq!(super::size_bin(9), "clusters_of_9-16");
    }
}
