//! The JSON Schema of a pipeline file, generated from the stage configs. The committed copy in
//! `schemas/pipeline.schema.json` lets editors validate and complete pipeline files; a test fails
//! when it is stale (regenerate with `grist stages --json-schema > schemas/pipeline.schema.json`).

use serde_json::{Map, Value as Json, json};

use super::registry;
use crate::io::DEFAULT_BATCH_SIZE;

pub fn pipeline_schema() -> Json {
    let mut defs = Map::new();
    let mut stage_refs = Vec::new();
    for t in registry::all() {
        let mut schema = (t.schema)();
        let obj = schema.as_object_mut().expect("stage schemas are objects");
        if let Some(Json::Object(inner)) = obj.remove("$defs") {
            defs.extend(inner);
        }
        obj.remove("$schema");
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("properties is an object");
        let mut all = Map::new();
        all.insert("type".into(), json!({"const": t.name}));
        all.insert("id".into(), json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "Stage id (default: the type name); other stages name it in `inputs`."}));
        if t.kind != crate::stages::StageKind::Source {
            all.insert("inputs".into(), json!({"description": "Stage id(s) this stage reads; default: the previous stage.", "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}));
        }
        all.extend(std::mem::take(props));
        *props = all;
        let required = obj.entry("required").or_insert_with(|| json!([]));
        required
            .as_array_mut()
            .expect("required is an array")
            .insert(0, json!("type"));
        obj.insert("title".into(), json!(t.name));
        defs.insert(format!("stage_{}", t.name), schema);
        stage_refs.push(json!({"$ref": format!("#/$defs/stage_{}", t.name)}));
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "grist pipeline",
        "description": "A grist pipeline file: sources, stages and sinks as a DAG.",
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "stages"],
        "properties": {
            "name": {"type": "string", "description": "Pipeline name."},
            "description": {"type": "string", "description": "Free text."},
            "workdir": {"type": "string", "description": "Markers, stats and intermediate files (default: runs/<name>)."},
            "batch_size": {"type": "integer", "minimum": 1, "default": DEFAULT_BATCH_SIZE, "description": "Rows per batch read from a shard."},
            "input": {
                "type": "object",
                "description": "Shorthand for a first source stage with id `input`: `parquet:` or `jsonl:` a path, directory or glob, plus that reader's parameters.",
                "properties": {"parquet": {"type": "string"}, "jsonl": {"type": "string"}},
                "oneOf": [{"required": ["parquet"]}, {"required": ["jsonl"]}]
            },
            "stages": {"type": "array", "items": {"oneOf": stage_refs}}
        },
        "$defs": defs
    })
}

/// The schema as committed: pretty JSON with a trailing newline.
pub fn pipeline_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&pipeline_schema()).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/pipeline.schema.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == pipeline_schema_text(),
            "schemas/pipeline.schema.json is stale: run `cargo run -- stages --json-schema > schemas/pipeline.schema.json`"
        );
    }

    #[test]
    fn top_level_keys_match_the_parser() {
        let schema = pipeline_schema();
        let keys: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = crate::config::spec::TOP_LEVEL_KEYS.to_vec();
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
    }
}
