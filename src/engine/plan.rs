//! From a parsed spec to a runnable plan: stages built, data checked (preflight), the DAG split
//! into phases and each phase into tasks.
//!
//! Every stage so far is a streaming stage, so a pipeline is one phase, `stream`, with one task
//! per (source, shard): the shard flows through every stage reachable from its source, fused,
//! batch by batch. Barrier stages (dedup, tokenizer training, ...) will add phases after it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use serde::Serialize;

use crate::config::diagnostic::{Diagnostic, Diagnostics};
use crate::config::{Loaded, PipelineSpec};
use crate::error::{GristError, Result};
use crate::stages::{Shard, Sink, Stage};

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
    /// `<source id>-<shard index>`: names the task's marker and output files.
    pub name: String,
    #[serde(skip)]
    pub source: usize,
    pub input: PathBuf,
    #[serde(skip)]
    pub shard: Shard,
    /// Nodes this task runs, in dependency order.
    #[serde(skip)]
    pub reach: Vec<usize>,
    pub outputs: Vec<PathBuf>,
    pub fingerprint: String,
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
    let mut nodes = Vec::new();
    for s in &spec.stages {
        match s.config.build(&s.id) {
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

fn make_plan(p: &Pipeline, mut shards: HashMap<usize, Vec<Shard>>) -> Result<Plan> {
    let mut tasks = Vec::new();
    for &source in &p.order {
        let Some(list) = shards.remove(&source) else {
            continue;
        };
        let reach = reachable(p, source);
        for (shard_index, shard) in list.into_iter().enumerate() {
            let name = format!("{}-{shard_index:05}", p.nodes[source].id);
            let outputs = reach
                .iter()
                .filter_map(|&i| match &p.nodes[i].stage {
                    Stage::Sink(s) => Some(task_file(s.as_ref(), s.output_dir(), &name)),
                    _ => None,
                })
                .collect();
            let fingerprint = fingerprint(p, &reach, &shard)?;
            tasks.push(Task {
                index: tasks.len(),
                name,
                source,
                input: shard.path.clone(),
                shard,
                reach: reach.clone(),
                outputs,
                fingerprint,
            });
        }
    }
    let mut writers: HashMap<&PathBuf, &str> = HashMap::new();
    for t in &tasks {
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
    let stages = p.order.iter().map(|&i| p.nodes[i].id.clone()).collect();
    Ok(Plan {
        phases: vec![Phase {
            name: STREAM_PHASE.into(),
            stages,
            tasks,
        }],
    })
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

/// Identifies what a task computes: its input file (path, size, mtime), the config, version and
/// wiring of every stage it runs, and the batch size. A change to any of them re-runs the task.
fn fingerprint(p: &Pipeline, reach: &[usize], shard: &Shard) -> Result<String> {
    let meta = std::fs::metadata(&shard.path).map_err(|e| GristError::io(&shard.path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let stages: Vec<serde_json::Value> = reach
        .iter()
        .map(|&i| {
            let s = &p.spec.stages[i];
            serde_json::json!({
                "id": s.id, "type": s.type_name, "version": s.config.version(),
                "inputs": s.inputs, "config": s.config.to_json(),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "format": 1,
        "input": {"path": shard.path, "size": meta.len(), "mtime_ns": mtime.to_string()},
        "batch_size": p.spec.batch_size,
        "stages": stages,
    });
    let hash = xxhash_rust::xxh3::xxh3_128(doc.to_string().as_bytes());
    Ok(format!("{hash:032x}"))
}
