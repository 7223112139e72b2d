//! Megatron-LM indexed datasets (`MMIDIDX` version 1): `PREFIX.bin` holds the tokens of every
//! sequence back to back, `PREFIX.idx` their lengths, byte offsets and the document boundaries.
//! The byte layout is in `schemas/packed-format.md`; megatron-core's `IndexedDataset` reads what
//! [`DatasetWriter`] writes (tests/parity/megatron_goldens.py).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{GristError, IoContext, Result};
use crate::io::atomic;

pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Token storage type of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U16,
    I32,
}

impl Dtype {
    /// Megatron's `DType.optimal_dtype`: uint16 below 65,500 ids, else int32.
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        match vocab_size < 65_500 {
            true => Dtype::U16,
            false => Dtype::I32,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Dtype::U16 => 8,
            Dtype::I32 => 4,
        }
    }

    pub fn from_code(code: u8) -> Option<Dtype> {
        match code {
            8 => Some(Dtype::U16),
            4 => Some(Dtype::I32),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::I32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::U16 => "uint16",
            Dtype::I32 => "int32",
        }
    }

    fn max_id(self) -> u32 {
        match self {
            Dtype::U16 => u16::MAX as u32,
            Dtype::I32 => i32::MAX as u32,
        }
    }
}

pub fn idx_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".idx")
}

pub fn bin_path(prefix: &Path) -> PathBuf {
    with_suffix(prefix, ".bin")
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a dataset through temporary files; [`DatasetWriter::finish`] renames both into place
/// (`.bin` first, so an `.idx` never points at a missing `.bin`).
pub struct DatasetWriter {
    prefix: PathBuf,
    dtype: Dtype,
    bin: BufWriter<File>,
    bin_pending: atomic::PendingFile,
    lengths: Vec<i32>,
    /// `document_indices`: 0, then the sequence count at each document end.
    documents: Vec<i64>,
    bytes: u64,
    scratch: Vec<u8>,
}

impl DatasetWriter {
    pub fn create(prefix: &Path, dtype: Dtype) -> Result<Self> {
        let bin_pending = atomic::PendingFile::new(bin_path(prefix))?;
        let file = File::create(&bin_pending.tmp).at(&bin_pending.tmp)?;
        Ok(DatasetWriter {
            prefix: prefix.to_path_buf(),
            dtype,
            bin: BufWriter::with_capacity(1 << 20, file),
            bin_pending,
            lengths: Vec::new(),
            documents: vec![0],
            bytes: 0,
            scratch: Vec::new(),
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Appends one sequence (it belongs to the current document until [`end_document`]).
    ///
    /// [`end_document`]: DatasetWriter::end_document
    pub fn add_sequence(&mut self, ids: &[u32]) -> Result<()> {
        let len = i32::try_from(ids.len()).map_err(|_| {
            GristError::Usage(format!("a sequence of {} tokens is too long", ids.len()))
        })?;
        self.scratch.clear();
        let max = self.dtype.max_id();
        for &id in ids {
            if id > max {
                return Err(GristError::Usage(format!(
                    "token id {id} does not fit the dataset's {}",
                    self.dtype.name()
                )));
            }
            match self.dtype {
                Dtype::U16 => self.scratch.extend_from_slice(&(id as u16).to_le_bytes()),
                Dtype::I32 => self.scratch.extend_from_slice(&(id as i32).to_le_bytes()),
            }
        }
        self.bin
            .write_all(&self.scratch)
            .at(&self.bin_pending.tmp)?;
        self.bytes += self.scratch.len() as u64;
        self.lengths.push(len);
        Ok(())
    }

    /// Appends raw little-endian tokens already in this dataset's dtype (copying between
    /// datasets of the same dtype without decoding).
    pub fn add_sequence_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.add_sequence_parts(&[bytes])
    }

    /// Appends one sequence whose stored bytes come in parts (written as they are, no copy).
    pub fn add_sequence_parts(&mut self, parts: &[&[u8]]) -> Result<()> {
        let mut n = 0;
        for part in parts {
            self.bin.write_all(part).at(&self.bin_pending.tmp)?;
            n += part.len();
        }
        debug_assert_eq!(n % self.dtype.size(), 0);
        self.bytes += n as u64;
        let len = n / self.dtype.size();
        self.lengths.push(
            i32::try_from(len).map_err(|_| {
                GristError::Usage(format!("a sequence of {len} tokens is too long"))
            })?,
        );
        Ok(())
    }

    /// Appends every sequence and document of `other` (same dtype), copying its tokens as bytes.
    pub fn append(&mut self, other: &Dataset) -> Result<()> {
        if other.dtype() != self.dtype {
            return Err(GristError::Usage(format!(
                "cannot append a {} dataset to a {} one",
                other.dtype().name(),
                self.dtype.name()
            )));
        }
        if *self.documents.last().expect("starts with 0") != self.lengths.len() as i64 {
            return Err(GristError::Usage("append inside an open document".into()));
        }
        let base = self.lengths.len() as i64;
        let n = other.num_sequences();
        if n > 0 {
            let start = other.pointer(0) as usize;
            let end =
                other.pointer(n - 1) as usize + other.length(n - 1) as usize * self.dtype.size();
            self.bin
                .write_all(&other.bin[start..end])
                .at(&self.bin_pending.tmp)?;
            self.bytes += (end - start) as u64;
        }
        self.lengths.extend((0..n).map(|i| other.length(i)));
        self.documents
            .extend((1..=other.num_documents()).map(|d| base + other.document_index(d)));
        Ok(())
    }

    /// Closes the current document: the sequences added since the last call form it.
    pub fn end_document(&mut self) {
        self.documents.push(self.lengths.len() as i64);
    }

    /// Adds one sequence that is one whole document.
    pub fn add_document(&mut self, ids: &[u32]) -> Result<()> {
        self.add_sequence(ids)?;
        self.end_document();
        Ok(())
    }

    pub fn sequences(&self) -> usize {
        self.lengths.len()
    }

    pub fn tokens(&self) -> u64 {
        self.bytes / self.dtype.size() as u64
    }

    /// Writes the index and moves both files into place.
    pub fn finish(mut self) -> Result<()> {
        if *self.documents.last().expect("starts with 0") != self.lengths.len() as i64 {
            return Err(GristError::Usage(
                "the last document was not closed (end_document)".into(),
            ));
        }
        self.bin.flush().at(&self.bin_pending.tmp)?;
        self.bin.get_ref().sync_all().at(&self.bin_pending.tmp)?;
        let mut idx =
            Vec::with_capacity(HEADER_LEN + self.lengths.len() * 12 + self.documents.len() * 8);
        idx.extend_from_slice(MAGIC);
        idx.extend_from_slice(&1u64.to_le_bytes());
        idx.push(self.dtype.code());
        idx.extend_from_slice(&(self.lengths.len() as u64).to_le_bytes());
        idx.extend_from_slice(&(self.documents.len() as u64).to_le_bytes());
        for &l in &self.lengths {
            idx.extend_from_slice(&l.to_le_bytes());
        }
        let mut pointer = 0i64;
        for &l in &self.lengths {
            idx.extend_from_slice(&pointer.to_le_bytes());
            pointer += l as i64 * self.dtype.size() as i64;
        }
        for &d in &self.documents {
            idx.extend_from_slice(&d.to_le_bytes());
        }
        drop(self.bin);
        self.bin_pending.commit()?;
        atomic::write(&idx_path(&self.prefix), &idx)?;
        Ok(())
    }
}

/// A dataset opened by memory map.
pub struct Dataset {
    prefix: PathBuf,
    dtype: Dtype,
    idx: Mmap,
    bin: Mmap,
    sequences: usize,
    documents: usize,
}

impl Dataset {
    pub fn open(prefix: &Path) -> Result<Dataset> {
        let idx_file = idx_path(prefix);
        let bin_file = bin_path(prefix);
        let bad = |msg: String| GristError::data(&idx_file, msg);
        let idx = map(&idx_file)?;
        let bin = map(&bin_file)?;
        if idx.len() < 9 || &idx[..9] != MAGIC {
            return Err(bad("not a Megatron index (no MMIDIDX magic)".into()));
        }
        if idx.len() < HEADER_LEN {
            return Err(bad(format!(
                "index of {} bytes is too short for its header",
                idx.len()
            )));
        }
        let u64_at = |at: usize| u64::from_le_bytes(idx[at..at + 8].try_into().expect("8 bytes"));
        let version = u64_at(9);
        if version != 1 {
            return Err(bad(format!("index version {version}, only 1 is supported")));
        }
        let dtype = Dtype::from_code(idx[17]).ok_or_else(|| {
            bad(format!(
                "token dtype code {} is not uint16 (8) or int32 (4)",
                idx[17]
            ))
        })?;
        let sequences = u64_at(18) as usize;
        let documents = u64_at(26) as usize;
        let expected = sequences
            .checked_mul(12)
            .and_then(|s| documents.checked_mul(8).map(|d| (s, d)))
            .and_then(|(s, d)| s.checked_add(d))
            .and_then(|n| n.checked_add(HEADER_LEN));
        // megatron-core may append per-sequence modes (multimodal); more bytes are allowed.
        if expected.is_none_or(|e| idx.len() < e) {
            return Err(bad(format!(
                "index of {} bytes is too short for {sequences} sequences and {documents} document indices",
                idx.len()
            )));
        }
        let ds = Dataset {
            prefix: prefix.to_path_buf(),
            dtype,
            idx,
            bin,
            sequences,
            documents,
        };
        ds.check()?;
        Ok(ds)
    }

    /// Pointers and lengths inside the `.bin`, document indices in order.
    fn check(&self) -> Result<()> {
        let bad = |msg: String| GristError::data(idx_path(&self.prefix), msg);
        let size = self.dtype.size() as u64;
        let mut end = 0u64;
        for i in 0..self.sequences {
            let (p, l) = (self.pointer(i), self.length(i));
            // Megatron writes sequences back to back from byte 0; so does grist.
            if l < 0 || p < 0 || p as u64 != end {
                return Err(bad(format!(
                    "sequence {i} has pointer {p} and length {l}; expected pointer {end}"
                )));
            }
            end = p as u64 + l as u64 * size;
            if end > self.bin.len() as u64 {
                return Err(GristError::data(
                    bin_path(&self.prefix),
                    format!(
                        "sequence {i} ends at byte {end}, past the end of the {}-byte file",
                        self.bin.len()
                    ),
                ));
            }
        }
        let mut last = 0i64;
        for d in 0..self.documents {
            let v = self.document_index(d);
            if v < last || v as usize > self.sequences || (d == 0 && v != 0) {
                return Err(bad(format!("document index {d} is {v}")));
            }
            last = v;
        }
        Ok(())
    }

    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    pub fn num_sequences(&self) -> usize {
        self.sequences
    }

    /// Documents (one less than the entries of `document_indices`).
    pub fn num_documents(&self) -> usize {
        self.documents.saturating_sub(1)
    }

    pub fn length(&self, i: usize) -> i32 {
        let at = HEADER_LEN + 4 * i;
        i32::from_le_bytes(self.idx[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn pointer(&self, i: usize) -> i64 {
        let at = HEADER_LEN + 4 * self.sequences + 8 * i;
        i64::from_le_bytes(self.idx[at..at + 8].try_into().expect("8 bytes"))
    }

    /// Entry `d` of `document_indices` (0 ..= documents).
    pub fn document_index(&self, d: usize) -> i64 {
        let at = HEADER_LEN + 12 * self.sequences + 8 * d;
        i64::from_le_bytes(self.idx[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The sequences of document `d`.
    pub fn document_sequences(&self, d: usize) -> std::ops::Range<usize> {
        self.document_index(d) as usize..self.document_index(d + 1) as usize
    }

    /// Sequence `i`'s tokens as stored (little-endian, the dataset's dtype).
    pub fn sequence_bytes(&self, i: usize) -> &[u8] {
        let p = self.pointer(i) as usize;
        &self.bin[p..p + self.length(i) as usize * self.dtype.size()]
    }

    pub fn sequence(&self, i: usize) -> Vec<u32> {
        decode(self.sequence_bytes(i), self.dtype)
    }

    pub fn total_tokens(&self) -> u64 {
        (0..self.sequences).map(|i| self.length(i) as u64).sum()
    }
}

/// Little-endian tokens of `dtype` as ids.
pub fn decode(bytes: &[u8], dtype: Dtype) -> Vec<u32> {
    match dtype {
        Dtype::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect(),
    }
}

fn map(path: &Path) -> Result<Mmap> {
    let file = File::open(path).at(path)?;
    // SAFETY: the files are opened read-only and grist only replaces datasets by rename, never in
    // place; a file truncated by another program under the map is outside what we can guard.
    unsafe { Mmap::map(&file) }.at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_datasets_read_back_with_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [Dtype::U16, Dtype::I32] {
            let prefix = dir.path().join(format!("ds_{}", dtype.name()));
            let mut w = DatasetWriter::create(&prefix, dtype).unwrap();
            w.add_document(&[1, 2, 3]).unwrap();
            w.add_sequence(&[4]).unwrap();
            w.add_sequence(&[5, 6]).unwrap();
            w.end_document();
            w.add_document(&[]).unwrap();
            w.finish().unwrap();
            let ds = Dataset::open(&prefix).unwrap();
            assert_eq!(ds.dtype(), dtype);
            assert_eq!(ds.num_sequences(), 4);
            assert_eq!(ds.num_documents(), 3);
            assert_eq!(ds.sequence(0), [1, 2, 3]);
            assert_eq!(ds.sequence(2), [5, 6]);
            assert_eq!(ds.document_sequences(1), 1..3);
            assert_eq!(ds.document_sequences(2), 3..4);
            assert_eq!(ds.total_tokens(), 6);
            let idx = std::fs::read(idx_path(&prefix)).unwrap();
            assert_eq!(idx.len(), HEADER_LEN + 4 * 12 + 4 * 8);
        }
    }

    #[test]
    fn ids_too_large_for_uint16_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = DatasetWriter::create(&dir.path().join("x"), Dtype::U16).unwrap();
        assert!(w.add_document(&[70_000]).is_err());
    }

    #[test]
    fn corrupt_indexes_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("x");
        let mut w = DatasetWriter::create(&prefix, Dtype::U16).unwrap();
        w.add_document(&[1, 2, 3]).unwrap();
        w.finish().unwrap();
        let idx = std::fs::read(idx_path(&prefix)).unwrap();
        std::fs::write(idx_path(&prefix), &idx[..idx.len() - 3]).unwrap();
        let e = Dataset::open(&prefix).err().unwrap().to_string();
        assert!(e.contains("too short"), "{e}");
        std::fs::write(idx_path(&prefix), b"hello").unwrap();
        assert!(Dataset::open(&prefix).is_err());
        std::fs::write(idx_path(&prefix), &idx).unwrap();
        std::fs::write(bin_path(&prefix), [0u8; 4]).unwrap();
        let e = Dataset::open(&prefix).err().unwrap().to_string();
        assert!(e.contains("past the end"), "{e}");
    }

    /// Fuzz (issue 16): a dataset whose `.idx` or `.bin` is mutated (or random bytes) opens and
    /// reads every sequence, or fails naming the file; never a panic, and nothing allocated
    /// from the header's counts before they are checked against the file's size.
    #[test]
    fn fuzz_indexed_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        let mut w = DatasetWriter::create(&good, Dtype::U16).unwrap();
        w.add_document(&[1, 2, 3]).unwrap();
        w.add_sequence(&[4]).unwrap();
        w.add_sequence(&[5, 6]).unwrap();
        w.end_document();
        w.add_document(&[7; 40]).unwrap();
        w.finish().unwrap();
        let idx = std::fs::read(idx_path(&good)).unwrap();
        let bin = std::fs::read(bin_path(&good)).unwrap();
        let prefix = dir.path().join("fuzz");
        let read_all = |idx: &[u8], bin: &[u8]| -> Result<(), String> {
            std::fs::write(idx_path(&prefix), idx).unwrap();
            std::fs::write(bin_path(&prefix), bin).unwrap();
            let (result, peak) = crate::fuzz::peak_bytes(|| -> Result<u64> {
                let ds = Dataset::open(&prefix)?;
                let mut n = 0u64;
                for d in 0..ds.num_documents() {
                    for q in ds.document_sequences(d) {
                        n += ds.sequence(q).len() as u64;
                    }
                }
                Ok(n)
            });
            if let Err(e) = result
                && !e.to_string().contains("fuzz.")
            {
                return Err(format!("an error that does not name the file: {e}"));
            }
            let size = idx.len() + bin.len();
            crate::fuzz::within("megatron", peak, 16 * size + 4096, size)
        };
        crate::fuzz::fuzz(
            "megatron .idx",
            2000,
            crate::fuzz::inputs(vec![idx.clone()]),
            |b| read_all(&b, &bin),
        );
        crate::fuzz::fuzz(
            "megatron .bin",
            1000,
            crate::fuzz::inputs(vec![bin.clone()]),
            |b| read_all(&idx, &b),
        );
    }
}
