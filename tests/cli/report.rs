//! `grist report`: the page's figures are the stats files' figures, every reason is there with
//! examples that come from the rejects, and a partial run says so.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use scraper::{ElementRef, Html, Selector};

use crate::util::*;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("selector {s}: {e:?}"))
}

fn attr<'a>(e: &ElementRef<'a>, name: &str) -> &'a str {
    e.value()
        .attr(name)
        .unwrap_or_else(|| panic!("no {name} on {}", e.html()))
}

fn one<'a>(root: ElementRef<'a>, s: &str) -> ElementRef<'a> {
    let selector = sel(s);
    let mut found = root.select(&selector);
    let first = found
        .next()
        .unwrap_or_else(|| panic!("nothing matches {s}"));
    assert!(found.next().is_none(), "several match {s}");
    first
}

/// Stages that count (and drop) rows inside their own phases, where the engine samples nothing.
const BARRIERS_COUNTING_IN_PHASES: [&str; 4] =
    ["classifier_train", "tokenizer_train", "tokenize", "train"];

/// Writes the report of `workdir` with `grist report` and parses it.
pub fn report(s: &Scratch, workdir: &str) -> Html {
    let out = s.grist(&["report", workdir]);
    assert_ok(&out);
    let path = s.path(workdir).join("report.html");
    assert!(
        text(&out).contains("report.html"),
        "the path is printed: {}",
        text(&out)
    );
    let html = std::fs::read_to_string(&path).unwrap();
    let doc = Html::parse_document(&html);
    // Offline: no script, no loaded resource, no link out of the page.
    let root = doc.root_element();
    assert_eq!(
        root.select(&sel("script, link, iframe, img, [src]"))
            .count(),
        0
    );
    for a in root.select(&sel("a[href]")) {
        assert!(attr(&a, "href").starts_with('#'), "{}", a.html());
    }
    let style: String = root.select(&sel("style")).flat_map(|e| e.text()).collect();
    assert!(!style.contains("url(") && !style.contains("@import"));
    doc
}

/// Texts of the rejected rows, by stage and (id, reason): ids may repeat in real data.
type Rejects = HashMap<String, HashMap<(String, String), Vec<String>>>;

fn rejects(dir: &Path) -> Rejects {
    let mut by_stage: Rejects = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return by_stage;
    };
    for e in entries.flatten() {
        let stage = e.file_name().to_string_lossy().into_owned();
        for row in read_rows(&e.path()) {
            let id = row["id"].as_str().unwrap_or_default().to_string();
            let reason = row["reason"].as_str().unwrap().to_string();
            let text = row["text"].as_str().unwrap_or_default().to_string();
            by_stage
                .entry(stage.clone())
                .or_default()
                .entry((id, reason))
                .or_default()
                .push(text);
        }
    }
    by_stage
}

/// Checks every section of a report against the stats files of `workdir` and, where the pipeline
/// keeps them, the rejects under `rejects_dir`.
pub fn check(doc: &Html, workdir: &Path, rejects_dir: Option<&Path>) {
    let root = doc.root_element();
    let st = stats(workdir);
    assert!(!st.is_empty());
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(workdir.join("run.json")).unwrap()).unwrap();
    // Run facts: every phase, all tasks done.
    let phases = run["phases"].as_array().unwrap();
    assert_eq!(
        root.select(&sel("#run tr[data-phase]")).count(),
        phases.len()
    );
    let done = one(root, "#run td[data-tasks-done]");
    assert_eq!(
        attr(&done, "data-tasks-done"),
        attr(&done, "data-tasks-total")
    );
    assert!(root.select(&sel("#partial")).next().is_none());
    // Funnel: each stage's numbers, the identity, every reason with its count.
    let funnel = one(root, "#funnel-table");
    let rejected_rows = rejects_dir.map(rejects).unwrap_or_default();
    for (stage, s) in &st {
        let row = one(funnel, &format!("tr[data-stage=\"{stage}\"]"));
        for (a, key) in [
            ("data-rows-in", "rows_in"),
            ("data-rows-kept", "rows_kept"),
            ("data-bytes-in", "bytes_in"),
            ("data-bytes-kept", "bytes_kept"),
        ] {
            assert_eq!(attr(&row, a), s[key].to_string(), "{stage} {key}");
        }
        let reasons = s["rejected"].as_object().unwrap();
        let dropped: u64 = reasons.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(attr(&row, "data-rows-rejected"), dropped.to_string());
        assert_eq!(
            attr(&one(row, "td[data-balanced]"), "data-balanced"),
            "true",
            "{stage}"
        );
        for (reason, n) in reasons {
            let span = one(row, &format!("span[data-reason=\"{reason}\"]"));
            assert_eq!(attr(&span, "data-count"), n.to_string(), "{stage} {reason}");
            // Every reason is shown with examples, each a row rejected by this stage for this
            // reason; a barrier that drops rows inside its own phase (classifier_train's empty
            // texts) samples none, and the page says so.
            let examples: Vec<_> = root
                .select(&sel(&format!(
                    "#examples .example[data-stage=\"{stage}\"][data-group=\"{reason}\"]"
                )))
                .collect();
            let sampled = s["samples"].get(reason.as_str()).is_some();
            assert_eq!(
                !examples.is_empty(),
                sampled,
                "{stage}: examples of {reason}"
            );
            if !sampled {
                assert!(
                    BARRIERS_COUNTING_IN_PHASES.contains(&s["type"].as_str().unwrap()),
                    "{stage}: stream stages sample every reason"
                );
                one(
                    root,
                    &format!(
                        "#examples details[data-stage=\"{stage}\"] [data-no-examples=\"{reason}\"]"
                    ),
                );
            }
            assert!(examples.len() <= 4);
            if let Some(rows) = rejected_rows.get(stage) {
                for e in examples {
                    let id = attr(&e, "data-id");
                    let texts = rows
                        .get(&(id.to_string(), reason.clone()))
                        .unwrap_or_else(|| {
                            panic!("{stage}: example {id} is not a row rejected for {reason}")
                        });
                    let shown: String = one(e, "pre").text().collect();
                    assert!(
                        texts
                            .iter()
                            .any(|t| t.chars().take(500).collect::<String>() == shown),
                        "{stage} {id}: the text shown is not the reject's"
                    );
                }
            }
        }
        // Per source: the counts add up to the stage's.
        if let Some(sources) = s.get("sources").and_then(|v| v.as_object()) {
            let mut rows_in = 0;
            for (source, c) in sources {
                let row = one(
                    root,
                    &format!("table[data-source=\"{source}\"] tr[data-stage=\"{stage}\"]"),
                );
                assert_eq!(attr(&row, "data-rows-in"), c["rows_in"].to_string());
                assert_eq!(attr(&row, "data-rows-kept"), c["rows_kept"].to_string());
                rows_in += c["rows_in"].as_u64().unwrap();
            }
            assert_eq!(rows_in, s["rows_in"].as_u64().unwrap(), "{stage}");
        }
        // Distributions: one chart per histogram, with its count, bins and thresholds.
        let synth = ["self_instruct", "evol_instruct"].contains(&s["type"].as_str().unwrap());
        let section = if synth {
            "#synthetic"
        } else {
            "#distributions"
        };
        for (name, h) in s
            .get("histograms")
            .and_then(|v| v.as_object())
            .into_iter()
            .flatten()
        {
            let fig = one(
                root,
                &format!("{section} figure[data-stage=\"{stage}\"][data-histogram=\"{name}\"]"),
            );
            assert_eq!(attr(&fig, "data-count"), h["count"].to_string());
            let bins = h["bins"].as_array().unwrap();
            let nonzero = bins.iter().filter(|b| b.as_u64() != Some(0)).count();
            assert_eq!(
                fig.select(&sel("rect.bin")).count(),
                nonzero,
                "{stage} {name}"
            );
            let thresholds = h
                .get("thresholds")
                .and_then(|t| t.as_array())
                .map_or(0, Vec::len);
            assert_eq!(
                fig.select(&sel("line.threshold")).count(),
                thresholds,
                "{stage} {name}"
            );
        }
        if s["type"] == "langid" {
            one(
                root,
                &format!("#distributions figure[data-stage=\"{stage}\"][data-counts=\"language\"]"),
            );
        }
        if s["type"] == "minhash_dedup" {
            for key in [
                "documents",
                "candidate_pairs",
                "clusters",
                "duplicates_removed",
            ] {
                let row = one(
                    root,
                    &format!("#dedup table[data-stage=\"{stage}\"] tr[data-metric=\"{key}\"]"),
                );
                assert_eq!(
                    attr(&row, "data-value").parse::<f64>().unwrap(),
                    s["metrics"][key].as_f64().unwrap()
                );
            }
        }
    }
}

/// A stage's histograms in its stats file, by name.
pub fn histogram_counts(workdir: &Path, stage: &str) -> BTreeMap<String, u64> {
    stats(workdir)[stage]["histograms"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v["count"].as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

const TINY: &str = "name: tiny\nworkdir: work\nstages:\n  - {id: docs, type: read_jsonl, path: in/*.jsonl}\n  - {id: qual, type: gopher_quality}\n  - {id: out, type: write_jsonl, path: out, rejects: rejects}\n";

fn tiny_inputs(s: &Scratch, shards: usize) {
    let docs = c4_docs();
    for k in 0..shards {
        let mut lines = String::new();
        for (i, (text, _, _)) in docs.iter().enumerate().skip(k * 20).take(20) {
            lines.push_str(&serde_json::json!({"id": format!("d{i}"), "text": text}).to_string());
            lines.push('\n');
        }
        // A short document that needs escaping, dropped as too short.
        lines.push_str(
            &serde_json::json!({"id": format!("x{k}<b>"), "text": "<script>alert(1)</script> & \"quoted\""})
                .to_string(),
        );
        lines.push('\n');
        s.write(&format!("in/{k:02}.jsonl"), lines);
    }
}

#[test]
fn report_checks_against_stats_and_escapes_what_it_shows() {
    let s = Scratch::new();
    tiny_inputs(&s, 3);
    s.write("p.yaml", TINY);
    let out = s.grist(&["run", "p.yaml", "--report"]);
    assert_ok(&out);
    assert!(
        text(&out).contains("report: work/report.html"),
        "{}",
        text(&out)
    );
    let doc = report(&s, "work");
    check(&doc, &s.path("work"), Some(&s.path("rejects")));
    let html = std::fs::read_to_string(s.path("work/report.html")).unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"));
    assert!(!html.contains("<script>alert"));
    // The same page from the pipeline file, to another path.
    assert_ok(&s.grist(&["report", "p.yaml", "-o", "elsewhere/r.html"]));
    assert!(s.path("elsewhere/r.html").is_file());
    // gopher_quality's rule figures, and lengths at the source and at the writer.
    let counts = histogram_counts(&s.path("work"), "qual");
    assert_eq!(counts["non_symbol_words"], 63);
    assert!(histogram_counts(&s.path("work"), "docs").contains_key("length_chars"));
    assert!(histogram_counts(&s.path("work"), "out").contains_key("length_words"));
}

#[test]
fn a_partial_run_says_so_and_quiet_prints_nothing() {
    let s = Scratch::new();
    tiny_inputs(&s, 3);
    s.write("p.yaml", TINY);
    let out = s.grist(&[
        "run", "p.yaml", "--phase", "stream", "--task", "0", "--tasks", "3",
    ]);
    assert_ok(&out);
    let doc = report(&s, "work");
    let partial = one(doc.root_element(), "#partial");
    assert_eq!(attr(&partial, "data-tasks-done"), "1");
    assert_eq!(attr(&partial, "data-tasks-total"), "3");
    let out = s.grist(&["-q", "run", "p.yaml"]);
    assert_ok(&out);
    assert_eq!(text(&out), "", "-q prints nothing but errors");
    let doc = report(&s, "work");
    assert!(doc.root_element().select(&sel("#partial")).next().is_none());
    let out = s.grist(&["report", "nowhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("neither a pipeline file nor a run's workdir"));
}
