//! Running pipelines: the bundled example, outputs, stats, task splitting, plan and inspect.

use crate::util::*;

/// The example from the README, with its paths moved into a scratch directory.
fn example(s: &Scratch) -> String {
    let yaml = std::fs::read_to_string(repo().join("pipelines/examples/web-sql.yaml")).unwrap();
    let yaml = yaml.replace("../shared/data", shared_data().to_str().unwrap());
    s.write("web-sql.yaml", yaml);
    "web-sql.yaml".into()
}

#[test]
fn example_pipeline_keeps_every_column_and_pyarrow_reads_it() {
    let s = Scratch::new();
    let file = example(&s);
    let out = s.grist(&["run", &file]);
    assert_ok(&out);
    let rows = read_rows(&s.path("runs/web-sql/out/c4"));
    assert!(
        rows.len() > 100 && rows.len() < 800,
        "{} rows kept",
        rows.len()
    );
    let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text", "timestamp", "url", "id", "n_chars"]);
    let ccnet = read_rows(&s.path("runs/web-sql/out/ccnet"));
    for key in ["added", "created", "id", "metadata", "source", "text"] {
        assert!(
            ccnet[0].get(key).is_some(),
            "ccnet output lacks `{key}`: {}",
            ccnet[0]
        );
    }
    let st = stats(&s.path("runs/web-sql"));
    assert_eq!(st["c4"]["rows_in"], 800);
    assert_eq!(
        st["c4_out"]["rows_in"].as_u64().unwrap() as usize,
        rows.len()
    );
    assert_eq!(
        st["c4_long"]["rejected"]["sql_filter"].as_u64().unwrap() as usize,
        800 - rows.len()
    );
    let rejected = read_rows(&s.path("runs/web-sql/rejects/c4_long"));
    assert_eq!(rejected.len(), 800 - rows.len());
    assert_eq!(rejected[0]["reason"], "sql_filter");
    assert_eq!(rejected[0]["stage"], "c4_long");

    // The files are plain Parquet: pyarrow reads them with every column.
    let script = "import sys, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1])\n\
        assert t.column_names == ['text', 'timestamp', 'url', 'id', 'n_chars'], t.column_names\n\
        print(t.num_rows)\n";
    python_module("pyarrow", "pyarrow");
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            s.path("runs/web-sql/out/c4").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "pyarrow could not read the output: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        rows.len().to_string()
    );
}

/// Every pipeline under `pipelines/` validates (its paths moved to the shared data, the
/// SmolLM2 model fetched for the generating ones).
#[test]
fn every_bundled_pipeline_validates() {
    let s = Scratch::new();
    let gguf = smollm2_gguf();
    std::fs::create_dir_all(s.path("runs/models")).unwrap();
    std::os::unix::fs::symlink(&gguf, s.path("runs/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        .unwrap();
    // Default model paths (`langid`'s lid.176.ftz) are relative to the repository root.
    std::os::unix::fs::symlink(repo().join("filters"), s.path("filters")).unwrap();
    let mut files = Vec::new();
    for dir in ["pipelines", "pipelines/examples"] {
        for e in std::fs::read_dir(repo().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    for f in files {
        let yaml = std::fs::read_to_string(&f)
            .unwrap()
            .replace("../shared/data", shared_data().to_str().unwrap());
        let name = f.file_name().unwrap().to_str().unwrap();
        s.write(name, yaml);
        let out = s.grist(&["validate", name]);
        assert!(out.status.success(), "{}: {}", f.display(), text(&out));
    }
}

fn sharded_pipeline(s: &Scratch, shards: usize) {
    s.c4_parquet_shards("in", shards);
    s.write(
        "p.yaml",
        "name: sharded\nworkdir: work\nbatch_size: 40\ninput: {parquet: in/*.parquet}\nstages:\n  \
         - {id: f, type: sql, query: \"SELECT *, length(text) AS n FROM docs WHERE length(text) > 700\"}\n  \
         - {id: out, type: write_parquet, path: out, rejects: rejects}\n",
    );
}

#[test]
fn separate_task_processes_equal_one_local_run() {
    let local = Scratch::new();
    sharded_pipeline(&local, 7);
    assert_ok(&local.grist(&["run", "p.yaml"]));
    let split = Scratch::new();
    sharded_pipeline(&split, 7);
    for i in 0..3 {
        let out = split.grist(&[
            "run",
            "p.yaml",
            "--phase",
            "stream",
            "--task",
            &i.to_string(),
            "--tasks",
            "3",
        ]);
        assert_ok(&out);
    }
    assert_eq!(
        file_names(&local.path("out")),
        file_names(&split.path("out"))
    );
    assert_eq!(read_rows(&local.path("out")), read_rows(&split.path("out")));
    assert_eq!(
        read_rows(&local.path("rejects/f")),
        read_rows(&split.path("rejects/f"))
    );
    let (a, b) = (stats(&local.path("work")), stats(&split.path("work")));
    for stage in ["input", "f", "out"] {
        assert_eq!(a[stage]["rows_kept"], b[stage]["rows_kept"]);
        assert_eq!(b[stage]["tasks_done"], 7);
    }
}

#[test]
fn slurm_environment_selects_the_task() {
    let s = Scratch::new();
    sharded_pipeline(&s, 4);
    let out = s.grist_env(
        &["run", "p.yaml"],
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
    );
    assert_ok(&out);
    assert_eq!(
        file_names(&s.path("out")),
        ["input-00001.parquet", "input-00003.parquet"]
    );
    let out = s.grist(&["run", "p.yaml", "--task", "2", "--tasks", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn plan_lists_tasks_and_emits_slurm_arrays() {
    let s = Scratch::new();
    sharded_pipeline(&s, 3);
    let out = s.grist(&["plan", "p.yaml"]);
    assert_ok(&out);
    assert!(
        text(&out).contains("phase `stream`: 3 task(s); stages input, f, out"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("out/input-00002.parquet"));
    let out = s.grist(&["plan", "p.yaml", "--emit", "slurm"]);
    assert_ok(&out);
    let t = text(&out);
    assert!(
        t.contains("#SBATCH --array=0-2") && t.contains("grist run p.yaml --phase stream"),
        "{t}"
    );
    let out = s.grist(&["plan", "p.yaml", "--emit", "json"]);
    let phases: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(phases[0]["tasks"].as_array().unwrap().len(), 3);
}

#[test]
fn inspect_shows_schema_counts_and_rows() {
    let s = Scratch::new();
    sharded_pipeline(&s, 2);
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let out = s.grist(&["inspect", "out/input-00000.parquet"]);
    assert_ok(&out);
    let t = text(&out);
    assert!(
        t.contains("format: parquet") && t.contains("n: Int32") && t.contains("compression: ZSTD"),
        "{t}"
    );
    let out = s.grist(&["inspect", "out"]);
    assert!(text(&out).contains("rows in 2 file(s)"), "{}", text(&out));
}

#[test]
fn jsonl_output_round_trips() {
    let s = Scratch::new();
    s.write(
        "in/a.jsonl",
        "{\"text\": \"one\", \"n\": 1}\n\n{\"text\": \"two\", \"n\": 2}\n",
    );
    s.write("p.yaml", "name: j\ninput: {jsonl: in}\nstages:\n  - {id: out, type: write_jsonl, path: out, compression: gzip}\n");
    assert_ok(&s.grist(&["run", "p.yaml"]));
    let out = s.grist(&["inspect", "out/input-00000.jsonl.gz"]);
    assert!(text(&out).contains("2 rows"), "{}", text(&out));
}

#[test]
fn sources_merge_into_one_writer_and_a_stage_feeds_two() {
    let s = Scratch::new();
    s.write("a/1.jsonl", "{\"text\": \"short\", \"url\": \"a1\"}\n{\"text\": \"a rather longer document here\", \"url\": \"a2\"}\n");
    s.write("a/2.jsonl", "{\"text\": \"tiny\", \"url\": \"a3\"}\n");
    s.write("b/1.jsonl", "{\"text\": \"from b\", \"url\": \"b1\"}\n");
    s.write(
        "p.yaml",
        "name: dag\nworkdir: work\nstages:\n  \
         - {id: a, type: read_jsonl, path: a}\n  \
         - {id: b, type: read_jsonl, path: b}\n  \
         - {id: all, type: write_parquet, path: out/all, inputs: [a, b]}\n  \
         - {id: short, type: sql, query: 'SELECT * FROM docs WHERE length(text) < 10', inputs: a}\n  \
         - {id: shorts, type: write_jsonl, path: out/short, rejects: out/rejects}\n",
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    assert_eq!(
        file_names(&s.path("out/all")),
        ["a-00000.parquet", "a-00001.parquet", "b-00000.parquet"]
    );
    assert_eq!(read_rows(&s.path("out/all")).len(), 4);
    assert_eq!(
        file_names(&s.path("out/short")),
        ["a-00000.jsonl", "a-00001.jsonl"]
    );
    assert_eq!(file_names(&s.path("out/rejects/short")), ["a-00000.jsonl"]);
    let st = stats(&s.path("work"));
    assert_eq!(st["all"]["rows_in"], 4);
    assert_eq!(st["shorts"]["rows_in"], 2);
    assert_eq!(st["short"]["rejected"]["sql_filter"], 1);
}

#[test]
fn two_writers_on_the_same_files_are_refused() {
    let s = Scratch::new();
    s.write("a/1.jsonl", "{\"text\": \"x\"}\n");
    s.write(
        "p.yaml",
        "name: dup\ninput: {jsonl: a}\nstages:\n  - {id: w1, type: write_parquet, path: out}\n  - {id: w2, type: write_parquet, path: out, inputs: input}\n",
    );
    let out = s.grist(&["run", "p.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("would both write out/input-00000.parquet"),
        "{}",
        text(&out)
    );
}

#[test]
fn example_ccnet_branch_filters_on_nested_metadata() {
    let s = Scratch::new();
    let file = example(&s);
    assert_ok(&s.grist(&["run", &file]));
    let st = stats(&s.path("runs/web-sql"));
    assert_eq!(st["ccnet"]["rows_in"], 20);
    // 11 of the 20 CCNet documents have language_score >= 0.95 and perplexity < 310.
    assert_eq!(st["ccnet_clean"]["rows_kept"], 11);
    assert_eq!(
        read_rows(&s.path("runs/web-sql/rejects/ccnet_clean")).len(),
        9
    );
}

/// `kubernetes-validate` 1.37.0 in its own venv, fetched from PyPI by
/// tests/fetch_kubernetes_validate.sh (`.ci/run` fetches it first), or fails saying why.
fn kubernetes_validate() -> std::path::PathBuf {
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/fetch_kubernetes_validate.sh"))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "cannot install kubernetes-validate from PyPI: {}",
        text(&out)
    );
    std::path::PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
}

#[test]
fn kubernetes_indexed_jobs_validate_and_pods_pick_their_task() {
    let s = Scratch::new();
    repo_pipeline(&s, "fineweb-en");
    let out = s.grist(&[
        "plan",
        "fineweb-en.yaml",
        "--emit",
        "k8s",
        "--parallelism",
        "2",
    ]);
    assert_ok(&out);
    let manifests = s.write("jobs.yaml", &out.stdout);
    // Against the Kubernetes OpenAPI schema (strict: no unknown field), oldest and newest
    // release with Indexed Jobs' per-index backoff.
    let validator = kubernetes_validate();
    for version in ["1.29.0", "1.37.0"] {
        let v = std::process::Command::new(&validator)
            .args(["--strict", "--quiet", "-k", version])
            .arg(&manifests)
            .output()
            .unwrap();
        assert!(v.status.success(), "Kubernetes {version}: {}", text(&v));
    }
    // The schema leaves enums and our contract to us: check those by hand against the plan.
    let plan = s.grist(&["plan", "fineweb-en.yaml", "--emit", "json"]);
    let phases: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let phases = phases.as_array().unwrap();
    assert_eq!(docs.len(), phases.len());
    for (doc, phase) in docs.iter().zip(phases) {
        let name = phase["name"].as_str().unwrap();
        let tasks = phase["tasks"].as_array().unwrap().len() as i64;
        assert_eq!(doc["kind"].as_str(), Some("Job"));
        let spec = &doc["spec"];
        assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
        assert_eq!(spec["completions"].as_i64(), Some(tasks), "{name}");
        assert_eq!(spec["parallelism"].as_i64(), Some(tasks.min(2)), "{name}");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
        let command: Vec<&str> = pod["containers"][0]["command"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let tasks = tasks.to_string();
        assert_eq!(
            &command[..7],
            [
                "grist",
                "run",
                "fineweb-en.yaml",
                "--phase",
                name,
                "--tasks",
                tasks.as_str()
            ]
        );
    }
    // A pod runs the task of its completion index.
    let s = Scratch::new();
    sharded_pipeline(&s, 4);
    let out = s.grist_env(
        &["run", "p.yaml", "--phase", "stream", "--tasks", "4"],
        &[("JOB_COMPLETION_INDEX", "1")],
    );
    assert_ok(&out);
    assert_eq!(file_names(&s.path("out")), ["input-00001.parquet"]);
    let out = s.grist(&["run", "p.yaml", "--phase", "stream", "--tasks", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("JOB_COMPLETION_INDEX"),
        "{}",
        text(&out)
    );
}
