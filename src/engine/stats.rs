//! The stats file of one stage: its counters ([`StageStats`]) merged over the tasks of a run,
//! with the counts split by the source (reader stage) the rows came from.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::plan::{Pipeline, Plan, TaskKind};
use crate::stages::Stage;

pub use crate::io::stats::StageStats;

/// The stats file of one stage, merged over the tasks of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub stage: String,
    #[serde(rename = "type")]
    pub type_name: String,
    /// Tasks whose counts are included, of `tasks_total`.
    pub tasks_done: usize,
    pub tasks_total: usize,
    #[serde(flatten)]
    pub stats: StageStats,
    /// The counts of the rows that came from each source stage (the reader they were read by).
    /// Only rows counted in stream tasks are split; a barrier's own phases count no rows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceCounts>,
}

/// A stage's counts for the rows of one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub rows_in: u64,
    pub rows_kept: u64,
    pub rejected: BTreeMap<String, u64>,
    pub bytes_in: u64,
    pub bytes_kept: u64,
}

impl SourceCounts {
    pub fn add(&mut self, s: &StageStats) {
        self.rows_in += s.rows_in;
        self.rows_kept += s.rows_kept;
        self.bytes_in += s.bytes_in;
        self.bytes_kept += s.bytes_kept;
        for (reason, n) in &s.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
    }
}

/// The source stage each stream task's rows come from, by task name: the task's own source, or,
/// for a task streaming a barrier's stored shard, the source of the task that stored it (the
/// shard file is named after that task).
pub fn task_sources(p: &Pipeline, plan: &Plan) -> HashMap<String, String> {
    let mut sources: HashMap<String, String> = HashMap::new();
    for t in plan.phases.iter().flat_map(|ph| &ph.tasks) {
        let TaskKind::Stream { root, .. } = t.kind else {
            continue;
        };
        let source = match &p.nodes[root].stage {
            Stage::Source(_) => Some(p.nodes[root].id.clone()),
            _ => t
                .input
                .file_stem()
                .and_then(|stem| sources.get(stem.to_string_lossy().as_ref()))
                .cloned(),
        };
        if let Some(source) = source {
            sources.insert(t.name.clone(), source);
        }
    }
    sources
}
