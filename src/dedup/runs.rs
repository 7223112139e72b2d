//! Sorted runs of fixed-size binary records: written whole (tmp + rename), read back with a
//! small buffer, and merged k ways. The dedup phases exchange data this way, so no phase holds
//! more than one shard's records in memory, whatever the corpus size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{GristError, IoContext, Result};
use crate::io::atomic::PendingFile;

/// A record of a run file: fixed size, little-endian, ordered as it is sorted.
pub trait Record: Copy + Ord {
    const SIZE: usize;
    fn encode(&self, out: &mut [u8]);
    fn decode(bytes: &[u8]) -> Self;
}

/// Sorts `records` and writes them to `path`, whole or not at all.
/// Most runs one merge pass opens (each with a 64 KiB read buffer).
pub const MAX_OPEN_RUNS: usize = 256;

/// Merges sorted `runs` into `out` with `merge_once`, in passes of at most [`MAX_OPEN_RUNS`]
/// open runs: more are merged group by group into intermediate runs beside `out` (removed
/// after), so the files a merge holds open stay bounded however many runs a task spilled.
pub fn merge_in_passes(
    runs: &[PathBuf],
    out: &Path,
    merge_once: &dyn Fn(&[PathBuf], &Path) -> Result<()>,
) -> Result<()> {
    if runs.len() <= MAX_OPEN_RUNS {
        return merge_once(runs, out);
    }
    let mut merged = Vec::new();
    let result = (|| {
        for (i, group) in runs.chunks(MAX_OPEN_RUNS).enumerate() {
            let path = out.with_extension(format!("pass{i:05}"));
            merged.push(path.clone());
            merge_once(group, &path)?;
        }
        merge_in_passes(&merged, out, merge_once)
    })();
    for path in &merged {
        let _ = std::fs::remove_file(path);
    }
    result
}

pub fn write_sorted<R: Record>(path: &Path, records: &mut [R]) -> Result<PathBuf> {
    records.sort_unstable();
    write_run(path, records)
}

/// Writes records already in order to `path`, whole or not at all.
pub fn write_run<R: Record>(path: &Path, records: &[R]) -> Result<PathBuf> {
    let mut writer = RunWriter::create(path)?;
    for r in records {
        writer.push(r)?;
    }
    writer.commit()
}

/// Writes records one by one to a temporary file, renamed into place by `commit`; dropped
/// without it, the temporary file goes.
pub struct RunWriter<R> {
    out: Option<(BufWriter<File>, PendingFile)>,
    buf: Vec<u8>,
    _record: std::marker::PhantomData<R>,
}

impl<R: Record> RunWriter<R> {
    pub fn create(path: &Path) -> Result<Self> {
        let pending = PendingFile::new(path.to_path_buf())?;
        let file = File::create(&pending.tmp).at(&pending.tmp)?;
        Ok(RunWriter {
            out: Some((BufWriter::with_capacity(1 << 20, file), pending)),
            buf: vec![0u8; R::SIZE],
            _record: std::marker::PhantomData,
        })
    }

    pub fn push(&mut self, record: &R) -> Result<()> {
        let (out, pending) = self.out.as_mut().expect("not committed");
        record.encode(&mut self.buf);
        out.write_all(&self.buf).at(&pending.tmp)
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        let (out, pending) = self.out.take().expect("not committed");
        let synced = out
            .into_inner()
            .map_err(|e| GristError::io(&pending.tmp, e.into_error()))
            .and_then(|file| file.sync_all().at(&pending.tmp));
        match synced {
            Ok(()) => pending.commit(),
            Err(e) => {
                pending.abandon();
                Err(e)
            }
        }
    }
}

impl<R> Drop for RunWriter<R> {
    fn drop(&mut self) {
        if let Some((_, pending)) = self.out.take() {
            pending.abandon();
        }
    }
}

/// Reads the records of one run file in order.
pub struct RunReader<R> {
    input: BufReader<File>,
    path: PathBuf,
    buf: Vec<u8>,
    _record: std::marker::PhantomData<R>,
}

impl<R: Record> RunReader<R> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len % R::SIZE as u64 != 0 {
            return Err(GristError::data(
                path,
                format!(
                    "{len} bytes is not a whole number of {}-byte records",
                    R::SIZE
                ),
            ));
        }
        Ok(RunReader {
            input: BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            buf: vec![0u8; R::SIZE],
            _record: std::marker::PhantomData,
        })
    }

    pub fn next_record(&mut self) -> Result<Option<R>> {
        match self.input.read_exact(&mut self.buf) {
            Ok(()) => Ok(Some(R::decode(&self.buf))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(GristError::io(&self.path, e)),
        }
    }
}

/// Merges sorted runs into one sorted stream; equal records come out in run order.
pub struct Merge<R> {
    runs: Vec<RunReader<R>>,
    heap: BinaryHeap<Reverse<(R, usize)>>,
}

impl<R: Record> Merge<R> {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut runs = Vec::with_capacity(paths.len());
        let mut heap = BinaryHeap::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            let mut run = RunReader::open(path)?;
            if let Some(r) = run.next_record()? {
                heap.push(Reverse((r, i)));
            }
            runs.push(run);
        }
        Ok(Merge { runs, heap })
    }

    /// The next record and the index of the run it came from.
    pub fn next_record(&mut self) -> Result<Option<(R, usize)>> {
        let Some(Reverse((r, i))) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.runs[i].next_record()? {
            self.heap.push(Reverse((next, i)));
        }
        Ok(Some((r, i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Pair(u64, u32);

    impl Record for Pair {
        const SIZE: usize = 12;
        fn encode(&self, out: &mut [u8]) {
            out[..8].copy_from_slice(&self.0.to_le_bytes());
            out[8..].copy_from_slice(&self.1.to_le_bytes());
        }
        fn decode(b: &[u8]) -> Self {
            Pair(
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u32::from_le_bytes(b[8..].try_into().unwrap()),
            )
        }
    }

    #[test]
    fn merged_runs_come_out_sorted_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        let mut paths = Vec::new();
        for run in 0..5u64 {
            let mut records: Vec<Pair> = (0..1000u32)
                .map(|i| Pair((u64::from(i) * 7919 + run * 13) % 997, i))
                .collect();
            all.extend_from_slice(&records);
            paths.push(write_sorted(&dir.path().join(format!("r{run}")), &mut records).unwrap());
        }
        paths.push(write_run::<Pair>(&dir.path().join("empty"), &[]).unwrap());
        let mut merge = Merge::<Pair>::open(&paths).unwrap();
        let mut out = Vec::new();
        while let Some((r, _)) = merge.next_record().unwrap() {
            out.push(r);
        }
        all.sort();
        assert_eq!(out, all);
    }

    #[test]
    fn a_torn_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(RunReader::<Pair>::open(&path).is_err());
    }

    #[test]
    fn more_runs_than_open_files_merge_in_passes_to_one_sorted_run() {
        let dir = tempfile::tempdir().unwrap();
        let n = MAX_OPEN_RUNS + 44;
        let runs: Vec<PathBuf> = (0..n)
            .map(|i| {
                let path = dir.path().join(format!("r{i}.bin"));
                let key = ((i * 7919) % n) as u64;
                write_run(&path, &[Pair(key, 1), Pair(key + n as u64, 2)]).unwrap()
            })
            .collect();
        let out = dir.path().join("out.bin");
        merge_in_passes(&runs, &out, &|group, path| {
            let mut merge = Merge::<Pair>::open(group)?;
            let mut writer = RunWriter::<Pair>::create(path)?;
            while let Some((r, _)) = merge.next_record()? {
                writer.push(&r)?;
            }
            writer.commit().map(|_| ())
        })
        .unwrap();
        let mut reader = RunReader::<Pair>::open(&out).unwrap();
        let mut got = Vec::new();
        while let Some(r) = reader.next_record().unwrap() {
            got.push(r.0);
        }
        assert_eq!(got, (0..2 * n as u64).collect::<Vec<_>>());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("pass"))
            .collect();
        assert!(left.is_empty(), "intermediate runs left behind");
    }
}
