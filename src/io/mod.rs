//! Readers and writers of document files, shard listing and atomic commits.

pub mod atomic;
pub mod batch;
pub mod compress;
pub mod documents;
pub mod jsonl;
pub mod normalize;
pub mod parquet;
pub mod plain;
pub mod shards;
pub mod stats;
pub mod warc;

/// The column every stage reads documents from.
pub const TEXT_COLUMN: &str = "text";
/// The document id column; derived from file and row when the input has none.
pub const ID_COLUMN: &str = "id";
/// Rows per batch read from a shard unless the pipeline says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// The largest document (a line of JSON Lines, a text document) a reader takes. Arrow strings
/// have 32-bit offsets (2 GiB per column of a batch); a larger one is rejected with reason
/// `document_too_large` (its first bytes kept in the rejects) rather than held in memory whole.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 30;
/// Bytes of an oversized document kept in its rejects row.
pub const OVERSIZED_EXCERPT_BYTES: usize = 1024;
/// Why such a document is rejected.
pub const DOCUMENT_TOO_LARGE: &str = "document_too_large";

/// `bytes` as text (invalid UTF-8 replaced, which may triple its length), cut to at most `max`
/// bytes at a character boundary: what a rejects row keeps of a document that is not text.
pub fn lossy_text(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Reads up to and including the next `\n` into `buf`, at most `max` bytes of it: a longer line
/// is read to its end but only its first bytes kept. Returns the line's full length (0 at the
/// end) and whether it was cut.
pub fn read_line_capped(
    input: &mut dyn std::io::BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut total = 0usize;
    let mut cut = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((total, cut));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !cut && buf.len() + take > max {
            cut = true;
            buf.truncate(OVERSIZED_EXCERPT_BYTES);
            buf.shrink_to_fit();
        }
        if !cut {
            buf.extend_from_slice(&chunk[..take]);
        } else if buf.len() < OVERSIZED_EXCERPT_BYTES {
            let keep = (OVERSIZED_EXCERPT_BYTES - buf.len()).min(take);
            buf.extend_from_slice(&chunk[..keep]);
        }
        input.consume(take);
        total += take;
        if done {
            return Ok((total, cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_lines_keep_an_excerpt_and_read_to_the_end() {
        let text = format!("short\n{}\nnext", "x".repeat(5000));
        let mut input = std::io::BufReader::with_capacity(64, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 100).unwrap(),
            (6, false)
        );
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 100).unwrap(),
            (5001, true)
        );
        assert_eq!(buf.len(), OVERSIZED_EXCERPT_BYTES.min(5001));
        buf.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 100).unwrap(),
            (4, false)
        );
        assert_eq!(buf, b"next");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut input, &mut buf, 100).unwrap(),
            (0, false)
        );
    }
}
