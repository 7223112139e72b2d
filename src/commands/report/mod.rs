//! `grist report`: one self-contained HTML page showing what a run did to the data, from what
//! the run left in its workdir — the stats files (counts, reasons, fixed-bin histograms, samples
//! of kept and dropped rows), `run.json` (the pipeline, times, phases), and the small files
//! stages write (`mix.json`, the tokenizer, the trainer's `metrics.jsonl`). The data itself is
//! never read again, so a report of a billion-row run renders as fast as one of a thousand.

mod html;
mod sections;
mod svg;

use std::path::{Path, PathBuf};

use crate::engine::runlog::RunRecord;
use crate::engine::stats::StageReport;
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic;

/// Everything a report shows, loaded from a workdir.
pub struct RunData {
    pub workdir: PathBuf,
    pub record: Option<RunRecord>,
    /// Stats files, in pipeline order when `run.json` says it.
    pub stages: Vec<StageReport>,
    /// `(stage id, mix.json)` of each `mix` stage whose file exists.
    pub mixes: Vec<(String, serde_json::Value)>,
    /// `(stage id, path, vocabulary size)` of each trained tokenizer.
    pub tokenizers: Vec<(String, PathBuf, Option<usize>)>,
    /// `(stage id, metrics.jsonl records, summary.json)` of each `train` stage.
    pub training: Vec<Training>,
}

pub struct Training {
    pub stage: String,
    pub metrics: Vec<serde_json::Value>,
    pub summary: Option<serde_json::Value>,
}

/// The workdir a target names: a pipeline file's `workdir`, or the directory itself.
pub fn workdir_of(target: &Path) -> Result<PathBuf> {
    if target.is_file() {
        let loaded = crate::config::load(target)?;
        return Ok(loaded.spec.workdir);
    }
    if target.join("stats").is_dir() || target.join(crate::engine::runlog::RUN_FILE).is_file() {
        return Ok(target.to_path_buf());
    }
    Err(GristError::Usage(format!(
        "{} is neither a pipeline file nor a run's workdir (no stats/ or run.json in it); \
         run the pipeline first",
        target.display()
    )))
}

/// Loads what the run in `workdir` left.
pub fn load(workdir: &Path) -> Result<RunData> {
    let record = RunRecord::read(workdir)?;
    let stats_dir = workdir.join("stats");
    let mut stages = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&stats_dir) {
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).at(&path)?;
            let report: StageReport = serde_json::from_slice(&bytes)
                .map_err(|e| GristError::data(&path, format!("not a stage stats file: {e}")))?;
            stages.push(report);
        }
    }
    if let Some(r) = &record {
        let order = |id: &str| {
            r.stages
                .iter()
                .position(|s| s.id == id)
                .unwrap_or(usize::MAX)
        };
        stages.sort_by_key(|s| order(&s.stage));
        // A stats file of a stage no longer in the pipeline belongs to an older run.
        stages.retain(|s| order(&s.stage) != usize::MAX);
    }
    let mut data = RunData {
        workdir: workdir.to_path_buf(),
        record,
        stages,
        mixes: Vec::new(),
        tokenizers: Vec::new(),
        training: Vec::new(),
    };
    load_stage_files(&mut data);
    Ok(data)
}

/// A path from the pipeline, which is relative to where grist ran.
fn resolve(record: &RunRecord, path: &str) -> PathBuf {
    let p = Path::new(path);
    let from_run = record.cwd.join(p);
    if p.is_absolute() || from_run.exists() {
        from_run
    } else {
        // The run's directory moved (a copied workdir): try where the report runs.
        p.to_path_buf()
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The small files stages write that the report shows (missing files are simply not shown).
fn load_stage_files(data: &mut RunData) {
    let Some(record) = &data.record else { return };
    for s in &record.stages {
        let str_of = |key: &str| s.config.get(key).and_then(|v| v.as_str());
        match s.type_name.as_str() {
            "mix" => {
                if let Some(path) = str_of("path")
                    && let Some(mix) = read_json(&resolve(record, path).join("mix.json"))
                {
                    data.mixes.push((s.id.clone(), mix));
                }
            }
            "tokenizer_train" => {
                if let Some(path) = str_of("path") {
                    let path = resolve(record, path);
                    let vocab = tokenizers::Tokenizer::from_file(&path)
                        .ok()
                        .map(|t| t.get_vocab_size(true));
                    data.tokenizers.push((s.id.clone(), path, vocab));
                }
            }
            "train" => {
                if let Some(out) = str_of("output") {
                    let dir = resolve(record, out);
                    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
                        .map(|t| {
                            t.lines()
                                .filter_map(|l| serde_json::from_str(l).ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    data.training.push(Training {
                        stage: s.id.clone(),
                        metrics,
                        summary: read_json(&dir.join("summary.json")),
                    });
                }
            }
            _ => {}
        }
    }
}

/// The report's HTML.
pub fn render(data: &RunData) -> String {
    sections::render(data)
}

/// Writes the report of `target` (a pipeline file or a workdir) to `output`, by default
/// `<workdir>/report.html`; returns the path written.
pub fn write(target: &Path, output: Option<&Path>) -> Result<PathBuf> {
    let workdir = workdir_of(target)?;
    let data = load(&workdir)?;
    if data.stages.is_empty() && data.record.is_none() {
        return Err(GristError::Usage(format!(
            "{} holds no stats yet: run the pipeline first",
            workdir.display()
        )));
    }
    let html = render(&data);
    let out = output.map_or_else(|| workdir.join("report.html"), Path::to_path_buf);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    atomic::write(&out, html.as_bytes())?;
    Ok(out)
}
