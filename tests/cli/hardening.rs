//! Hardening (issue 16): each numbered case of the issue has a test here that reproduces it.
//! Nothing a user, a file or a network peer sends may crash (exit 101 or 134), hang, exhaust
//! memory or silently mislead grist.

use crate::util::*;

const WRITE: &str = "  - {id: out, type: write_parquet, path: out, rejects: rejects}\n";

/// Neither a panic message nor an internal error: what a bad input must never produce.
#[track_caller]
pub fn assert_no_panic(out: &std::process::Output) {
    let t = text(out);
    assert!(
        !matches!(out.status.code(), Some(101) | Some(134) | None)
            && !t.contains("panicked")
            && !t.contains("internal error"),
        "grist crashed ({:?}):\n{t}",
        out.status.code()
    );
}

/// 6: a panic inside one task fails that task (exit 1, the task listed); the others finish.
#[test]
fn i06_a_panicking_task_fails_alone_and_is_listed() {
    let s = Scratch::new();
    s.c4_parquet_shards("in", 3);
    s.write(
        "p.yaml",
        format!("name: t\nworkdir: work\ninput: {{parquet: in/*.parquet}}\nstages:\n{WRITE}"),
    );
    let out = s.grist_env(
        &["run", "p.yaml", "-j", "1"],
        &[("GRIST_PANIC_AT", "batch:2")],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("1 of 3 task(s) of phase `stream` failed")
            && t.contains("panicked: GRIST_PANIC_AT reached batch"),
        "{t}"
    );
    assert_eq!(file_names(&s.path("out")).len(), 2);
    // Run again without the fault: only the failed task runs.
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    assert!(
        text(&out).contains("1 task(s) run, 2 already complete"),
        "{}",
        text(&out)
    );
}

/// 4: a GGUF header claiming 2³²−1 (or 10⁶, or one too many) blocks, and a `model.json` with
/// absurd sizes, are clear errors before anything is allocated per block.
#[test]
fn i04_absurd_model_shapes_are_errors_not_allocations() {
    let s = Scratch::new();
    let gguf = std::fs::read(repo().join("tests/fixtures/train/tiny_llama.gguf")).unwrap();
    let key = b"llama.block_count";
    let at = gguf.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(&gguf[at..at + 4], &4u32.to_le_bytes(), "a u32 value");
    for (blocks, needle) in [
        (u32::MAX, "num_layers: 4294967295 is more than 1024"),
        (1_000_000, "num_layers: 1000000 is more than 1024"),
        (
            3,
            "llama.block_count is 3, but the file has no tensor `blk.2.attn_norm.weight`",
        ),
    ] {
        let mut bytes = gguf.clone();
        bytes[at + 4..at + 8].copy_from_slice(&blocks.to_le_bytes());
        s.write("bad.gguf", &bytes);
        for args in [
            &["import", "bad.gguf", "ckpt"][..],
            &["generate", "bad.gguf", "--prompt", "x"][..],
        ] {
            let out = s.grist(args);
            assert_no_panic(&out);
            assert_eq!(out.status.code(), Some(1), "{}", text(&out));
            assert!(text(&out).contains(needle), "{blocks}: {}", text(&out));
        }
    }
    // model.json: every size bounded, products checked.
    let tiny = repo().join("tests/fixtures/train/tiny_llama.gguf");
    assert_ok(&s.grist(&["import", tiny.to_str().unwrap(), "ckpt"]));
    let model_json = s.path("ckpt/model.json");
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&model_json).unwrap()).unwrap();
    for (field, value, needle) in [
        (
            "num_layers",
            serde_json::json!(1_000_000u64),
            "num_layers: 1000000 is more than 1024",
        ),
        ("vocab_size", serde_json::json!(u64::MAX), "vocab_size"),
        ("head_dim", serde_json::json!(1u64 << 40), "head_dim"),
        ("num_heads", serde_json::json!(1024), "num_heads"),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        std::fs::write(&model_json, serde_json::to_vec(&bad).unwrap()).unwrap();
        let out = s.grist(&["generate", "ckpt", "--prompt", "x"]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains(needle), "{field}: {}", text(&out));
    }
}

/// 12: a removed input shard takes its old output with it (the output used to hold 550 rows of
/// which 300 were unique).
#[test]
fn i12_outputs_of_removed_shards_are_removed() {
    let s = Scratch::new();
    s.c4_parquet_shards("in", 3);
    s.write(
        "p.yaml",
        "name: t\nworkdir: work\ninput: {parquet: in/*.parquet}\nstages:\n  - {id: long, type: sql, query: \"SELECT * FROM docs WHERE length(text) > 1000\"}\n  - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let all = read_rows(&s.path("out")).len() + read_rows(&s.path("rejects/long")).len();
    assert_eq!(all, 800);
    std::fs::remove_file(s.path("in/part-1.parquet")).unwrap();
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    assert_eq!(
        file_names(&s.path("out")),
        ["input-00000.parquet", "input-00001.parquet"]
    );
    assert_eq!(file_names(&s.path("rejects/long")).len(), 2);
    let rows = read_rows(&s.path("out"));
    let rejected = read_rows(&s.path("rejects/long"));
    let ids: std::collections::BTreeSet<String> = rows
        .iter()
        .chain(&rejected)
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rows.len() + rejected.len(), ids.len(), "no row twice");
    assert_eq!(ids.len(), 800 - 267, "the two remaining shards, whole");
    assert!(
        text(&out).contains("no task of the pipeline writes it"),
        "{}",
        text(&out)
    );
}

/// 13: a writer whose directory is inside the input glob is refused at check time (each re-run
/// used to read its own output again: 3 rows, then 6, then 9).
#[test]
fn i13_an_output_inside_the_input_pattern_is_refused() {
    let s = Scratch::new();
    s.write(
        "data/a.jsonl",
        "{\"text\": \"one\"}\n{\"text\": \"two\"}\n{\"text\": \"three\"}\n",
    );
    for (pattern, writer) in [
        ("data/*.jsonl", "path: data"),
        ("data/**/*.jsonl", "path: elsewhere, rejects: data/rejects"),
    ] {
        s.write(
            "p.yaml",
            format!(
                "name: t\nworkdir: work\ninput: {{jsonl: \"{pattern}\"}}\nstages:\n  - {{id: out, type: write_jsonl, {writer}}}\n"
            ),
        );
        for cmd in ["validate", "run"] {
            let out = s.grist(&[cmd, "p.yaml"]);
            assert_eq!(out.status.code(), Some(2), "{}", text(&out));
            assert!(
                text(&out).contains("stage `input` would read what stage `out` writes"),
                "{}",
                text(&out)
            );
        }
    }
    // A directory input holding the workdir.
    s.write(
        "p.yaml",
        "name: t\nworkdir: data/work\ninput: {jsonl: data}\nstages:\n  - {id: d, type: exact_dedup}\n  - {id: out, type: write_jsonl, path: out}\n",
    );
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Outside the pattern, it runs and re-runs to the same 3 rows.
    s.write(
        "p.yaml",
        "name: t\nworkdir: work\ninput: {jsonl: \"data/*.jsonl\"}\nstages:\n  - {id: out, type: write_jsonl, path: out}\n",
    );
    for _ in 0..2 {
        assert_ok(&s.grist(&["run", "p.yaml"]));
        let written = std::fs::read_to_string(s.path("out/input-00000.jsonl")).unwrap();
        assert_eq!(written.lines().count(), 3);
    }
}

/// 15: a JSON Lines line with an object where the other lines have a number is rejected alone
/// as `schema_mismatch` (it used to fail the whole shard).
#[test]
fn i15_a_line_contradicting_the_schema_is_rejected_alone() {
    let s = Scratch::new();
    s.write(
        "in/a.jsonl",
        "{\"text\": \"a\", \"meta\": 1}\n{\"text\": \"b\", \"meta\": {\"x\": 1}}\n{\"text\": \"c\", \"meta\": 2.5}\n{\"text\": \"d\", \"meta\": {\"y\": [1]}}\n",
    );
    s.write(
        "p.yaml",
        format!("name: t\nworkdir: work\ninput: {{jsonl: in/a.jsonl}}\nstages:\n{WRITE}"),
    );
    assert_ok(&s.grist(&["validate", "p.yaml"]));
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let kept: Vec<String> = read_rows(&s.path("out"))
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["a", "c"]);
    let st = stats(&s.path("work"));
    assert_eq!(st["input"]["rejected"]["schema_mismatch"], 2);
    let rejects = read_rows(&s.path("rejects/input"));
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["line_index"], 1);
    // The conflict may also come first: the majority of the first lines wins.
    s.write(
        "in/a.jsonl",
        "{\"text\": \"b\", \"meta\": {\"x\": 1}}\n{\"text\": \"a\", \"meta\": 1}\n",
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    assert_eq!(read_rows(&s.path("out")).len(), 1);
}

/// 16: two whole runs of one workdir: the second is refused, naming the first; a phase run
/// before the phase it reads from names that phase.
#[test]
fn i16_one_run_per_workdir_and_phases_in_order() {
    let s = Scratch::new();
    s.c4_parquet_shards("in", 2);
    s.write(
        "p.yaml",
        "name: t\nworkdir: work\ninput: {parquet: in/*.parquet}\nstages:\n  - {id: dedup, type: minhash_dedup}\n  - {id: out, type: write_parquet, path: out}\n",
    );
    let mut first = s
        .command(&["run", "p.yaml"])
        .env("GRIST_PAUSE_AT", "batch:1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(first.stderr.take().unwrap());
    use std::io::BufRead;
    assert!(
        stderr
            .lines()
            .any(|l| l.unwrap().starts_with("grist: paused at"))
    );
    let second = s.grist(&["run", "p.yaml"]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    let t = text(&second);
    assert!(
        t.contains("work is in use by another grist run")
            && t.contains(&format!("pid {}", first.id())),
        "{t}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The lock went with the killed process. Phases out of order name the one to run first.
    let out = s.grist(&["run", "p.yaml", "--phase", "dedup.buckets"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("phase `dedup.buckets` reads what phase `dedup.signatures` writes")
            && text(&out).contains("run `--phase dedup.signatures` first"),
        "{}",
        text(&out)
    );
    for phase in [
        "stream",
        "dedup.signatures",
        "dedup.buckets",
        "dedup.clusters",
        "dedup.filter",
    ] {
        assert_ok(&s.grist(&["run", "p.yaml", "--phase", phase]));
    }
    assert_eq!(
        read_rows(&s.path("out")).len() as u64,
        stats(&s.path("work"))["out"]["rows_in"].as_u64().unwrap()
    );
}

/// Runs grist, killing it after `secs` seconds: a hang fails the test instead of wedging it.
pub fn grist_within(s: &Scratch, args: &[&str], secs: u64) -> std::process::Output {
    let mut child = s
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().unwrap();
            panic!("grist {args:?} did not finish in {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// 17: tokenizer training on a document that is one long word (120,000 identical characters
/// took 27 s, a 50 MB one did not finish): words over `max_word_bytes` are left out and counted.
#[test]
fn i17_a_huge_word_does_not_stall_tokenizer_training() {
    let s = Scratch::new();
    let mut docs = String::new();
    for (i, (text, _, _)) in c4_docs().into_iter().take(50).enumerate() {
        docs.push_str(&serde_json::json!({"id": i, "text": text}).to_string());
        docs.push('\n');
    }
    docs.push_str(&serde_json::json!({"text": "a".repeat(20 << 20)}).to_string());
    docs.push('\n');
    docs.push_str(&serde_json::json!({"text": format!("x {} y", "b".repeat(120_000))}).to_string());
    docs.push('\n');
    s.write("in/docs.jsonl", docs);
    let out = grist_within(
        &s,
        &[
            "tokenizer",
            "train",
            "--input",
            "in/docs.jsonl",
            "-o",
            "tok.json",
            "--vocab-size",
            "400",
        ],
        120,
    );
    assert_ok(&out);
    let st = stats(&s.path("tok.json.work"));
    let metrics = &st["train"]["metrics"];
    assert_eq!(metrics["words_over_max_word_bytes"], 2.0, "{}", st["train"]);
    // The GPT-4 split keeps a word's leading space: " bbb…" is 120,001 bytes.
    assert_eq!(
        metrics["bytes_in_words_over_max_word_bytes"],
        ((20 << 20) + 120_001) as f64
    );
    assert_eq!(
        st["train"]["rows_kept"], 52,
        "the documents themselves are used"
    );
    assert!(
        text(&out).contains("word(s) over max_word_bytes"),
        "{}",
        text(&out)
    );
}

/// 14: a stage reading a pipeline-made file and an external one re-runs when the external one
/// changes: a `mix` of a `tokenize` output and an outside dataset, and a `train` whose data the
/// pipeline makes but whose tokenizer it does not.
#[test]
fn i14_changed_external_files_rerun_what_reads_them() {
    let s = Scratch::new();
    let tok = repo().join("tests/fixtures/parity/tokenizer_c4_bpe.json");
    let c4 = shared_data().join("web_en/c4_sample/c4_sample_docs000-799.jsonl.gz");
    let books = shared_data().join("tinyshakespeare/input.txt");
    // An external dataset, encoded once outside the pipeline.
    s.write("ext.txt", std::fs::read_to_string(&books).unwrap());
    let encode = |s: &Scratch| {
        assert_ok(&s.grist(&[
            "tokenizer",
            "encode",
            tok.to_str().unwrap(),
            "--input",
            "ext.txt",
            "-o",
            "ext",
            "--name",
            "books",
        ]))
    };
    encode(&s);
    s.write("tok.json", std::fs::read(&tok).unwrap());
    s.write(
        "p.yaml",
        format!(
            "name: t\nworkdir: work\nstages:\n  \
             - {{id: c4, type: read_jsonl, path: {c4}}}\n  \
             - {{id: tok, type: tokenize, inputs: [c4], tokenizer: {tok}, path: tokens}}\n  \
             - {{id: mix, type: mix, path: mix, seq_len: 64, total_tokens: 100000, \
                 sources: {{web: {{dataset: tokens/c4}}, books: {{dataset: ext/books}}}}}}\n  \
             - {{id: train, type: train, output: run, tokenizer: tok.json, seq_len: 64, steps: 1, \
                 micro_batch_size: 2, data: {{path: mix}}, \
                 model: {{vocab_size: 2048, hidden_size: 16, intermediate_size: 32, num_layers: 1, num_heads: 2}}}}\n",
            c4 = c4.display(),
            tok = tok.display()
        ),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let mix_before = std::fs::read(s.path("mix/mix.json")).unwrap();
    let again = s.grist(&["run", "p.yaml"]);
    assert_ok(&again);
    assert!(text(&again).contains("0 task(s) run"), "{}", text(&again));
    // The external dataset changes: the mix (and the training after it) run again.
    s.write(
        "ext.txt",
        std::fs::read_to_string(&books).unwrap().replace("the", "a"),
    );
    std::fs::remove_dir_all(s.path("ext")).unwrap();
    encode(&s);
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    assert_ne!(
        std::fs::read(s.path("mix/mix.json")).unwrap(),
        mix_before,
        "the mix re-ran"
    );
    assert!(!text(&out).contains("0 task(s) run"), "{}", text(&out));
    // The external tokenizer changes (its text changes, not its ids): training runs again.
    let again = s.grist(&["run", "p.yaml"]);
    assert!(text(&again).contains("0 task(s) run"), "{}", text(&again));
    let mut t: serde_json::Value = serde_json::from_slice(&std::fs::read(&tok).unwrap()).unwrap();
    t["decoder"] = serde_json::Value::Null;
    s.write("tok.json", serde_json::to_vec(&t).unwrap());
    let out = s.grist(&["run", "p.yaml"]);
    assert_ok(&out);
    assert!(text(&out).contains("1 task(s) run"), "{}", text(&out));
}

/// 5: a YAML alias bomb (nine levels of nine aliases) is a config error at once, for
/// `validate` and `plan` alike (it used to grow to 23 GB).
#[test]
fn i05_a_yaml_alias_bomb_is_a_config_error() {
    let s = Scratch::new();
    let mut doc =
        String::from("name: bomb\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 9].join(", ");
        doc.push_str(&format!("x{i}: &a{i} [{refs}]\n"));
    }
    doc.push_str("stages: []\n");
    s.write("bomb.yaml", doc);
    for cmd in ["validate", "plan", "run"] {
        let out = grist_within(&s, &[cmd, "bomb.yaml"], 30);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains("expands to more than 100000 nodes"),
            "{}",
            text(&out)
        );
    }
}

/// Sets `value` at the dotted `path` of a JSON object, making the objects on the way.
fn set_path(v: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut node = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        // `*`: an entry of a map (a `mix` source): the first one there.
        let key = match *p {
            "*" => node
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_else(|| "x".into()),
            other => other.to_string(),
        };
        if !node[&key].is_object() {
            node[&key] = serde_json::json!({});
        }
        node = &mut node[&key];
    }
    node[parts[parts.len() - 1]] = value;
}

/// The numeric parameters of a stage type, as dotted paths, from the pipeline JSON Schema.
fn numeric_params(schema: &serde_json::Value, def: &str) -> Vec<String> {
    let defs = &schema["$defs"];
    let mut out = Vec::new();
    let Some(props) = defs[def]["properties"].as_object() else {
        return out;
    };
    for (k, v) in props {
        let ty = &v["type"];
        let numeric = |t: &serde_json::Value| t == "integer" || t == "number";
        if numeric(ty) || ty.as_array().is_some_and(|a| a.iter().any(numeric)) {
            out.push(k.clone());
        }
        let refs: Vec<&str> = std::iter::once(&v["$ref"])
            .chain(
                v["anyOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| &x["$ref"]),
            )
            .filter_map(|r| r.as_str())
            .collect();
        for r in refs {
            let name = r.rsplit('/').next().unwrap();
            for sub in numeric_params(schema, name) {
                out.push(format!("{k}.{sub}"));
            }
        }
    }
    out
}

/// "Absurd numbers" (issue 16): every numeric parameter of every stage type (nested ones and
/// those of map entries such as a `mix` source included), set to 0, −1, 2³², 10³⁰, infinity or
/// NaN, is refused by `validate` naming the parameter or runs to an ordinary end (exit 0, 1 or
/// 2; or is still working after 5 s, for a value like 2³² training steps): never a panic, an
/// abort or an internal error.
#[test]
fn absurd_numbers_are_refused_or_run() {
    let mut docs = String::new();
    for (i, (text, _, url)) in c4_docs().into_iter().take(24).enumerate() {
        docs.push_str(
            &serde_json::json!({"id": format!("d{i}"), "text": text, "url": url}).to_string(),
        );
        docs.push('\n');
    }
    let scratch = || {
        let s = Scratch::new();
        s.write("in/docs.jsonl", &docs);
        std::os::unix::fs::symlink(repo().join("filters"), s.path("filters")).unwrap();
        s
    };
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo().join("schemas/pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    let quality = repo().join("tests/fixtures/parity/quality_hq_cc.bin");
    let mix = repo().join("tests/fixtures/parity/megatron/mix");
    let tok = repo().join("tests/fixtures/parity/tokenizer_c4_bpe.json");
    let llm = serde_json::json!({"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                 "max_retries": 1, "backoff_s": 0.01, "max_backoff_s": 0.02, "timeout_s": 1});
    // Each stage type in a small pipeline: (stage config, the stages before and after it).
    let src = serde_json::json!({"id": "in", "type": "read_jsonl", "path": "in/docs.jsonl"});
    let out = serde_json::json!({"id": "out", "type": "write_parquet", "path": "out", "rejects": "rejects"});
    let between = |stage: serde_json::Value| (stage, vec![src.clone()], vec![out.clone()]);
    let after = |stage: serde_json::Value| (stage, vec![src.clone()], vec![]);
    let mut cases = vec![(src.clone(), vec![], vec![out.clone()])];
    for ty in [
        "langid",
        "gopher_repetition",
        "gopher_quality",
        "c4_quality",
        "fineweb_quality",
        "exact_dedup",
        "minhash_dedup",
    ] {
        cases.push(between(serde_json::json!({"type": ty})));
    }
    cases.extend([
        between(serde_json::json!({"type": "quality_classifier", "model": quality, "label": "hq"})),
        after(serde_json::json!({"type": "classifier_train", "label_column": "url", "model": "m.bin",
                                 "fasttext": {"dim": 4, "bucket": 1000, "epoch": 1}})),
        after(serde_json::json!({"type": "tokenizer_train", "path": "tok.json", "vocab_size": 400})),
        (
            serde_json::json!({"type": "mix", "path": "mix", "seq_len": 64, "total_tokens": 20000,
                               "sources": {"web": {"dataset": "tokens/in"}}}),
            vec![src.clone(), serde_json::json!({"id": "tok", "type": "tokenize", "tokenizer": tok, "path": "tokens"})],
            vec![],
        ),
        after(serde_json::json!({"type": "self_instruct", "llm": llm.clone(), "num_instructions": 2})),
        after(serde_json::json!({"type": "evol_instruct", "llm": llm.clone(), "rounds": 1, "max_instructions": 2})),
        (
            serde_json::json!({"type": "train", "output": "run", "tokenizer": tok, "seq_len": 255, "steps": 2,
                               "micro_batch_size": 2, "data": {"path": mix},
                               "model": {"vocab_size": 2048, "hidden_size": 16, "intermediate_size": 32, "num_layers": 1, "num_heads": 2}}),
            vec![],
            vec![],
        ),
        (out.clone(), vec![src.clone()], vec![]),
    ]);
    let values = ["0", "-1", "4294967296", "1e30", ".inf", ".nan"];
    let mut jobs = Vec::new();
    for (stage, before, after) in cases {
        let ty = stage["type"].as_str().unwrap().to_string();
        for param in numeric_params(&schema, &format!("stage_{ty}")) {
            for value in values {
                let mut st = stage.clone();
                if st["id"].is_null() {
                    st["id"] = serde_json::json!("x");
                }
                set_path(&mut st, &param, serde_json::json!("__VALUE__"));
                let stages: Vec<serde_json::Value> = before
                    .iter()
                    .cloned()
                    .chain([st])
                    .chain(after.iter().cloned())
                    .collect();
                let pipeline =
                    serde_json::json!({"name": "absurd", "workdir": "work", "stages": stages});
                let yaml = serde_json::to_string(&pipeline)
                    .unwrap()
                    .replace("\"__VALUE__\"", value);
                jobs.push((format!("{ty}.{param} = {value}"), param.clone(), yaml));
            }
        }
    }
    let tried = jobs.len();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..2 {
            sc.spawn(|| {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((what, param, yaml)) = jobs.get(k) else {
                        break;
                    };
                    let s = scratch();
                    s.write("p.yaml", yaml);
                    let checked = grist_within(&s, &["validate", "p.yaml"], 60);
                    assert_no_panic(&checked);
                    let last = param.rsplit('.').next().unwrap();
                    match checked.status.code() {
                        Some(2) if text(&checked).contains(last) => continue,
                        Some(2) => panic!(
                            "{what}: refused without naming `{last}`: {}",
                            text(&checked)
                        ),
                        Some(0) => {}
                        other => panic!("{what}: validate exited {other:?}: {}", text(&checked)),
                    }
                    if let Some(run) = run_within(&s, &["run", "p.yaml", "-j", "1"], 5) {
                        assert_no_panic(&run);
                        assert!(
                            matches!(run.status.code(), Some(0..=2)),
                            "{what}: run exited {:?}: {}",
                            run.status.code(),
                            text(&run)
                        );
                    }
                }
            });
        }
    });
    assert!(tried > 500, "{tried} cases");
}

/// Runs grist for at most `secs` seconds: `None` when it was still running (a huge but valid
/// amount of work, such as 10³⁰ training steps).
fn run_within(s: &Scratch, args: &[&str], secs: u64) -> Option<std::process::Output> {
    let mut child = s
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}
