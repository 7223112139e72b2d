//! What the last dedup phase tells each input shard: for every row that belongs to a cluster of
//! two or more documents, its cluster, the cluster's size and whether it is removed. Rows not
//! listed are unique. The output transform streams a shard against its sorted records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, SchemaRef};

use super::runs::{Merge, Record};
use crate::error::{GristError, Result};
use crate::io::batch::{Filtered, batch_with_added, schema_with_added, string_column, text_values};
use crate::io::stats::{CLUSTER_SAMPLES, Sample, StageStats, sample_key, sample_limit};

/// The columns added when duplicates are marked instead of dropped.
pub const CLUSTER_COLUMN: &str = "dedup_cluster";
pub const CLUSTER_SIZE_COLUMN: &str = "dedup_cluster_size";

/// One row of a shard in a cluster of duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Membership {
    pub row: u32,
    /// The global index of the cluster's kept document (input order over all shards).
    pub cluster: u64,
    pub size: u32,
    pub removed: bool,
}

impl Record for Membership {
    const SIZE: usize = 17;
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.row.to_le_bytes());
        out[4..12].copy_from_slice(&self.cluster.to_le_bytes());
        out[12..16].copy_from_slice(&self.size.to_le_bytes());
        out[16] = u8::from(self.removed);
    }
    fn decode(b: &[u8]) -> Self {
        Membership {
            row: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            cluster: u64::from_le_bytes(b[4..12].try_into().expect("8 bytes")),
            size: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
            removed: b[16] != 0,
        }
    }
}

/// Drop the removed rows, or keep every row and add the cluster columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Drop,
    Mark,
}

impl Mode {
    /// The stages' `mark_only` parameter.
    pub fn from_mark_only(mark_only: bool) -> Self {
        match mark_only {
            true => Mode::Mark,
            false => Mode::Drop,
        }
    }
}

/// The output schema for `mode`.
pub fn output_schema(input: &SchemaRef, mode: Mode) -> SchemaRef {
    if mode == Mode::Drop {
        return input.clone();
    }
    schema_with_added(
        input,
        vec![
            Field::new(CLUSTER_COLUMN, DataType::Int64, true),
            Field::new(CLUSTER_SIZE_COLUMN, DataType::Int64, true),
        ],
    )
}

/// Streams one shard against its membership records (sorted by row, possibly over several runs).
pub struct DedupOutput {
    records: Merge<Membership>,
    next: Option<Membership>,
    row: u32,
    mode: Mode,
    reason: &'static str,
    output: SchemaRef,
    files: Vec<PathBuf>,
    /// Rows of a few clusters (the clusters with the smallest hashes, whole), for a report.
    observed: StageStats,
}

impl DedupOutput {
    pub fn open(
        files: Vec<PathBuf>,
        input: &SchemaRef,
        mode: Mode,
        reason: &'static str,
    ) -> Result<Self> {
        let mut records = Merge::open(&files)?;
        let next = records.next_record()?.map(|(r, _)| r);
        Ok(DedupOutput {
            records,
            next,
            row: 0,
            mode,
            reason,
            output: output_schema(input, mode),
            files,
            observed: StageStats::default(),
        })
    }

    /// The record of row `row`, if it has one.
    fn record_of(&mut self, row: u32) -> Result<Option<Membership>> {
        let Some(r) = self.next else {
            return Ok(None);
        };
        if r.row > row {
            return Ok(None);
        }
        if r.row < row {
            // A record for a row already passed: the files do not describe this shard.
            return Err(self.mismatch(format!("a record for row {} is out of order", r.row)));
        }
        self.next = self.records.next_record()?.map(|(r, _)| r);
        Ok(Some(r))
    }

    fn mismatch(&self, what: String) -> GristError {
        GristError::data(
            self.files.first().map_or(Path::new(""), |p| p.as_path()),
            format!(
                "dedup results do not match the stored input: {what}; delete the stage's workdir and run again"
            ),
        )
    }

    /// The schema of the rows it passes on.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The next batch of the shard, in order: removed rows dropped (with the stage's reason) or
    /// every row kept with its cluster columns.
    pub fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let n = batch.num_rows();
        let mut keep = Vec::with_capacity(n);
        let mut clusters = Vec::with_capacity(n);
        let mut sizes = Vec::with_capacity(n);
        for _ in 0..n {
            let record = self.record_of(self.row)?;
            self.row += 1;
            keep.push(!record.is_some_and(|r| r.removed));
            clusters.push(record.map(|r| r.cluster as i64));
            sizes.push(record.map(|r| i64::from(r.size)));
        }
        self.sample_clusters(&batch, &clusters, &sizes, &keep);
        match self.mode {
            Mode::Mark => Ok(Filtered::all_kept(batch_with_added(
                &batch,
                &self.output,
                vec![
                    Arc::new(Int64Array::from(clusters)),
                    Arc::new(Int64Array::from(sizes)),
                ],
            )?)),
            Mode::Drop => {
                let dropped = keep.iter().filter(|k| !**k).count();
                if dropped == 0 {
                    return Ok(Filtered::all_kept(batch));
                }
                Filtered::split(
                    &batch,
                    &BooleanArray::from(keep),
                    StringArray::from(vec![self.reason; dropped]),
                )
            }
        }
    }
}

impl DedupOutput {
    /// Offers the rows of `batch` that belong to a cluster to the cluster sample. Keyed by the
    /// cluster's hash first, so the sample holds whole clusters, the same ones in every task.
    fn sample_clusters(
        &mut self,
        batch: &RecordBatch,
        clusters: &[Option<i64>],
        sizes: &[Option<i64>],
        keep: &[bool],
    ) {
        let limit = sample_limit(CLUSTER_SAMPLES);
        let (Ok(texts), Ok(ids)) = (text_values(batch), string_column(batch, "id")) else {
            return;
        };
        for (r, cluster) in clusters.iter().enumerate() {
            let Some(cluster) = cluster else { continue };
            let key0 = sample_key(&cluster.to_string());
            let full = self
                .observed
                .samples
                .get(CLUSTER_SAMPLES)
                .filter(|s| s.len() >= limit)
                .and_then(|s| s.last())
                .is_some_and(|last| last.key[0] < key0);
            if full {
                continue;
            }
            let id = ids
                .as_ref()
                .filter(|ids| ids.is_valid(r))
                .map_or("", |ids| ids.value(r));
            let note = format!(
                "cluster {cluster} of {} documents, {}",
                sizes[r].unwrap_or(0),
                if keep[r] { "kept" } else { "removed" }
            );
            let text = texts[r].unwrap_or("");
            // Without ids, rows of a cluster are told apart by their texts.
            let key1 = sample_key(if ids.is_some() { id } else { text });
            let sample = Sample::new([key0, key1], id, text, note);
            self.observed.offer_sample(CLUSTER_SAMPLES, sample);
        }
    }

    /// Moves the cluster sample into `stats`.
    pub fn observe(&mut self, stats: &mut StageStats) {
        let observed = std::mem::take(&mut self.observed);
        stats.merge(&observed);
    }
}

impl Drop for DedupOutput {
    fn drop(&mut self) {
        // Records past the last row mean the shard is shorter than when it was hashed.
        if let Some(r) = self.next
            && !std::thread::panicking()
        {
            tracing::warn!("{}", self.mismatch(format!("row {} was never read", r.row)));
        }
    }
}
