//! From a parsed spec to a runnable plan: stages built, data checked (preflight), the DAG split
//! into phases and each phase into tasks.
//!
//! A stream phase has one task per (source, shard): the shard flows through every stage reachable
//! from its source, fused, batch by batch, up to the sinks and the barrier stages (training,
//! deduplication), which store the rows reaching them. Each barrier then runs its own phases;
//! if it passes rows on, a later stream phase streams its input shards through it and onwards.
//! Phases: `stream`, the barriers' `<stage>.<phase>`s, `stream2`, ... in dependency order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use serde::Serialize;

use super::spec::{Loaded, PipelineSpec};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::error::{GristError, Result};
use crate::stages::{BarrierInput, BuildContext, Shard, Sink, Stage, lexical};

pub const STREAM_PHASE: &str = "stream";

/// A stage built from its config, with its place in the graph.
pub struct Node {
    pub id: String,
    pub type_name: &'static str,
    pub stage: Stage,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

pub struct Pipeline {
    pub spec: PipelineSpec,
    pub nodes: Vec<Node>,
    /// Node indices, every input before its consumers.
    pub order: Vec<usize>,
}

pub struct Plan {
    pub phases: Vec<Phase>,
    /// Each barrier stage's directory, input shards and fingerprint, by node.
    pub barriers: HashMap<usize, BarrierPlan>,
}

#[derive(Debug, Clone)]
pub struct BarrierPlan {
    pub dir: PathBuf,
    pub inputs: Vec<BarrierInput>,
    /// Identifies the barrier's config and input: its tasks and everything downstream of it
    /// depend on it.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub stages: Vec<String>,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub index: usize,
    /// `<source id>-<shard index>` (or `<barrier id>-<shard index>`) for a stream task,
    /// `<phase>-<index>` for a barrier task: names the task's marker and output files.
    pub name: String,
    #[serde(skip)]
    pub kind: TaskKind,
    /// The shard a stream task reads; a barrier task's directory.
    pub input: PathBuf,
    /// Nodes this task runs, in dependency order.
    #[serde(skip)]
    pub reach: Vec<usize>,
    /// Nodes whose counts this task reports (a barrier only storing its input reports none).
    #[serde(skip)]
    pub counted: Vec<usize>,
    pub outputs: Vec<PathBuf>,
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub enum TaskKind {
    /// A shard streamed through `reach` from `root`: a source, or a barrier passing its rows on
    /// (then `barrier_shard` is the index of the barrier input shard).
    Stream {
        root: usize,
        shard: Shard,
        barrier_shard: Option<usize>,
    },
    /// One task of one phase of a barrier stage.
    Barrier {
        node: usize,
        phase: usize,
        index: usize,
    },
}

impl Pipeline {
    pub fn node(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn workdir(&self) -> &std::path::Path {
        &self.spec.workdir
    }
}

/// Builds the stages, lists the shards and checks the data against the pipeline: every problem
/// becomes a diagnostic pointing at the stage parameter concerned.
pub fn prepare(loaded: Loaded) -> Result<(Pipeline, Plan)> {
    let Loaded {
        spec,
        mut diagnostics,
    } = loaded;
    let made_by_pipeline: Vec<PathBuf> = spec
        .stages
        .iter()
        .flat_map(|s| s.config.makes_files())
        .collect();
    let mut nodes = Vec::new();
    for s in &spec.stages {
        let ctx = BuildContext {
            stage_id: &s.id,
            made_by_pipeline: &made_by_pipeline,
        };
        match s.config.build(&ctx) {
            Err(GristError::Param { param, message, .. }) => diagnostics.push(Diagnostic::error(
                s.span_of(param),
                format!("stage `{}`: {message}", s.id),
            )),
            Ok(stage) => nodes.push(Node {
                id: s.id.clone(),
                type_name: s.type_name,
                stage,
                inputs: Vec::new(),
                outputs: Vec::new(),
            }),
            Err(e) => diagnostics.push(Diagnostic::error(s.span, format!("stage `{}`: {e}", s.id))),
        }
    }
    if diagnostics.has_errors() {
        return Err(GristError::Config(Box::new(diagnostics)));
    }
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();
    for (i, s) in spec.stages.iter().enumerate() {
        for input in &s.inputs {
            let j = index[input];
            nodes[i].inputs.push(j);
            nodes[j].outputs.push(i);
        }
    }
    let order = topological_order(&nodes);
    let pipeline = Pipeline { spec, nodes, order };
    let shards = preflight(&pipeline, &mut diagnostics);
    check_outputs_outside_inputs(&pipeline, &mut diagnostics);
    if diagnostics.has_errors() {
        return Err(GristError::Config(Box::new(diagnostics)));
    }
    for w in diagnostics.warnings() {
        tracing::warn!("{}", diagnostics.render(w).trim_end());
    }
    let plan = make_plan(&pipeline, shards)?;
    Ok((pipeline, plan))
}

fn topological_order(nodes: &[Node]) -> Vec<usize> {
    let mut pending: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
    let mut ready: Vec<usize> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .rev()
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &o in nodes[i].outputs.iter().rev() {
            pending[o] -= 1;
            if pending[o] == 0 {
                ready.push(o);
            }
        }
    }
    order
}

/// Data checks: shards exist, their schema has the text column, transforms accept the schema
/// that reaches them, sinks can write. Returns each source's shards.
fn preflight(p: &Pipeline, diags: &mut Diagnostics) -> HashMap<usize, Vec<Shard>> {
    let mut shards = HashMap::new();
    let mut schemas: HashMap<usize, SchemaRef> = HashMap::new();
    for &i in &p.order {
        let node = &p.nodes[i];
        let spec = &p.spec.stages[i];
        match &node.stage {
            Stage::Source(source) => {
                let list = match source.shards() {
                    Ok(list) => list,
                    Err(e) => {
                        diags.push(Diagnostic::error(
                            spec.span_of("path"),
                            format!("stage `{}`: {e}", node.id),
                        ));
                        continue;
                    }
                };
                let pattern = spec.config.to_json()["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let Some(first) = list.first() else {
                    diags.push(
                        Diagnostic::error(
                            spec.span_of("path"),
                            format!("stage `{}`: no files match `{pattern}`", node.id),
                        )
                        .with_hint("paths are relative to the directory grist runs in"),
                    );
                    continue;
                };
                match source.schema(first) {
                    Ok(schema) => {
                        schemas.insert(i, schema);
                    }
                    Err(e) => {
                        let written_mapping = spec.param_spans.contains_key("text_column")
                            && e.to_string().contains("text column");
                        let param = if written_mapping {
                            "text_column"
                        } else {
                            "path"
                        };
                        diags.push(Diagnostic::error(
                            spec.span_of(param),
                            format!("stage `{}`: {e}", node.id),
                        ));
                    }
                }
                shards.insert(i, list);
            }
            Stage::Transform(t) => {
                let Some(input) = merged_input_schema(p, i, &schemas, diags) else {
                    continue;
                };
                match t.start(input) {
                    Ok(task) => {
                        schemas.insert(i, task.output_schema());
                    }
                    Err(e) => diags.push(Diagnostic::error(spec.span, e.to_string())),
                }
            }
            Stage::Barrier(b) => {
                let Some(input) = merged_input_schema(p, i, &schemas, diags) else {
                    continue;
                };
                match b.output_schema(input) {
                    Ok(Some(output)) => {
                        schemas.insert(i, output);
                    }
                    Ok(None) => {
                        for &o in &node.outputs {
                            diags.push(Diagnostic::error(
                                p.spec.stages[o].span_of("inputs"),
                                format!(
                                    "stage `{}` reads from `{}`, which passes no rows on",
                                    p.nodes[o].id, node.id
                                ),
                            ));
                        }
                    }
                    Err(e) => diags.push(Diagnostic::error(spec.span, e.to_string())),
                }
            }
            Stage::Sink(sink) => {
                if let Some(input) = merged_input_schema(p, i, &schemas, diags) {
                    schemas.insert(i, input);
                }
                let dirs = [
                    ("path", Some(sink.output_dir())),
                    ("rejects", sink.rejects_dir()),
                ];
                for (param, dir) in dirs {
                    let Some(dir) = dir else { continue };
                    if let Err(e) = check_writable(dir) {
                        diags.push(Diagnostic::error(
                            spec.span_of(param),
                            format!(
                                "stage `{}`: cannot write to `{}`: {e}",
                                node.id,
                                dir.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    shards
}

/// A source whose pattern takes in files the pipeline writes (a writer's directory inside the
/// input glob, the workdir below an input directory) would read its own output again on every
/// re-run: 3 rows, then 6, then 9. Refused at check time, naming both stages and the file.
fn check_outputs_outside_inputs(p: &Pipeline, diags: &mut Diagnostics) {
    let ids: Vec<&str> = p.nodes.iter().map(|n| n.id.as_str()).collect();
    // (stage that writes, a file it may write)
    let mut written: Vec<(usize, PathBuf)> = Vec::new();
    for (j, node) in p.nodes.iter().enumerate() {
        match &node.stage {
            Stage::Sink(s) => {
                for root in &ids {
                    let file = format!("{root}-00000.{}", s.extension());
                    written.push((j, s.output_dir().join(&file)));
                    if let Some(r) = s.rejects_dir() {
                        for stage in &ids {
                            written.push((j, r.join(stage).join(&file)));
                        }
                    }
                }
            }
            Stage::Barrier(_) => {
                let dir = barrier_dir(p, j);
                written.push((j, dir.join("generated.parquet")));
                for via in &ids {
                    for root in &ids {
                        let file = format!("{root}-00000.parquet");
                        written.push((j, dir.join("input").join(via).join(file)));
                    }
                }
            }
            _ => {}
        }
    }
    // The workdir's own files (markers, stats, the LLM request cache): JSON.
    let workdir = p.workdir();
    for file in [
        workdir
            .join("markers")
            .join(STREAM_PHASE)
            .join("input-00000.json"),
        workdir.join("stats").join("input.json"),
        workdir.join("llm-cache").join("00").join("00.json"),
    ] {
        written.push((usize::MAX, file));
    }
    for (i, node) in p.nodes.iter().enumerate() {
        let Stage::Source(source) = &node.stage else {
            continue;
        };
        if let Some((j, file)) = written.iter().find(|(_, f)| source.would_read(f)) {
            let what = match p.nodes.get(*j).map(|n| &n.stage) {
                None => format!("the workdir's markers and stats ({})", workdir.display()),
                Some(Stage::Barrier(_)) => {
                    format!("the workdir files of stage `{}`", p.nodes[*j].id)
                }
                Some(_) => format!("what stage `{}` writes", p.nodes[*j].id),
            };
            diags.push(
                Diagnostic::error(
                    p.spec.stages[i].span_of("path"),
                    format!(
                        "stage `{}` would read {what} (such as {}): every re-run would read its \
                         own output again",
                        node.id,
                        file.display()
                    ),
                )
                .with_hint("write outside the input pattern, or narrow the pattern"),
            );
        }
    }
}

/// Same column names and types, in the same order; nullability may differ (each task runs with
/// its own input's schema, so only names and types must line up).
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// The schema reaching node `i`: all of its inputs must have the same columns; a column is
/// nullable when it is in any input.
fn merged_input_schema(
    p: &Pipeline,
    i: usize,
    schemas: &HashMap<usize, SchemaRef>,
    diags: &mut Diagnostics,
) -> Option<SchemaRef> {
    let inputs: Vec<&SchemaRef> = p.nodes[i]
        .inputs
        .iter()
        .filter_map(|j| schemas.get(j))
        .collect();
    let first = *inputs.first()?;
    if let Some(other) = inputs.iter().find(|s| !same_columns(s, first)) {
        let names = |s: &SchemaRef| {
            s.fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        diags.push(
            Diagnostic::error(
                p.spec.stages[i].span,
                format!(
                    "stage `{}` merges inputs with different columns",
                    p.nodes[i].id
                ),
            )
            .with_hint(format!(
                "[{}] vs [{}]; make them agree with a `sql` stage",
                names(first),
                names(other)
            )),
        );
        return None;
    }
    let fields: Vec<arrow::datatypes::Field> = first
        .fields()
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let nullable = inputs.iter().any(|s| s.field(k).is_nullable());
            f.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    Some(std::sync::Arc::new(
        arrow::datatypes::Schema::new_with_metadata(fields, first.metadata().clone()),
    ))
}

fn check_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".grist-write-check.{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Levels order the work: a stream phase at level `L` runs the stream tasks of that level, then the
/// phases of the barriers of that level. A node's level is at least that of its inputs (one more
/// past a barrier), one more than any barrier that makes a file it reads, and every node a stream
/// task runs shares the task's level.
fn levels(p: &Pipeline, deps: &[Vec<usize>], roots: &[usize]) -> Result<Vec<usize>> {
    let n = p.nodes.len();
    let mut level = vec![0usize; n];
    let barrier = |i: usize| matches!(p.nodes[i].stage, Stage::Barrier(_));
    loop {
        let mut changed = false;
        for &i in &p.order {
            let mut l = level[i];
            for &j in &p.nodes[i].inputs {
                l = l.max(level[j] + usize::from(barrier(j)));
            }
            for &d in &deps[i] {
                l = l.max(level[d] + 1);
            }
            if l > level[i] {
                level[i] = l;
                changed = true;
            }
        }
        for &root in roots {
            let reach = stream_reach(p, root);
            let members = reach.iter().copied().filter(|&i| i != root && !barrier(i));
            let task_level =
                members
                    .clone()
                    .map(|i| level[i])
                    .max()
                    .unwrap_or(0)
                    .max(match barrier(root) {
                        true => level[root] + 1,
                        false => level[root],
                    });
            for i in members.chain((!barrier(root)).then_some(root)) {
                if level[i] < task_level {
                    level[i] = task_level;
                    changed = true;
                }
            }
        }
        if level.iter().any(|&l| l > 2 * n + 2) {
            return Err(GristError::Usage(
                "stages wait on each other in a cycle: a stage reads a file (a model) that a stage \
                 after it makes, or one source feeds both a barrier stage and a stage that waits for \
                 it (read that input with a second source stage)"
                    .into(),
            ));
        }
        if !changed {
            return Ok(level);
        }
    }
}

/// A stream task storing rows for a barrier, through input node `via`.
struct Fed {
    task: String,
    via: usize,
    fingerprint: String,
}

/// For each node, the barrier stages that make a file it reads.
fn file_deps(p: &Pipeline) -> Vec<Vec<usize>> {
    let made: Vec<Vec<PathBuf>> = p
        .spec
        .stages
        .iter()
        .map(|s| s.config.makes_files().iter().map(|f| lexical(f)).collect())
        .collect();
    let mut deps = vec![Vec::new(); p.nodes.len()];
    for (i, s) in p.spec.stages.iter().enumerate() {
        for file in s.config.uses_files() {
            let file = lexical(&file);
            for (j, files) in made.iter().enumerate() {
                // A stage may make a directory of files (`tokenize`): reading one inside it counts.
                let makes = files.iter().any(|m| file.starts_with(m));
                if j != i && makes && !deps[i].contains(&j) {
                    deps[i].push(j);
                }
            }
        }
    }
    deps
}

/// The stream phase of level `l`.
fn stream_phase_name(l: usize) -> String {
    match l {
        0 => STREAM_PHASE.into(),
        _ => format!("{STREAM_PHASE}{}", l + 1),
    }
}

fn make_plan(p: &Pipeline, mut shards: HashMap<usize, Vec<Shard>>) -> Result<Plan> {
    let deps = file_deps(p);
    let is_barrier = |i: usize| matches!(p.nodes[i].stage, Stage::Barrier(_));
    let roots: Vec<usize> = p
        .order
        .iter()
        .copied()
        .filter(|&i| match &p.nodes[i].stage {
            Stage::Source(_) => true,
            Stage::Barrier(_) => !p.nodes[i].outputs.is_empty(),
            _ => false,
        })
        .collect();
    let level = levels(p, &deps, &roots)?;
    let max_level = level.iter().copied().max().unwrap_or(0);
    let mut phases: Vec<Phase> = Vec::new();
    let mut barriers: HashMap<usize, BarrierPlan> = HashMap::new();
    // Tasks that send rows into each barrier, with the input stage they come through.
    let mut feeding: HashMap<usize, Vec<Fed>> = HashMap::new();
    for l in 0..=max_level {
        let mut tasks = Vec::new();
        for &root in roots.iter().filter(|&&r| match is_barrier(r) {
            true => level[r] + 1 == l,
            false => level[r] == l,
        }) {
            let reach = stream_reach(p, root);
            let shards_of_root: Vec<(Shard, String, Option<usize>)> = match &p.nodes[root].stage {
                Stage::Barrier(barrier) => {
                    let b = &barriers[&root];
                    barrier
                        .output_files(&b.dir, &b.inputs)
                        .unwrap_or_else(|| b.inputs.iter().map(|i| i.path.clone()).collect())
                        .into_iter()
                        .enumerate()
                        .map(|(k, path)| {
                            let name = format!("{}-{k:05}", p.nodes[root].id);
                            let shard = Shard {
                                path,
                                name: name.clone(),
                            };
                            (shard, name, Some(k))
                        })
                        .collect()
                }
                _ => shards
                    .remove(&root)
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(k, shard)| (shard, format!("{}-{k:05}", p.nodes[root].id), None))
                    .collect(),
            };
            for (shard, name, barrier_shard) in shards_of_root {
                let fingerprint = match barrier_shard {
                    Some(k) => stream_fingerprint(
                        p,
                        &reach,
                        &deps,
                        &barriers,
                        serde_json::json!({"barrier": barriers[&root].fingerprint, "shard": k}),
                    ),
                    None => {
                        let input = file_fingerprint(&shard.path)?;
                        stream_fingerprint(p, &reach, &deps, &barriers, input)
                    }
                };
                let mut outputs = Vec::new();
                for &i in &reach {
                    match &p.nodes[i].stage {
                        Stage::Sink(s) => {
                            outputs.push(task_file(s.as_ref(), s.output_dir(), &name))
                        }
                        Stage::Barrier(_) if i != root => {
                            for &j in p.nodes[i].inputs.iter().filter(|j| reach.contains(j)) {
                                outputs.push(barrier_input_path(p, i, j, &name));
                                feeding.entry(i).or_default().push(Fed {
                                    task: name.clone(),
                                    via: j,
                                    fingerprint: fingerprint.clone(),
                                });
                            }
                        }
                        _ => {}
                    }
                }
                let root_counts = match &p.nodes[root].stage {
                    Stage::Barrier(b) => !b.counts_rows_in_phases(),
                    _ => true,
                };
                let counted = reach
                    .iter()
                    .copied()
                    .filter(|&i| (i == root && root_counts) || !is_barrier(i))
                    .collect();
                tasks.push(Task {
                    index: tasks.len(),
                    name,
                    kind: TaskKind::Stream {
                        root,
                        shard: shard.clone(),
                        barrier_shard,
                    },
                    input: shard.path,
                    reach: reach.clone(),
                    counted,
                    outputs,
                    fingerprint,
                });
            }
        }
        if !tasks.is_empty() {
            let mut stages: Vec<String> = Vec::new();
            for t in &tasks {
                for &i in &t.reach {
                    if !stages.contains(&p.nodes[i].id) {
                        stages.push(p.nodes[i].id.clone());
                    }
                }
            }
            let roots: Vec<usize> = tasks
                .iter()
                .filter_map(|t| match t.kind {
                    TaskKind::Stream { root, .. } => Some(root),
                    TaskKind::Barrier { .. } => None,
                })
                .collect();
            // The output of one barrier alone: named after it (`dedup.filter`).
            let name = match &p.nodes[roots[0]].stage {
                Stage::Barrier(b) if roots.iter().all(|&r| r == roots[0]) => {
                    format!("{}.{}", p.nodes[roots[0]].id, b.output_phase())
                }
                _ => stream_phase_name(l),
            };
            phases.push(Phase {
                name,
                stages,
                tasks,
            });
        }
        for &b in p.order.iter().filter(|&&b| is_barrier(b) && level[b] == l) {
            let Stage::Barrier(barrier) = &p.nodes[b].stage else {
                unreachable!()
            };
            let fed = feeding.remove(&b).unwrap_or_default();
            let inputs: Vec<BarrierInput> = fed
                .iter()
                .map(|f| BarrierInput {
                    path: barrier_input_path(p, b, f.via, &f.task),
                    via: p.nodes[f.via].id.clone(),
                })
                .collect();
            let spec = &p.spec.stages[b];
            let fingerprint = hash(&serde_json::json!({
                "format": 1,
                "stage": {"id": spec.id, "type": spec.type_name, "version": spec.config.version(),
                          "inputs": spec.inputs, "config": spec.config.to_json(),
                          "files": used_files(p, b, &deps, &barriers)},
                "inputs": fed.iter().map(|f| [&f.task, &p.nodes[f.via].id, &f.fingerprint]).collect::<Vec<_>>(),
                "batch_size": p.spec.batch_size,
            }));
            let dir = barrier_dir(p, b);
            for (k, phase_name) in barrier.phases().into_iter().enumerate() {
                let count = barrier.task_count(k, &inputs);
                let name = format!("{}.{phase_name}", p.nodes[b].id);
                let tasks = (0..count)
                    .map(|index| Task {
                        index,
                        name: format!("{phase_name}-{index:05}"),
                        kind: TaskKind::Barrier {
                            node: b,
                            phase: k,
                            index,
                        },
                        input: dir.clone(),
                        reach: vec![b],
                        counted: vec![b],
                        outputs: Vec::new(),
                        fingerprint: hash(&serde_json::json!({
                            "barrier": fingerprint, "phase": phase_name, "task": index, "of": count,
                        })),
                    })
                    .collect();
                phases.push(Phase {
                    name,
                    stages: vec![p.nodes[b].id.clone()],
                    tasks,
                });
            }
            barriers.insert(
                b,
                BarrierPlan {
                    dir,
                    inputs,
                    fingerprint,
                },
            );
        }
    }
    let mut writers: HashMap<&PathBuf, &str> = HashMap::new();
    for t in phases.iter().flat_map(|ph| &ph.tasks) {
        for o in &t.outputs {
            if let Some(other) = writers.insert(o, &t.name) {
                return Err(GristError::Usage(format!(
                    "tasks `{other}` and `{}` would both write {}: give the writers different paths",
                    t.name,
                    o.display()
                )));
            }
        }
    }
    Ok(Plan { phases, barriers })
}

/// The phases whose outputs the tasks of phase `index` read: a barrier phase needs the one before
/// it (the first: the stream tasks storing its input), a stream phase passing a barrier's rows on
/// needs that barrier's phases, and a stage reading a file another stage makes needs that stage's
/// phases. Indices into `plan.phases`, in order.
pub fn prerequisites(p: &Pipeline, plan: &Plan, index: usize) -> Vec<usize> {
    let deps = file_deps(p);
    let phases_of = |b: usize| -> Vec<usize> {
        plan.phases
            .iter()
            .enumerate()
            .filter(|(_, ph)| {
                ph.tasks
                    .iter()
                    .any(|t| matches!(t.kind, TaskKind::Barrier { node, .. } if node == b))
            })
            .map(|(k, _)| k)
            .collect()
    };
    let mut needed: Vec<usize> = Vec::new();
    for t in &plan.phases[index].tasks {
        match &t.kind {
            TaskKind::Barrier { node, phase: 0, .. } => {
                let inputs: Vec<&PathBuf> =
                    plan.barriers[node].inputs.iter().map(|i| &i.path).collect();
                for (k, ph) in plan.phases.iter().enumerate() {
                    if ph
                        .tasks
                        .iter()
                        .any(|u| u.outputs.iter().any(|o| inputs.contains(&o)))
                    {
                        needed.push(k);
                    }
                }
            }
            TaskKind::Barrier { node, phase, .. } => {
                let before = *phase - 1;
                needed.extend(plan.phases.iter().enumerate().filter_map(|(k, ph)| {
                    ph.tasks
                        .iter()
                        .any(|u| matches!(u.kind, TaskKind::Barrier { node: n, phase: q, .. } if n == *node && q == before))
                        .then_some(k)
                }));
            }
            TaskKind::Stream { root, .. } => {
                if matches!(p.nodes[*root].stage, Stage::Barrier(_)) {
                    needed.extend(phases_of(*root));
                }
            }
        }
        for &i in &t.reach {
            for &d in &deps[i] {
                needed.extend(phases_of(d));
            }
        }
    }
    needed.retain(|&k| k != index);
    needed.sort_unstable();
    needed.dedup();
    needed
}

/// `workdir/barriers/<stage id>`: a barrier stage's own files.
pub fn barrier_dir(p: &Pipeline, b: usize) -> PathBuf {
    p.workdir().join("barriers").join(&p.nodes[b].id)
}

/// Where stream task `task` stores the rows it sends barrier `b` through input stage `via`.
pub fn barrier_input_path(p: &Pipeline, b: usize, via: usize, task: &str) -> PathBuf {
    barrier_dir(p, b)
        .join("input")
        .join(&p.nodes[via].id)
        .join(format!("{task}.parquet"))
}

/// Nodes a stream task starting at `root` runs: those reachable from it without passing through
/// a barrier (a barrier is reached, to store its input, but not passed), in dependency order.
pub fn stream_reach(p: &Pipeline, root: usize) -> Vec<usize> {
    let mut seen = vec![false; p.nodes.len()];
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true)
            && (i == root || !matches!(p.nodes[i].stage, Stage::Barrier(_)))
        {
            stack.extend(&p.nodes[i].outputs);
        }
    }
    p.order.iter().copied().filter(|&i| seen[i]).collect()
}

/// The file a task writes into `dir` (a sink's output or rejects directory): named after the task,
/// so a re-run overwrites it, in the sink's format.
pub fn task_file(sink: &dyn Sink, dir: &Path, task: &str) -> PathBuf {
    dir.join(format!("{task}.{}", sink.extension()))
}

/// Nodes reachable from `from` (itself included), in dependency order.
pub fn reachable(p: &Pipeline, from: usize) -> Vec<usize> {
    let mut seen = vec![false; p.nodes.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(&p.nodes[i].outputs);
        }
    }
    p.order.iter().copied().filter(|&i| seen[i]).collect()
}

fn hash(doc: &serde_json::Value) -> String {
    format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(doc.to_string().as_bytes())
    )
}

/// Path, size and modification time: a file that changes re-runs what reads it.
fn file_fingerprint(path: &Path) -> Result<serde_json::Value> {
    let meta = std::fs::metadata(path).map_err(|e| GristError::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(serde_json::json!({"path": path, "size": meta.len(), "mtime_ns": mtime.to_string()}))
}

/// What a file or directory holds, as far as a re-run needs to know: path, size and modification
/// time of the file, or of every file below the directory (a checkpoint, a `mix` output).
/// Missing: null (the task will fail on it anyway).
fn path_fingerprint(path: &Path) -> serde_json::Value {
    if !path.is_dir() {
        return file_fingerprint(path).unwrap_or(serde_json::Value::Null);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    // Each directory once, by its real path: a link back up the tree would never end.
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = stack.pop() {
        let first_visit = std::fs::canonicalize(&dir).is_ok_and(|real| seen.insert(real));
        if !first_visit {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if files.len() < MAX_FINGERPRINTED_FILES {
                files.push(p);
            }
        }
    }
    files.sort();
    serde_json::Value::Array(
        files
            .iter()
            .map(|f| file_fingerprint(f).unwrap_or(serde_json::Value::Null))
            .collect(),
    )
}

/// Files of one directory a fingerprint lists at most (a checkpoint holds a handful).
const MAX_FINGERPRINTED_FILES: usize = 100_000;

/// The files node `i` reads besides its rows, each as the fingerprint of the barrier that makes
/// it or, when no stage of the pipeline makes it, its own (see [`path_fingerprint`]). Every used
/// file counts, so a changed external file re-runs what reads it even when the node also reads
/// pipeline-made ones.
fn used_files(
    p: &Pipeline,
    i: usize,
    deps: &[Vec<usize>],
    barriers: &HashMap<usize, BarrierPlan>,
) -> Vec<serde_json::Value> {
    p.spec.stages[i]
        .config
        .uses_files()
        .iter()
        .map(|f| {
            let file = lexical(f);
            let maker = deps[i].iter().find(|&&d| {
                p.spec.stages[d]
                    .config
                    .makes_files()
                    .iter()
                    .any(|m| file.starts_with(lexical(m)))
            });
            match maker {
                Some(d) => {
                    serde_json::json!({"made_by": barriers.get(d).map(|b| b.fingerprint.clone())})
                }
                None => path_fingerprint(f),
            }
        })
        .collect()
}

/// Identifies what a stream task computes: its input, the config, version and wiring of every
/// stage it runs, the files they read, and the batch size. A change to any of them re-runs it.
fn stream_fingerprint(
    p: &Pipeline,
    reach: &[usize],
    deps: &[Vec<usize>],
    barriers: &HashMap<usize, BarrierPlan>,
    input: serde_json::Value,
) -> String {
    let stages: Vec<serde_json::Value> = reach
        .iter()
        .map(|&i| {
            let s = &p.spec.stages[i];
            if matches!(p.nodes[i].stage, Stage::Barrier(_)) && !barriers.contains_key(&i) {
                // A barrier downstream only stores its input: its config does not change it.
                return serde_json::json!({"id": s.id, "stores_input_of": s.type_name});
            }
            serde_json::json!({
                "id": s.id, "type": s.type_name, "version": s.config.version(),
                "inputs": s.inputs, "config": s.config.to_json(),
                "files": used_files(p, i, deps, barriers),
            })
        })
        .collect();
    hash(&serde_json::json!({
        "format": 2,
        "input": input,
        "batch_size": p.spec.batch_size,
        "stages": stages,
    }))
}
