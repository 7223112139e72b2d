use std::io::Write;
use std::path::PathBuf;

use arrow::array::{Array, AsArray};

use super::*;

/// One WARC record's bytes: version line, fields, the block, two CRLFs.
fn record(kind: &str, id: &str, extra: &[(&str, &str)], block: &[u8]) -> Vec<u8> {
    let mut out = format!("WARC/1.1\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{id}>\r\n");
    out.push_str("WARC-Date: 2026-01-05T03:00:00Z\r\n");
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", block.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(block);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes
}

fn http(content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{extra}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

fn response(id: &str, url: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    record(
        "response",
        id,
        &[
            ("WARC-Target-URI", url),
            ("Content-Type", "application/http; msgtype=response"),
        ],
        &http(content_type, "", body),
    )
}

/// The records of a small crawl: every record type, three documents and one non-HTML response.
fn crawl() -> Vec<Vec<u8>> {
    vec![
        record(
            "warcinfo",
            "0",
            &[("Content-Type", "application/warc-fields")],
            b"software: test\r\n",
        ),
        record(
            "request",
            "1",
            &[("WARC-Target-URI", "https://a.example/")],
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ),
        response(
            "2",
            "https://a.example/",
            "text/html; charset=utf-8",
            "<html><body>Grüße</body></html>".as_bytes(),
        ),
        record(
            "metadata",
            "3",
            &[("WARC-Refers-To", "<urn:uuid:2>")],
            b"fetchTimeMs: 12\r\n",
        ),
        response(
            "4",
            "https://b.example/x.pdf",
            "application/pdf",
            b"%PDF-1.4 binary",
        ),
        record(
            "resource",
            "5",
            &[
                ("WARC-Target-URI", "<file:///page.html>"),
                ("Content-Type", "text/html"),
            ],
            b"<!doctype html><html>resource</html>",
        ),
        record(
            "conversion",
            "6",
            &[
                ("WARC-Target-URI", "https://c.example/"),
                ("Content-Type", "text/plain"),
            ],
            b"plain extracted text",
        ),
    ]
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> Shard {
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    Shard {
        path,
        name: name.to_string(),
    }
}

/// What a reader gives: kept (id, url, text, content type) and rejected (id, reason, text).
#[derive(Debug, Default, PartialEq)]
struct Read {
    kept: Vec<(String, Option<String>, String, Option<String>)>,
    rejected: Vec<(String, String, String)>,
}

fn read_shard(shard: &Shard, max_body: usize) -> Read {
    let opts = ReadOptions {
        dump: None,
        max_body_bytes: max_body,
    };
    let mut reader = open(shard, &opts, 2).unwrap();
    let mut out = Read::default();
    let s = |b: &RecordBatch, c: &str, i: usize| -> Option<String> {
        let col = b.column_by_name(c).unwrap().as_string::<i32>();
        col.is_valid(i).then(|| col.value(i).to_string())
    };
    while let Some(batch) = reader.next_batch().unwrap() {
        let k = &batch.kept;
        for i in 0..k.num_rows() {
            out.kept.push((
                s(k, "id", i).unwrap(),
                s(k, "url", i),
                s(k, "text", i).unwrap(),
                s(k, "content_type", i),
            ));
        }
        if let Some(r) = batch.rejected {
            for i in 0..r.num_rows() {
                out.rejected.push((
                    s(&r.rows, "id", i).unwrap(),
                    r.reasons.value(i).to_string(),
                    s(&r.rows, "text", i).unwrap(),
                ));
            }
        }
    }
    out
}

fn expected_crawl() -> Read {
    let kept = |id: &str, url: &str, text: &str, ct: &str| {
        (
            format!("<urn:uuid:{id}>"),
            Some(url.to_string()),
            text.to_string(),
            Some(ct.to_string()),
        )
    };
    Read {
        kept: vec![
            kept(
                "2",
                "https://a.example/",
                "<html><body>Grüße</body></html>",
                "text/html",
            ),
            kept(
                "5",
                "file:///page.html",
                "<!doctype html><html>resource</html>",
                "text/html",
            ),
            kept(
                "6",
                "https://c.example/",
                "plain extracted text",
                "text/plain",
            ),
        ],
        rejected: vec![(
            "<urn:uuid:4>".into(),
            "not_html".into(),
            "%PDF-1.4 binary".into(),
        )],
    }
}

#[test]
fn reads_every_layout_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let records = crawl();
    let plain: Vec<u8> = records.concat();
    let per_record: Vec<u8> = records.iter().flat_map(|r| gzip(r)).collect();
    let zstd_frames: Vec<u8> = records
        .iter()
        .flat_map(|r| zstd::encode_all(&r[..], 3).unwrap())
        .collect();
    // The IIPC layout: a skippable frame holding a dictionary, frames compressed with it.
    let dictionary = zstd::dict::from_samples(&vec![plain.clone(); 20], 4096).unwrap_or_default();
    let mut with_dict = Vec::new();
    with_dict.extend_from_slice(&0x184D_2A5Du32.to_le_bytes());
    with_dict.extend_from_slice(&(dictionary.len() as u32).to_le_bytes());
    with_dict.extend_from_slice(&dictionary);
    for r in &records {
        let mut enc =
            zstd::stream::write::Encoder::with_dictionary(Vec::new(), 3, &dictionary).unwrap();
        enc.write_all(r).unwrap();
        with_dict.extend_from_slice(&enc.finish().unwrap());
    }
    for (name, bytes) in [
        ("a.warc", plain.clone()),
        ("b.warc.gz", per_record),
        ("c.warc.gz", gzip(&plain)),
        ("d.warc.zst", zstd_frames),
        ("e.warc.zst", with_dict),
    ] {
        let shard = write(&dir, name, &bytes);
        assert_eq!(read_shard(&shard, 1 << 20), expected_crawl(), "{name}");
    }
}

#[test]
fn a_corrupt_gzip_member_loses_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = crawl();
    let mut members: Vec<Vec<u8>> = records.iter().map(|r| gzip(r)).collect();
    // Damage the deflate data of the first document's member (not its header).
    let m = &mut members[2];
    let mid = m.len() / 2;
    for b in &mut m[mid - 4..mid + 4] {
        *b ^= 0x5a;
    }
    let shard = write(&dir, "x.warc.gz", &members.concat());
    let read = read_shard(&shard, 1 << 20);
    let mut expected = expected_crawl();
    expected.kept.remove(0);
    assert_eq!(read.kept, expected.kept);
    assert_eq!(read.rejected.len(), 2, "{:?}", read.rejected);
    assert_eq!(read.rejected[0].1, "corrupt_gzip_member");
    assert_eq!(read.rejected[1], expected.rejected[0]);

    // Bytes that are not gzip at all, named .gz: one rejection, no panic, no rows lost silently.
    let shard = write(&dir, "y.warc.gz", b"this is not gzip");
    let read = read_shard(&shard, 1 << 20);
    assert!(read.kept.is_empty());
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].1, "corrupt_gzip_member");
}

#[test]
fn a_file_cut_mid_record_keeps_the_records_before_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let records = crawl();
    let plain = records[..3].concat();
    let cut = plain.len() - 20;
    let shard = write(&dir, "cut.warc", &plain[..cut]);
    let read = read_shard(&shard, 1 << 20);
    assert!(read.kept.is_empty());
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].0, "<urn:uuid:2>");
    assert_eq!(read.rejected[0].1, "truncated_record");

    // Cut inside a gzip member: the members before it are whole.
    let per_record: Vec<u8> = records[..5].iter().flat_map(|r| gzip(r)).collect();
    let cut = per_record.len() - 10;
    let shard = write(&dir, "cut.warc.gz", &per_record[..cut]);
    let read = read_shard(&shard, 1 << 20);
    assert_eq!(read.kept, expected_crawl().kept[..1]);
    assert_eq!(read.rejected.len(), 1, "{:?}", read.rejected);
    assert!(
        ["truncated_record", "corrupt_gzip_member"].contains(&read.rejected[0].1.as_str()),
        "{:?}",
        read.rejected
    );

    // Cut inside a header.
    let shard = write(&dir, "cut2.warc", &records[2][..30]);
    let read = read_shard(&shard, 1 << 20);
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].1, "truncated_record");
}

#[test]
fn rejects_oversized_bodies_garbage_and_bad_headers_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![b'a'; 5000];
    let mut bytes = response("big", "https://big.example/", "text/html", &big);
    bytes.extend_from_slice(b"garbage line\r\nmore garbage\r\n");
    bytes.extend_from_slice(&response(
        "ok",
        "https://ok.example/",
        "text/html",
        b"<p>ok</p>",
    ));
    bytes.extend_from_slice(b"WARC/1.1\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:nolen>\r\n\r\n<html>lost</html>\r\n\r\n");
    bytes.extend_from_slice(&response(
        "after",
        "https://after.example/",
        "text/html",
        b"<p>after</p>",
    ));
    let shard = write(&dir, "mixed.warc", &bytes);
    let read = read_shard(&shard, 4096);
    let ids: Vec<&str> = read.kept.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(ids, ["<urn:uuid:ok>", "<urn:uuid:after>"]);
    let reasons: Vec<(&str, &str)> = read
        .rejected
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("<urn:uuid:big>", "body_too_large"),
            ("mixed.warc/record-1", "not_warc"),
            ("<urn:uuid:nolen>", "bad_warc_header"),
        ]
    );
    assert_eq!(read.rejected[0].2.len(), crate::io::OVERSIZED_EXCERPT_BYTES);

    // A file that is not WARC at all is one rejected row.
    let shard = write(&dir, "notwarc.warc", b"<html>just html</html>\n");
    let read = read_shard(&shard, 4096);
    assert!(read.kept.is_empty());
    assert_eq!(read.rejected.len(), 1);
    assert_eq!(read.rejected[0].1, "not_warc");
}

#[test]
fn decodes_wrong_and_legacy_charsets_chunked_and_compressed_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let latin1 = b"<html><body>Caf\xe9 cr\xe8me br\xfbl\xe9e, cr\xeape et g\xe2teau</body></html>";
    let chunked = http(
        "text/html",
        "Transfer-Encoding: chunked\r\n",
        b"6\r\n<html>\r\n7\r\nchunked\r\n0\r\n\r\n",
    );
    let gzipped = http(
        "text/html; charset=utf-8",
        "Content-Encoding: gzip\r\n",
        &gzip("<html>zipped ü</html>".as_bytes()),
    );
    let broken_gzip = http("text/html", "Content-Encoding: gzip\r\n", b"not gzip");
    let bytes = [
        response(
            "wrong",
            "https://w.example/",
            "text/html; charset=utf-8",
            latin1,
        ),
        record("response", "chunked", &[], &chunked),
        record("response", "gz", &[], &gzipped),
        record("response", "badgz", &[], &broken_gzip),
        record("response", "nohttp", &[], b"<html>no status line</html>"),
        // No Content-Type anywhere: sniffed.
        record(
            "response",
            "sniffed",
            &[],
            b"HTTP/1.1 200 OK\r\n\r\n<!DOCTYPE html><html>sniffed</html>",
        ),
        // The crawler's identified type wins over the declared one.
        record(
            "response",
            "identified",
            &[("WARC-Identified-Payload-Type", "application/json")],
            &http("text/html", "", b"{\"a\": 1}"),
        ),
    ]
    .concat();
    let shard = write(&dir, "enc.warc", &bytes);
    let read = read_shard(&shard, 1 << 20);
    let texts: Vec<(&str, &str)> = read
        .kept
        .iter()
        .map(|k| (k.0.as_str(), k.2.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (
                "<urn:uuid:wrong>",
                "<html><body>Café crème brûlée, crêpe et gâteau</body></html>"
            ),
            ("<urn:uuid:chunked>", "<html>chunked"),
            ("<urn:uuid:gz>", "<html>zipped ü</html>"),
            ("<urn:uuid:sniffed>", "<!DOCTYPE html><html>sniffed</html>"),
        ]
    );
    let reasons: Vec<(&str, &str)> = read
        .rejected
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("<urn:uuid:badgz>", "bad_content_encoding"),
            ("<urn:uuid:nohttp>", "bad_http_header"),
            ("<urn:uuid:identified>", "not_html"),
        ]
    );
}

#[test]
fn dump_comes_from_the_config_or_the_path() {
    assert_eq!(
        dump_in_path(Path::new(
            "crawl-data/CC-MAIN-2024-10/segments/1/warc/x.warc.gz"
        ))
        .as_deref(),
        Some("CC-MAIN-2024-10")
    );
    assert_eq!(dump_in_path(Path::new("data/x.warc.gz")), None);
}

/// The shared benchmark crawl: 800 pages in 8 files, every one an HTML response kept, with the
/// URL the ground truth is joined on; and dolma's WARC/1.0 samples (bracketed URIs).
#[test]
fn reads_the_shared_crawls() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/web_en");
    let pages =
        crate::io::compress::open_read(&data.join("wceb2026_pages/pages_first800.jsonl.gz"))
            .unwrap();
    use std::io::BufRead;
    let mut want: Vec<String> = pages
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            v["url"].as_str().unwrap().to_string()
        })
        .collect();
    let mut got = Vec::new();
    for i in 0..8 {
        let path = data.join(format!("wceb2026_warc/wceb2026-0000{i}.warc.gz"));
        let shard = Shard {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            path,
        };
        let read = read_shard(&shard, DEFAULT_MAX_BODY_BYTES);
        assert!(read.rejected.is_empty(), "{:?}", read.rejected);
        assert_eq!(read.kept.len(), 100);
        for (id, url, text, ct) in read.kept {
            assert!(id.starts_with("<urn:uuid:"));
            assert_eq!(ct.as_deref(), Some("text/html"));
            assert!(text.contains('<'));
            got.push(url.unwrap());
        }
    }
    // Two pages have no absolute URL; the WARCs give them `https://wceb2026.invalid/…`.
    want.retain(|u| u.starts_with("http"));
    let invalid = got
        .iter()
        .filter(|u| u.contains("wceb2026.invalid"))
        .count();
    got.retain(|u| !u.contains("wceb2026.invalid"));
    assert_eq!(invalid, 2);
    want.sort();
    got.sort();
    assert_eq!(got.len(), 798);
    assert_eq!(got, want);

    let mut urls = Vec::new();
    for name in ["warc__sample-0000.warc.gz", "warc__sample-0001.warc.gz"] {
        let path = data.join("dolma_fixtures").join(name);
        let shard = Shard {
            name: name.into(),
            path,
        };
        let read = read_shard(&shard, DEFAULT_MAX_BODY_BYTES);
        assert!(!read.kept.is_empty());
        urls.extend(read.kept.into_iter().map(|k| k.1.unwrap()));
    }
    assert!(
        urls.iter()
            .all(|u| u.starts_with("http") && !u.ends_with('>')),
        "{urls:?}"
    );
}

/// Hostile headers (a line of 100 KiB, 2,000 fields, an absurd Content-Length) are rejected
/// with bounded memory, and the records after them are read.
#[test]
fn hostile_headers_are_bounded_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"WARC/1.1\r\nWARC-Type: response\r\nX-Long: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 100 << 10));
    bytes.extend_from_slice(b"\r\nContent-Length: 4\r\n\r\nabcd\r\n\r\n");
    bytes.extend_from_slice(b"WARC/1.1\r\nWARC-Type: response\r\n");
    for i in 0..2000 {
        bytes.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"Content-Length: 4\r\n\r\nabcd\r\n\r\n");
    bytes.extend_from_slice(&response(
        "ok",
        "https://ok.example/",
        "text/html",
        b"<p>ok</p>",
    ));
    // Claims a block of 10^18 bytes: read up to the cap, the rest skipped to the end of file.
    bytes.extend_from_slice(
        b"WARC/1.1\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:huge>\r\nContent-Length: 1000000000000000000\r\n\r\n<html>",
    );
    let shard = write(&dir, "hostile.warc", &bytes);
    let read = read_shard(&shard, 4096);
    let ids: Vec<&str> = read.kept.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(ids, ["<urn:uuid:ok>"]);
    let reasons: Vec<&str> = read.rejected.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(
        reasons,
        ["bad_warc_header", "bad_warc_header", "truncated_record"]
    );
}
