//! Config errors: positions, exit code 2, all errors at once.

use crate::util::*;

const GOOD_HEAD: &str = "name: t\ninput: {jsonl: in/a.jsonl}\nstages:\n";

#[test]
fn unknown_key_reports_line_and_column_and_exits_2() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"hello\"}\n");
    s.write("p.yaml", format!("{GOOD_HEAD}  - id: f\n    type: sql\n    qeury: SELECT * FROM docs\n  - {{id: out, type: write_parquet, path: out}}\n"));
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("p.yaml:6:5: error: unknown key `qeury` in stage `f` (type `sql`)"),
        "{t}"
    );
    assert!(t.contains("did you mean `query`?"), "{t}");
}

#[test]
fn every_error_of_a_file_is_reported_in_one_go() {
    let s = Scratch::new();
    s.write(
        "p.yaml",
        "name: t\nworkdri: x\ninput: {jsonl: in/a.jsonl}\nstages:\n  - {id: f, type: sqll}\n  - {id: g, type: sql, query: 3, extra: 1}\n  - {id: out, type: write_parquet, path: out, row_group_rows: many, inputs: [gg]}\n",
    );
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    for expected in [
        "p.yaml:2:1: error: unknown key `workdri`",
        "p.yaml:5:19: error: unknown stage type `sqll`",
        "did you mean `sql`?",
        "p.yaml:6:34: error: unknown key `extra`",
        "p.yaml:7:63: error: stage `out`: `row_group_rows`: invalid type: string \"many\", expected usize",
        "4 errors found",
    ] {
        assert!(t.contains(expected), "missing `{expected}` in:\n{t}");
    }
}

#[test]
fn broken_yaml_is_a_config_error() {
    let s = Scratch::new();
    s.write("p.yaml", "name: t\nstages:\n  - {id: a, type: sql\n  - b\n");
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("p.yaml:5:1: error: invalid YAML"),
        "{}",
        text(&out)
    );
}

#[test]
fn param_of_the_wrong_type_points_at_the_value() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"hello\"}\n");
    s.write("p.yaml", format!("{GOOD_HEAD}  - id: out\n    type: write_parquet\n    path: out\n    compression_level: [3]\n"));
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains(
            "p.yaml:7:24: error: stage `out`: `compression_level`: invalid type: sequence, expected i32"
        ),
        "{t}"
    );
}

#[test]
fn graph_errors_have_positions() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"hello\"}\n");
    s.write(
        "p.yaml",
        format!("{GOOD_HEAD}  - {{id: a, type: sql, query: q, inputs: b}}\n  - {{id: b, type: sql, query: q, inputs: a}}\n  - {{id: b, type: write_parquet, path: out}}\n"),
    );
    let t = text(&s.grist(&["validate", "p.yaml"]));
    assert!(
        t.contains("p.yaml:6:6: error: duplicate stage id `b`"),
        "{t}"
    );
    s.write("p.yaml", format!("{GOOD_HEAD}  - {{id: a, type: sql, query: q, inputs: b}}\n  - {{id: b, type: sql, query: q, inputs: a}}\n"));
    let t = text(&s.grist(&["validate", "p.yaml"]));
    assert!(
        t.contains("error: the stages form a cycle: a → b → a") || t.contains("cycle: b → a → b"),
        "{t}"
    );
    s.write(
        "p.yaml",
        format!("{GOOD_HEAD}  - {{id: a, type: write_parquet, path: o, inputs: [inptu]}}\n"),
    );
    let t = text(&s.grist(&["validate", "p.yaml"]));
    assert!(
        t.contains("reads `inptu`, which is not a stage") && t.contains("did you mean `input`?"),
        "{t}"
    );
}

#[test]
fn sql_errors_are_found_at_check_time() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"hello\"}\n");
    s.write("p.yaml", format!("{GOOD_HEAD}  - {{id: f, type: sql, query: 'SELECT nope FROM docs'}}\n  - {{id: out, type: write_parquet, path: out}}\n"));
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("p.yaml:4:6: error: stage `f`:") && text(&out).contains("nope"),
        "{}",
        text(&out)
    );
    s.write("p.yaml", format!("{GOOD_HEAD}  - {{id: f, type: sql, query: 'SELECT count(*) FROM docs'}}\n  - {{id: out, type: write_parquet, path: out}}\n"));
    assert!(text(&s.grist(&["validate", "p.yaml"])).contains("GROUP BY"));
}

#[test]
fn stages_lists_and_describes() {
    let s = Scratch::new();
    let out = s.grist(&["stages"]);
    assert_ok(&out);
    for t in [
        "read_parquet",
        "read_jsonl",
        "sql",
        "write_parquet",
        "write_jsonl",
    ] {
        assert!(text(&out).contains(t));
    }
    let out = s.grist(&["stages", "describe", "write_parquet"]);
    assert_ok(&out);
    assert!(
        text(&out).contains("compression_level (integer, default 3)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.grist(&["stages", "describe", "sqll"]).status.code(),
        Some(2)
    );
}
