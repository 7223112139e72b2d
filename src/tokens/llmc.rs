//! llm.c token files: a 256-int32 header (magic, version, token count) then the tokens. Below
//! 65,536 ids: magic 20240520, version 1, uint16 (llm.c's GPT-2 format); otherwise magic
//! 20240801, version 7, uint32 (its Llama 3 format). See `schemas/packed-format.md`.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{GristError, IoContext, Result};
use crate::io::atomic::PendingFile;

pub const MAGIC_U16: i32 = 20240520;
pub const MAGIC_U32: i32 = 20240801;
const HEADER_INTS: usize = 256;

/// Whether ids below `vocab_size` fit llm.c's uint16 format.
pub fn fits_u16(vocab_size: usize) -> bool {
    vocab_size <= 1 << 16
}

fn header(wide: bool, tokens: u64) -> Result<Vec<u8>> {
    let count = i32::try_from(tokens).map_err(|_| {
        GristError::Usage(format!(
            "{tokens} tokens do not fit an llm.c file (its header counts in int32)"
        ))
    })?;
    let mut h = vec![0i32; HEADER_INTS];
    (h[0], h[1]) = match wide {
        false => (MAGIC_U16, 1),
        true => (MAGIC_U32, 7),
    };
    h[2] = count;
    Ok(h.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// Writes one llm.c file through a temporary name.
pub struct LlmcWriter {
    wide: bool,
    out: BufWriter<File>,
    pending: PendingFile,
    tokens: u64,
}

impl LlmcWriter {
    pub fn create(path: &Path, vocab_size: usize) -> Result<Self> {
        let pending = PendingFile::new(path.to_path_buf())?;
        let mut out =
            BufWriter::with_capacity(1 << 20, File::create(&pending.tmp).at(&pending.tmp)?);
        let wide = !fits_u16(vocab_size);
        out.write_all(&header(wide, 0)?).at(&pending.tmp)?;
        Ok(LlmcWriter {
            wide,
            out,
            pending,
            tokens: 0,
        })
    }

    pub fn write(&mut self, ids: &[u32]) -> Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.wide {
                false => buf.extend_from_slice(
                    &u16::try_from(id)
                        .map_err(|_| {
                            GristError::Usage(format!("token id {id} does not fit uint16"))
                        })?
                        .to_le_bytes(),
                ),
                true => buf.extend_from_slice(&id.to_le_bytes()),
            }
        }
        self.out.write_all(&buf).at(&self.pending.tmp)?;
        self.tokens += ids.len() as u64;
        Ok(())
    }

    pub fn finish(mut self) -> Result<u64> {
        let tmp = self.pending.tmp.clone();
        self.out.flush().at(&tmp)?;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| GristError::io(&tmp, e.into_error()))?;
        file.seek(SeekFrom::Start(0)).at(&tmp)?;
        file.write_all(&header(self.wide, self.tokens)?).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        self.pending.commit()?;
        Ok(self.tokens)
    }
}

/// Reads a whole llm.c file.
pub fn read(path: &Path) -> Result<Vec<u32>> {
    let mut bytes = Vec::new();
    File::open(path)
        .at(path)?
        .read_to_end(&mut bytes)
        .at(path)?;
    let bad = |m: String| GristError::data(path, m);
    if bytes.len() < HEADER_INTS * 4 {
        return Err(bad("too short for an llm.c header".into()));
    }
    let int = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let width = match (int(0), int(1)) {
        (MAGIC_U16, 1) => 2,
        (MAGIC_U32, 7) => 4,
        (m, v) => {
            return Err(bad(format!(
                "magic {m} version {v} is not an llm.c token file"
            )));
        }
    };
    let count = usize::try_from(int(2))
        .map_err(|_| bad(format!("the header's token count {} is negative", int(2))))?;
    let body = &bytes[HEADER_INTS * 4..];
    if count.checked_mul(width) != Some(body.len()) {
        return Err(bad(format!(
            "header says {count} tokens, the file holds {} bytes of them",
            body.len()
        )));
    }
    Ok(match width {
        2 => body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        _ => body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_widths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (vocab, ids) in [(50_257, vec![1u32, 50_256, 7]), (128_256, vec![0, 128_000])] {
            let path = dir.path().join(format!("{vocab}.bin"));
            let mut w = LlmcWriter::create(&path, vocab).unwrap();
            w.write(&ids).unwrap();
            w.write(&ids).unwrap();
            assert_eq!(w.finish().unwrap(), 2 * ids.len() as u64);
            let back = read(&path).unwrap();
            assert_eq!(back, [ids.clone(), ids].concat());
            let raw = std::fs::read(&path).unwrap();
            let magic = i32::from_le_bytes(raw[..4].try_into().unwrap());
            assert_eq!(magic, if vocab < 65_536 { MAGIC_U16 } else { MAGIC_U32 });
        }
    }

    /// Fuzz (issue 16): mutated llm.c files and random bytes read back or fail naming the
    /// file; never a panic (a negative count in the header used to overflow).
    #[test]
    fn fuzz_llmc_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut seeds = Vec::new();
        for vocab in [50_257, 128_256] {
            let path = dir.path().join(format!("{vocab}.bin"));
            let mut w = LlmcWriter::create(&path, vocab).unwrap();
            w.write(&[1, 2, 3, 50_000]).unwrap();
            w.finish().unwrap();
            seeds.push(std::fs::read(&path).unwrap());
        }
        let path = dir.path().join("fuzz.bin");
        crate::fuzz::fuzz("llm.c bin", 2000, crate::fuzz::inputs(seeds), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            let (result, peak) = crate::fuzz::peak_bytes(|| read(&path));
            if let Err(e) = result
                && !e.to_string().contains("fuzz.bin")
            {
                return Err(format!("an error that does not name the file: {e}"));
            }
            crate::fuzz::within("llm.c bin", peak, 4 * bytes.len() + 4096, bytes.len())
        });
    }
}
