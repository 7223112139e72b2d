//! Pure-Rust reader and validator of fastText model files (`.bin`, and quantized `.ftz`).
//!
//! A fastText model is handed to the C++ library (the `fasttext` crate 0.7.8, which vendors
//! fastText 0.9.2). Its loader trusts the file: a truncated, corrupt or foreign file makes it
//! allocate whatever sizes it reads, read past the end or abort. [`inspect`] walks the whole file
//! first, checks every size against the file length and against the invariants fastText's own
//! writer guarantees, and returns a clear [`ModelFileError`] naming the path and the bad part. It
//! also yields the model's training arguments and labels without loading the matrices: words of
//! the dictionary are read through and dropped, matrix data is skipped with `seek_relative`.
//!
//! The format is fastText 0.9.2's, `FASTTEXT_VERSION` 12. Version 11 files (fastText of May to
//! Oct 2017) share the layout and are read too, as fastText does; those saved in its first two
//! days with an unpruned dictionary say 0 pruned ngrams, which 0.9.2 refuses (its issue #332) and
//! so does [`inspect`]. All little-endian, as written by `FastText::saveModel`:
//! i32 magic 793712314, i32 version; `Args::save`: 12 i32 (dim, ws, epoch, minCount, neg,
//! wordNgrams, loss, model, bucket, minn, maxn, lrUpdateRate) and f64 t; `Dictionary::save`: i32
//! size, nwords, nlabels, i64 ntokens, pruneidx_size (-1 when not pruned), `size` entries of
//! (NUL-terminated word, i64 count, i8 type), all words before all labels, then pruneidx_size
//! (i32, i32) pairs; u8 quant_input and the input matrix; u8 qout and the output matrix, which
//! is quantized only when both flags are set. A `DenseMatrix` is i64 m, n and m*n f32; a
//! `QuantMatrix` is u8 qnorm, i64 m, n, i32 codesize, the codes, a `ProductQuantizer` (i32 dim,
//! nsubq, dsub, lastdsub, dim*256 f32 centroids) and, with qnorm, m norm codes and a second
//! quantizer of dim 1.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

const MAGIC: i32 = 793_712_314;
const NEWEST: i32 = 12;
const OLDEST: i32 = 11;
/// Centroids per sub-quantizer (`ProductQuantizer::ksub_`, 8 bits).
const KSUB: u64 = 256;
/// Longest dictionary word accepted before its NUL terminator.
const MAX_WORD: u64 = 1 << 20;
const LABEL_PREFIX: &str = "__label__";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    HierarchicalSoftmax,
    NegativeSampling,
    Softmax,
    OneVsAll,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::HierarchicalSoftmax => "hs",
            Loss::NegativeSampling => "ns",
            Loss::Softmax => "softmax",
            Loss::OneVsAll => "ova",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Cbow,
    SkipGram,
    Supervised,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Cbow => "cbow",
            ModelKind::SkipGram => "skipgram",
            ModelKind::Supervised => "supervised",
        }
    }
}

/// What a valid model file holds, short of its matrices and non-label words.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub version: i32,
    pub dim: i32,
    pub ws: i32,
    pub epoch: i32,
    pub min_count: i32,
    pub neg: i32,
    pub word_ngrams: i32,
    pub loss: Loss,
    pub model: ModelKind,
    pub bucket: i32,
    pub minn: i32,
    /// As fastText uses it: 0 for version-11 supervised models, whatever the file says.
    pub maxn: i32,
    pub lr_update_rate: i32,
    pub t: f64,
    pub nwords: i32,
    pub ntokens: i64,
    /// Labels as stored, e.g. "__label__hq", with their counts, in dictionary order. Bytes that
    /// are not UTF-8 are replaced (U+FFFD).
    pub labels: Vec<(String, i64)>,
    pub quantized_input: bool,
    pub quantized_output: bool,
    pub input_rows: i64,
    pub output_rows: i64,
}

impl ModelInfo {
    /// Label names without the "__label__" prefix (only if the prefix is present; else as stored).
    pub fn label_names(&self) -> Vec<String> {
        let strip = |l: &str| l.strip_prefix(LABEL_PREFIX).unwrap_or(l).to_string();
        self.labels.iter().map(|(l, _)| strip(l)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot open fastText model `{}`: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot read fastText model `{}`: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("`{}` is not a fastText model: {reason}", path.display())]
    NotFastText { path: PathBuf, reason: String },
    #[error("`{}` is a fastText model of version {version}, newer than the {NEWEST} this build reads", path.display())]
    TooNew { path: PathBuf, version: i32 },
    #[error("`{}` is a fastText model of version {version}, older than {OLDEST}, the oldest this build reads", path.display())]
    TooOld { path: PathBuf, version: i32 },
    /// `detail` names the part that is cut, its offset and size, and the file's length.
    #[error("`{}` is truncated: {detail}", path.display())]
    Truncated { path: PathBuf, detail: String },
    #[error("`{}` is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

type Result<T> = std::result::Result<T, ModelFileError>;

/// `return Err(corrupt)` with a formatted detail.
macro_rules! bail {
    ($s:expr, $($fmt:tt)+) => { return Err($s.corrupt(format!($($fmt)+))) };
}

/// Reads and validates the fastText model at `path`; see the module documentation.
pub fn inspect(path: &Path) -> Result<ModelInfo> {
    let open_err = |source| ModelFileError::Open {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let meta = file.metadata().map_err(open_err)?;
    match (meta.is_file(), meta.is_dir()) {
        (true, _) => parse(BufReader::new(file), meta.len(), path),
        (false, true) => Err(not_fasttext(path, "it is a directory")),
        (false, false) => Err(not_fasttext(path, "it is not a regular file")),
    }
}

fn not_fasttext(path: &Path, reason: &str) -> ModelFileError {
    ModelFileError::NotFastText {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A position-tracking reader that checks every read and skip against the file length first, so
/// that no size the file cannot back is ever allocated or skipped.
struct Src<'a, R> {
    r: BufReader<R>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl<R: Read + Seek> Src<'_, R> {
    fn corrupt(&self, detail: String) -> ModelFileError {
        ModelFileError::Corrupt {
            path: self.path.into(),
            detail,
        }
    }

    fn truncated(&self, part: &str, offset: u64, size: u64, at_least: bool) -> ModelFileError {
        let (len, more) = (self.len, if at_least { "at least " } else { "" });
        let missing = size.saturating_sub(len.saturating_sub(offset));
        let detail = format!(
            "{part} (offset {offset}, {more}{size} bytes) runs {more}{missing} bytes past the end \
             of the file ({len} bytes)"
        );
        ModelFileError::Truncated {
            path: self.path.into(),
            detail,
        }
    }

    fn io_err(&self, e: io::Error, size: u64, part: &str) -> ModelFileError {
        match e.kind() {
            // The file shrank after we took its length.
            io::ErrorKind::UnexpectedEof => self.truncated(part, self.pos, size, false),
            _ => ModelFileError::Read {
                path: self.path.into(),
                source: e,
            },
        }
    }

    /// Fails unless `size` more bytes lie between the position and the end of the file.
    fn need(&self, size: u64, part: &str) -> Result<()> {
        if size > self.len - self.pos {
            return Err(self.truncated(part, self.pos, size, false));
        }
        Ok(())
    }

    /// `count * each` bytes, or a corrupt error when that is negative or overflows.
    fn size(&self, count: i64, each: u64, what: &str) -> Result<u64> {
        let bytes = u64::try_from(count).ok().and_then(|c| c.checked_mul(each));
        bytes.ok_or_else(|| self.corrupt(format!("{what} has an impossible size {count}×{each}")))
    }

    fn bytes<const N: usize>(&mut self, part: &str) -> Result<[u8; N]> {
        self.need(N as u64, part)?;
        let mut b = [0; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.io_err(e, N as u64, part))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn i32s<const N: usize>(&mut self, part: &str) -> Result<[i32; N]> {
        self.need(4 * N as u64, part)?;
        let mut v = [0; N];
        for x in &mut v {
            *x = i32::from_le_bytes(self.bytes(part)?);
        }
        Ok(v)
    }

    fn i64(&mut self, part: &str) -> Result<i64> {
        self.bytes(part).map(i64::from_le_bytes)
    }

    fn flag(&mut self, what: &str) -> Result<bool> {
        match self.bytes(what)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [b] => bail!(
                self,
                "{what} at offset {} is {b}, not a boolean 0 or 1",
                self.pos - 1
            ),
        }
    }

    fn skip(&mut self, size: u64, part: &str) -> Result<()> {
        self.need(size, part)?;
        // need() keeps size <= len, and a file length fits in i64.
        let offset = i64::try_from(size).map_err(|_| self.corrupt(format!("{part} is too big")))?;
        self.r
            .seek_relative(offset)
            .map_err(|e| self.io_err(e, size, part))?;
        self.pos += size;
        Ok(())
    }

    /// Reads a NUL-terminated word into `keep` if given (cleared first), else drops it.
    fn word(&mut self, entry: i32, mut keep: Option<&mut Vec<u8>>) -> Result<()> {
        if let Some(buf) = keep.as_deref_mut() {
            buf.clear();
        }
        let start = self.pos;
        loop {
            let chunk = match self.r.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e, 1, &format!("dictionary entry {entry}"))),
            };
            // Never read beyond the length everything is checked against.
            let avail = usize::try_from(self.len - self.pos).unwrap_or(usize::MAX);
            let chunk = &chunk[..chunk.len().min(avail)];
            if chunk.is_empty() {
                // The word so far, its NUL, an i64 count and an i8 type.
                let part = format!("dictionary entry {entry} (a word without its NUL)");
                return Err(self.truncated(&part, start, self.pos - start + 10, true));
            }
            let nul = chunk.iter().position(|&b| b == 0);
            let take = nul.unwrap_or(chunk.len());
            if self.pos - start + take as u64 > MAX_WORD {
                bail!(
                    self,
                    "dictionary entry {entry} at offset {start} has no NUL within 1 MiB"
                );
            }
            if let Some(buf) = keep.as_deref_mut() {
                buf.extend_from_slice(&chunk[..take]);
            }
            let used = take + usize::from(nul.is_some());
            self.r.consume(used);
            self.pos += used as u64;
            if nul.is_some() {
                return Ok(());
            }
        }
    }
}

fn parse<R: Read + Seek>(r: BufReader<R>, len: u64, path: &Path) -> Result<ModelInfo> {
    let mut s = Src {
        r,
        pos: 0,
        len,
        path,
    };
    let magic = "it does not start with fastText's magic number";
    let reason = match len {
        0 => "it is empty",
        1..4 => "it is too short to hold fastText's magic number",
        _ if s.i32s("the magic number")? != [MAGIC] => magic,
        _ => "",
    };
    if !reason.is_empty() {
        return Err(not_fasttext(path, reason));
    }
    let p = path.to_path_buf();
    let version = match s.i32s("the format version")? {
        [version] if version > NEWEST => return Err(ModelFileError::TooNew { path: p, version }),
        [version] if version < OLDEST => return Err(ModelFileError::TooOld { path: p, version }),
        [version] => version,
    };

    // Args::save: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t
    s.need(12 * 4 + 8, "the training arguments")?;
    let a: [i32; 12] = s.i32s("the training arguments")?;
    let t = f64::from_le_bytes(s.bytes("the training arguments")?);
    let loss = match a[6] {
        1 => Loss::HierarchicalSoftmax,
        2 => Loss::NegativeSampling,
        3 => Loss::Softmax,
        4 => Loss::OneVsAll,
        x => bail!(
            s,
            "unknown loss {x} (fastText has 1 hs, 2 ns, 3 softmax, 4 ova)"
        ),
    };
    let model = match a[7] {
        1 => ModelKind::Cbow,
        2 => ModelKind::SkipGram,
        3 => ModelKind::Supervised,
        x => bail!(
            s,
            "unknown model kind {x} (fastText has 1 cbow, 2 sg, 3 sup)"
        ),
    };
    let (dim, bucket) = (a[0], a[8]);
    if dim <= 0 {
        bail!(s, "dim is {dim}; it must be positive");
    }
    if bucket < 0 {
        bail!(s, "bucket is {bucket}; it must not be negative");
    }
    // FastText::loadModel: "old supervised models do not use char ngrams".
    let old_sup = version == 11 && model == ModelKind::Supervised;
    let maxn = if old_sup { 0 } else { a[10] };
    // fastText hashes subwords and word n-grams modulo `bucket`: with none, loading (subwords)
    // or the first prediction (n-grams) divides by zero and kills the process.
    let word_ngrams = a[5];
    if bucket == 0 && (maxn > 0 || word_ngrams > 1) {
        bail!(
            s,
            "bucket is 0 but the model hashes {} into buckets",
            if maxn > 0 {
                "subwords (maxn > 0)"
            } else {
                "word n-grams (wordNgrams > 1)"
            }
        );
    }

    // Dictionary::save
    s.need(3 * 4 + 2 * 8, "the dictionary header")?;
    let [size, nwords, nlabels] = s.i32s("the dictionary header")?;
    let ntokens = s.i64("the dictionary header")?;
    let pruneidx_size = s.i64("the dictionary header")?;
    if size < 0 || nwords < 0 || nlabels < 0 || ntokens < 0 || pruneidx_size < -1 {
        bail!(
            s,
            "the dictionary has a negative size (size {size}, nwords {nwords}, nlabels {nlabels}, ntokens {ntokens}, pruned ngrams {pruneidx_size})"
        );
    }
    if nwords.checked_add(nlabels) != Some(size) {
        bail!(
            s,
            "the dictionary's {nwords} words and {nlabels} labels do not add up to its size {size}"
        );
    }
    // Each entry takes at least 10 bytes (empty word, NUL, count, type): check before reserving.
    if size as u64 * 10 > len - s.pos {
        let part = format!("the dictionary's {size} entries");
        return Err(s.truncated(&part, s.pos, size as u64 * 10, true));
    }
    let mut labels = Vec::with_capacity(nlabels as usize);
    let mut buf = Vec::new();
    for i in 0..size {
        let is_label_slot = i >= nwords;
        s.word(i, is_label_slot.then_some(&mut buf))?;
        let part = format!("the count and type of dictionary entry {i}");
        s.need(9, &part)?;
        let count = s.i64(&part)?;
        match (s.bytes(&part)?, is_label_slot) {
            ([0], false) => {}
            ([1], true) => labels.push((String::from_utf8_lossy(&buf).into_owned(), count)),
            ([kind @ (0 | 1)], _) => {
                let what = if kind == 1 { "label" } else { "word" };
                bail!(
                    s,
                    "dictionary entry {i} is a {what}, but fastText stores its {nwords} words before its {nlabels} labels"
                );
            }
            ([kind], _) => bail!(
                s,
                "dictionary entry {i} has type {kind}; fastText writes only 0 (word) and 1 (label)"
            ),
        }
    }
    if pruneidx_size > 0 {
        let part = format!("the pruned-ngram index of {pruneidx_size} pairs");
        s.need(s.size(pruneidx_size, 8, &part)?, &part)?;
        for _ in 0..pruneidx_size {
            let [ngram, row] = s.i32s(&part)?;
            if ngram < 0 || ngram >= bucket || row < 0 || i64::from(row) >= pruneidx_size {
                bail!(
                    s,
                    "the pruned-ngram index maps ngram {ngram} to row {row}, outside bucket {bucket} or its {pruneidx_size} rows"
                );
            }
        }
    }

    let quantized_input = s.flag("the input-quantization flag")?;
    let pruned = pruneidx_size >= 0;
    if pruned && !quantized_input {
        bail!(
            s,
            "its dictionary is pruned but its input matrix is not quantized, which fastText refuses (its issue #332)"
        );
    }
    let rows = match pruned {
        true => (pruneidx_size, "nwords + the pruned-ngram count"),
        false => (bucket.into(), "nwords + bucket"),
    };
    let rows = (i64::from(nwords) + rows.0, rows.1);
    let input_rows = matrix(&mut s, "input", quantized_input, dim, rows)?;
    // FastText::loadModel reads the output as quantized only when the input is too.
    let quantized_output = s.flag("the output-quantization flag")? && quantized_input;
    let rows = match model {
        ModelKind::Supervised => (nlabels.into(), "nlabels for a supervised model"),
        _ => (nwords.into(), "nwords for an unsupervised model"),
    };
    let output_rows = matrix(&mut s, "output", quantized_output, dim, rows)?;
    if s.pos != len {
        bail!(
            s,
            "{} trailing bytes follow the output matrix, which ends at offset {}",
            len - s.pos,
            s.pos
        );
    }
    let [
        _,
        ws,
        epoch,
        min_count,
        neg,
        word_ngrams,
        _,
        _,
        _,
        minn,
        _,
        lr_update_rate,
    ] = a;
    #[rustfmt::skip]
    let info = ModelInfo {
        version, dim, ws, epoch, min_count, neg, word_ngrams, loss, model, bucket, minn, maxn,
        lr_update_rate, t, nwords, ntokens, labels, quantized_input, quantized_output, input_rows,
        output_rows,
    };
    Ok(info)
}

/// Reads a dense or quantized matrix, checks its shape is `rows.0`×`dim` (`rows.1` says why),
/// skips its data and returns its row count.
fn matrix<R: Read + Seek>(
    s: &mut Src<'_, R>,
    which: &str,
    quantized: bool,
    dim: i32,
    (rows, why): (i64, &str),
) -> Result<i64> {
    let header = format!("the {which} matrix header");
    s.need(if quantized { 1 + 8 + 8 + 4 } else { 8 + 8 }, &header)?;
    let qnorm = quantized && s.flag(&format!("the {which} matrix's qnorm flag"))?;
    let (m, n) = (s.i64(&header)?, s.i64(&header)?);
    if n != i64::from(dim) {
        bail!(s, "the {which} matrix has {n} columns but dim is {dim}");
    }
    if m != rows {
        bail!(
            s,
            "the {which} matrix has {m} rows; it must have {why} = {rows}"
        );
    }
    if !quantized {
        let part = format!("the {which} matrix of {m}×{n} floats");
        s.skip(s.size(m, 4 * n as u64, &part)?, &part)?;
        return Ok(m);
    }
    let [codesize] = s.i32s(&header)?;
    let part = format!("the {codesize} codes of the quantized {which} matrix");
    s.skip(s.size(codesize.into(), 1, &part)?, &part)?;
    let nsubq = quantizer(s, &format!("the {which} matrix's product quantizer"), n)?;
    if m.checked_mul(nsubq) != Some(codesize.into()) {
        bail!(
            s,
            "the quantized {which} matrix has {codesize} codes, not rows × sub-quantizers = {m} × {nsubq}"
        );
    }
    if qnorm {
        let part = format!("the {m} norm codes of the quantized {which} matrix");
        s.skip(m as u64, &part)?;
        quantizer(s, &format!("the {which} matrix's norm quantizer"), 1)?;
    }
    Ok(m)
}

/// Reads a `ProductQuantizer` for vectors of `dim` floats, skips its centroids and returns its
/// number of sub-quantizers.
fn quantizer<R: Read + Seek>(s: &mut Src<'_, R>, what: &str, dim: i64) -> Result<i64> {
    let [qdim, nsubq, dsub, lastdsub] = s.i32s(&format!("{what}'s header"))?.map(i64::from);
    // ProductQuantizer(dim, dsub): nsubq = ceil(dim / dsub), lastdsub = dim % dsub or dsub.
    let rem = dim % dsub.max(1);
    let tail = if rem == 0 { dsub } else { rem };
    if qdim != dim || dsub <= 0 || nsubq != (dim + dsub - 1) / dsub || lastdsub != tail {
        bail!(
            s,
            "{what} (dim {qdim}, nsubq {nsubq}, dsub {dsub}, lastdsub {lastdsub}) does not fit vectors of {dim} floats"
        );
    }
    let part = format!("{what}'s {}×256 centroid floats", qdim);
    s.skip(s.size(qdim, KSUB * 4, &part)?, &part)?;
    Ok(nsubq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    // Offsets in the synthetic files: args from 8 (bucket is the 9th i32), dictionary header at
    // 64, its entries from 92.
    const DIM_AT: usize = 8;
    const BUCKET_AT: usize = 8 + 8 * 4;
    const SIZE_AT: usize = 64;
    const NWORDS_AT: usize = 68;
    const NLABELS_AT: usize = 72;

    fn parse_bytes(b: &[u8]) -> Result<ModelInfo> {
        let len = b.len() as u64;
        parse(BufReader::new(Cursor::new(b)), len, Path::new("mem.bin"))
    }

    fn err_text(b: &[u8]) -> String {
        parse_bytes(b).expect_err("must be rejected").to_string()
    }

    fn with_i32(b: &[u8], at: usize, v: i32) -> Vec<u8> {
        let mut b = b.to_vec();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b
    }

    /// Every cut of `b` at `cuts` is rejected as truncated (or, under 4 bytes, not a model).
    fn assert_cuts_rejected(b: &[u8], cuts: impl Iterator<Item = usize>) {
        for cut in cuts {
            let msg = err_text(&b[..cut]);
            let want = if cut < 4 {
                "not a fastText model"
            } else {
                "is truncated: "
            };
            assert!(msg.contains(want), "cut at {cut}: {msg}");
        }
    }

    /// All of `info` but the label list, on one line.
    fn summary(i: &ModelInfo) -> String {
        format!(
            "v{} dim {} ws {} epoch {} minCount {} neg {} wordNgrams {} {} {} bucket {} minn {} \
             maxn {} lrUpdateRate {} t {} nwords {} ntokens {} labels {} quant {}/{} rows {}/{}",
            i.version,
            i.dim,
            i.ws,
            i.epoch,
            i.min_count,
            i.neg,
            i.word_ngrams,
            i.loss.name(),
            i.model.name(),
            i.bucket,
            i.minn,
            i.maxn,
            i.lr_update_rate,
            i.t,
            i.nwords,
            i.ntokens,
            i.labels.len(),
            i.quantized_input,
            i.quantized_output,
            i.input_rows,
            i.output_rows
        )
    }

    /// A dense model laid out as `FastText::saveModel` writes one: loss hs, dim 3, bucket 2,
    /// 4 words and, for a supervised `model` (3), 2 labels.
    fn synthetic(model: i32) -> Vec<u8> {
        let (dim, bucket) = (3, 2);
        let words: [(&str, i64); 4] = [("</s>", 9), ("good", 5), ("bad", 3), ("text", 2)];
        let labels: &[_] = if model == 3 {
            &[("__label__hq", 6), ("__label__lq", 3)]
        } else {
            &[]
        };
        let (nw, nl) = (words.len() as i32, labels.len() as i32);
        let mut b = Vec::new();
        // magic, version; dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUR
        let header = [MAGIC, 12, dim, 5, 5, 1, 5, 2, 1, model, bucket, 0, 0, 100];
        header.iter().for_each(|x| b.extend(x.to_le_bytes()));
        b.extend(1e-4f64.to_le_bytes());
        [nw + nl, nw, nl]
            .iter()
            .for_each(|x| b.extend(x.to_le_bytes()));
        b.extend(19i64.to_le_bytes()); // ntokens
        b.extend((-1i64).to_le_bytes()); // pruneidx_size: not pruned
        let entries = words
            .iter()
            .map(|e| (e, 0))
            .chain(labels.iter().map(|e| (e, 1)));
        for ((word, count), kind) in entries {
            b.extend(word.as_bytes().iter().chain(&[0]));
            b.extend(count.to_le_bytes().iter().chain(&[kind]));
        }
        for (quantized, rows) in [(0, nw + bucket), (0, if model == 3 { nl } else { nw })] {
            b.push(quantized);
            b.extend(
                i64::from(rows)
                    .to_le_bytes()
                    .iter()
                    .chain(&i64::from(dim).to_le_bytes()),
            );
            (0..rows * dim).for_each(|i| b.extend((i as f32 / 64.0).to_le_bytes()));
        }
        b
    }

    #[test]
    fn lid176() {
        // The bundled copy (filters/models/), so this runs wherever the repository is.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("filters/models/lid.176.ftz");
        let info = inspect(&path).unwrap();
        assert_eq!(
            summary(&info),
            "v12 dim 16 ws 5 epoch 5 minCount 1000 neg 5 wordNgrams 1 hs supervised bucket 2000000 \
             minn 2 maxn 4 lrUpdateRate 100 t 0.0001 nwords 7235 ntokens 563512702 labels 176 \
             quant true/false rows 50000/176"
        );
        assert_eq!(info.labels[0], ("__label__en".into(), 5_469_676));
        let names = info.label_names();
        assert!(names.contains(&"en".into()) && names.iter().all(|l| !l.contains("__label__")));

        let b = std::fs::read(&path).unwrap();
        let spread = (1..200).map(|k| b.len() * k / 200);
        assert_cuts_rejected(&b, (0..=64).chain(spread).chain([b.len() - 1]));
        let dir = tempfile::tempdir().unwrap();
        for cut in [0, 3, 70, 200_000, b.len() - 1] {
            let p = dir.path().join(format!("cut{cut}.ftz"));
            std::fs::write(&p, &b[..cut]).unwrap();
            let msg = inspect(&p).unwrap_err().to_string();
            assert!(msg.contains(&format!("`{}` is ", p.display())), "{msg}");
        }
        for at in 0..512 {
            let mut c = b.clone();
            c[at] ^= 0xA5;
            let _ = parse_bytes(&c); // never panics
        }
    }

    /// Fuzz (issue 16): mutated models (supervised, skip-gram, cbow) and random bytes are
    /// accepted or refused with a message naming the file; never a panic, and what the check
    /// holds stays small whatever the header claims.
    #[test]
    fn fuzz_model_files() {
        let seeds = vec![synthetic(1), synthetic(2), synthetic(3)];
        crate::fuzz::fuzz(
            "fasttext model",
            3000,
            crate::fuzz::inputs(seeds),
            |bytes| {
                let (result, peak) = crate::fuzz::peak_bytes(|| parse_bytes(&bytes));
                if let Err(e) = result
                    && !e.to_string().contains("mem.bin")
                {
                    return Err(format!("an error that does not name the file: {e}"));
                }
                crate::fuzz::within(
                    "fasttext model",
                    peak,
                    16 * bytes.len() + (1 << 20),
                    bytes.len(),
                )
            },
        );
    }

    /// Issue 16 (fastText divides by `bucket` when hashing n-grams and subwords): a model with
    /// no buckets but n-grams is refused before fastText loads it (it killed the process).
    #[test]
    fn a_model_with_ngrams_and_no_buckets_is_refused() {
        let b = with_i32(&synthetic(3), 40, 0);
        assert!(
            err_text(&b).contains("bucket is 0 but the model hashes word n-grams"),
            "{}",
            err_text(&b)
        );
    }

    #[test]
    fn synthetic_models() {
        let info = parse_bytes(&synthetic(3)).unwrap();
        assert_eq!(
            summary(&info),
            "v12 dim 3 ws 5 epoch 5 minCount 1 neg 5 wordNgrams 2 hs supervised bucket 2 minn 0 \
             maxn 0 lrUpdateRate 100 t 0.0001 nwords 4 ntokens 19 labels 2 quant false/false \
             rows 6/2"
        );
        assert_eq!(
            info.labels,
            [("__label__hq".into(), 6), ("__label__lq".into(), 3)]
        );
        assert_eq!(info.label_names(), ["hq", "lq"]);
        let info = parse_bytes(&synthetic(2)).unwrap(); // inspect leaves the kind to the caller
        assert_eq!(
            (info.model, info.labels.len(), info.output_rows),
            (ModelKind::SkipGram, 0, 4)
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.bin");
        std::fs::write(&p, synthetic(3)).unwrap();
        assert_eq!(inspect(&p).unwrap(), parse_bytes(&synthetic(3)).unwrap());

        let b = synthetic(3);
        assert_cuts_rejected(&b, 0..b.len());
        for (at, flip) in (0..b.len()).flat_map(|at| [(at, 0x01), (at, 0x80), (at, 0xFF)]) {
            let mut c = b.clone();
            c[at] ^= flip;
            let _ = parse_bytes(&c); // never panics
        }
    }

    #[test]
    fn corrupt_models_are_named() {
        let good = synthetic(3);
        let err = |at, v| err_text(&with_i32(&good, at, v));
        let msg =
            "`mem.bin` is not a fastText model: it does not start with fastText's magic number";
        assert_eq!(err(0, MAGIC ^ 1), msg);
        let msg = "`mem.bin` is a fastText model of version 13, newer than the 12 this build reads";
        assert_eq!(err(4, 13), msg);
        assert!(err(4, 10).contains("version 10, older than 11"));
        assert!(err(DIM_AT, 0).contains("is corrupt: dim is 0"));
        assert!(err(DIM_AT, 4).contains("input matrix has 3 columns but dim is 4"));
        assert!(
            err(BUCKET_AT, 3).contains("input matrix has 6 rows; it must have nwords + bucket = 7")
        );
        assert!(
            err(SIZE_AT, -1)
                .starts_with("`mem.bin` is corrupt: the dictionary has a negative size")
        );
        assert!(err(NWORDS_AT, 5).contains("5 words and 2 labels do not add up to its size 6"));
        let b = with_i32(&with_i32(&good, NWORDS_AT, 3), NLABELS_AT, 3);
        assert!(err_text(&b).contains("entry 3 is a word, but fastText stores its 3 words before"));
        let mut b = good.clone();
        b[92 + 5 + 8] = 7; // entry 0's type, after the dictionary header, "</s>\0" and its count
        assert!(err_text(&b).contains("dictionary entry 0 has type 7"));
        b = good.clone();
        let qout_at = b.len() - 1 - 16 - 2 * 3 * 4; // before the 2×3 output matrix
        b[qout_at] = 2;
        assert!(
            err_text(&b)
                .ends_with("the output-quantization flag at offset 278 is 2, not a boolean 0 or 1")
        );
        b[qout_at] = 1; // fastText reads a quantized output only after a quantized input
        assert!(!parse_bytes(&b).unwrap().quantized_output);
        b = [good.as_slice(), b"junk"].concat();
        assert!(err_text(&b).starts_with("`mem.bin` is corrupt: 4 trailing bytes"));
        assert!(err_text(b"not a model.").ends_with("does not start with fastText's magic number"));
        assert!(err_text(b"").ends_with("it is empty"));

        let dir = tempfile::tempdir().unwrap();
        let msg = inspect(&dir.path().join("missing.bin"))
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("cannot open fastText model `") && msg.ends_with("(os error 2)"));
        assert!(
            inspect(dir.path())
                .unwrap_err()
                .to_string()
                .ends_with("it is a directory")
        );
    }

    /// Tiny models trained, quantized and saved by the vendored C++ fastText: `inspect` agrees
    /// with its writer, dense and quantized (pruned dictionary, qnorm, quantized output).
    #[test]
    fn models_written_by_fasttext() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("train.txt");
        let train = |text: String| {
            std::fs::write(&data, text).unwrap();
            let mut args = fasttext::Args::new();
            args.set_input(data.to_str().unwrap()).unwrap();
            args.set_model(fasttext::ModelName::SUP);
            args.set_loss(fasttext::LossName::SOFTMAX);
            args.set_dim(8);
            args.set_epoch(2);
            args.set_word_ngrams(2);
            args.set_bucket(1000);
            args.set_min_count(1);
            args.set_thread(1);
            args.set_verbose(0);
            let mut ft = fasttext::FastText::new();
            ft.train(&args).unwrap();
            ft
        };
        let line = |i: i32| match i % 3 {
            0 => format!("__label__b bad text number{i}\n"),
            _ => format!("__label__a fine text number{i}\n"),
        };
        let mut ft = train((0..40).map(line).collect());
        let bin = dir.path().join("m.bin");
        ft.save_model(bin.to_str().unwrap()).unwrap();
        let info = inspect(&bin).unwrap();
        assert_eq!(
            summary(&info),
            "v12 dim 8 ws 5 epoch 2 minCount 1 neg 5 wordNgrams 2 softmax supervised bucket 1000 \
             minn 3 maxn 6 lrUpdateRate 100 t 0.0001 nwords 44 ntokens 200 labels 2 \
             quant false/false rows 1044/2"
        );
        assert_eq!(
            info.labels,
            [("__label__a".into(), 26), ("__label__b".into(), 14)]
        );
        assert_eq!(ft.get_labels().unwrap().0, ["__label__a", "__label__b"]);

        // 300 labels, so that the output matrix has enough rows (256) to be quantized too.
        let mut ft = train(
            (0..300)
                .map(|i| format!("__label__l{i} w{i} common\n"))
                .collect(),
        );
        let mut q = fasttext::Args::new();
        q.set_qnorm(true);
        q.set_qout(true);
        q.set_cutoff(400);
        q.set_verbose(0);
        ft.quantize(&q).unwrap();
        let ftz = dir.path().join("m.ftz");
        ft.save_model(ftz.to_str().unwrap()).unwrap();
        let info = inspect(&ftz).unwrap();
        assert!(info.quantized_input && info.quantized_output);
        assert_eq!(
            (info.input_rows, info.output_rows, info.labels.len()),
            (400, 300, 300)
        );
        let mut back = fasttext::FastText::new();
        back.load_model(ftz.to_str().unwrap()).unwrap();
        assert_eq!(back.get_labels().unwrap().0.len(), 300);
        let b = std::fs::read(&ftz).unwrap();
        assert_cuts_rejected(&b, (0..b.len()).step_by(37));
    }
}
