//! Classifier quality filters: `classifier_train` (a barrier), `quality_classifier`, the
//! `classifier train` command, model checks at config time, parity of scores with Python fastText.

use crate::util::*;

fn lid_model() -> String {
    repo()
        .join("filters/models/lid.176.ftz")
        .display()
        .to_string()
}

/// The example pipeline with its data paths made absolute, written into the scratch dir.
fn example_pipeline(s: &Scratch) {
    let yaml = std::fs::read_to_string(repo().join("pipelines/quality-classifier.yaml"))
        .unwrap()
        .replace("../shared/data", shared_data().to_str().unwrap());
    s.write("qc.yaml", yaml);
}

#[test]
fn example_pipeline_trains_reports_f1_and_filters_by_score() {
    let s = Scratch::new();
    example_pipeline(&s);
    let plan = s.grist(&["plan", "qc.yaml"]);
    assert_ok(&plan);
    let plan = text(&plan);
    let phases: Vec<&str> = plan.lines().filter(|l| l.starts_with("phase")).collect();
    assert!(phases[0].starts_with("phase `stream`: 4 task(s)"), "{plan}");
    assert!(
        phases[1].starts_with("phase `train.train`: 1 task(s)"),
        "{plan}"
    );
    assert!(
        phases[2].starts_with("phase `stream2`: 2 task(s)"),
        "{plan}"
    );

    let out = s.grist(&["run", "qc.yaml"]);
    assert_ok(&out);
    assert!(text(&out).contains("validation_f1="), "{}", text(&out));
    let st = stats(&s.path("runs/quality-classifier"));
    let train = &st["train"];
    assert_eq!(train["rows_in"], 2480 + 800 + 800);
    let f1 = train["metrics"]["validation_f1"].as_f64().unwrap();
    assert!(f1 > 0.8, "validation F1 {f1}");
    assert!(s.path("runs/quality-classifier/model/quality.bin").exists());
    let report =
        std::fs::read_to_string(s.path("runs/quality-classifier/model/quality.report.json"));
    assert!(report.unwrap().contains("\"f1\""));

    let score = &st["score"];
    assert_eq!(score["rows_in"], 1600);
    let dropped = score["rejected"]["quality_below_threshold"]
        .as_u64()
        .unwrap();
    assert!(dropped > 100 && dropped < 1500, "{score}");
    let kept = read_rows(&s.path("runs/quality-classifier/out"));
    assert_eq!(kept.len() as u64 + dropped, 1600);
    assert!(
        kept.iter()
            .all(|r| r["quality_score"].as_f64().unwrap() >= 0.5)
    );
    let rejects = read_rows(&s.path("runs/quality-classifier/rejects/score"));
    assert_eq!(rejects.len() as u64, dropped);
    assert!(
        rejects
            .iter()
            .all(|r| r["reason"] == "quality_below_threshold"
                && r["quality_score"].as_f64().unwrap() < 0.5)
    );

    // The report draws the score histogram with the threshold at 0.5, dropping below it.
    let doc = crate::report::report(&s, "runs/quality-classifier");
    crate::report::check(
        &doc,
        &s.path("runs/quality-classifier"),
        Some(&s.path("runs/quality-classifier/rejects")),
    );
    let h = &st["score"]["histograms"]["quality_score"];
    assert_eq!(h["count"], 1600);
    assert_eq!(h["thresholds"], serde_json::json!([[0.5, "below"]]));

    let again = s.grist(&["run", "qc.yaml"]);
    assert!(
        text(&again).contains("0 task(s) run, 7 already complete"),
        "{}",
        text(&again)
    );
}

/// Writes `n` C4 documents as JSON Lines, for small pipelines.
fn c4_jsonl(s: &Scratch, rel: &str, n: usize) {
    let mut body = String::new();
    for (i, (text, _, url)) in c4_docs().into_iter().take(n).enumerate() {
        let id = format!("c4/{i}");
        body.push_str(&serde_json::json!({"id": id, "text": text, "url": url}).to_string());
        body.push('\n');
    }
    s.write(rel, body);
}

#[test]
fn keep_top_cuts_at_a_sampled_quantile_and_classifiers_stack() {
    let s = Scratch::new();
    c4_jsonl(&s, "in/c4.jsonl", 400);
    let lid = lid_model();
    s.write(
        "p.yaml",
        format!(
            "name: top\nworkdir: work\nstages:\n  \
             - {{id: c4, type: read_jsonl, path: in}}\n  \
             - {{id: fr, type: quality_classifier, model: {lid}, label: fr, column: fr_score}}\n  \
             - {{id: top, type: quality_classifier, model: {lid}, label: en, column: en_score, keep_top: 0.25}}\n  \
             - {{id: out, type: write_parquet, path: out}}\n"
        ),
    );
    let plan = s.grist(&["plan", "p.yaml"]);
    assert!(
        text(&plan).contains("phase `top.sample`: 1 task(s)"),
        "{}",
        text(&plan)
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let st = stats(&s.path("work"));
    let kept = st["top"]["rows_kept"].as_u64().unwrap();
    // The sample is every document here, so the cut keeps 100 of 400 (more only on a tie).
    assert!((100..=104).contains(&kept), "{}", st["top"]);
    let threshold = st["top"]["metrics"]["threshold"].as_f64().unwrap();
    let rows = read_rows(&s.path("out"));
    assert_eq!(rows.len() as u64, kept);
    for r in &rows {
        assert!(r["en_score"].as_f64().unwrap() >= threshold);
        assert!(r["fr_score"].as_f64().unwrap() < 0.5);
    }
}

#[test]
fn missing_corrupt_or_unsupervised_models_fail_at_config_check() {
    let s = Scratch::new();
    c4_jsonl(&s, "in/c4.jsonl", 5);
    let lid = std::fs::read(lid_model()).unwrap();
    s.write("truncated.ftz", &lid[..lid.len() / 2]);
    s.write("notes.bin", "this is not a model\n");
    s.write("skipgram.bin", skipgram_model(&s));
    let lid = lid_model();
    let cases = [
        ("missing.bin", "hq", "cannot open fastText model"),
        ("truncated.ftz", "en", "is truncated"),
        ("notes.bin", "hq", "is not a fastText model"),
        ("skipgram.bin", "hq", "not a supervised classifier"),
        (lid.as_str(), "hq", "has no label `hq`"),
    ];
    for (model, label, expected) in cases {
        s.write(
            "p.yaml",
            format!(
                "name: bad\nworkdir: work\nstages:\n  \
                 - {{id: c4, type: read_jsonl, path: in}}\n  \
                 - id: q\n    type: quality_classifier\n    label: {label}\n    model: {model}\n  \
                 - {{id: out, type: write_parquet, path: out}}\n"
            ),
        );
        let out = s.grist(&["validate", "p.yaml"]);
        assert_eq!(out.status.code(), Some(2), "{model}: {}", text(&out));
        let msg = text(&out);
        assert!(msg.contains(expected), "{model}: {msg}");
        // The message points at the `model` line.
        assert!(msg.contains("p.yaml:8:"), "{model}: {msg}");
    }
}

/// A real fastText skip-gram (word vector) model, trained here.
fn skipgram_model(s: &Scratch) -> Vec<u8> {
    let input = s.write(
        "words.txt",
        "the cat sat on the mat\nthe dog sat on the log\n".repeat(20),
    );
    let out = s.path("sg.bin");
    let mut args = fasttext::Args::new();
    args.set_input(input.to_str().unwrap()).unwrap();
    args.set_model(fasttext::ModelName::SG);
    args.set_dim(4);
    args.set_epoch(1);
    args.set_min_count(1);
    args.set_bucket(100);
    args.set_thread(1);
    args.set_verbose(0);
    let mut model = fasttext::FastText::new();
    model.train(&args).unwrap();
    model.save_model(out.to_str().unwrap()).unwrap();
    std::fs::read(out).unwrap()
}

#[test]
fn classifier_train_command_takes_labelled_files() {
    let s = Scratch::new();
    let wiki = shared_data().join("wikitext2/valid.txt");
    let pages = shared_data().join("web_en/wceb2026_pages/pages_first800.jsonl.gz");
    let out = s.grist(&[
        "classifier",
        "train",
        "--positive",
        wiki.to_str().unwrap(),
        "--negative",
        pages.to_str().unwrap(),
        "--text-column",
        "raw_text",
        "--dim",
        "8",
        "--bucket",
        "10000",
        "-o",
        "m/q.bin",
    ]);
    assert_ok(&out);
    let msg = text(&out);
    assert!(msg.contains("validation_f1="), "{msg}");
    assert!(s.path("m/q.bin").exists() && s.path("m/q.report.json").exists());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("m/q.report.json")).unwrap()).unwrap();
    assert!(report["f1"].as_f64().unwrap() > 0.9, "{report}");
    let total: u64 = ["train_examples", "validation_examples"]
        .iter()
        .flat_map(|k| report[*k].as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 1160 + 800);

    // One labelled input instead; a label column with a null and a bad label.
    let mut body = String::new();
    for (i, (text, _, _)) in c4_docs().into_iter().take(200).enumerate() {
        let label = match i {
            0 => serde_json::Value::Null,
            1 => "two words".into(),
            _ if i % 2 == 0 => "hq".into(),
            _ => "cc".into(),
        };
        body.push_str(&serde_json::json!({"text": text, "quality": label}).to_string());
        body.push('\n');
    }
    s.write("labelled.jsonl", body);
    let out = s.grist(&[
        "classifier",
        "train",
        "--input",
        "labelled.jsonl",
        "--label-column",
        "quality",
        "--dim",
        "4",
        "--bucket",
        "1000",
        "-o",
        "m2.bin",
    ]);
    assert_ok(&out);
    let st = stats(&s.path("m2.bin.work"));
    assert_eq!(st["train"]["rows_in"], 200);
    assert_eq!(st["train"]["rejected"]["no_label"], 1);
    assert_eq!(st["train"]["rejected"]["invalid_label"], 1);

    let out = s.grist(&[
        "classifier",
        "train",
        "--positive",
        "labelled.jsonl",
        "-o",
        "m3.bin",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--negative"), "{}", text(&out));
}

/// A small train-then-score pipeline over C4 documents labelled by their input.
fn train_then_score(s: &Scratch) {
    c4_jsonl(s, "pos/a.jsonl", 150);
    let mut neg = String::new();
    for (i, (text, _, _)) in c4_docs().into_iter().skip(150).take(150).enumerate() {
        let id = format!("neg/{i}");
        let shouting = text.to_uppercase().replace(' ', " CLICK ");
        neg.push_str(&serde_json::json!({"id": id, "text": shouting}).to_string());
        neg.push('\n');
    }
    s.write("neg/b.jsonl", neg);
    c4_jsonl(s, "score/c.jsonl", 300);
    s.write(
        "p.yaml",
        "name: ts\nworkdir: work\nstages:\n  \
         - {id: pos, type: read_jsonl, path: pos}\n  \
         - {id: pos_cols, type: sql, query: 'SELECT id, text FROM docs'}\n  \
         - {id: neg, type: read_jsonl, path: neg}\n  \
         - {id: train, type: classifier_train, inputs: [pos_cols, neg], labels: {pos_cols: hq, neg: cc}, model: models/q.bin, fasttext: {dim: 4, bucket: 1000, epoch: 3}}\n  \
         - {id: docs, type: read_jsonl, path: score}\n  \
         - {id: q, type: quality_classifier, model: models/q.bin, threshold: 0.5}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
}

#[test]
fn sigkill_during_training_then_rerun_gives_the_same_scores() {
    let reference = Scratch::new();
    train_then_score(&reference);
    assert_ok(&reference.grist(&["run", "p.yaml"]));
    let expected = read_rows(&reference.path("out"));
    let expected_rejects = read_rows(&reference.path("rejects/q"));
    assert!(!expected.is_empty());
    // After the input is stored, after the model is written but before its marker, after the
    // training marker.
    for point in ["marker:2", "commit:3", "marker:3"] {
        let s = Scratch::new();
        train_then_score(&s);
        kill_at(&s, &["run", "p.yaml", "--workers", "1"], point);
        assert_ok(&s.grist(&["run", "p.yaml"]));
        assert!(
            read_rows(&s.path("out")) == expected,
            "rows differ after a kill at {point}"
        );
        assert!(
            read_rows(&s.path("rejects/q")) == expected_rejects,
            "rejects differ at {point}"
        );
        let st = stats(&s.path("work"));
        assert_eq!(st["train"]["rows_in"], 300);
        assert_eq!(st["q"]["rows_in"], 300);
    }
}

#[test]
fn a_stage_reading_a_model_made_later_in_the_flow_is_a_cycle() {
    let s = Scratch::new();
    c4_jsonl(&s, "in/c4.jsonl", 20);
    s.write(
        "p.yaml",
        "name: cyc\nworkdir: work\nstages:\n  \
         - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: q, type: quality_classifier, model: m.bin}\n  \
         - {id: train, type: classifier_train, label_column: url, model: m.bin}\n",
    );
    let out = s.grist(&["validate", "p.yaml"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("cycle"), "{}", text(&out));
}

/// The parity fixture: a model trained by Python fastText (tests/parity/fasttext_goldens.py) and
/// its `predict(" ".join(text.split()), k=-1)` on every web_en document.
#[test]
fn scores_equal_python_fasttext_on_every_web_document() {
    let mut texts = source_texts();
    let golden = read_golden("fasttext_quality.jsonl.gz");
    let mut input = String::new();
    let mut expected = std::collections::HashMap::new();
    for g in &golden {
        let id = g["id"].as_str().unwrap();
        let text = texts
            .remove(&source_key(id))
            .unwrap_or_else(|| panic!("no text for {id}"));
        input.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        input.push('\n');
        expected.insert(id.to_string(), g);
    }
    assert_eq!(expected.len(), 2429);

    // The stage, end to end.
    let s = Scratch::new();
    s.write("in/docs.jsonl", input);
    let model = repo().join("tests/fixtures/parity/quality_hq_cc.bin");
    s.write(
        "p.yaml",
        format!(
            "name: parity\nworkdir: work\nstages:\n  \
             - {{id: docs, type: read_jsonl, path: in}}\n  \
             - {{id: q, type: quality_classifier, model: {}, label: hq}}\n  \
             - {{id: out, type: write_parquet, path: out}}\n",
            model.display()
        ),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let rows = read_rows(&s.path("out"));
    assert_eq!(rows.len(), 2429);
    let mut worst = 0f64;
    for r in &rows {
        let g = expected[r["id"].as_str().unwrap()];
        let diff = (r["quality_score"].as_f64().unwrap() - g["hq"].as_f64().unwrap()).abs();
        worst = worst.max(diff);
    }
    eprintln!("quality_classifier: 2429 documents, largest score difference {worst:e}");
    // The README says the scores equal Python fastText's: exactly (both are the same f32).
    assert_eq!(
        worst, 0.0,
        "a score differs from Python fastText by {worst}"
    );

    // Every label's probability, in fastText's order, through the library.
    let model = grist::classifier::model::FastTextModel::load(&model).unwrap();
    for r in &rows {
        let text = r["text"].as_str().unwrap();
        let g = expected[r["id"].as_str().unwrap()];
        let got = model
            .predict_line(&grist::classifier::model::normalize_text(text), -1)
            .unwrap();
        let labels: Vec<String> = got.iter().map(|(l, _)| format!("__label__{l}")).collect();
        assert_eq!(serde_json::json!(labels), g["labels"], "{}", r["id"]);
        // fastText's probabilities are f32; the golden holds Python's printing of each.
        for ((_, p), q) in got.iter().zip(g["probs"].as_array().unwrap()) {
            assert_eq!(*p, q.as_f64().unwrap() as f32, "{}", r["id"]);
        }
    }
}
