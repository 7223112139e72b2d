//! Tokenizer training, tokenization, mixing and packing: parity with Python `tokenizers` and
//! megatron-core (goldens from tests/parity/tokenizer_goldens.py and megatron_goldens.py), the
//! mixture's accounting, determinism, resume, and bad input.

use std::path::Path;

use grist::tokens::megatron::Dataset;

use crate::util::*;

fn fixture(name: &str) -> std::path::PathBuf {
    repo().join("tests/fixtures/parity").join(name)
}

fn c4_file() -> std::path::PathBuf {
    shared_data().join("web_en/c4_sample/c4_sample_docs000-799.jsonl.gz")
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `grist tokenizer encode TOKENIZER --input INPUT --output OUTPUT EXTRA..`, which must succeed.
fn encode(s: &Scratch, tokenizer: &Path, input: &str, output: &str, extra: &[&str]) {
    let mut args = vec![
        "tokenizer",
        "encode",
        tokenizer.to_str().unwrap(),
        "--input",
        input,
        "--output",
        output,
    ];
    args.extend_from_slice(extra);
    assert_ok(&s.grist(&args));
}

fn u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Merges as `"a b"` strings, whichever form the file uses.
fn merges(tok: &serde_json::Value) -> Vec<String> {
    tok["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m.as_str() {
            Some(s) => s.to_string(),
            None => format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()),
        })
        .collect()
}

const TRAIN_ARGS: &[&str] = &[
    "--vocab-size",
    "2048",
    "--min-frequency",
    "2",
    "--special-tokens",
    "<|endoftext|>,<|pad|>",
];

/// Python `tokenizers`' `train_from_iterator` on the 800 C4 documents gave this vocabulary and
/// these merges; grist must give the same, and so must grist on the same text split in shards.
#[test]
fn bpe_training_equals_python_tokenizers() {
    let golden = json_file(&fixture("tokenizer_c4_bpe_python.json"));
    let s = Scratch::new();
    let c4 = c4_file();
    let mut args = vec![
        "tokenizer",
        "train",
        "--input",
        c4.to_str().unwrap(),
        "--output",
        "tok.json",
    ];
    args.extend_from_slice(TRAIN_ARGS);
    assert_ok(&s.grist(&args));
    let ours = json_file(&s.path("tok.json"));
    assert_eq!(ours["model"]["vocab"], golden["model"]["vocab"]);
    assert_eq!(merges(&ours), merges(&golden));
    assert_eq!(merges(&ours).len(), 2048 - 2 - 256);
    // The committed fixture (which the encoding goldens use) is this very file.
    assert_eq!(
        std::fs::read(s.path("tok.json")).unwrap(),
        std::fs::read(fixture("tokenizer_c4_bpe.json")).unwrap()
    );

    // The same documents as three Parquet shards: counted in parallel, merged, same result.
    s.c4_parquet_shards("shards", 3);
    let mut args = vec![
        "tokenizer",
        "train",
        "--input",
        "shards/*.parquet",
        "--output",
        "sharded.json",
    ];
    args.extend_from_slice(TRAIN_ARGS);
    assert_ok(&s.grist(&args));
    assert_eq!(json_file(&s.path("sharded.json"))["model"], ours["model"]);
}

/// Python `tokenizers` (and `transformers`' `PreTrainedTokenizerFast`) loading our
/// tokenizer.json encode every web_en document to the same ids as the `tokenize` stage.
#[test]
fn tokenize_ids_equal_python_on_every_web_document() {
    let texts = source_texts();
    let golden = read_golden("tokenizer_c4_bpe_ids.jsonl.gz");
    let mut input = String::new();
    for g in &golden {
        let id = g["id"].as_str().unwrap();
        let text = &texts[&source_key(id)];
        input.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        input.push('\n');
    }
    assert_eq!(golden.len(), 2429);
    let s = Scratch::new();
    s.write("in/docs.jsonl", input);
    let tok = fixture("tokenizer_c4_bpe.json");
    encode(&s, &tok, "in/docs.jsonl", "out", &["--name", "web"]);
    let ds = Dataset::open(&s.path("out/web")).unwrap();
    assert_eq!(ds.num_documents(), golden.len());
    let mut differ = Vec::new();
    for (d, g) in golden.iter().enumerate() {
        let ids = ds.sequence(d);
        assert_eq!(
            ids.last(),
            Some(&0),
            "EOS (<|endoftext|> = 0) ends every document"
        );
        let text_ids = &ids[..ids.len() - 1];
        let bytes: Vec<u8> = text_ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        if text_ids.len() as u64 != g["tokens"].as_u64().unwrap()
            || sha256_hex(&bytes) != g["sha256"].as_str().unwrap()
        {
            differ.push(g["id"].as_str().unwrap().to_string());
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} documents differ, first {:?}",
        differ.len(),
        golden.len(),
        differ.first()
    );
}

/// Rebuilds tests/fixtures/parity/megatron/pipeline.yaml's datasets in a scratch directory.
fn megatron_fixture_run(s: &Scratch) {
    let yaml = std::fs::read_to_string(fixture("megatron/pipeline.yaml")).unwrap();
    let here = s.dir.path().display().to_string();
    let yaml = yaml
        .replace(
            "tests/fixtures/parity/megatron/work",
            &format!("{here}/work"),
        )
        .replace(
            "tests/fixtures/parity/megatron/tokens",
            &format!("{here}/tokens"),
        )
        .replace("tests/fixtures/parity/megatron/mix", &format!("{here}/mix"))
        .replace(
            "tests/fixtures/parity/",
            &format!("{}/", fixture("").display()),
        );
    s.write("p.yaml", yaml);
    assert_ok(&s.grist(&["run", "p.yaml"]));
}

/// megatron-core's `IndexedDataset` read the committed datasets (tests/parity/megatron_goldens.py);
/// grist rebuilds them byte for byte and its own reader gives megatron-core's answers.
#[test]
fn megatron_core_reads_our_datasets_as_grist_does() {
    let s = Scratch::new();
    megatron_fixture_run(&s);
    let golden = json_file(&fixture("megatron_golden.json"));
    for (rel, ours) in [
        ("tokens/c4", "tokens/c4"),
        ("tokens/books", "tokens/books"),
        ("mix/train", "mix/train"),
        ("mix/valid", "mix/valid"),
    ] {
        for ext in ["idx", "bin"] {
            assert!(
                std::fs::read(s.path(&format!("{ours}.{ext}"))).unwrap()
                    == std::fs::read(fixture(&format!("megatron/{rel}.{ext}"))).unwrap(),
                "{rel}.{ext} differs from the committed fixture"
            );
        }
        let key = format!("tests/fixtures/parity/megatron/{rel}");
        let g = golden["datasets"]
            .get(&key)
            .unwrap_or_else(|| panic!("no golden for {key}"));
        let ds = Dataset::open(&s.path(ours)).unwrap();
        assert_eq!(ds.dtype().name(), g["dtype"].as_str().unwrap());
        assert_eq!(ds.num_sequences() as u64, g["len"].as_u64().unwrap());
        let lengths: Vec<u64> = (0..ds.num_sequences())
            .map(|i| ds.length(i) as u64)
            .collect();
        assert_eq!(lengths, u64s(&g["sequence_lengths"]), "{rel}");
        let docs: Vec<u64> = (0..=ds.num_documents())
            .map(|d| ds.document_index(d) as u64)
            .collect();
        assert_eq!(docs, u64s(&g["document_indices"]), "{rel}");
        for (i, h) in g["sequence_sha256"].as_array().unwrap().iter().enumerate() {
            let bytes: Vec<u8> = ds
                .sequence(i)
                .iter()
                .flat_map(|t| t.to_le_bytes())
                .collect();
            assert_eq!(
                sha256_hex(&bytes),
                h.as_str().unwrap(),
                "{rel} sequence {i}"
            );
        }
    }
    // Every packed sample holds exactly seq_len + 1 tokens.
    let train = Dataset::open(&s.path("mix/train")).unwrap();
    for d in 0..train.num_documents() {
        let n: i64 = train
            .document_sequences(d)
            .map(|q| train.length(q) as i64)
            .sum();
        assert_eq!(n, 256, "sample {d}");
    }
}

fn tokens_pipeline(s: &Scratch, mix: &str) {
    let tok = fixture("tokenizer_c4_bpe.json");
    let c4 = c4_file();
    let books = shared_data().join("tinyshakespeare/input.txt");
    s.write(
        "p.yaml",
        format!(
            "name: t\nworkdir: work\nstages:\n  \
             - {{id: c4, type: read_jsonl, path: {c4}}}\n  \
             - {{id: web, type: sql, query: \"SELECT id, text FROM docs\"}}\n  \
             - {{id: books, type: read_text, path: {books}, split: paragraph}}\n  \
             - {{id: tok, type: tokenize, inputs: [web, books], tokenizer: {tok}, path: tokens}}\n  \
             - id: mix\n    type: mix\n    path: mix\n{mix}",
            c4 = c4.display(),
            books = books.display(),
            tok = tok.display()
        ),
    );
}

fn source_report<'a>(mix: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &mix["sources"][name]
}

/// Shares within 0.5 % of target, every token accounted for, same seed → same bytes.
#[test]
fn mix_realises_shares_accounts_for_every_token_and_is_deterministic() {
    let mix = "    seq_len: 1023\n    total_tokens: 300000\n    sources:\n      \
               web: {dataset: tokens/web, weight: 3}\n      books: {dataset: tokens/books, weight: 1}\n";
    let s = Scratch::new();
    tokens_pipeline(&s, mix);
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let m = json_file(&s.path("mix/mix.json"));
    for (name, share) in [("web", 0.75), ("books", 0.25)] {
        let r = source_report(&m, name);
        let t = &r["train"];
        let realised = t["realised_share"].as_f64().unwrap();
        assert!(
            (realised - share).abs() / share < 0.005,
            "{name}: {realised} vs {share}"
        );
        let n = |v: &serde_json::Value| v.as_u64().unwrap();
        assert_eq!(
            n(&r["tokens"]),
            n(&r["train_pool"]["tokens"]) + n(&r["validation_pool"]["tokens"])
        );
        assert_eq!(
            n(&r["train_pool"]["tokens"]),
            n(&t["unique_tokens"]) + n(&t["unused_tokens"])
        );
        assert_eq!(
            n(&t["selected_tokens"]),
            n(&t["packed_tokens"]) + n(&t["dropped_tokens"])
        );
    }
    for split in ["train", "valid"] {
        let packed: u64 = ["web", "books"]
            .iter()
            .map(|n| {
                source_report(&m, n)[split]["packed_tokens"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        let sp = &m[split];
        assert_eq!(
            sp["samples"].as_u64().unwrap() * 1024,
            packed + sp["padding_tokens"].as_u64().unwrap()
        );
        assert_eq!(
            sp["tokens"].as_u64().unwrap(),
            sp["samples"].as_u64().unwrap() * 1024
        );
    }
    // Tokenized sources hold every document (EOS each) and the stats add up.
    let st = stats(&s.path("work"));
    assert_eq!(
        st["tok"]["rows_in"],
        800 + st["books"]["rows_kept"].as_u64().unwrap()
    );

    // Same seed in another directory: byte-identical; another seed: different.
    let again = Scratch::new();
    tokens_pipeline(&again, mix);
    assert_ok(&again.grist(&["run", "p.yaml"]));
    for f in [
        "mix/train.bin",
        "mix/train.idx",
        "mix/valid.bin",
        "mix/valid.idx",
        "mix/mix.json",
    ] {
        assert!(
            std::fs::read(s.path(f)).unwrap() == std::fs::read(again.path(f)).unwrap(),
            "{f}"
        );
    }
    let other = Scratch::new();
    tokens_pipeline(&other, &format!("{mix}    seed: 1\n"));
    assert_ok(&other.grist(&["run", "p.yaml"]));
    assert!(
        std::fs::read(s.path("mix/train.bin")).unwrap()
            != std::fs::read(other.path("mix/train.bin")).unwrap()
    );
}

/// A source capped at `max_epochs` gives its excess to the other (UniMax); long
/// documents are upsampled; `concat` packing drops only the tail.
#[test]
fn epochs_are_capped_and_concat_packs_full_samples() {
    let mix = "    seq_len: 511\n    packing: concat\n    total_tokens: 1500000\n    validation_fraction: 0\n    \
               sources:\n      web: {dataset: tokens/web, weight: 1}\n      \
               books: {dataset: tokens/books, weight: 1, max_epochs: 1, long_documents: {min_tokens: 200, factor: 3}}\n";
    let s = Scratch::new();
    tokens_pipeline(&s, mix);
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let m = json_file(&s.path("mix/mix.json"));
    let books = source_report(&m, "books");
    let epoch = books["train_pool"]["epoch_tokens"].as_u64().unwrap();
    let selected = books["train"]["selected_tokens"].as_u64().unwrap();
    assert_eq!(selected, epoch, "books capped at exactly one epoch");
    assert!(books["long_documents"]["documents"].as_u64().unwrap() > 0);
    assert!(
        epoch > books["train_pool"]["tokens"].as_u64().unwrap(),
        "long documents count thrice"
    );
    let web = source_report(&m, "web")["train"]["selected_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        (web + selected).abs_diff(1_500_000) < 2_000,
        "{web} + {selected}"
    );
    let train = &m["train"];
    assert_eq!(train["padding_tokens"], 0);
    assert!(train["dropped_tokens"].as_u64().unwrap() < 512);
    let ds = Dataset::open(&s.path("mix/train")).unwrap();
    for d in 0..ds.num_documents() {
        let n: i64 = ds.document_sequences(d).map(|q| ds.length(q) as i64).sum();
        assert_eq!(n, 512);
    }
    let out = s.grist(&["inspect", "mix/mix.json"]);
    assert_ok(&out);
    assert!(text(&out).contains("books"), "{}", text(&out));
}

/// `token_count` on the rows passed on, llm.c output, empty documents rejected.
#[test]
fn tokenize_adds_token_counts_and_writes_llmc() {
    let s = Scratch::new();
    s.write(
        "in/docs.jsonl",
        "{\"id\":\"a\",\"text\":\"Hello world\"}\n{\"id\":\"b\",\"text\":\"\"}\n{\"id\":\"c\",\"text\":\"The cat sat.\"}\n",
    );
    let tok = fixture("tokenizer_c4_bpe.json");
    s.write(
        "p.yaml",
        format!(
            "name: t\nworkdir: work\nstages:\n  - {{id: docs, type: read_jsonl, path: in}}\n  \
             - {{id: tok, type: tokenize, tokenizer: {}, path: tokens, format: llmc, bos: \"<|pad|>\"}}\n  \
             - {{id: out, type: write_parquet, path: out, rejects: rejects}}\n",
            tok.display()
        ),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let rows = read_rows(&s.path("out"));
    assert_eq!(rows.len(), 2);
    let counts: Vec<i64> = rows
        .iter()
        .map(|r| r["token_count"].as_i64().unwrap())
        .collect();
    let ids = grist::tokens::llmc::read(&s.path("tokens/docs.bin")).unwrap();
    // <|pad|> (1) + ids + <|endoftext|> (0), twice.
    assert_eq!(ids.len() as i64, counts.iter().sum::<i64>() + 4);
    assert_eq!((ids[0], ids[counts[0] as usize + 1]), (1, 0));
    let st = stats(&s.path("work"));
    assert_eq!(st["tok"]["rows_in"], 3);
    assert_eq!(st["tok"]["rejected"]["empty_text"], 1);
    assert_eq!(read_rows(&s.path("rejects/tok")).len(), 1);
}

#[test]
fn bad_tokenizers_datasets_and_mix_configs_are_clear_errors() {
    let s = Scratch::new();
    s.write("in/docs.jsonl", "{\"text\":\"x\"}\n");
    s.write("bad.json", "{\"not\": \"a tokenizer\"}");
    s.write(
        "p.yaml",
        "name: t\nworkdir: w\nstages:\n  - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: tok, type: tokenize, tokenizer: bad.json, path: tokens}\n",
    );
    let out = s.grist(&["validate", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("p.yaml:5") && text(&out).contains("tokenizer"),
        "{}",
        text(&out)
    );

    s.write("ds.idx", b"MMIDIDX\x00\x00junk");
    s.write("ds.bin", b"");
    s.write(
        "m.yaml",
        "name: t\nworkdir: w\nstages:\n  - id: mix\n    type: mix\n    path: out\n    seq_len: 8\n    \
         sources:\n      a: {dataset: ds, weight: 1, tokens: 5}\n      b: {dataset: missing}\n",
    );
    let out = s.grist(&["validate", "m.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains("both `weight` and `tokens`"), "{t}");
    s.write(
        "m.yaml",
        "name: t\nworkdir: w\nstages:\n  - id: mix\n    type: mix\n    path: out\n    seq_len: 8\n    \
         sources:\n      a: {dataset: ds}\n",
    );
    let t = text(&s.grist(&["validate", "m.yaml"]));
    assert!(t.contains("too short") && t.contains("m.yaml:8"), "{t}");
    s.write(
        "m.yaml",
        "name: t\nworkdir: w\nstages:\n  - {id: docs, type: read_jsonl, path: in}\n  \
         - {id: mix, type: mix, inputs: [docs], path: out, seq_len: 8, sources: {a: {dataset: ds}}}\n",
    );
    let t = text(&s.grist(&["validate", "m.yaml"]));
    assert!(t.contains("reads files, not rows"), "{t}");
}

/// Killed in each phase (encode, merge, pack), a re-run gives the uninterrupted output.
#[test]
fn killed_tokenize_and_mix_runs_resume_to_the_same_bytes() {
    let mix = "    seq_len: 255\n    total_tokens: 100000\n    sources:\n      \
               web: {dataset: tokens/web}\n      books: {dataset: tokens/books}\n";
    let s = Scratch::new();
    tokens_pipeline(&s, mix);
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let files = [
        "tokens/web.bin",
        "tokens/web.idx",
        "tokens/books.idx",
        "mix/train.bin",
        "mix/train.idx",
        "mix/mix.json",
    ];
    let expected: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(s.path(f)).unwrap())
        .collect();
    // Markers: 2 source stream tasks, 2 encode, 2 merge, 1 pack.
    for point in ["commit:3", "marker:4", "commit:5", "marker:6", "commit:7"] {
        let k = Scratch::new();
        tokens_pipeline(&k, mix);
        kill_at(&k, &["run", "p.yaml", "--workers", "1"], point);
        assert_ok(&k.grist(&["run", "p.yaml"]));
        for (f, e) in files.iter().zip(&expected) {
            assert!(
                &std::fs::read(k.path(f)).unwrap() == e,
                "{f} differs after a kill at {point}"
            );
        }
    }
}

#[test]
fn tokenizer_eval_and_inspect_report_on_token_files() {
    let s = Scratch::new();
    let tok = fixture("tokenizer_c4_bpe.json");
    let books = shared_data().join("tinyshakespeare/input.txt");
    let out = s.grist(&[
        "tokenizer",
        "eval",
        tok.to_str().unwrap(),
        "--input",
        books.to_str().unwrap(),
        "--json",
    ]);
    assert_ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &rows[0];
    let (bytes, tokens) = (r["bytes"].as_f64().unwrap(), r["tokens"].as_f64().unwrap());
    assert_eq!(r["bytes_per_token"].as_f64().unwrap(), bytes / tokens);
    assert!(r["tokens_per_word"].as_f64().unwrap() > 1.0);
    assert_eq!(r["vocab_size"], 2048);

    encode(&s, &tok, books.to_str().unwrap(), "t", &[]);
    let out = s.grist(&[
        "inspect",
        "t/tokens.idx",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--rows",
        "1",
    ]);
    assert_ok(&out);
    let t = text(&out);
    assert!(
        t.contains("dtype uint16") && t.contains("First Citizen"),
        "{t}"
    );
}

/// `--byte-budget` trains on a seeded sample of about that many bytes; the rest is accounted
/// for as `outside_byte_budget`. Unigram and WordPiece train and encode too.
#[test]
fn byte_budget_samples_and_other_models_train() {
    let s = Scratch::new();
    let c4 = c4_file();
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "tokenizer",
            "train",
            "--input",
            c4.to_str().unwrap(),
            "--output",
            out,
            "--vocab-size",
            "1000",
        ];
        args.extend_from_slice(extra);
        assert_ok(&s.grist(&args));
    };
    train("a.json", &["--byte-budget", "600000", "--seed", "3"]);
    train("b.json", &["--byte-budget", "600000", "--seed", "3"]);
    assert_eq!(
        std::fs::read(s.path("a.json")).unwrap(),
        std::fs::read(s.path("b.json")).unwrap()
    );
    let st = stats(&s.path("a.json.work"));
    let t = &st["train"];
    let (kept, total) = (
        t["bytes_kept"].as_f64().unwrap(),
        t["bytes_in"].as_f64().unwrap(),
    );
    assert!(
        total > 1_000_000.0 && (kept - 600_000.0).abs() < 120_000.0,
        "{kept} of {total}"
    );
    assert_eq!(
        t["rows_in"].as_u64().unwrap(),
        t["rows_kept"].as_u64().unwrap() + t["rejected"]["outside_byte_budget"].as_u64().unwrap()
    );
    for model in ["unigram", "wordpiece"] {
        let out = format!("{model}.json");
        train(&out, &["--model", model]);
        let tok = json_file(&s.path(&out));
        assert_eq!(tok["model"]["type"].as_str().unwrap().to_lowercase(), model);
        encode(
            &s,
            &s.path(&out),
            c4.to_str().unwrap(),
            &format!("{model}_tokens"),
            &[],
        );
        let ds = Dataset::open(&s.path(&format!("{model}_tokens/tokens"))).unwrap();
        assert_eq!(ds.num_documents(), 800);
        let eval = s.grist(&[
            "tokenizer",
            "eval",
            &out,
            "a.json",
            "--input",
            c4.to_str().unwrap(),
        ]);
        assert_ok(&eval);
        assert!(text(&eval).contains("bytes/token"), "{}", text(&eval));
    }
}

/// A document that is one 2 MB word (and an empty one) neither hangs nor loses rows.
#[test]
fn huge_single_word_documents_encode_in_linear_time() {
    let s = Scratch::new();
    let word = "ab".repeat(1 << 20);
    s.write(
        "in/docs.jsonl",
        format!("{{\"text\":\"{word}\"}}\n{{\"text\":\"\"}}\n{{\"text\":\"short one\"}}\n"),
    );
    let tok = fixture("tokenizer_c4_bpe.json");
    encode(&s, &tok, "in/docs.jsonl", "t", &[]);
    let ds = Dataset::open(&s.path("t/tokens")).unwrap();
    assert_eq!(ds.num_documents(), 2);
    let st = stats(&s.path("t.work"));
    assert_eq!(st["tokenize"]["rejected"]["empty_text"], 1);
    let reference = grist::tokens::encoder::load_tokenizer(&tok).unwrap();
    let expected = reference.encode_fast(word.as_str(), false).unwrap();
    assert_eq!(
        &ds.sequence(0)[..ds.sequence(0).len() - 1],
        expected.get_ids()
    );
}

/// The README's main job: curated web + WikiText-2 + tinyshakespeare → tokenizer → tokens → mix.
#[test]
fn tokenize_mix_pipeline_runs_on_the_shared_data() {
    let s = Scratch::new();
    repo_pipeline(&s, "tokenize-mix");
    // As the README runs it.
    let out = s.grist(&["run", "tokenize-mix.yaml", "--report"]);
    assert_ok(&out);
    assert!(text(&out).contains("report: runs/tokenize-mix/report.html"));
    let tok = json_file(&s.path("runs/tokenize-mix/tokenizer.json"));
    assert_eq!(tok["model"]["vocab"].as_object().unwrap().len(), 8192);
    let st = stats(&s.path("runs/tokenize-mix"));
    assert_eq!(st["tokens"]["rows_in"], st["tokenizer"]["rows_in"]);
    let m = json_file(&s.path("runs/tokenize-mix/mix/mix.json"));
    for (name, share) in [("web", 0.5), ("wiki", 0.3), ("books", 0.2)] {
        let realised = m["sources"][name]["train"]["realised_share"]
            .as_f64()
            .unwrap();
        assert!(
            (realised - share).abs() / share < 0.005,
            "{name}: {realised}"
        );
        let ds = Dataset::open(&s.path(&format!("runs/tokenize-mix/tokens/{name}"))).unwrap();
        assert_eq!(
            ds.total_tokens(),
            m["sources"][name]["tokens"].as_u64().unwrap()
        );
        // The README: at most 4 epochs of each source.
        let epochs = m["sources"][name]["train"]["epochs"].as_f64().unwrap();
        assert!(epochs <= 4.0, "{name}: {epochs} epochs");
    }
    // The README: 1.5 M training tokens.
    assert_eq!(m["train"]["total_tokens_target"], 1_500_000);
    let selected: u64 = ["web", "wiki", "books"]
        .iter()
        .map(|n| {
            m["sources"][n]["train"]["selected_tokens"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert!(
        (selected as f64 - 1.5e6).abs() / 1.5e6 < 0.005,
        "{selected} tokens selected"
    );
    // The report's tokens section: vocabulary, tokens per source, target vs realised shares.
    let doc = crate::report::report(&s, "runs/tokenize-mix");
    crate::report::check(
        &doc,
        &s.path("runs/tokenize-mix"),
        Some(&s.path("runs/tokenize-mix/rejects")),
    );
    let root = doc.root_element();
    let select = |q: &str| {
        let q = scraper::Selector::parse(q).unwrap();
        root.select(&q).collect::<Vec<_>>()
    };
    let vocab = select("#tokens p[data-tokenizer=\"tokenizer\"]");
    assert_eq!(vocab[0].value().attr("data-vocab-size"), Some("8192"));
    for name in ["web", "wiki", "books"] {
        let row = select(&format!(
            "#tokens table[data-stage=\"tokens\"] tr[data-source=\"{name}\"]"
        ));
        let tokens: f64 = row[0].value().attr("data-tokens").unwrap().parse().unwrap();
        assert_eq!(
            tokens as u64,
            m["sources"][name]["tokens"].as_u64().unwrap(),
            "{name}"
        );
        let row = select(&format!(
            "#tokens table[data-stage=\"mix\"] tr[data-source=\"{name}\"]"
        ));
        let realised: f64 = row[0]
            .value()
            .attr("data-realised-share")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            realised,
            m["sources"][name]["train"]["realised_share"]
                .as_f64()
                .unwrap()
        );
    }
    let train = Dataset::open(&s.path("runs/tokenize-mix/mix/train")).unwrap();
    assert!(train.num_documents() > 1000);
    for d in 0..train.num_documents() {
        let n: i64 = train
            .document_sequences(d)
            .map(|q| train.length(q) as i64)
            .sum();
        assert_eq!(n, 1025);
    }
}

/// Sources of different dtypes (uint16 and int32) mix into an int32 dataset with the same ids.
#[test]
fn mix_widens_uint16_sources_to_int32() {
    use grist::tokens::megatron::{DatasetWriter, Dtype};
    let s = Scratch::new();
    let mut small = DatasetWriter::create(&s.path("small"), Dtype::U16).unwrap();
    let mut big = DatasetWriter::create(&s.path("big"), Dtype::I32).unwrap();
    for d in 0..50u32 {
        small
            .add_document(&(0..20).map(|i| d * 100 + i).collect::<Vec<_>>())
            .unwrap();
        big.add_document(&(0..20).map(|i| 70_000 + d * 100 + i).collect::<Vec<_>>())
            .unwrap();
    }
    small.finish().unwrap();
    big.finish().unwrap();
    s.write(
        "m.yaml",
        "name: t\nworkdir: w\nstages:\n  - id: mix\n    type: mix\n    path: out\n    seq_len: 9\n    \
         packing: concat\n    validation_fraction: 0\n    max_epochs: 1\n    \
         sources:\n      small: {dataset: small}\n      big: {dataset: big}\n",
    );
    assert_ok(&s.grist(&["run", "m.yaml"]));
    let out = Dataset::open(&s.path("out/train")).unwrap();
    assert_eq!(out.dtype(), Dtype::I32);
    assert_eq!(out.total_tokens(), 2000);
    let mut ids: Vec<u32> = (0..out.num_sequences())
        .flat_map(|q| out.sequence(q))
        .collect();
    ids.sort_unstable();
    let mut expected: Vec<u32> = (0..50u32)
        .flat_map(|d| (0..20).flat_map(move |i| [d * 100 + i, 70_000 + d * 100 + i]))
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "every token once, ids kept");
}
