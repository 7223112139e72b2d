//! Bad input: a clear error or a recorded rejection, never a panic, never a silent loss.

use crate::util::*;

const WRITE: &str = "  - {id: out, type: write_parquet, path: out, rejects: rejects}\n";

#[test]
fn missing_text_column_is_a_config_error_naming_the_file() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"body\": \"hello\"}\n");
    s.write(
        "p.yaml",
        format!("name: t\ninput: {{jsonl: in/a.jsonl}}\nstages:\n{WRITE}"),
    );
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains(
            "p.yaml:2:9: error: stage `input`: in/a.jsonl: no text column `text` (columns: body)"
        ),
        "{t}"
    );
    // The mapping fixes it.
    s.write(
        "p.yaml",
        format!("name: t\ninput: {{jsonl: in/a.jsonl, text_column: body}}\nstages:\n{WRITE}"),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    assert_eq!(read_rows(&s.path("out"))[0]["text"], "hello");
}

#[test]
fn corrupt_parquet_fails_its_task_only() {
    let s = Scratch::new();
    s.c4_parquet_shards("in", 3);
    let victim = s.path("in/part-1.parquet");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    s.write(
        "p.yaml",
        format!("name: t\nworkdir: work\ninput: {{parquet: in/*.parquet}}\nstages:\n{WRITE}"),
    );
    let out = s.grist(&["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("1 of 3 task(s) of phase `stream` failed") && t.contains("in/part-1.parquet"),
        "{t}"
    );
    assert_eq!(
        file_names(&s.path("out")),
        ["input-00000.parquet", "input-00002.parquet"]
    );
    let st = stats(&s.path("work"));
    assert_eq!(st["out"]["tasks_done"], 2);
    // Garbage that is not Parquet at all fails the same way.
    std::fs::write(&victim, b"not parquet").unwrap();
    let out = s.grist(&["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("not a readable Parquet file"),
        "{}",
        text(&out)
    );
}

#[test]
fn non_utf8_and_broken_json_lines_are_rejected_and_counted() {
    let s = Scratch::new();
    let mut data = b"{\"text\": \"good one\"}\n{\"text\": \"bad \xff\xfe bytes\"}\n".to_vec();
    data.extend_from_slice(
        b"{\"text\": \"cut\n{\"text\": null}\n[1, 2]\n{\"text\": \"good two\", \"n\": 5}\n",
    );
    s.write("in/a.jsonl", data);
    s.write(
        "p.yaml",
        format!("name: t\nworkdir: work\ninput: {{jsonl: in/a.jsonl}}\nstages:\n{WRITE}"),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let st = stats(&s.path("work"));
    assert_eq!(st["input"]["rows_in"], 6);
    assert_eq!(st["input"]["rows_kept"], 2);
    assert_eq!(
        st["input"]["rejected"],
        serde_json::json!({"invalid_json": 2, "invalid_utf8": 1, "null_text": 1})
    );
    let rejects = read_rows(&s.path("rejects/input"));
    let reasons: Vec<_> = rejects
        .iter()
        .map(|r| {
            (
                r["line_index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "invalid_utf8"),
            (2, "invalid_json"),
            (3, "null_text"),
            (4, "invalid_json")
        ]
    );
    assert!(
        rejects[0]["raw"]
            .as_str()
            .unwrap()
            .contains("bad \u{fffd}\u{fffd} bytes")
    );
}

#[test]
fn empty_shards_give_empty_outputs() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "");
    s.write("in/b.jsonl", "\n\n");
    s.write("in/c.jsonl", "{\"text\": \"x\", \"url\": \"u\"}\n");
    let filter = "  - {id: f, type: sql, query: \"SELECT * FROM docs WHERE url = 'u'\"}\n";
    s.write(
        "p.yaml",
        format!("name: t\nworkdir: work\ninput: {{jsonl: in}}\nstages:\n{filter}{WRITE}"),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    assert_eq!(
        file_names(&s.path("out")),
        [
            "input-00000.parquet",
            "input-00001.parquet",
            "input-00002.parquet"
        ]
    );
    assert_eq!(read_rows(&s.path("out")).len(), 1);
    let st = stats(&s.path("work"));
    assert_eq!(
        (
            st["input"]["rows_in"].as_u64(),
            st["out"]["tasks_done"].as_u64()
        ),
        (Some(1), Some(3))
    );

    write_parquet(&s.path("pq/empty.parquet"), &[]);
    s.write("p2.yaml", "name: t\nworkdir: work2\ninput: {parquet: pq}\nstages:\n  - {id: out, type: write_parquet, path: out2}\n");
    assert_ok(&s.grist(&["run", "p2.yaml"]));
    assert_eq!(file_names(&s.path("out2")), ["input-00000.parquet"]);
    assert!(read_rows(&s.path("out2")).is_empty());
    assert_eq!(stats(&s.path("work2"))["out"]["rows_in"], 0);
}

#[test]
fn a_50_mb_document_streams_through() {
    let s = Scratch::new();
    let big = "lorem ipsum dolor sit amet ".repeat(50 * 1024 * 1024 / 27);
    let line = serde_json::json!({"text": big, "url": "u"}).to_string();
    s.write(
        "in/a.jsonl",
        format!("{{\"text\": \"small\", \"url\": \"v\"}}\n{line}\n"),
    );
    write_parquet(
        &s.path("pq/a.parquet"),
        &[
            (big.clone(), "t".into(), "u".into()),
            ("small".into(), "t".into(), "v".into()),
        ],
    );
    for (input, work) in [("{jsonl: in}", "w1"), ("{parquet: pq}", "w2")] {
        s.write(
            "p.yaml",
            format!("name: t\nworkdir: {work}\ninput: {input}\nstages:\n  - {{id: f, type: sql, query: 'SELECT * FROM docs WHERE length(text) > 1000000'}}\n  - {{id: out, type: write_parquet, path: {work}/out}}\n"),
        );
        assert_ok(&s.grist(&["run", "p.yaml"]));
        let rows = read_rows(&s.path(&format!("{work}/out")));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["text"].as_str().unwrap().len(), big.len());
        assert_eq!(stats(&s.path(work))["f"]["rejected"]["sql_filter"], 1);
    }
}

#[test]
fn an_output_dir_that_cannot_be_written_is_reported_before_running() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"x\"}\n");
    s.write("blocked", "a file where a directory should be");
    s.write("p.yaml", "name: t\ninput: {jsonl: in}\nstages:\n  - {id: out, type: write_parquet, path: blocked/out}\n");
    let out = s.grist(&["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains(
            "p.yaml:4:36: error: stage `out`: cannot write to `blocked/out`: Not a directory"
        ),
        "{t}"
    );
}

#[test]
fn missing_input_files_are_reported() {
    let s = Scratch::new();
    s.write("p.yaml", "name: t\ninput: {parquet: nowhere/*.parquet}\nstages:\n  - {id: out, type: write_parquet, path: out}\n");
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("no files match `nowhere/*.parquet`"),
        "{}",
        text(&out)
    );
    let out = s.grist(&["validate", "absent.yaml"]);
    assert_eq!(out.status.code(), Some(2));
}
