//! Resumability: a run killed anywhere and run again gives the output of an uninterrupted run;
//! complete tasks are skipped; a changed parameter re-runs only what depends on it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::*;

const SHARDS: usize = 6;

fn pipeline(s: &Scratch) {
    s.c4_parquet_shards("in", SHARDS);
    s.write(
        "p.yaml",
        "name: k\nworkdir: work\nbatch_size: 20\ninput: {parquet: in}\nstages:\n  \
         - {id: f, type: sql, query: \"SELECT *, length(text) AS n FROM docs WHERE length(text) BETWEEN 400 AND 3000\"}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
}

struct Output {
    names: Vec<String>,
    rows: Vec<serde_json::Value>,
    rejects: Vec<serde_json::Value>,
}

fn output(s: &Scratch) -> Output {
    let hidden: Vec<_> = std::fs::read_dir(s.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "temporary files left behind: {hidden:?}");
    Output {
        names: file_names(&s.path("out")),
        rows: read_rows(&s.path("out")),
        rejects: read_rows(&s.path("rejects/f")),
    }
}

/// Starts a run that stops at `point`, SIGKILLs it there, runs again, and returns the output.
fn killed_then_resumed(point: &str) -> Output {
    let s = Scratch::new();
    pipeline(&s);
    let mut child = s
        .command(&["run", "p.yaml", "--workers", "2"])
        .env("GRIST_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        let paused = line.starts_with("grist: paused at");
        log.push(line);
        if paused {
            break;
        }
    }
    assert!(
        log.last()
            .is_some_and(|l| l.starts_with("grist: paused at")),
        "never reached {point}:\n{}",
        log.join("\n")
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    let st = stats(&s.path("work"));
    assert_eq!(st["out"]["tasks_done"], SHARDS as u64);
    assert_eq!(st["input"]["rows_in"], 800);
    output(&s)
}

#[test]
fn sigkill_at_any_point_then_rerun_equals_an_uninterrupted_run() {
    let reference = Scratch::new();
    pipeline(&reference);
    assert_ok(&reference.grist(&["run", "p.yaml"]));
    let expected = output(&reference);
    assert_eq!(expected.names.len(), SHARDS);
    assert_eq!(expected.rows.len() + expected.rejects.len(), 800);
    // Mid-shard, mid-run, between rename and marker, after a marker, after the last marker,
    // and while merging stats.
    for point in [
        "batch:1", "batch:17", "commit:1", "commit:4", "marker:2", "marker:6", "stats:1",
    ] {
        let got = killed_then_resumed(point);
        assert_eq!(
            got.names, expected.names,
            "files differ after a kill at {point}"
        );
        assert!(
            got.rows == expected.rows,
            "rows differ after a kill at {point}"
        );
        assert!(
            got.rejects == expected.rejects,
            "rejects differ after a kill at {point}"
        );
    }
}

#[test]
fn complete_tasks_are_skipped_and_a_changed_parameter_reruns_only_its_branch() {
    let s = Scratch::new();
    s.c4_parquet_shards("a", 2);
    s.c4_parquet_shards("b", 3);
    let yaml = |min: usize| {
        format!(
            "name: two\nworkdir: work\nstages:\n  \
             - {{id: a, type: read_parquet, path: a}}\n  \
             - {{id: fa, type: sql, query: 'SELECT * FROM docs WHERE length(text) > {min}'}}\n  \
             - {{id: out_a, type: write_parquet, path: out/a}}\n  \
             - {{id: b, type: read_parquet, path: b}}\n  \
             - {{id: out_b, type: write_parquet, path: out/b}}\n"
        )
    };
    s.write("p.yaml", yaml(500));
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    assert!(
        text(&out).contains("5 task(s) run, 0 already complete"),
        "{}",
        text(&out)
    );
    let out = s.grist(&["run", "p.yaml"]);
    assert!(
        text(&out).contains("0 task(s) run, 5 already complete"),
        "{}",
        text(&out)
    );
    let b_marker = s.path("work/markers/stream/b-00000.json");
    let before = std::fs::metadata(&b_marker).unwrap().modified().unwrap();
    let kept_before = read_rows(&s.path("out/a")).len();
    s.write("p.yaml", yaml(2000));
    let out = s.grist(&["run", "p.yaml"]);
    assert!(
        text(&out).contains("2 task(s) run, 3 already complete"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::metadata(&b_marker).unwrap().modified().unwrap(),
        before
    );
    assert!(read_rows(&s.path("out/a")).len() < kept_before);
    let st = stats(&s.path("work"));
    assert_eq!(st["fa"]["rows_in"], 800);
    assert_eq!(st["out_b"]["rows_in"], 800);
}
