//! The stats file of one stage: its counters ([`StageStats`]) merged over the tasks of a run.

use serde::{Deserialize, Serialize};

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
}
