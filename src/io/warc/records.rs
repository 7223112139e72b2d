//! WARC record framing: the decompressed byte stream of a file (plain, gzip — one member per record
//! or the whole file —, zstd with an optional dictionary frame), cut into records (version line,
//! named fields, `Content-Length` bytes of block).
//!
//! A corrupt gzip member does not end the file: the reader reports it once and carries on at the
//! next gzip header, which in a record-per-member file is the next record. A file cut mid-record
//! yields every complete record before the cut, then the cut record as truncated.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Longest WARC header line, and the most header bytes a record may have.
const MAX_HEADER_LINE: usize = 64 << 10;
const MAX_HEADER_BYTES: usize = 1 << 20;
/// The most named fields a record may have (Common Crawl's have about 15).
const MAX_FIELDS: usize = 1024;

/// The marker carried by the I/O error that reports a corrupt gzip member (after which the stream
/// goes on at the next member).
#[derive(Debug)]
struct CorruptMember {
    offset: u64,
    cause: String,
}

impl std::fmt::Display for CorruptMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corrupt gzip member at byte {}: {}",
            self.offset, self.cause
        )
    }
}

impl std::error::Error for CorruptMember {}

/// A `BufRead` over a file that counts the bytes consumed (the offset of a gzip member).
struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.pos += amt as u64;
        self.inner.consume(amt);
    }
}

type Raw = Counting<Box<dyn BufRead + Send>>;

const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];

/// The gzip members of a file, decoded one after the other. A member that fails to decode is
/// reported as one error of kind `InvalidData` carrying [`CorruptMember`]; the next read starts
/// at the next gzip header after it.
struct GzMembers {
    decoder: Option<flate2::bufread::GzDecoder<Raw>>,
    member_start: u64,
}

impl GzMembers {
    fn new(raw: Raw) -> Self {
        GzMembers {
            member_start: raw.pos,
            decoder: Some(flate2::bufread::GzDecoder::new(raw)),
        }
    }

    /// Moves `raw` to the next gzip header (`1f 8b 08`) that starts after byte `from`.
    fn seek_next_header(raw: &mut Raw, from: u64) -> std::io::Result<()> {
        // Skip to one byte past the start of the bad member.
        while raw.pos <= from {
            let n = raw.fill_buf()?.len().min((from + 1 - raw.pos) as usize);
            if n == 0 {
                return Ok(());
            }
            raw.consume(n);
        }
        let mut matched = 0usize;
        loop {
            let buf = raw.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let mut found = None;
            for (i, &b) in buf.iter().enumerate() {
                matched = if b == GZIP_MAGIC[matched] {
                    matched + 1
                } else if b == GZIP_MAGIC[0] {
                    1
                } else {
                    0
                };
                if matched == GZIP_MAGIC.len() {
                    found = Some(i);
                    break;
                }
            }
            match found {
                Some(i) if i >= 2 => {
                    raw.consume(i - 2);
                    return Ok(());
                }
                Some(i) => {
                    // The header began in bytes already consumed: put it back in front.
                    raw.consume(i + 1);
                    let rest = std::mem::replace(&mut raw.inner, Box::new(std::io::empty()));
                    raw.inner = Box::new(std::io::Cursor::new(GZIP_MAGIC).chain(rest));
                    raw.pos -= GZIP_MAGIC.len() as u64;
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    raw.consume(n);
                }
            }
        }
    }
}

impl Read for GzMembers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            match decoder.read(buf) {
                Ok(0) if !buf.is_empty() => {
                    let mut raw = self.decoder.take().expect("decoder").into_inner();
                    if raw.fill_buf()?.is_empty() {
                        return Ok(0);
                    }
                    self.member_start = raw.pos;
                    self.decoder = Some(flate2::bufread::GzDecoder::new(raw));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let offset = self.member_start;
                    let mut raw = self.decoder.take().expect("decoder").into_inner();
                    if e.kind() == std::io::ErrorKind::UnexpectedEof && raw.fill_buf()?.is_empty() {
                        // The file ends inside this member: a cut file, not a corrupt one.
                        return Err(e);
                    }
                    Self::seek_next_header(&mut raw, offset)?;
                    if !raw.fill_buf()?.is_empty() {
                        self.member_start = raw.pos;
                        self.decoder = Some(flate2::bufread::GzDecoder::new(raw));
                    }
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        CorruptMember {
                            offset,
                            cause: e.to_string(),
                        },
                    ));
                }
            }
        }
    }
}

/// The file names a directory input lists as WARC.
pub const EXTENSIONS: &[&str] = &[".warc", ".warc.gz", ".warc.zst", ".wet", ".wet.gz"];

/// The Zstandard skippable frame in which a `.warc.zst` file may carry its dictionary.
const ZSTD_DICT_FRAME: u32 = 0x184D_2A5D;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Opens a WARC file's decompressed stream, by its name (`.gz`, `.zst`, else plain).
fn open_stream(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).at(path)?;
    let raw: Box<dyn BufRead + Send> = Box::new(BufReader::with_capacity(1 << 20, file));
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 16,
            GzMembers::new(Counting { inner: raw, pos: 0 }),
        ))
    } else if name.ends_with(".zst") {
        open_zstd(raw, path)?
    } else {
        raw
    })
}

/// A `.warc.zst` stream: frames one after the other, decompressed with the dictionary of the
/// file's leading skippable frame when it has one (the IIPC WARC-Zstandard layout).
fn open_zstd(mut raw: Box<dyn BufRead + Send>, path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let head = raw.fill_buf().at(path)?;
    let mut dictionary = Vec::new();
    if head.len() >= 8
        && u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) == ZSTD_DICT_FRAME
    {
        let len = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")) as usize;
        if len > 64 << 20 {
            return Err(crate::GristError::data(
                path,
                format!("the zstd dictionary frame claims {len} bytes (at most 64 MiB taken)"),
            ));
        }
        raw.consume(8);
        dictionary.resize(len, 0);
        raw.read_exact(&mut dictionary).map_err(|e| {
            crate::GristError::data(path, format!("cannot read the zstd dictionary: {e}"))
        })?;
        if dictionary.len() >= 4
            && u32::from_le_bytes(dictionary[..4].try_into().expect("4 bytes")) == ZSTD_MAGIC
        {
            // The dictionary may itself be compressed.
            dictionary = zstd::stream::decode_all(&dictionary[..]).map_err(|e| {
                crate::GristError::data(path, format!("cannot decompress the zstd dictionary: {e}"))
            })?;
        }
    }
    let decoder = zstd::stream::read::Decoder::with_dictionary(raw, &dictionary).at(path)?;
    Ok(Box::new(BufReader::with_capacity(1 << 16, decoder)))
}

/// The named fields of a record, in order (names as written; lookups ignore case).
#[derive(Debug, Default, Clone)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One record as read: its fields and its block (at most `max_block` bytes of it).
#[derive(Debug)]
pub struct Record {
    pub fields: Fields,
    /// The record's index in the file (0 = first record), for ids of records without one.
    pub index: u64,
    /// The block, or its first [`super::super::OVERSIZED_EXCERPT_BYTES`] when `oversized`.
    pub block: Vec<u8>,
    pub oversized: bool,
}

/// What the stream gave next.
#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// Something that could not be read as a record; reading goes on after it.
    Damaged(Damage),
}

#[derive(Debug)]
pub struct Damage {
    pub reason: &'static str,
    pub error: String,
    /// The fields of the record it hit, when they were read.
    pub fields: Option<Fields>,
    pub index: u64,
    /// The first bytes of what could not be read.
    pub excerpt: Vec<u8>,
}

/// Why a record (or the bytes where one should be) is rejected.
pub const CORRUPT_GZIP_MEMBER: &str = "corrupt_gzip_member";
pub const CORRUPT_ZSTD: &str = "corrupt_zstd";
pub const TRUNCATED_RECORD: &str = "truncated_record";
pub const NOT_WARC: &str = "not_warc";
pub const BAD_WARC_HEADER: &str = "bad_warc_header";

/// Reads the records of one WARC file in order.
pub struct RecordReader {
    input: Box<dyn BufRead + Send>,
    max_block: usize,
    zstd: bool,
    index: u64,
    done: bool,
    line: Vec<u8>,
    /// A version line was read after bytes that were not a record: its record comes next.
    pending_record: bool,
    /// A record found damaged, reported when its end is known (see [`Self::bad_header`]).
    pending_damage: Option<Damage>,
    /// The last thing reported was a corrupt member and no record was read since: another
    /// corrupt member straight after is the same damage.
    in_corruption: bool,
}

/// What [`RecordReader::find_record`] found.
enum Found {
    /// A version line: the record's header follows.
    Record,
    Report(Next),
    End,
}

/// How reading a record failed part-way.
enum Cut {
    /// A damaged gzip member or zstd frame (the stream goes on after a gzip member).
    Corrupt(String),
    /// The file ended.
    Eof,
}

impl RecordReader {
    pub fn open(path: &Path, max_block: usize) -> Result<Self> {
        Ok(RecordReader {
            input: open_stream(path)?,
            max_block,
            zstd: path.to_string_lossy().ends_with(".zst"),
            index: 0,
            done: false,
            line: Vec::new(),
            pending_record: false,
            pending_damage: None,
            in_corruption: false,
        })
    }

    /// Sorts an I/O error: damage the stream recovers from (or that ends it), or a failure of the
    /// file itself (which fails the task).
    fn classify(&mut self, e: std::io::Error) -> std::io::Result<Cut> {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Ok(Cut::Eof);
        }
        if e.get_ref().is_some_and(|inner| inner.is::<CorruptMember>()) {
            return Ok(Cut::Corrupt(e.to_string()));
        }
        if self.zstd || e.kind() == std::io::ErrorKind::InvalidData {
            // A zstd stream cannot be resumed after a bad frame: what follows is lost.
            self.done = true;
            return Ok(Cut::Corrupt(e.to_string()));
        }
        Err(e)
    }

    /// One line (without its terminator); `Ok(None)` at the end of the stream.
    fn read_line(&mut self) -> std::io::Result<Result<Option<bool>, Cut>> {
        self.line.clear();
        match super::super::read_line_capped(&mut *self.input, &mut self.line, MAX_HEADER_LINE) {
            Ok((0, _)) => Ok(Ok(None)),
            Ok((_, cut)) => {
                while matches!(self.line.last(), Some(b'\n' | b'\r')) {
                    self.line.pop();
                }
                Ok(Ok(Some(cut)))
            }
            Err(e) => self.classify(e).map(Err),
        }
    }

    fn damage(
        &self,
        reason: &'static str,
        error: String,
        fields: Option<Fields>,
        excerpt: Vec<u8>,
    ) -> Next {
        Next::Damaged(self.damaged(reason, error, fields, excerpt))
    }

    fn damaged(
        &self,
        reason: &'static str,
        error: String,
        fields: Option<Fields>,
        excerpt: Vec<u8>,
    ) -> Damage {
        Damage {
            reason,
            error,
            fields,
            index: self.index,
            excerpt,
        }
    }

    /// The next record, or damage; `None` at the end of the file.
    pub fn next(&mut self) -> std::io::Result<Option<Next>> {
        loop {
            if std::mem::take(&mut self.pending_record) {
                match self.read_record()? {
                    Some(next) => return Ok(Some(next)),
                    None => continue,
                }
            }
            match self.find_record()? {
                Found::Record => {
                    if let Some(next) = self.read_record()? {
                        return Ok(Some(next));
                    }
                }
                Found::Report(next) => return Ok(Some(next)),
                Found::End => return Ok(None),
            }
        }
    }

    /// Reads up to the next version line. Lines on the way are blank, the rest of a record
    /// already found damaged (whose report is then made), or bytes that are not a record.
    fn find_record(&mut self) -> std::io::Result<Found> {
        let mut skipped: Vec<u8> = Vec::new();
        let mut skipped_any = false;
        loop {
            if self.done {
                return Ok(match self.pending_damage.take() {
                    Some(d) => Found::Report(Next::Damaged(d)),
                    None => Found::End,
                });
            }
            match self.read_line()? {
                Ok(Some(_)) => {}
                Ok(None) | Err(Cut::Eof) => {
                    self.done = true;
                    if let Some(d) = self.pending_damage.take() {
                        return Ok(Found::Report(Next::Damaged(d)));
                    }
                    if !skipped_any {
                        return Ok(Found::End);
                    }
                    return Ok(Found::Report(self.damage(
                        NOT_WARC,
                        "bytes after the last record are not a WARC record".into(),
                        None,
                        skipped,
                    )));
                }
                Err(Cut::Corrupt(e)) => {
                    // A damaged record whose bytes decoded far enough to look wrong is a
                    // corrupt member: report it as such.
                    if let Some(mut d) = self.pending_damage.take() {
                        self.in_corruption = true;
                        d.reason = self.corrupt_reason();
                        d.error = e;
                        return Ok(Found::Report(Next::Damaged(d)));
                    }
                    if self.in_corruption {
                        continue;
                    }
                    self.in_corruption = true;
                    let reason = self.corrupt_reason();
                    let d = self.damage(reason, e, None, skipped);
                    self.index += 1;
                    return Ok(Found::Report(d));
                }
            }
            if self.line.starts_with(b"WARC/") {
                if let Some(d) = self.pending_damage.take() {
                    self.pending_record = true;
                    return Ok(Found::Report(Next::Damaged(d)));
                }
                if skipped_any {
                    // Bytes before this record that are not one: report them, then the record.
                    self.pending_record = true;
                    let d = self.damage(
                        NOT_WARC,
                        "bytes between records are not a WARC record".into(),
                        None,
                        skipped,
                    );
                    self.index += 1;
                    return Ok(Found::Report(d));
                }
                return Ok(Found::Record);
            }
            if self.pending_damage.is_some() || self.line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            skipped_any = true;
            if skipped.len() < super::super::OVERSIZED_EXCERPT_BYTES {
                let room = super::super::OVERSIZED_EXCERPT_BYTES - skipped.len();
                skipped.extend_from_slice(&self.line[..self.line.len().min(room)]);
                skipped.push(b'\n');
            }
        }
    }

    fn corrupt_reason(&self) -> &'static str {
        if self.zstd {
            CORRUPT_ZSTD
        } else {
            CORRUPT_GZIP_MEMBER
        }
    }

    /// Consumes the line ends after a block, so that in a file with a gzip member per record the
    /// member's end (and its checksum) is read before the record is given out. `Err` with the
    /// cut when the member turns out corrupt.
    fn finish_block(&mut self) -> std::io::Result<Result<(), Cut>> {
        loop {
            let buf = match self.input.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return self.classify(e).map(Err),
            };
            let ends = buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if buf.is_empty() || ends < buf.len() {
                self.input.consume(ends);
                return Ok(Ok(()));
            }
            self.input.consume(ends);
        }
    }

    /// Reads the fields and block of the record whose version line was just read.
    fn read_record(&mut self) -> std::io::Result<Option<Next>> {
        let mut fields = Fields::default();
        let mut header_bytes = 0usize;
        loop {
            let cut = match self.read_line()? {
                Ok(Some(cut)) => cut,
                Ok(None) | Err(Cut::Eof) => {
                    let d = self.truncated(
                        "the file ends inside the record's header",
                        fields,
                        Vec::new(),
                    );
                    return Ok(Some(d));
                }
                Err(Cut::Corrupt(e)) => return Ok(Some(self.corrupt(e, Some(fields)))),
            };
            header_bytes += self.line.len();
            if cut || header_bytes > MAX_HEADER_BYTES || fields.0.len() >= MAX_FIELDS {
                return Ok(self.bad_header(
                    format!(
                        "the header is longer than {MAX_HEADER_LINE} bytes per line, \
                         {MAX_HEADER_BYTES} in all or {MAX_FIELDS} fields"
                    ),
                    fields,
                ));
            }
            if self.line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            if line.starts_with([' ', '\t']) {
                // A continuation of the previous field's value.
                match fields.0.last_mut() {
                    Some((_, value)) => {
                        value.push(' ');
                        value.push_str(line.trim());
                    }
                    None => {
                        return Ok(self.bad_header(
                            "the header starts with a continuation line".into(),
                            fields,
                        ));
                    }
                }
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Ok(
                    self.bad_header(format!("header line without a colon: {line:.200}"), fields)
                );
            };
            fields
                .0
                .push((name.trim().to_string(), value.trim().to_string()));
        }
        let Some(length) = fields
            .get("Content-Length")
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return Ok(self.bad_header("the record has no valid Content-Length".into(), fields));
        };
        let oversized = length > self.max_block as u64;
        let keep = if oversized {
            super::super::OVERSIZED_EXCERPT_BYTES as u64
        } else {
            length
        };
        let mut block = Vec::with_capacity(keep as usize);
        let (rest, remaining) = {
            let mut body = (&mut self.input).take(length);
            let read = (&mut body).take(keep).read_to_end(&mut block);
            let rest = read.and_then(|_| std::io::copy(&mut body, &mut std::io::sink()));
            (rest, body.limit())
        };
        match rest {
            Ok(_) if remaining == 0 => {}
            Ok(_) => {
                let d = self.truncated(
                    format!(
                        "the file ends inside the record's block ({} of {length} bytes read)",
                        length - remaining
                    ),
                    fields,
                    block,
                );
                return Ok(Some(d));
            }
            Err(e) => match self.classify(e)? {
                Cut::Eof => {
                    let d =
                        self.truncated("the file ends inside the record's block", fields, block);
                    return Ok(Some(d));
                }
                Cut::Corrupt(e) => return Ok(Some(self.corrupt(e, Some(fields)))),
            },
        }
        if let Err(cut) = self.finish_block()? {
            let d = match cut {
                Cut::Corrupt(e) => self.corrupt(e, Some(fields)),
                Cut::Eof => self.truncated(
                    "the file ends inside the record's gzip member",
                    fields,
                    Vec::new(),
                ),
            };
            return Ok(Some(d));
        }
        self.in_corruption = false;
        let record = Record {
            fields,
            index: self.index,
            block,
            oversized,
        };
        self.index += 1;
        Ok(Some(Next::Record(record)))
    }

    /// The record the file ends inside: the last thing the file gives.
    fn truncated(&mut self, error: impl Into<String>, fields: Fields, excerpt: Vec<u8>) -> Next {
        self.done = true;
        let d = self.damage(TRUNCATED_RECORD, error.into(), Some(fields), excerpt);
        self.index += 1;
        d
    }

    fn corrupt(&mut self, error: String, fields: Option<Fields>) -> Next {
        self.in_corruption = true;
        let d = self.damage(self.corrupt_reason(), error, fields, Vec::new());
        self.index += 1;
        d
    }

    /// A record whose header cannot be read: its report waits until the next version line
    /// (a corrupt member found on the way changes the reason), and the lines up to it are
    /// skipped as its rest.
    fn bad_header(&mut self, error: String, fields: Fields) -> Option<Next> {
        self.pending_damage = Some(self.damaged(BAD_WARC_HEADER, error, Some(fields), Vec::new()));
        self.index += 1;
        None
    }
}
