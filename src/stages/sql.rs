//! `sql`: a DataFusion SQL `SELECT` over the stream, the table being `docs`.
//!
//! The query is planned once per task with DataFusion, then run batch by batch by evaluating the
//! plan's expressions directly. Only row-wise plans are accepted (projections and filters over
//! `docs`): a per-shard streaming stage cannot aggregate, sort or join across the corpus, and
//! only a row-wise plan lets every removed row be recorded as rejected (reason `sql_filter`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{filter, filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    BuildContext, Filtered, ParamProblem, Rejected, Stage, StageConfig, StageKind, Transform,
    TransformTask,
};
use crate::error::{GristError, Result};

/// Runs a SQL `SELECT` over each batch of documents; the table is `docs`. Use it for your own
/// simple filters and derived columns: `SELECT *, length(text) AS n FROM docs WHERE
/// length(text) > 200`. Rows the `WHERE` clause drops are rejected with reason `sql_filter`.
/// Only projections and filters are allowed (no GROUP BY, ORDER BY, LIMIT, JOIN, UNION or
/// DISTINCT): the query runs shard by shard, batch by batch. Unquoted identifiers are lower-cased,
/// as in PostgreSQL; quote column names that have capitals (`"Title"`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sql {
    /// The `SELECT` statement.
    pub query: String,
}

pub const TABLE: &str = "docs";
const REASON: &str = "sql_filter";

impl StageConfig for Sql {
    const TYPE: &'static str = "sql";
    const KIND: StageKind = StageKind::Transform;

    fn check(&self) -> Vec<ParamProblem> {
        if self.query.trim().is_empty() {
            return vec![ParamProblem {
                param: "query",
                message: "`query` is empty".into(),
            }];
        }
        Vec::new()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        let stage_id = ctx.stage_id;
        Ok(Stage::Transform(Arc::new(SqlTransform {
            stage_id: stage_id.to_string(),
            query: self.query.clone(),
        })))
    }
}

struct SqlTransform {
    stage_id: String,
    query: String,
}

/// One step of a row-wise plan, bottom-up.
enum Step {
    Scan(Option<Vec<usize>>),
    Filter(Arc<dyn PhysicalExpr>),
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

struct SqlTask {
    stage_id: String,
    steps: Vec<Step>,
    output: SchemaRef,
    filters: bool,
}

impl Transform for SqlTransform {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        let err = |e: &dyn std::fmt::Display| GristError::stage(&self.stage_id, e);
        let ctx = SessionContext::new();
        ctx.register_table(TABLE, Arc::new(EmptyTable::new(input)))
            .map_err(|e| err(&e))?;
        let state = ctx.state();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| err(&e))?;
        let plan = runtime
            .block_on(state.create_logical_plan(&self.query))
            .map_err(|e| err(&e))?;
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| err(&e))?;
        let mut steps = Vec::new();
        let mut node = &plan;
        loop {
            match node {
                LogicalPlan::Projection(p) => {
                    let schema = p.input.schema();
                    let exprs = p
                        .expr
                        .iter()
                        .map(|e| state.create_physical_expr(e.clone(), schema))
                        .collect::<datafusion::error::Result<Vec<_>>>()
                        .map_err(|e| err(&e))?;
                    steps.push(Step::Project(exprs, Arc::new(p.schema.as_arrow().clone())));
                    node = &p.input;
                }
                LogicalPlan::Filter(f) => {
                    let expr = state
                        .create_physical_expr(f.predicate.clone(), f.input.schema())
                        .map_err(|e| err(&e))?;
                    steps.push(Step::Filter(expr));
                    node = &f.input;
                }
                LogicalPlan::SubqueryAlias(a) => node = &a.input,
                LogicalPlan::TableScan(scan) if scan.fetch.is_none() && scan.filters.is_empty() => {
                    steps.push(Step::Scan(scan.projection.clone()));
                    break;
                }
                other => {
                    return Err(err(&format!(
                        "only row-wise queries are supported (SELECT ... FROM {TABLE} [WHERE ...]); \
                         this query needs `{}`, which would have to see the whole corpus at once",
                        plan_node_name(other)
                    )));
                }
            }
        }
        steps.reverse();
        let output = Arc::new(plan.schema().as_arrow().clone());
        let filters = steps.iter().any(|s| matches!(s, Step::Filter(_)));
        Ok(Box::new(SqlTask {
            stage_id: self.stage_id.clone(),
            steps,
            output,
            filters,
        }))
    }
}

fn plan_node_name(plan: &LogicalPlan) -> String {
    match plan {
        LogicalPlan::Aggregate(_) => "GROUP BY / aggregate functions".into(),
        LogicalPlan::Sort(_) => "ORDER BY".into(),
        LogicalPlan::Limit(_) => "LIMIT / OFFSET".into(),
        LogicalPlan::Join(_) => "JOIN".into(),
        LogicalPlan::Union(_) => "UNION".into(),
        LogicalPlan::Distinct(_) => "DISTINCT".into(),
        LogicalPlan::Window(_) => "window functions".into(),
        other => other.display().to_string(),
    }
}

impl TransformTask for SqlTask {
    fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let mut current = batch.clone();
        // Positions in `batch` of the rows still in `current`; tracked only when rows can drop.
        let mut rows: Option<UInt32Array> = self
            .filters
            .then(|| UInt32Array::from_iter_values(0..batch.num_rows() as u32));
        for step in &self.steps {
            current = match step {
                Step::Scan(None) => current,
                Step::Scan(Some(projection)) => current.project(projection)?,
                Step::Filter(expr) => {
                    let value = expr.evaluate(&current)?.into_array(current.num_rows())?;
                    let mask = match value.data_type() {
                        DataType::Boolean => value.as_boolean().clone(),
                        other => {
                            return Err(GristError::stage(
                                &self.stage_id,
                                format!("WHERE clause is of type {other}, not boolean"),
                            ));
                        }
                    };
                    let mask = if mask.null_count() > 0 {
                        prep_null_mask_filter(&mask)
                    } else {
                        mask
                    };
                    if let Some(r) = &rows {
                        rows = Some(filter(r, &mask)?.as_primitive().clone());
                    }
                    filter_record_batch(&current, &mask)?
                }
                Step::Project(exprs, schema) => {
                    let n = current.num_rows();
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&current)?.into_array(n))
                        .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(n));
                    RecordBatch::try_new_with_options(schema.clone(), columns, &options)?
                }
            };
        }
        let rejected = match rows {
            Some(kept_rows) if kept_rows.len() < batch.num_rows() => {
                let mut keep = vec![false; batch.num_rows()];
                for r in kept_rows.values() {
                    keep[*r as usize] = true;
                }
                let dropped = BooleanArray::from(keep.iter().map(|k| !k).collect::<Vec<_>>());
                let rows = filter_record_batch(&batch, &dropped)?;
                Some(Rejected::uniform(rows, REASON))
            }
            _ => None,
        };
        Ok(Filtered {
            kept: current,
            rejected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};

    fn docs() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("text", DataType::Utf8, true),
            Field::new("id", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("short"),
                    Some("a much longer text"),
                    None,
                ])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
            ],
        )
        .unwrap()
    }

    fn run(query: &str) -> Result<Filtered> {
        let stage = Sql {
            query: query.into(),
        }
        .build(&BuildContext {
            stage_id: "s",
            made_by_pipeline: &[],
        })?;
        let Stage::Transform(t) = stage else {
            unreachable!()
        };
        let batch = docs();
        t.start(batch.schema())?.process(batch)
    }

    #[test]
    fn filter_and_project_with_rejects() {
        let out = run("SELECT *, length(text) AS n FROM docs WHERE length(text) > 6").unwrap();
        assert_eq!(out.kept.num_rows(), 1);
        assert_eq!(out.kept.schema().field(2).name(), "n");
        let ids = out
            .rejected
            .as_ref()
            .unwrap()
            .rows
            .column(1)
            .as_string::<i32>()
            .clone();
        // The null-text row is rejected too: NULL > 6 is not true.
        assert_eq!(ids.iter().collect::<Vec<_>>(), [Some("a"), Some("c")]);
        assert_eq!(out.rejected.unwrap().reasons.value(0), "sql_filter");
    }

    #[test]
    fn projection_only_keeps_every_row() {
        let out = run("SELECT id, upper(text) AS t FROM docs").unwrap();
        assert_eq!(out.kept.num_rows(), 3);
        assert!(out.rejected.is_none());
    }

    #[test]
    fn aggregates_and_unknown_columns_are_errors() {
        let e = run("SELECT count(*) FROM docs").err().unwrap().to_string();
        assert!(e.contains("GROUP BY"), "{e}");
        let e = run("SELECT * FROM docs ORDER BY id")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ORDER BY"), "{e}");
        let e = run("SELECT nope FROM docs").err().unwrap().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = run("SELEC * FROM docs").err().unwrap().to_string();
        assert!(e.contains("sql") || e.contains("SELEC"), "{e}");
    }
}
