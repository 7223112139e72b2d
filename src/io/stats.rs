//! Per-stage counters: what a stage did to the rows that reached it. Invariant, per stage and
//! per task: `rows_in = rows_kept + Σ rejected`. Stages, the generating code and the engine all
//! fill or merge them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub rows_in: u64,
    pub rows_kept: u64,
    /// Rows rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Bytes in: shard file bytes for a source, `text` bytes for other stages.
    pub bytes_in: u64,
    /// `text` bytes of the kept rows.
    pub bytes_kept: u64,
    /// Time spent in the stage itself.
    pub seconds: f64,
    /// Stage-specific figures (a classifier's validation F1, ...), summed over tasks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl StageStats {
    pub fn rows_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Whether every row is accounted for.
    pub fn balanced(&self) -> bool {
        self.rows_in == self.rows_kept + self.rows_rejected()
    }

    pub fn merge(&mut self, other: &StageStats) {
        self.rows_in += other.rows_in;
        self.rows_kept += other.rows_kept;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_kept += other.bytes_kept;
        self.seconds += other.seconds;
        for (name, v) in &other.metrics {
            *self.metrics.entry(name.clone()).or_default() += v;
        }
    }

    pub fn reject(&mut self, reason: &str, n: u64) {
        *self.rejected.entry(reason.to_string()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_up_and_keeps_balance() {
        let mut a = StageStats {
            rows_in: 5,
            rows_kept: 3,
            ..Default::default()
        };
        a.reject("x", 2);
        let mut b = StageStats {
            rows_in: 4,
            rows_kept: 1,
            ..Default::default()
        };
        b.reject("x", 1);
        b.reject("y", 2);
        a.merge(&b);
        assert_eq!(a.rows_in, 9);
        assert_eq!(a.rejected["x"], 3);
        assert!(a.balanced());
    }
}
