//! What a document record holds: the HTTP response inside a `response` record (status line and
//! headers, then the payload, de-chunked and decompressed as `warcio` does), the media type
//! (WARC-Identified-Payload-Type, else the declared Content-Type, else a sniff of the bytes), and
//! the payload decoded to UTF-8.

use std::io::Read;

use encoding_rs::Encoding;

/// Why a document record is rejected.
pub const BAD_HTTP_HEADER: &str = "bad_http_header";
pub const BAD_CONTENT_ENCODING: &str = "bad_content_encoding";
pub const NOT_HTML: &str = "not_html";
pub const UNDECODABLE: &str = "undecodable";

/// The HTTP part of a `response` record.
#[derive(Debug, Default)]
pub struct Http {
    pub content_type: Option<String>,
    pub transfer_encoding: Option<String>,
    pub content_encoding: Option<String>,
    /// Length of the status line and headers, with the blank line after them.
    pub header_len: usize,
}

/// Parses the status line and headers at the start of a `response` block.
pub fn parse_http(block: &[u8]) -> Result<Http, String> {
    let mut capacity = 64;
    loop {
        let mut headers = vec![httparse::EMPTY_HEADER; capacity];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(block) {
            Ok(httparse::Status::Complete(header_len)) => {
                let get = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
                };
                return Ok(Http {
                    content_type: get("content-type"),
                    transfer_encoding: get("transfer-encoding"),
                    content_encoding: get("content-encoding"),
                    header_len,
                });
            }
            Ok(httparse::Status::Partial) => {
                return Err("the HTTP header block has no end".into());
            }
            Err(httparse::Error::TooManyHeaders) if capacity < 4096 => capacity *= 4,
            Err(e) => return Err(format!("the HTTP header cannot be parsed: {e}")),
        }
    }
}

/// Undoes `Transfer-Encoding: chunked`. Like `warcio`, a body that does not parse as chunks is
/// taken as it is (servers and crawlers often leave the header on an unchunked body).
pub fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return body.to_vec();
        };
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return body.to_vec();
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        if rest.len() < size {
            // A cut last chunk: keep what is there.
            out.extend_from_slice(rest);
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
        rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
    }
}

/// Undoes `Content-Encoding` (gzip, deflate, br), reading at most `max` bytes of output.
/// `Ok(None)` when the output is larger than `max`.
pub fn decompress(body: Vec<u8>, encoding: &str, max: usize) -> Result<Option<Vec<u8>>, String> {
    let encoding = encoding.trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" | "none" => return Ok(Some(body)),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        "deflate" => {
            // "deflate" is zlib-wrapped by the standard and raw deflate in practice.
            if body.len() >= 2 && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0 {
                Box::new(flate2::read::ZlibDecoder::new(&body[..]))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(&body[..]))
            }
        }
        "br" => Box::new(brotli::Decompressor::new(&body[..], 1 << 16)),
        other => return Err(format!("unsupported Content-Encoding `{other}`")),
    };
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot undo Content-Encoding `{encoding}`: {e}"))?;
    Ok((out.len() <= max).then_some(out))
}

/// The media type of a `Content-Type` value, lowercased, without parameters.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The `charset` parameter of a `Content-Type` value.
pub fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_string())
    })
}

pub fn is_html_type(essence: &str) -> bool {
    matches!(essence, "text/html" | "application/xhtml+xml")
}

/// Whether the bytes look like HTML: the first kilobyte (after a BOM and whitespace) starts with
/// a doctype, `<html`, `<head`, `<body` or a comment and holds an HTML element.
pub fn sniff_html(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    let head = head
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(head)
        .to_ascii_lowercase();
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let trimmed = &head[start..];
    let has = |needle: &[u8]| trimmed.windows(needle.len()).any(|w| w == needle);
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<!--",
    ]
    .iter()
    .any(|p| trimmed.starts_with(p))
        && (has(b"<html") || has(b"<head") || has(b"<body") || has(b"<!doctype html"))
}

/// A `<meta charset=…>` or `<meta http-equiv="content-type" content="…; charset=…">` in the
/// first 1,024 bytes (the span the HTML standard's prescan looks at).
pub fn meta_charset(bytes: &[u8]) -> Option<String> {
    static META: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
    let re = META.get_or_init(|| {
        regex::bytes::Regex::new(r#"(?i-u)<meta\b[^>]*?charset\s*=\s*["']?\s*([a-z0-9_.:\-]+)"#)
            .expect("valid regex")
    });
    let head = &bytes[..bytes.len().min(1024)];
    re.captures(head)
        .map(|c| String::from_utf8_lossy(&c[1]).into_owned())
}

/// How the text was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Bom,
    Utf8,
    Declared,
    Detected,
}

/// Decodes a payload to UTF-8: a byte-order mark wins; then valid UTF-8 is taken as UTF-8 (as
/// datatrove's reader does, and because pages that declare a legacy charset but are valid UTF-8
/// are far more often mislabelled than not); then the declared charset (HTTP header, else
/// `<meta>`) if the bytes decode in it without error; then `chardetng`'s guess. `Err` when
/// nothing decodes the bytes without error.
pub fn decode(bytes: &[u8], http_charset: Option<&str>) -> Result<(String, Decoded), String> {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes)
        && let Some(text) =
            encoding.decode_without_bom_handling_and_without_replacement(&bytes[bom..])
    {
        return Ok((text.into_owned(), Decoded::Bom));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok((text.to_string(), Decoded::Utf8));
    }
    let meta = meta_charset(bytes);
    for label in [http_charset.map(str::to_string), meta]
        .into_iter()
        .flatten()
    {
        if let Some(encoding) = Encoding::for_label(label.as_bytes())
            && let Some(text) = encoding.decode_without_bom_handling_and_without_replacement(bytes)
        {
            return Ok((text.into_owned(), Decoded::Declared));
        }
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(bytes, true);
    let guess = detector.guess(None, false);
    match guess.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => Ok((text.into_owned(), Decoded::Detected)),
        None => Err(format!(
            "the bytes are not UTF-8, not the declared charset ({}), and not {} as detected",
            http_charset.unwrap_or("none"),
            guess.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_headers_and_finds_the_payload() {
        let block =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=ISO-8859-1\r\nX: y\r\n\r\n<html>";
        let http = parse_http(block).unwrap();
        assert_eq!(&block[http.header_len..], b"<html>");
        let ct = http.content_type.unwrap();
        assert_eq!(essence(&ct), "text/html");
        assert_eq!(charset_param(&ct).as_deref(), Some("ISO-8859-1"));
        assert!(parse_http(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n").is_err());
        assert!(parse_http(b"\x00\x01garbage\r\n\r\n").is_err());
        // Many headers are taken (the header array grows).
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..300 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\nbody");
        let http = parse_http(&many).unwrap();
        assert_eq!(&many[http.header_len..], b"body");
    }

    #[test]
    fn dechunks_and_keeps_unchunked_bodies() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"),
            b"Wikipedia"
        );
        assert_eq!(dechunk(b"<html>not chunked"), b"<html>not chunked");
        assert_eq!(dechunk(b"4\r\nWi"), b"Wi");
    }

    #[test]
    fn undoes_content_encodings_within_the_cap() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"<html>hello</html>").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(gz.clone(), "gzip", 100).unwrap().unwrap(),
            b"<html>hello</html>"
        );
        assert_eq!(decompress(gz, "gzip", 5).unwrap(), None);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(b"zlib").unwrap();
        assert_eq!(
            decompress(z.finish().unwrap(), "deflate", 100)
                .unwrap()
                .unwrap(),
            b"zlib"
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        d.write_all(b"raw deflate").unwrap();
        assert_eq!(
            decompress(d.finish().unwrap(), "deflate", 100)
                .unwrap()
                .unwrap(),
            b"raw deflate"
        );
        assert!(decompress(b"not gzip".to_vec(), "gzip", 100).is_err());
        assert!(decompress(b"x".to_vec(), "compress", 100).is_err());
    }

    #[test]
    fn sniffs_html_and_meta_charsets() {
        assert!(sniff_html(b"\xef\xbb\xbf  <!DOCTYPE html><html>"));
        assert!(sniff_html(b"<html><body>x"));
        assert!(!sniff_html(b"%PDF-1.4 <html>"));
        assert!(!sniff_html(b"{\"json\": \"<html>\"}"));
        assert_eq!(
            meta_charset(b"<head><meta charset=\"windows-1251\">").as_deref(),
            Some("windows-1251")
        );
        assert_eq!(
            meta_charset(
                b"<META HTTP-EQUIV=\"Content-Type\" CONTENT=\"text/html; charset=Shift_JIS\">"
            )
            .as_deref(),
            Some("Shift_JIS")
        );
        assert_eq!(meta_charset(b"<p>charset=utf-8</p>"), None);
    }

    #[test]
    fn decodes_by_bom_utf8_declared_charset_then_detection() {
        // Windows-1252 bytes declared as UTF-8 (a wrong charset): detected.
        let (text, how) =
            decode(b"caf\xe9 cr\xe8me br\xfbl\xe9e et cr\xeape", Some("utf-8")).unwrap();
        assert_eq!(text, "café crème brûlée et crêpe");
        assert_eq!(how, Decoded::Detected);
        // Declared in <meta>.
        let koi8 = b"<meta charset=koi8-r>\xf0\xd2\xc9\xd7\xc5\xd4";
        let (text, how) = decode(koi8, None).unwrap();
        assert!(text.ends_with("Привет"), "{text}");
        assert_eq!(how, Decoded::Declared);
        // Valid UTF-8 stays UTF-8 even when the header says otherwise.
        let (text, how) = decode("naïve".as_bytes(), Some("iso-8859-1")).unwrap();
        assert_eq!((text.as_str(), how), ("naïve", Decoded::Utf8));
        // A BOM wins and is dropped.
        let (text, how) = decode(b"\xff\xfeh\x00i\x00", Some("utf-8")).unwrap();
        assert_eq!((text.as_str(), how), ("hi", Decoded::Bom));
    }
}
