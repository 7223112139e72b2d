//! Runs one task: a shard streamed through the stages of its phase, batch by batch, or one task of
//! a barrier stage's phase. Files are written under temporary names and renamed at the end; the
//! completion marker is written last, so a task killed anywhere is simply run again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::observe;
use super::plan::{Pipeline, Plan, Task, TaskKind, barrier_input_path, task_file};
use super::stats::StageStats;
use crate::error::{GristError, Result};
use crate::io::atomic::{self, PendingFile};
use crate::io::parquet::{ParquetFileWriter, WriteOptions};
use crate::stages::{
    BarrierTask, Filtered, Rejected, SinkWriter, Stage, TransformTask, text_bytes,
};
use crate::util::hook::checkpoint;

/// What a completed task leaves in `workdir/markers/<phase>/<task>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub task: String,
    pub fingerprint: String,
    pub input: PathBuf,
    pub outputs: Vec<PathBuf>,
    pub stats: BTreeMap<String, StageStats>,
}

pub fn marker_path(workdir: &Path, phase: &str, task: &str) -> PathBuf {
    workdir
        .join("markers")
        .join(phase)
        .join(format!("{task}.json"))
}

/// The marker of `task` if it is complete for the current fingerprint and its outputs exist.
pub fn completed(workdir: &Path, phase: &str, task: &Task) -> Option<Marker> {
    let text = std::fs::read_to_string(marker_path(workdir, phase, &task.name)).ok()?;
    let marker: Marker = serde_json::from_str(&text).ok()?;
    (marker.fingerprint == task.fingerprint && marker.outputs.iter().all(|o| o.exists()))
        .then_some(marker)
}

/// Rows read by the stream tasks of this process so far (for progress bars).
static ROWS_STREAMED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn rows_streamed() -> u64 {
    ROWS_STREAMED.load(std::sync::atomic::Ordering::Relaxed)
}

pub enum Outcome {
    Skipped(Marker),
    Ran(Marker),
}

pub fn run(p: &Pipeline, plan: &Plan, phase: &str, task: &Task) -> Result<Outcome> {
    let workdir = p.workdir();
    if let Some(marker) = completed(workdir, phase, task) {
        return Ok(Outcome::Skipped(marker));
    }
    let marker_file = marker_path(workdir, phase, &task.name);
    match std::fs::remove_file(&marker_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(GristError::io(&marker_file, e)),
    }
    let (outputs, stats) = match &task.kind {
        TaskKind::Stream { .. } => {
            clear_previous_outputs(p, task);
            let mut runner = Runner::new(p, plan, task)?;
            let outputs = match runner.stream() {
                Ok(()) => runner.finish()?,
                Err(e) => {
                    runner.abandon();
                    return Err(e);
                }
            };
            (outputs, runner.stats_by_id())
        }
        &TaskKind::Barrier { node, phase, index } => {
            let Stage::Barrier(b) = &p.nodes[node].stage else {
                unreachable!("barrier tasks run barrier stages")
            };
            let planned = &plan.barriers[&node];
            let id = &p.nodes[node].id;
            let started = Instant::now();
            let mut outcome = b
                .run_task(&BarrierTask {
                    stage_id: id,
                    phase,
                    index,
                    dir: &planned.dir,
                    inputs: &planned.inputs,
                    batch_size: p.spec.batch_size,
                })
                .map_err(|e| e.in_stage(id))?;
            outcome.stats.seconds += started.elapsed().as_secs_f64();
            (
                outcome.outputs,
                BTreeMap::from([(id.clone(), outcome.stats)]),
            )
        }
    };
    checkpoint("commit");
    let marker = Marker {
        task: task.name.clone(),
        fingerprint: task.fingerprint.clone(),
        input: task.input.clone(),
        outputs,
        stats,
    };
    let json = serde_json::to_vec_pretty(&marker).expect("markers serialize");
    atomic::write(&marker_file, &json)?;
    checkpoint("marker");
    Ok(Outcome::Ran(marker))
}

enum State {
    Source,
    Transform(Box<dyn TransformTask>),
    Sink(Box<dyn SinkWriter>, PendingFile),
    /// A barrier downstream: the rows reaching it are stored, one file per input stage.
    Store(Vec<(usize, ParquetFileWriter, PendingFile)>),
    /// Not reached by this task.
    Idle,
}

struct Runner<'a> {
    p: &'a Pipeline,
    task: &'a Task,
    states: Vec<State>,
    stats: Vec<StageStats>,
    /// For each node, the rejects directories of the sinks downstream of it.
    rejects_dirs: Vec<Vec<(PathBuf, usize)>>,
    /// Open rejects files, by (directory, node).
    rejects: HashMap<(PathBuf, usize), (Box<dyn SinkWriter>, PendingFile)>,
    reader: Option<Box<dyn crate::stages::SourceReader>>,
}

/// How barrier input is stored: fast to write, read back once or twice.
fn store_options() -> WriteOptions {
    WriteOptions {
        zstd_level: 1,
        row_group_rows: 1 << 16,
        row_group_bytes: 64 << 20,
    }
}

impl<'a> Runner<'a> {
    fn new(p: &'a Pipeline, plan: &Plan, task: &'a Task) -> Result<Self> {
        let TaskKind::Stream {
            root,
            shard,
            barrier_shard,
        } = &task.kind
        else {
            unreachable!("a runner streams")
        };
        let n = p.nodes.len();
        let mut states: Vec<State> = (0..n).map(|_| State::Idle).collect();
        let mut schemas: Vec<Option<SchemaRef>> = vec![None; n];
        let mut reader = None;
        let built = (|| -> Result<()> {
            for &i in &task.reach {
                let node = &p.nodes[i];
                // Inputs not reached by this task send nothing; the first reached one sets the schema.
                let input = node.inputs.iter().find_map(|&j| schemas[j].clone());
                match &node.stage {
                    Stage::Source(source) => {
                        let r = source.open(shard, p.spec.batch_size)?;
                        schemas[i] = Some(r.schema());
                        reader = Some(r);
                        states[i] = State::Source;
                    }
                    Stage::Barrier(b) if i == *root => {
                        let opts = crate::io::parquet::ReadOptions::default();
                        let r = crate::io::parquet::open(shard, &opts, p.spec.batch_size)?;
                        let k = barrier_shard.expect("a barrier root streams a barrier shard");
                        let t = b
                            .start_output(
                                &plan.barriers[&i].dir,
                                k,
                                crate::stages::SourceReader::schema(&r),
                            )
                            .map_err(|e| e.in_stage(&node.id))?;
                        schemas[i] = Some(t.output_schema());
                        reader = Some(Box::new(r));
                        states[i] = State::Transform(t);
                    }
                    Stage::Barrier(_) => {
                        let mut files = Vec::new();
                        for &j in node.inputs.iter().filter(|j| task.reach.contains(j)) {
                            let Some(schema) = schemas[j].clone() else {
                                continue;
                            };
                            let dest = barrier_input_path(p, i, j, &task.name);
                            let pending = PendingFile::new(dest)?;
                            let writer =
                                ParquetFileWriter::create(&pending.tmp, schema, &store_options())?;
                            files.push((j, writer, pending));
                        }
                        states[i] = State::Store(files);
                    }
                    Stage::Transform(t) => {
                        let input = input.expect("a transform in reach has a reached input");
                        let t = t.start(input).map_err(|e| e.in_stage(&node.id))?;
                        schemas[i] = Some(t.output_schema());
                        states[i] = State::Transform(t);
                    }
                    Stage::Sink(sink) => {
                        let input = input.expect("a sink in reach has a reached input");
                        let dest = task_file(sink.as_ref(), sink.output_dir(), &task.name);
                        let pending = PendingFile::new(dest)?;
                        let writer = sink.create(&pending.tmp, input.clone())?;
                        schemas[i] = Some(input);
                        states[i] = State::Sink(writer, pending);
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = built {
            abandon_all(states);
            return Err(e);
        }
        Ok(Runner {
            p,
            task,
            states,
            stats: vec![StageStats::default(); n],
            rejects_dirs: rejects_dirs(p, task),
            rejects: HashMap::new(),
            reader,
        })
    }

    fn rejects_file(&self, dir: &Path, sink: usize) -> PathBuf {
        rejects_file(self.p, self.task, dir, sink)
    }

    fn stream(&mut self) -> Result<()> {
        let TaskKind::Stream { root, shard, .. } = &self.task.kind else {
            unreachable!("a runner streams")
        };
        let (root, path) = (*root, shard.path.clone());
        let from_source = matches!(self.p.nodes[root].stage, Stage::Source(_));
        let mut reader = self.reader.take().expect("the source is opened");
        if from_source && let Ok(meta) = std::fs::metadata(&path) {
            self.stats[root].bytes_in = meta.len();
        }
        loop {
            let started = Instant::now();
            let Some(out) = reader.next_batch()? else {
                break;
            };
            if !from_source {
                // The barrier's own stored input: every row of it is read back.
                if out.rejected.as_ref().is_some_and(|r| r.num_rows() > 0) {
                    return Err(GristError::data(
                        &path,
                        "stored barrier input has unreadable rows",
                    ));
                }
                ROWS_STREAMED.fetch_add(
                    out.kept.num_rows() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.push(root, root, &out.kept)?;
                checkpoint("batch");
                continue;
            }
            self.stats[root].seconds += started.elapsed().as_secs_f64();
            let kept_rows = out.kept.num_rows() as u64;
            let rejected_rows = out.rejected.as_ref().map_or(0, |r| r.num_rows() as u64);
            self.stats[root].rows_in += kept_rows + rejected_rows;
            ROWS_STREAMED.fetch_add(
                kept_rows + rejected_rows,
                std::sync::atomic::Ordering::Relaxed,
            );
            self.account(root, out)?;
            checkpoint("batch");
        }
        Ok(())
    }

    /// Records `out` as the result of node `i` and sends the kept rows on.
    fn account(&mut self, i: usize, out: Filtered) -> Result<()> {
        let stats = &mut self.stats[i];
        stats.rows_kept += out.kept.num_rows() as u64;
        stats.bytes_kept += text_bytes(&out.kept);
        observe::sample_kept(stats, &out.kept);
        if matches!(self.p.nodes[i].stage, Stage::Source(_) | Stage::Sink(_)) {
            observe::record_lengths(stats, &out.kept);
        }
        if let Some(rejected) = out.rejected {
            for reason in rejected.reasons.iter() {
                stats.reject(reason.unwrap_or("unknown"), 1);
            }
            observe::sample_rejected(stats, &rejected);
            self.write_rejects(i, &rejected)?;
        }
        if out.kept.num_rows() > 0 {
            for o in self.p.nodes[i].outputs.clone() {
                self.push(i, o, &out.kept)?;
            }
        }
        Ok(())
    }

    /// Sends `batch`, kept by node `from`, to node `i`.
    fn push(&mut self, from: usize, i: usize, batch: &RecordBatch) -> Result<()> {
        if let State::Store(files) = &mut self.states[i] {
            if let Some((_, writer, _)) = files.iter_mut().find(|(j, _, _)| *j == from) {
                writer.write(batch)?;
            }
            return Ok(());
        }
        let rows = batch.num_rows() as u64;
        let bytes = text_bytes(batch);
        self.stats[i].rows_in += rows;
        self.stats[i].bytes_in += bytes;
        let started = Instant::now();
        let out = match &mut self.states[i] {
            State::Transform(t) => {
                let out = t
                    .process(batch.clone())
                    .map_err(|e| e.in_stage(&self.p.nodes[i].id))?;
                t.observe(&mut self.stats[i]);
                out
            }
            State::Sink(writer, _) => {
                writer.write(batch)?;
                Filtered::all_kept(batch.clone())
            }
            State::Source | State::Idle | State::Store(_) => return Ok(()),
        };
        self.stats[i].seconds += started.elapsed().as_secs_f64();
        self.account(i, out)
    }

    fn write_rejects(&mut self, i: usize, rejected: &Rejected) -> Result<()> {
        if self.rejects_dirs[i].is_empty() || rejected.num_rows() == 0 {
            return Ok(());
        }
        let batch = with_reject_columns(&self.p.nodes[i].id, rejected)?;
        for (dir, sink) in self.rejects_dirs[i].clone() {
            let key = (dir.clone(), i);
            if !self.rejects.contains_key(&key) {
                let Stage::Sink(s) = &self.p.nodes[sink].stage else {
                    unreachable!()
                };
                let pending = PendingFile::new(self.rejects_file(&dir, sink))?;
                let writer = s.create(&pending.tmp, batch.schema())?;
                self.rejects.insert(key.clone(), (writer, pending));
            }
            let (writer, _) = self.rejects.get_mut(&key).expect("inserted above");
            writer.write(&batch)?;
        }
        Ok(())
    }

    /// Closes every file and renames it into place; returns the committed paths.
    fn finish(&mut self) -> Result<Vec<PathBuf>> {
        let mut pending = Vec::new();
        for state in std::mem::take(&mut self.states) {
            match state {
                State::Sink(writer, file) => {
                    writer.finish()?;
                    pending.push(file);
                }
                State::Store(files) => {
                    for (_, writer, file) in files {
                        writer.finish()?;
                        pending.push(file);
                    }
                }
                _ => {}
            }
        }
        let mut rejects: Vec<_> = std::mem::take(&mut self.rejects).into_iter().collect();
        rejects.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, (writer, file)) in rejects {
            writer.finish()?;
            pending.push(file);
        }
        pending.into_iter().map(PendingFile::commit).collect()
    }

    fn abandon(&mut self) {
        abandon_all(std::mem::take(&mut self.states));
        for (_, (_, file)) in std::mem::take(&mut self.rejects) {
            file.abandon();
        }
    }

    fn stats_by_id(&self) -> BTreeMap<String, StageStats> {
        self.task
            .counted
            .iter()
            .map(|&i| (self.p.nodes[i].id.clone(), self.stats[i].clone()))
            .collect()
    }
}

fn abandon_all(states: Vec<State>) {
    for state in states {
        match state {
            State::Sink(_, file) => file.abandon(),
            State::Store(files) => files.into_iter().for_each(|(_, _, f)| f.abandon()),
            _ => {}
        }
    }
}

/// For each node, the directories its rejected rows go to: `<rejects>/<stage id>` of every sink
/// downstream of it that has `rejects`, with that sink's index (its format is used).
fn rejects_dirs(p: &Pipeline, task: &Task) -> Vec<Vec<(PathBuf, usize)>> {
    let mut dirs = vec![Vec::new(); p.nodes.len()];
    for &i in &task.reach {
        for j in super::plan::reachable(p, i) {
            let Stage::Sink(s) = &p.nodes[j].stage else {
                continue;
            };
            let Some(dir) = s.rejects_dir() else { continue };
            let dir = dir.join(&p.nodes[i].id);
            if !dirs[i].iter().any(|(d, _)| d == &dir) {
                dirs[i].push((dir, j));
            }
        }
    }
    dirs
}

fn rejects_file(p: &Pipeline, task: &Task, dir: &Path, sink: usize) -> PathBuf {
    let Stage::Sink(s) = &p.nodes[sink].stage else {
        unreachable!("rejects belong to sinks")
    };
    task_file(s.as_ref(), dir, &task.name)
}

/// Outputs of a task without a valid marker are not trusted: a previous attempt (another config,
/// other input, or killed) may have left files this one would not overwrite, such as a rejects
/// file for a stage that now rejects nothing, or an output that would outlive a failure now.
fn clear_previous_outputs(p: &Pipeline, task: &Task) {
    let rejects = rejects_dirs(p, task)
        .iter()
        .flatten()
        .map(|(dir, sink)| rejects_file(p, task, dir, *sink))
        .collect::<Vec<_>>();
    for file in task.outputs.iter().chain(&rejects) {
        let _ = std::fs::remove_file(file);
        if let (Some(dir), Some(name)) = (file.parent(), file.file_name()) {
            atomic::remove_stale_tmp(dir, &name.to_string_lossy());
        }
    }
}

/// Rejected rows with `stage` and `reason` columns added.
fn with_reject_columns(stage: &str, rejected: &Rejected) -> Result<RecordBatch> {
    let rows = &rejected.rows;
    let mut fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.retain(|f| f.name() != "stage" && f.name() != "reason");
    let mut columns: Vec<ArrayRef> = rows
        .schema()
        .fields()
        .iter()
        .zip(rows.columns())
        .filter(|(f, _)| f.name() != "stage" && f.name() != "reason")
        .map(|(_, c)| c.clone())
        .collect();
    fields.push(Field::new("stage", DataType::Utf8, false));
    fields.push(Field::new("reason", DataType::Utf8, false));
    columns.push(Arc::new(StringArray::from(vec![stage; rows.num_rows()])));
    columns.push(Arc::new(rejected.reasons.clone()));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Files earlier runs of this pipeline wrote that no task of `plan` writes now: outputs and
/// rejects of shards that were removed (or renumbered away), and barrier input stored for them.
/// Left in place they would be read as part of the output. Only names a task of this pipeline
/// could have written are considered: `<root id>-<index>.<ext>` in a writer's directories and
/// `<root id>-<index>.parquet` under the barriers' stored input, where a root is a stage that
/// starts stream tasks (a source, or a barrier passing rows on). Paths are compared in absolute,
/// normalised form, so `out` and `./out` are one directory.
pub fn stale_outputs(p: &Pipeline, plan: &Plan) -> Vec<PathBuf> {
    use crate::io::shards::absolute;
    let mut expected: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut roots: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for t in plan.phases.iter().flat_map(|ph| &ph.tasks) {
        expected.extend(t.outputs.iter().map(|o| absolute(o)));
        if let TaskKind::Stream { root, .. } = t.kind {
            roots.insert(p.nodes[root].id.as_str());
            for (dir, sink) in rejects_dirs(p, t).iter().flatten() {
                expected.insert(absolute(&rejects_file(p, t, dir, *sink)));
            }
        }
    }
    // Directories tasks write into, with the extension of their files.
    let mut dirs: Vec<(PathBuf, String)> = Vec::new();
    for node in &p.nodes {
        match &node.stage {
            Stage::Sink(s) => {
                let ext = s.extension().to_string();
                dirs.push((s.output_dir().to_path_buf(), ext.clone()));
                if let Some(r) = s.rejects_dir() {
                    for other in &p.nodes {
                        dirs.push((r.join(&other.id), ext.clone()));
                    }
                }
            }
            Stage::Barrier(_) => {
                let input = p.workdir().join("barriers").join(&node.id).join("input");
                for other in &p.nodes {
                    dirs.push((input.join(&other.id), "parquet".into()));
                }
            }
            _ => {}
        }
    }
    let task_name = |name: &str, ext: &str| {
        let Some((id, index)) = name
            .strip_suffix(ext)
            .and_then(|n| n.strip_suffix('.'))
            .and_then(|n| n.rsplit_once('-'))
        else {
            return false;
        };
        index.len() >= 5 && index.bytes().all(|b| b.is_ascii_digit()) && roots.contains(id)
    };
    let mut stale = Vec::new();
    for (dir, ext) in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_file() && task_name(&name, &ext) && !expected.contains(&absolute(&path)) {
                stale.push(path);
            }
        }
    }
    stale.sort();
    stale.dedup();
    stale
}
