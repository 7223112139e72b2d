//! Compression by file name: `.gz` and `.zst` are read and written transparently.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Compression::Gzip,
            Some("zst") | Some("zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Opens `path` for buffered reading, decompressing by its extension.
pub fn open_read(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).at(path)?;
    let buffered = BufReader::with_capacity(1 << 20, file);
    Ok(match Compression::from_path(path) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::bufread::MultiGzDecoder::new(buffered),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            1 << 20,
            zstd::Decoder::with_buffer(buffered).at(path)?,
        )),
    })
}

/// A compressing writer that must be finished to write its trailer.
pub enum CompressedWriter {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl CompressedWriter {
    pub fn create(path: &Path, compression: Compression) -> Result<Self> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path).at(path)?);
        Ok(match compression {
            Compression::None => CompressedWriter::Plain(file),
            Compression::Gzip => CompressedWriter::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => CompressedWriter::Zstd(zstd::Encoder::new(file, 3).at(path)?),
        })
    }

    pub fn finish(self) -> std::io::Result<()> {
        let mut inner = match self {
            CompressedWriter::Plain(w) => w,
            CompressedWriter::Gzip(w) => w.finish()?,
            CompressedWriter::Zstd(w) => w.finish()?,
        };
        inner.flush()?;
        inner.get_ref().sync_all()
    }
}

impl Write for CompressedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            CompressedWriter::Plain(w) => w.write(buf),
            CompressedWriter::Gzip(w) => w.write(buf),
            CompressedWriter::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            CompressedWriter::Plain(w) => w.flush(),
            CompressedWriter::Gzip(w) => w.flush(),
            CompressedWriter::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trip_each_codec() {
        let dir = tempfile::tempdir().unwrap();
        for (name, c) in [
            ("a.txt", Compression::None),
            ("a.gz", Compression::Gzip),
            ("a.zst", Compression::Zstd),
        ] {
            let p = dir.path().join(name);
            let mut w = CompressedWriter::create(&p, c).unwrap();
            w.write_all(b"hello\nworld\n").unwrap();
            w.finish().unwrap();
            let mut s = String::new();
            open_read(&p).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "hello\nworld\n");
        }
    }
}
