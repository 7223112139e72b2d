//! Pipeline file → [`PipelineSpec`], in phases that each collect every error they find: YAML
//! syntax, then top-level keys, then each stage (type, id, inputs, parameters), then the graph
//! (duplicate ids, missing inputs, cycles). Data checks (files, columns, SQL) come after, in
//! `engine::plan::prepare`, since they need the files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::de::from_node;
use super::registry::{self, StageType};
use super::yaml::{self, Node, Span, Value};
use crate::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
pub use crate::engine::spec::{Loaded, PipelineSpec, StageSpec};
use crate::error::{GristError, Result};
use crate::io::DEFAULT_BATCH_SIZE;
use crate::stages::{DynStageConfig, StageKind};

/// Keys allowed at the top of a pipeline file.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "name",
    "description",
    "workdir",
    "batch_size",
    "input",
    "stages",
];
/// Keys every stage has besides its parameters.
pub const STAGE_KEYS: &[&str] = &["id", "type", "inputs"];
/// Id of the source made from the `input:` shorthand.
pub const INPUT_STAGE_ID: &str = "input";

pub fn load(path: &Path) -> Result<Loaded> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        GristError::Usage(format!("cannot read pipeline file {}: {e}", path.display()))
    })?;
    parse(path, &source).map_err(|d| GristError::Config(Box::new(d)))
}

/// Rows per batch at most: readers reserve room for a batch up front (JSON Lines per field).
pub const MAX_BATCH_SIZE: usize = 1 << 20;

pub fn parse(path: &Path, source: &str) -> std::result::Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::new(path, source);
    let root = match yaml::parse(source) {
        Ok(root) => root,
        Err(e) => {
            diags.push(Diagnostic::error(
                e.span,
                format!("invalid YAML: {}", e.message),
            ));
            return Err(diags);
        }
    };
    let spec = parse_root(path, &root, &mut diags);
    match spec {
        Some(spec) if !diags.has_errors() => {
            check_graph(&spec, &mut diags);
            if diags.has_errors() {
                Err(diags)
            } else {
                Ok(Loaded {
                    spec,
                    diagnostics: diags,
                })
            }
        }
        _ => Err(diags),
    }
}

fn parse_root(path: &Path, root: &Node, diags: &mut Diagnostics) -> Option<PipelineSpec> {
    let Some(entries) = root.entries() else {
        diags.push(Diagnostic::error(
            root.span,
            format!(
                "a pipeline file is a mapping with `name` and `stages`, found {}",
                root.kind_name()
            ),
        ));
        return None;
    };
    for (key, _) in entries {
        let name = key.scalar_text().unwrap_or_default();
        if !TOP_LEVEL_KEYS.contains(&name.as_str()) {
            diags.push(
                Diagnostic::error(key.span, format!("unknown key `{name}` at the top level"))
                    .with_hint(
                        did_you_mean(&name, TOP_LEVEL_KEYS.iter().copied()).unwrap_or_else(|| {
                            format!("top-level keys are: {}", TOP_LEVEL_KEYS.join(", "))
                        }),
                    ),
            );
        }
    }
    let name = match root.get("name") {
        Some(n) => field::<String>(n, diags),
        None => {
            diags.push(
                Diagnostic::error(root.span, "missing `name`").with_hint("add `name: my-pipeline`"),
            );
            None
        }
    };
    let workdir = root.get("workdir").and_then(|n| field::<String>(n, diags));
    let batch_size = match root.get("batch_size") {
        Some(n) => match field::<usize>(n, diags) {
            Some(0) => {
                diags.push(Diagnostic::error(n.span, "`batch_size` must be at least 1"));
                None
            }
            Some(b) if b > MAX_BATCH_SIZE => {
                diags.push(Diagnostic::error(
                    n.span,
                    format!("`batch_size` {b} is more than {MAX_BATCH_SIZE} rows"),
                ));
                None
            }
            other => other,
        },
        None => Some(DEFAULT_BATCH_SIZE),
    };
    let mut stages = Vec::new();
    if let Some(input) = root.get("input")
        && let Some(stage) = parse_input(input, diags)
    {
        stages.push(stage);
    }
    match root.get("stages") {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => {
            for item in items {
                let previous = stages.last().map(|s: &StageSpec| s.id.clone());
                if let Some(stage) = parse_stage(item, previous, diags) {
                    stages.push(stage);
                }
            }
        }
        Some(other) => diags.push(Diagnostic::error(
            other.span,
            format!("`stages` is a list of stages, found {}", other.kind_name()),
        )),
        None => diags.push(
            Diagnostic::error(root.span, "missing `stages`")
                .with_hint("add `stages:` with at least one stage"),
        ),
    }
    let name = name?;
    Some(PipelineSpec {
        file: path.to_path_buf(),
        workdir: PathBuf::from(workdir.unwrap_or_else(|| format!("runs/{name}"))),
        name,
        batch_size: batch_size?,
        stages,
    })
}

fn field<T: serde::de::DeserializeOwned>(node: &Node, diags: &mut Diagnostics) -> Option<T> {
    match from_node::<T>(node) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(Diagnostic::error(e.span.unwrap_or(node.span), e.message));
            None
        }
    }
}

/// `input: {parquet: GLOB, ...}` or `input: {jsonl: GLOB, ...}` → a `read_parquet` /
/// `read_jsonl` stage with id `input`.
fn parse_input(input: &Node, diags: &mut Diagnostics) -> Option<StageSpec> {
    let Some(entries) = input.entries() else {
        diags.push(Diagnostic::error(
            input.span,
            format!(
                "`input` is a mapping like `{{parquet: data/*.parquet}}`, found {}",
                input.kind_name()
            ),
        ));
        return None;
    };
    let formats: Vec<&(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), Some("parquet" | "jsonl")))
        .collect();
    let [(format_key, path_node)] = formats.as_slice() else {
        diags.push(
            Diagnostic::error(
                input.span,
                "`input` needs exactly one of `parquet` or `jsonl`",
            )
            .with_hint("e.g. `input: {parquet: data/raw/*.parquet}`"),
        );
        return None;
    };
    let type_name = if format_key.as_str() == Some("parquet") {
        "read_parquet"
    } else {
        "read_jsonl"
    };
    let mut params: Vec<(Node, Node)> = vec![(
        Node {
            value: Value::Str {
                value: "path".into(),
                quoted: false,
            },
            span: format_key.span,
        },
        path_node.clone(),
    )];
    params.extend(
        entries
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), Some("parquet" | "jsonl")))
            .cloned(),
    );
    let stage_type = registry::get(type_name).expect("readers are registered");
    let (config, param_spans) = parse_params(&stage_type, &params, input.span, "input", diags)?;
    Some(StageSpec {
        id: INPUT_STAGE_ID.into(),
        type_name: stage_type.name,
        kind: stage_type.kind,
        inputs: Vec::new(),
        config,
        span: input.span,
        param_spans,
    })
}

fn parse_stage(
    node: &Node,
    previous: Option<String>,
    diags: &mut Diagnostics,
) -> Option<StageSpec> {
    let Some(entries) = node.entries() else {
        diags.push(Diagnostic::error(
            node.span,
            format!(
                "a stage is a mapping with `type` (and `id`), found {}",
                node.kind_name()
            ),
        ));
        return None;
    };
    let type_node = node.get("type");
    let Some(type_name) = type_node.and_then(|n| n.scalar_text()) else {
        diags.push(
            Diagnostic::error(node.span, "stage without `type`")
                .with_hint("add `type:`; `grist stages` lists the types"),
        );
        return None;
    };
    let names: Vec<&'static str> = registry::all().iter().map(|t| t.name).collect();
    let Some(stage_type) = registry::get(&type_name) else {
        diags.push(
            Diagnostic::error(
                type_node.unwrap().span,
                format!("unknown stage type `{type_name}`"),
            )
            .with_hint(
                did_you_mean(&type_name, names.iter().copied())
                    .unwrap_or_else(|| format!("known types: {}", names.join(", "))),
            ),
        );
        return None;
    };
    let id = match node.get("id") {
        Some(n) => match n.scalar_text() {
            Some(id) if valid_id(&id) => id,
            _ => {
                diags.push(Diagnostic::error(
                    n.span,
                    "a stage `id` is a name of letters, digits, `_` and `-`",
                ));
                return None;
            }
        },
        None => stage_type.name.to_string(),
    };
    let inputs = match node.get("inputs") {
        Some(n) => match &n.value {
            Value::Seq(items) => items.iter().filter_map(|i| i.scalar_text()).collect(),
            _ => match n.scalar_text() {
                Some(one) => vec![one],
                None => {
                    diags.push(Diagnostic::error(
                        n.span,
                        "`inputs` is a stage id or a list of stage ids",
                    ));
                    return None;
                }
            },
        },
        None if stage_type.kind == StageKind::Source || !stage_type.reads_rows => Vec::new(),
        None => match previous {
            Some(p) => vec![p],
            None => {
                diags.push(
                    Diagnostic::error(node.span, format!("stage `{id}` has no input"))
                        .with_hint("add `input:` at the top, a read_parquet/read_jsonl stage before it, or `inputs:`"),
                );
                Vec::new()
            }
        },
    };
    if let Some(n) = node.get("inputs") {
        if stage_type.kind == StageKind::Source {
            diags.push(Diagnostic::error(
                n.span,
                format!("`{}` is a source and takes no `inputs`", stage_type.name),
            ));
        } else if !stage_type.reads_rows {
            diags.push(
                Diagnostic::error(
                    n.span,
                    format!(
                        "`{}` reads files, not rows: it takes no `inputs`",
                        stage_type.name
                    ),
                )
                .with_hint("it runs after the stages that write the files it names"),
            );
        }
    }
    let params: Vec<(Node, Node)> = entries
        .iter()
        .filter(|(k, _)| !k.as_str().is_some_and(|k| STAGE_KEYS.contains(&k)))
        .cloned()
        .collect();
    // Block mappings start where their first key does; flow mappings at `{`. Point at the key.
    let span = entries.first().map_or(node.span, |(k, _)| k.span);
    let (config, param_spans) = parse_params(&stage_type, &params, span, &id, diags)?;
    Some(StageSpec {
        id,
        type_name: stage_type.name,
        kind: stage_type.kind,
        inputs,
        config,
        span,
        param_spans,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks every key first (so all unknown keys are reported at once), then parses the values.
fn parse_params(
    stage_type: &StageType,
    params: &[(Node, Node)],
    span: Span,
    id: &str,
    diags: &mut Diagnostics,
) -> Option<(Box<dyn DynStageConfig>, BTreeMap<String, Span>)> {
    let known = stage_type.param_names();
    let mut unknown = false;
    let mut param_spans = BTreeMap::new();
    for (key, _) in params {
        let name = key.scalar_text().unwrap_or_default();
        if known.contains(&name) {
            param_spans.insert(name, key.span);
            continue;
        }
        unknown = true;
        let mut candidates: Vec<&str> = known.iter().map(String::as_str).collect();
        candidates.extend(STAGE_KEYS);
        diags.push(
            Diagnostic::error(
                key.span,
                format!(
                    "unknown key `{name}` in stage `{id}` (type `{}`)",
                    stage_type.name
                ),
            )
            .with_hint(
                did_you_mean(&name, candidates).unwrap_or_else(|| {
                    format!("`{}` takes: {}", stage_type.name, known.join(", "))
                }),
            ),
        );
    }
    if unknown {
        return None;
    }
    let map = Node {
        value: Value::Map(params.to_vec()),
        span,
    };
    let config = match (stage_type.parse)(&map) {
        Ok(c) => c,
        Err(e) => {
            diags.push(
                Diagnostic::error(
                    e.span.unwrap_or(span),
                    format!("stage `{id}`: {}", e.message),
                )
                .with_hint(format!(
                    "`grist stages describe {}` lists its parameters",
                    stage_type.name
                )),
            );
            return None;
        }
    };
    let problems = config.check();
    for p in &problems {
        // Every message names its parameter, whether or not the check spelled it out.
        let message = match p.message.contains(p.param) {
            true => p.message.clone(),
            false => format!("`{}` {}", p.param, p.message),
        };
        diags.push(Diagnostic::error(
            param_spans.get(p.param).copied().unwrap_or(span),
            format!("stage `{id}`: {message}"),
        ));
    }
    problems.is_empty().then_some((config, param_spans))
}

fn check_graph(spec: &PipelineSpec, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, &StageSpec> = HashMap::new();
    for stage in &spec.stages {
        if let Some(first) = seen.insert(&stage.id, stage) {
            diags.push(
                Diagnostic::error(stage.span, format!("duplicate stage id `{}`", stage.id))
                    .with_hint(format!(
                        "first used at line {}; give each stage its own `id`",
                        first.span.line
                    )),
            );
        }
    }
    if spec.stages.is_empty() {
        diags.push(Diagnostic::error(None, "the pipeline has no stages"));
        return;
    }
    let ids: Vec<&str> = spec.stages.iter().map(|s| s.id.as_str()).collect();
    for stage in &spec.stages {
        for input in &stage.inputs {
            if !seen.contains_key(input.as_str()) {
                diags.push(
                    Diagnostic::error(
                        stage.span_of("inputs"),
                        format!("stage `{}` reads `{input}`, which is not a stage", stage.id),
                    )
                    .with_hint_opt(did_you_mean(input, ids.iter().copied())),
                );
            } else if input == &stage.id {
                diags.push(Diagnostic::error(
                    stage.span,
                    format!("stage `{}` reads itself", stage.id),
                ));
            }
        }
    }
    if diags.has_errors() {
        return;
    }
    if let Some(cycle) = find_cycle(spec) {
        let first = spec.stage(&cycle[0]).expect("cycle stages exist");
        diags.push(
            Diagnostic::error(
                first.span,
                format!("the stages form a cycle: {}", cycle.join(" → ")),
            )
            .with_hint("a stage's `inputs` must come from earlier in the flow"),
        );
        return;
    }
    let consumed: Vec<&str> = spec
        .stages
        .iter()
        .flat_map(|s| s.inputs.iter().map(String::as_str))
        .collect();
    for stage in &spec.stages {
        // A sink writes its rows; a stage making a file (a model) has that as its output.
        let makes_output = stage.kind == StageKind::Sink || !stage.config.makes_files().is_empty();
        if !makes_output && !consumed.contains(&stage.id.as_str()) {
            diags.push(
                Diagnostic::warning(
                    stage.span,
                    format!("the output of stage `{}` is not written anywhere", stage.id),
                )
                .with_hint("add a write_parquet or write_jsonl stage after it"),
            );
        }
    }
}

/// A cycle as a list of stage ids (first repeated at the end), if any.
fn find_cycle(spec: &PipelineSpec) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        spec: &PipelineSpec,
        id: &str,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(id).copied().unwrap_or(Mark::New) {
            Mark::Done => return None,
            Mark::Active => {
                let start = path.iter().position(|p| p == id).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(id.to_string());
                return Some(cycle);
            }
            Mark::New => {}
        }
        marks.insert(id.to_string(), Mark::Active);
        path.push(id.to_string());
        if let Some(stage) = spec.stage(id) {
            for input in &stage.inputs {
                if let Some(c) = visit(spec, input, marks, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        marks.insert(id.to_string(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for stage in &spec.stages {
        if let Some(mut c) = visit(spec, &stage.id, &mut marks, &mut Vec::new()) {
            // Report in flow order (inputs first).
            c.reverse();
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match parse(Path::new("p.yaml"), src) {
            Ok(_) => Vec::new(),
            Err(d) => d
                .items
                .iter()
                .map(|i| {
                    format!(
                        "{}:{} {}",
                        i.span.map_or(0, |s| s.line),
                        i.span.map_or(0, |s| s.col),
                        i.message
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_valid_pipeline_resolves_implicit_inputs() {
        let src = "name: t\ninput: {jsonl: a.jsonl}\nstages:\n  - {id: f, type: sql, query: 'SELECT * FROM docs'}\n  - {id: out, type: write_parquet, path: out}\n";
        let loaded = parse(Path::new("p.yaml"), src).unwrap();
        let ids: Vec<_> = loaded
            .spec
            .stages
            .iter()
            .map(|s| (s.id.as_str(), s.inputs.clone()))
            .collect();
        assert_eq!(
            ids,
            [
                ("input", vec![]),
                ("f", vec!["input".to_string()]),
                ("out", vec!["f".to_string()])
            ]
        );
        assert_eq!(loaded.spec.workdir, PathBuf::from("runs/t"));
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let src = "name: t\nwrokdir: x\ninput: {jsonl: a.jsonl}\nstages:\n  - {id: f, type: sqll}\n  - {id: g, type: sql, qurey: x, limit: 3}\n  - {id: out, type: write_parquet, path: out, compression_level: high}\n";
        let errs = errors(src);
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs[0].starts_with("2:1 unknown key `wrokdir`"));
        assert!(errs[1].starts_with("5:19 unknown stage type `sqll`"));
        assert!(errs[2].starts_with("6:24 unknown key `qurey`"));
        assert!(errs[3].starts_with("6:34 unknown key `limit`"));
        assert!(
            errs[4].starts_with("7:66 stage `out`: `compression_level`: invalid type"),
            "{}",
            errs[4]
        );
    }

    #[test]
    fn graph_errors() {
        let dup = "name: t\ninput: {jsonl: a}\nstages:\n  - {id: a, type: sql, query: q}\n  - {id: a, type: sql, query: q}\n";
        assert!(errors(dup)[0].contains("duplicate stage id `a`"));
        let missing = "name: t\ninput: {jsonl: a}\nstages:\n  - {id: a, type: sql, query: q, inputs: [inptu]}\n";
        assert!(errors(missing)[0].contains("reads `inptu`, which is not a stage"));
        let cycle = "name: t\nstages:\n  - {id: a, type: sql, query: q, inputs: b}\n  - {id: b, type: sql, query: q, inputs: a}\n";
        assert!(errors(cycle)[0].contains("cycle"), "{:?}", errors(cycle));
        let no_input = "name: t\nstages:\n  - {id: a, type: sql, query: q}\n";
        assert!(errors(no_input)[0].contains("has no input"));
        assert!(errors("name: [\n")[0].contains("invalid YAML"));
        assert!(errors("- a\n")[0].contains("a pipeline file is a mapping"));
    }

    /// Fuzz (issue 16): mutated bundled pipelines and random bytes parse to a spec or to
    /// diagnostics that render, never a panic, holding memory in proportion to the text.
    #[test]
    fn fuzz_pipeline_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "yaml").then(|| std::fs::read(p).unwrap())
            })
            .collect();
        seeds.push(b"a: &x [1, 2]\nb: *x\nc: {<<: *x}\n".to_vec());
        crate::fuzz::fuzz("pipeline yaml", 3000, crate::fuzz::inputs(seeds), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let (rendered, peak) =
                crate::fuzz::peak_bytes(|| match parse(Path::new("p.yaml"), &text) {
                    Ok(loaded) => format!("{} stages", loaded.spec.stages.len()),
                    Err(d) => d.to_string(),
                });
            if rendered.is_empty() {
                return Err("an error without a message".into());
            }
            crate::fuzz::within(
                "pipeline yaml",
                peak,
                4096 * bytes.len() + (8 << 20),
                bytes.len(),
            )
        });
    }
}
