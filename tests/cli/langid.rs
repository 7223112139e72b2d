//! `langid`: parity with datatrove's LanguageFilter on fastText lid.176 (golden fixture made by
//! tests/parity/make_goldens.sh), and the stage in a pipeline.

use grist::stages::langid::LanguageModel;

use crate::util::*;

#[test]
fn langid_matches_python_fasttext_on_every_web_document() {
    let model = LanguageModel::load(&repo().join("filters/models/lid.176.ftz")).unwrap();
    let (mut compared, mut label_misses, mut worst) = (0, Vec::new(), 0f64);
    for (text, g) in golden_documents("datatrove_filters.jsonl.gz") {
        let predictions = model.predict(&text, -1).unwrap();
        let (label, score) = &predictions[0];
        let expected_label = g["langid"]["label"].as_str().unwrap();
        let expected_score = g["langid"]["score"].as_f64().unwrap();
        if label != expected_label {
            label_misses.push(format!(
                "{}: grist {label} {score}, fastText {expected_label} {expected_score}",
                doc_name(&g)
            ));
        }
        worst = worst.max((f64::from(*score) - expected_score).abs());
        compared += 1;
    }
    eprintln!("langid: {compared} documents, largest score difference {worst:e}");
    assert_eq!(compared, 2429);
    assert!(
        label_misses.is_empty(),
        "top labels differ:\n{}",
        label_misses.join("\n")
    );
    // Measured: 1.1e-16 (Python's float64 of the same f32 score, through a text golden).
    assert!(worst <= 1e-12, "a score differs by {worst}");
}

#[test]
fn langid_stage_labels_and_filters_a_pipeline() {
    let s = Scratch::new();
    s.write("in/a.jsonl", concat!(
        "{\"text\": \"The quick brown fox jumps over the lazy dog near the river bank.\"}\n",
        "{\"text\": \"Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.\"}\n",
        "{\"text\": \"12 34\"}\n",
    ));
    let model = repo().join("filters/models/lid.176.ftz");
    s.write(
        "p.yaml",
        format!("name: l\nworkdir: work\ninput: {{jsonl: in}}\nstages:\n  - {{id: lang, type: langid, model: {}, languages: [en]}}\n  - {{id: out, type: write_parquet, path: out, rejects: rejects}}\n", model.display()),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let kept = read_rows(&s.path("out"));
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["language"], "en");
    assert!(kept[0]["language_score"].as_f64().unwrap() > 0.65);
    let rejected = read_rows(&s.path("rejects/lang"));
    assert_eq!(rejected[0]["language"], "de");
    assert_eq!(rejected[0]["reason"], "wrong_language");
    let st = stats(&s.path("work"));
    assert_eq!(st["lang"]["rows_kept"], 1);
}

#[test]
fn a_missing_or_wrong_model_is_a_config_error_naming_the_path() {
    let s = Scratch::new();
    s.write("in/a.jsonl", "{\"text\": \"hello\"}\n");
    s.write("not-a-model.bin", "this is not fastText");
    for (model, expected) in [
        ("nowhere.ftz", "cannot open fastText model `nowhere.ftz`"),
        (
            "not-a-model.bin",
            "`not-a-model.bin` is not a fastText model",
        ),
    ] {
        s.write("p.yaml", format!("name: l\ninput: {{jsonl: in}}\nstages:\n  - {{id: lang, type: langid, model: {model}}}\n  - {{id: out, type: write_parquet, path: out}}\n"));
        let out = s.grist(&["validate", "p.yaml"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            text(&out).contains(&format!("p.yaml:4:30: error: stage `lang`: {expected}")),
            "{}",
            text(&out)
        );
    }
}
