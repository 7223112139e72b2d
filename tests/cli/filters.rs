//! The heuristic filters (`gopher_repetition`, `gopher_quality`, `c4_quality`,
//! `fineweb_quality`): parity with datatrove 0.10.1 on the golden fixture made by
//! tests/parity/make_goldens.sh, and the four stages in a pipeline.

use std::collections::{BTreeMap, HashMap};

use grist::stages::c4_quality::C4Quality;
use grist::stages::doc_filter::{DocFilter, Verdict};
use grist::stages::fineweb_quality::FinewebQuality;
use grist::stages::gopher_quality::GopherQuality;
use grist::stages::gopher_repetition::GopherRepetition;
use rayon::prelude::*;

use crate::util::*;

/// The golden records with their document texts.
fn goldens() -> Vec<(String, serde_json::Value)> {
    let records = golden_documents("datatrove_filters.jsonl.gz");
    assert_eq!(records.len(), 2429);
    records
}

/// Compares `filter` with datatrove's decisions under `golden_key`, printing every
/// disagreement, and asserts the agreement rates. With `rewrites`, also compares the text of
/// documents both keep.
fn assert_parity(golden_key: &str, filter: &dyn DocFilter, rewrites: bool) {
    let records = goldens();
    let verdicts: Vec<Verdict> = records
        .par_iter()
        .map(|(text, _)| filter.judge(text))
        .collect();
    let (mut agree, mut both_kept, mut same_text) = (0, 0, 0);
    let mut disagreements = Vec::new();
    let mut text_differences = Vec::new();
    let mut our_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for ((text, g), verdict) in records.iter().zip(&verdicts) {
        let doc = doc_name(g);
        let expected = &g[golden_key];
        let keep = expected["keep"].as_bool().unwrap();
        let reason = expected["reason"].as_str();
        *our_reasons
            .entry(verdict.reason().unwrap_or("(kept)").to_string())
            .or_default() += 1;
        if (verdict.is_kept(), verdict.reason()) == (keep, reason) {
            agree += 1;
        } else {
            disagreements.push(format!(
                "  {doc}: grist {:?}, datatrove {:?}",
                verdict.reason().unwrap_or("keep"),
                reason.unwrap_or("keep")
            ));
        }
        if rewrites && keep && verdict.is_kept() {
            both_kept += 1;
            let ours = match verdict {
                Verdict::Rewrite(new) => new.as_str(),
                _ => text.as_str(),
            };
            if sha256_hex(ours) == expected["text_sha256"].as_str().unwrap() {
                same_text += 1;
            } else {
                text_differences.push(format!(
                    "  {doc}: grist {} chars, datatrove {}",
                    ours.chars().count(),
                    expected["text_len"]
                ));
            }
        }
    }
    let n = records.len();
    let agreement = agree as f64 / n as f64;
    eprintln!(
        "{golden_key}: {agree} of {n} decisions agree ({:.2}%); grist: {our_reasons:?}",
        100.0 * agreement
    );
    if !disagreements.is_empty() {
        eprintln!("{golden_key} disagreements:\n{}", disagreements.join("\n"));
    }
    if rewrites {
        eprintln!("{golden_key}: {same_text} of {both_kept} kept texts identical");
        if !text_differences.is_empty() {
            eprintln!(
                "{golden_key} texts that differ:\n{}",
                text_differences.join("\n")
            );
        }
    }
    // The README says: the same decisions (and reasons) on all of them, and the same texts.
    assert_eq!(
        agree, n,
        "{golden_key}: only {agree} of {n} decisions agree with datatrove"
    );
    if rewrites {
        assert_eq!(
            same_text, both_kept,
            "{golden_key}: only {same_text} of {both_kept} kept texts are identical"
        );
    }
}

#[test]
fn gopher_repetition_matches_datatrove() {
    assert_parity("gopher_repetition", &GopherRepetition::default(), false);
}

#[test]
fn gopher_quality_matches_datatrove() {
    assert_parity("gopher_quality", &GopherQuality::default(), false);
}

#[test]
fn c4_quality_matches_datatrove() {
    assert_parity("c4_quality", &C4Quality::default(), true);
}

#[test]
fn c4_quality_fineweb_setting_matches_datatrove() {
    let fineweb = C4Quality {
        filter_no_terminal_punct: false,
        ..Default::default()
    };
    assert_parity("c4_quality_fineweb", &fineweb, true);
}

#[test]
fn fineweb_quality_matches_datatrove() {
    assert_parity("fineweb_quality", &FinewebQuality::default(), false);
}

#[test]
fn the_four_filters_in_a_pipeline_reject_with_reasons_and_rewrite_text() {
    let s = Scratch::new();
    s.c4_parquet_shards("in", 3);
    // Some parameters are not the defaults: they must reach the stages, and the C4 sample is
    // clean enough that default FineWeb rules would drop nothing after the C4 rules.
    s.write(
        "p.yaml",
        "name: f\nworkdir: work\nbatch_size: 100\ninput: {parquet: in}\nstages:\n  \
         - {id: rep, type: gopher_repetition}\n  \
         - {id: qual, type: gopher_quality, min_doc_words: 40}\n  \
         - {id: c4, type: c4_quality, filter_no_terminal_punct: false}\n  \
         - {id: fw, type: fineweb_quality, short_line_length: 80}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));

    // The same cascade, run in process, says which documents survive and with what text.
    let c4 = C4Quality {
        filter_no_terminal_punct: false,
        ..Default::default()
    };
    let qual = GopherQuality {
        min_doc_words: Some(40),
        ..Default::default()
    };
    let fineweb = FinewebQuality {
        short_line_length: 80,
        ..Default::default()
    };
    let filters: [(&str, &dyn DocFilter); 4] = [
        ("rep", &GopherRepetition::default()),
        ("qual", &qual),
        ("c4", &c4),
        ("fw", &fineweb),
    ];
    let mut expected_kept = Vec::new();
    let mut expected_rejects: HashMap<&str, BTreeMap<String, u64>> = HashMap::new();
    'docs: for (text, _, url) in c4_docs() {
        let mut text = text;
        for (stage, filter) in filters {
            match filter.judge(&text) {
                Verdict::Keep => {}
                Verdict::Rewrite(new) => text = new,
                Verdict::Drop(reason) => {
                    *expected_rejects
                        .entry(stage)
                        .or_default()
                        .entry(reason.into_owned())
                        .or_default() += 1;
                    continue 'docs;
                }
            }
        }
        expected_kept.push((url, text));
    }

    let st = stats(&s.path("work"));
    assert_eq!(st["input"]["rows_kept"], 800);
    let mut rows_in = 800;
    for (stage, _) in filters {
        let expected = expected_rejects.remove(stage).unwrap_or_default();
        let rejected: BTreeMap<String, u64> =
            serde_json::from_value(st[stage]["rejected"].clone()).unwrap();
        assert_eq!(rejected, expected, "stage {stage}");
        assert!(!expected.is_empty(), "stage {stage} rejected nothing");
        assert_eq!(st[stage]["rows_in"], rows_in, "stage {stage}");
        rows_in -= expected.values().sum::<u64>();
        // Every rejected row is in the rejects, with its stage and reason.
        let dir = s.path(&format!("rejects/{stage}"));
        let rows = if dir.exists() {
            read_rows(&dir)
        } else {
            Vec::new()
        };
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for row in &rows {
            assert_eq!(row["stage"], stage);
            *by_reason
                .entry(row["reason"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(by_reason, expected, "rejects of {stage}");
    }
    assert!(
        rows_in > 100 && rows_in < 700,
        "{rows_in} of 800 documents kept"
    );
    let kept: Vec<(String, String)> = read_rows(&s.path("out"))
        .iter()
        .map(|r| {
            (
                r["url"].as_str().unwrap().to_string(),
                r["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(kept.len() as u64, rows_in);
    assert_eq!(kept, expected_kept);
    // C4 removed lines from some documents.
    let originals: HashMap<String, String> =
        c4_docs().into_iter().map(|(t, _, url)| (url, t)).collect();
    assert!(kept.iter().any(|(url, text)| &originals[url] != text));
}

#[test]
fn odd_documents_never_panic() {
    let filters: [&dyn DocFilter; 4] = [
        &GopherRepetition::default(),
        &GopherQuality::default(),
        &C4Quality::default(),
        &FinewebQuality::default(),
    ];
    // Pieces that stress splitting: every kind of line break and space, punctuation runs,
    // citations, braces, combining marks, astral characters, control characters.
    let pieces = [
        "a",
        "the",
        "word",
        " ",
        "  ",
        "\n",
        "\n\n",
        "\r",
        "\r\n",
        "\t",
        "\u{b}",
        "\u{c}",
        "\u{1c}",
        "\u{85}",
        "\u{2028}",
        "\u{a0}",
        "\u{3000}",
        ".",
        "...",
        "\u{2026}",
        "!",
        "?",
        "\"",
        "'",
        "#",
        "-",
        "\u{2022}",
        "[1]",
        "[edit]",
        "[",
        "]",
        "{",
        "}",
        "\u{0}",
        "\u{7f}",
        "\u{fffd}",
        "e\u{301}",
        "\u{1f600}",
        "\u{5168}",
        "\u{964}",
        "http://x.org/a?b=c",
        "U.S.",
        "don't",
        "lorem ipsum",
        "JavaScript",
        "\u{212a}",
        "\u{130}",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    let mut docs: Vec<String> = vec![
        String::new(),
        "\n".repeat(1000),
        " ".repeat(1000),
        "x".repeat(5000),
        "\u{0}\u{1}\u{2}\u{ff}\u{fffe}".repeat(200),
    ];
    for _ in 0..2000 {
        let len = next(300);
        docs.push((0..len).map(|_| pieces[next(pieces.len())]).collect());
    }
    docs.par_iter().for_each(|doc| {
        for filter in filters {
            let _ = filter.judge(doc);
        }
    });
}

#[test]
fn fineweb_en_pipeline_runs_on_the_shared_web_data() {
    let s = Scratch::new();
    repo_pipeline(&s, "fineweb-en");
    assert_ok(&s.grist(&["run", "fineweb-en.yaml"]));
    let st = stats(&s.path("runs/fineweb-en"));
    assert_eq!(st["lang"]["rows_in"], 1600);
    for stage in ["lang", "rep", "qual", "c4_lines", "fw", "dedup"] {
        assert!(
            st[stage]["rows_in"].as_u64() > st[stage]["rows_kept"].as_u64(),
            "`{stage}` dropped nothing: {}",
            st[stage]
        );
    }
    assert_eq!(st["dedup"]["rows_in"], st["fw"]["rows_kept"]);
    let kept = read_rows(&s.path("runs/fineweb-en/out"));
    assert_eq!(
        kept.len() as u64,
        st["dedup"]["rows_kept"].as_u64().unwrap()
    );
    // Its report: every section's figures are the stats files'.
    let doc = crate::report::report(&s, "runs/fineweb-en");
    crate::report::check(
        &doc,
        &s.path("runs/fineweb-en"),
        Some(&s.path("runs/fineweb-en/rejects")),
    );
    // Both sources are split out, and the filters' rule figures are recorded.
    assert_eq!(st["lang"]["sources"]["c4"]["rows_in"], 800);
    assert_eq!(st["lang"]["sources"]["pages"]["rows_in"], 800);
    let rep = crate::report::histogram_counts(&s.path("runs/fineweb-en"), "rep");
    assert_eq!(rep["dup_para_frac"], 1557);
    assert_eq!(st["lang"]["counts"]["language"]["en"], 1589);
}
