//! The crawl end of the FineWeb recipe: WARC files in, every record accounted for.

use crate::util::*;

/// One WARC/1.1 record: fields, block, two CRLFs.
fn record(kind: &str, id: &str, url: &str, block: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "WARC/1.1\r\nWARC-Type: {kind}\r\nWARC-Record-ID: <urn:uuid:{id}>\r\n\
         WARC-Target-URI: {url}\r\nWARC-Date: 2026-01-05T03:00:00Z\r\n\
         Content-Type: application/http; msgtype={kind}\r\nContent-Length: {}\r\n\r\n",
        block.len()
    )
    .into_bytes();
    out.extend_from_slice(block);
    out.extend_from_slice(b"\r\n\r\n");
    out
}

fn response(id: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut block = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n").into_bytes();
    block.extend_from_slice(body);
    record("response", id, &format!("https://{id}.example/"), &block)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// (id, reason) of the rejects a stage wrote for rows from files ending in `file`, sorted.
fn reasons(s: &Scratch, stage: &str, file: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = read_rows(&s.path(&format!("rejects/{stage}")))
        .iter()
        .filter(|r| r["file_path"].as_str().unwrap().ends_with(file))
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

const PIPELINE: &str = "name: t\nworkdir: work\nstages:\n  \
    - {id: warc, type: read_warc, path: in, max_body_bytes: 6000000}\n  \
    - {id: out, type: write_parquet, path: out, rejects: rejects}\n";

/// The shared benchmark crawl (800 pages in 8 WARC files) with one file damaged mid-member and
/// one cut short, beside hand-made bad records: truncated, corrupt gzip member, non-HTML, a body
/// over the cap, a wrong charset. Every record is kept or rejected with its reason; the counts
/// add up.
#[test]
fn read_warc_keeps_every_html_page_and_rejects_bad_records_with_reasons() {
    let s = Scratch::new();
    let crawl = shared_data().join("web_en/wceb2026_warc");
    for i in 2..8 {
        let name = format!("wceb2026-0000{i}.warc.gz");
        std::fs::copy(crawl.join(&name), s.path("in").join(&name))
            .or_else(|_| {
                std::fs::create_dir_all(s.path("in"))?;
                std::fs::copy(crawl.join(&name), s.path("in").join(&name))
            })
            .unwrap();
    }
    // File 0, damaged in the middle (inside a page's gzip member): that page is lost, reported.
    let mut damaged = std::fs::read(crawl.join("wceb2026-00000.warc.gz")).unwrap();
    let mid = damaged.len() / 2;
    for b in &mut damaged[mid..mid + 16] {
        *b ^= 0xa5;
    }
    s.write("in/damaged.warc.gz", damaged);
    // File 1, cut short: every page before the cut is kept, the cut one is reported.
    let whole = std::fs::read(crawl.join("wceb2026-00001.warc.gz")).unwrap();
    s.write("in/cut.warc.gz", &whole[..whole.len() * 3 / 4]);

    let latin1 = b"<html><body>Caf\xe9 cr\xe8me br\xfbl\xe9e, cr\xeape et g\xe2teau</body></html>";
    let bad = [
        response("wrong-charset", "text/html; charset=utf-8", latin1),
        response("pdf", "application/pdf", b"%PDF-1.7 ..."),
        response("huge", "text/html", &vec![b'x'; 6_100_000]),
        response("fine", "text/html", b"<html>fine</html>"),
    ];
    let mut members: Vec<Vec<u8>> = bad.iter().map(|r| gzip(r)).collect();
    let corrupt = gzip(&response("corrupt", "text/html", &vec![b'y'; 5000]));
    let mut corrupt = corrupt;
    let m = corrupt.len() / 2;
    corrupt[m] ^= 0xff;
    corrupt[m + 1] ^= 0xff;
    members.insert(2, corrupt);
    let truncated = gzip(&response(
        "truncated",
        "text/html",
        b"<html>never ends</html>",
    ));
    members.push(truncated[..truncated.len() - 12].to_vec());
    s.write("in/bad.warc.gz", members.concat());
    s.write("p.yaml", PIPELINE);
    assert_ok(&s.grist(&["run", "p.yaml"]));

    let st = stats(&s.path("work"));
    let rejected = st["warc"]["rejected"].as_object().unwrap().clone();
    let count = |r: &str| rejected.get(r).and_then(|v| v.as_u64()).unwrap_or(0);
    assert_eq!(count("not_html"), 1, "{rejected:?}");
    assert_eq!(count("body_too_large"), 1);
    assert_eq!(count("truncated_record"), 2, "{rejected:?}");
    let rows = read_rows(&s.path("out"));
    let kept = rows.len() as u64;
    assert_eq!(st["warc"]["rows_kept"], kept);
    // 6 whole files, the damaged one less its broken page(s), part of the cut one, 2 hand-made.
    let from = |file: &str| {
        rows.iter()
            .filter(|r| r["file_path"].as_str().unwrap().ends_with(file))
            .count()
    };
    assert_eq!(from("bad.warc.gz"), 2);
    assert!(
        (98..100).contains(&from("damaged.warc.gz")),
        "{}",
        from("damaged.warc.gz")
    );
    assert!(
        (50..100).contains(&from("cut.warc.gz")),
        "{}",
        from("cut.warc.gz")
    );
    assert_eq!(
        kept as usize,
        600 + 2 + from("damaged.warc.gz") + from("cut.warc.gz")
    );

    let texts: Vec<&str> = rows
        .iter()
        .filter(|r| r["id"] == "<urn:uuid:wrong-charset>")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["<html><body>Café crème brûlée, crêpe et gâteau</body></html>"]
    );
    let columns: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    for c in ["text", "id", "url", "date", "file_path", "content_type"] {
        assert!(columns.iter().any(|k| *k == c), "{c} missing: {columns:?}");
    }
    let pair = |id: &str, why: &str| (format!("<urn:uuid:{id}>"), why.to_string());
    assert_eq!(
        reasons(&s, "warc", "bad.warc.gz"),
        [
            pair("corrupt", "corrupt_gzip_member"),
            pair("huge", "body_too_large"),
            pair("pdf", "not_html"),
            pair("truncated", "truncated_record"),
        ]
    );
    let damaged = reasons(&s, "warc", "damaged.warc.gz");
    assert_eq!(damaged.len(), 100 - from("damaged.warc.gz"), "{damaged:?}");
    assert!(
        damaged.iter().all(|(_, why)| why == "corrupt_gzip_member"),
        "{damaged:?}"
    );
    let cut = reasons(&s, "warc", "cut.warc.gz");
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].1, "truncated_record");
}

/// A WARC record cannot be split across two files: the format has `continuation` records for
/// that, Common Crawl never writes them, and grist reads each file alone. A file that ends
/// inside a record is a cut file, reported as such, and its next file starts clean.
#[test]
fn a_record_cut_at_a_file_end_is_rejected_and_the_next_file_reads_clean() {
    let s = Scratch::new();
    let one = response("one", "text/html", b"<html>one</html>");
    let two = response("two", "text/html", b"<html>two</html>");
    let mut first = one.clone();
    first.extend_from_slice(&two[..two.len() / 2]);
    s.write("in/a.warc", first);
    s.write("in/b.warc", [&two[two.len() / 2..], &one[..]].concat());
    s.write("p.yaml", PIPELINE);
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let st = stats(&s.path("work"));
    assert_eq!(st["warc"]["rows_kept"], 2);
    let r = reasons(&s, "warc", ".warc");
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r.iter()
            .any(|(id, why)| id == "<urn:uuid:two>" && why == "truncated_record")
    );
    assert!(r.iter().any(|(_, why)| why == "not_warc"));
}

/// The crawl stages chained on three files of the shared crawl with two hand-made pages (a
/// block-listed domain, a page with an e-mail and a public IP): the counts add up at every stage,
/// the listed page is dropped as `domain`, the PII replaced; killed anywhere and run again, the
/// output is the uninterrupted run's.
#[test]
fn warc_url_filter_and_pii_chain_and_resume_after_a_kill() {
    let setup = |s: &Scratch| {
        let crawl = shared_data().join("web_en/wceb2026_warc");
        for i in 0..3 {
            let name = format!("wceb2026-0000{i}.warc.gz");
            s.write(
                &format!("in/{name}"),
                std::fs::read(crawl.join(&name)).unwrap(),
            );
        }
        let mut listed = response("listed", "text/html", b"<html>listed</html>");
        let at = listed.windows(8).position(|w| w == b"https://").unwrap();
        listed.splice(
            at..at + "https://listed.example/".len(),
            *b"https://0-1avsex.com/x/",
        );
        // The Content-Length counts the block, which did not change.
        let pii = response(
            "pii",
            "text/html",
            b"<html>write to jane.doe@corp.example.org from 8.8.8.8 or 10.0.0.1</html>",
        );
        s.write("in/made.warc", [listed, pii].concat());
        s.write(
            "p.yaml",
            "name: t\nworkdir: work\nbatch_size: 16\nstages:\n  \
             - {id: warc, type: read_warc, path: in}\n  \
             - {id: urls, type: url_filter}\n  \
             - {id: pii, type: pii}\n  \
             - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
        );
    };
    let reference = Scratch::new();
    setup(&reference);
    assert_ok(&reference.grist(&["run", "p.yaml"]));
    let st = stats(&reference.path("work"));
    assert_eq!(st["warc"]["rows_in"], 302);
    assert_eq!(st["urls"]["rows_in"], 302);
    assert_eq!(st["urls"]["rejected"], serde_json::json!({"domain": 1}));
    assert_eq!(st["pii"]["rows_kept"], 301);
    let rows = read_rows(&reference.path("out"));
    assert_eq!(rows.len(), 301);
    let made: Vec<&str> = rows
        .iter()
        .filter(|r| r["id"] == "<urn:uuid:pii>")
        .map(|r| r["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        made,
        ["<html>write to email@example.com from 22.214.171.124 or 10.0.0.1</html>"]
    );
    let expected = (file_names(&reference.path("out")), rows);
    for point in ["batch:3", "commit:1", "marker:2"] {
        let s = Scratch::new();
        setup(&s);
        kill_at(&s, &["run", "p.yaml", "--workers", "2"], point);
        assert_ok(&s.grist(&["run", "p.yaml"]));
        let got = (file_names(&s.path("out")), read_rows(&s.path("out")));
        assert!(got == expected, "output differs after a kill at {point}");
    }
}

/// `pipelines/fineweb-warc.yaml` on the shared crawl: every stage's counts add up, the output has
/// FineWeb's columns, and a run killed in the stream phase or between barrier tasks, then run
/// again, writes what an uninterrupted run writes.
#[test]
fn the_fineweb_warc_pipeline_runs_accounts_for_every_page_and_resumes() {
    let yaml = std::fs::read_to_string(repo().join("pipelines/fineweb-warc.yaml"))
        .unwrap()
        .replace("../shared/data", &shared_data().display().to_string())
        .replace(
            "type: langid,",
            &format!(
                "type: langid, model: {},",
                repo().join("filters/models/lid.176.ftz").display()
            ),
        );
    let setup = |s: &Scratch| s.write("p.yaml", &yaml);
    let reference = Scratch::new();
    setup(&reference);
    assert_ok(&reference.grist(&["run", "p.yaml"]));
    let st = stats(&reference.path("runs/fineweb-warc"));
    assert_eq!(st["warc"]["rows_in"], 800);
    assert_eq!(st["warc"]["rows_kept"], 800);
    // Each stage reads what the one before it kept.
    let chain = [
        "warc", "urls", "extract", "lang", "rep", "qual", "c4_lines", "fw", "dedup", "pii", "cols",
        "out",
    ];
    for pair in chain.windows(2) {
        assert_eq!(
            st[pair[1]]["rows_in"], st[pair[0]]["rows_kept"],
            "{} → {}",
            pair[0], pair[1]
        );
    }
    let rows = read_rows(&reference.path("runs/fineweb-warc/out"));
    assert_eq!(rows.len() as u64, st["out"]["rows_kept"].as_u64().unwrap());
    assert!(rows.len() > 300, "{}", rows.len());
    let columns: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(
        columns,
        [
            "text",
            "id",
            "dump",
            "url",
            "date",
            "file_path",
            "language",
            "language_score"
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r["dump"] == "wceb2026" && r["language"] == "en")
    );
    // No HTML is left in the extracted text, and it has lines (paragraphs, headings, items)
    // for the line-based filters, as Python trafilatura's text has.
    assert!(
        rows.iter()
            .all(|r| !r["text"].as_str().unwrap().contains("<div"))
    );
    let multi_line = rows
        .iter()
        .filter(|r| r["text"].as_str().unwrap().lines().count() > 1)
        .count();
    assert!(
        multi_line * 10 > rows.len() * 9,
        "{multi_line} of {}",
        rows.len()
    );
    let expected = (file_names(&reference.path("runs/fineweb-warc/out")), rows);
    for point in ["batch:5", "marker:12"] {
        let s = Scratch::new();
        setup(&s);
        kill_at(&s, &["run", "p.yaml", "--workers", "2"], point);
        assert_ok(&s.grist(&["run", "p.yaml"]));
        let got = (
            file_names(&s.path("runs/fineweb-warc/out")),
            read_rows(&s.path("runs/fineweb-warc/out")),
        );
        assert!(got == expected, "output differs after a kill at {point}");
    }
}
