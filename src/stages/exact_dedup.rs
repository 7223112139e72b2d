//! `exact_dedup`: removes documents whose text (optionally simplified) was seen before, keeping
//! the first in input order. A barrier: `hashes` (per input shard) → `duplicates` (per hash
//! partition) → the output stream drops (or marks) the duplicates shard by shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind, TransformTask, for_each_stored_batch, text_values,
};
use crate::dedup::membership::{DedupOutput, Membership, Mode};
use crate::dedup::runs::{Merge, Record, RunWriter, merge_in_passes, write_run, write_sorted};
use crate::dedup::simplify::simplify_text;
use crate::dedup::{offsets, read_counts, remove_stale, remove_stale_runs, size_bin, write_count};
use crate::error::{GristError, Result};
use crate::io::stats::StageStats;
use crate::util::size::ByteSize;

/// Removes exact duplicates: documents whose text has the same 128-bit xxh3 hash as an earlier
/// document's (earlier in input order: input shards in plan order, rows in order). With
/// `normalize`, texts are simplified first as MinHash does (lowercase, digits to 0, punctuation
/// to spaces, accents dropped, whitespace collapsed), so copies differing only in those count as
/// duplicates. With `mark_only`, nothing is dropped: `dedup_cluster` (the index of the kept
/// copy, in input order) and `dedup_cluster_size` are added to documents that have copies.
/// Reason: `exact_duplicate`. Phases: `hashes` (one task per input shard), `duplicates` (one per
/// hash partition); stats hold the cluster size histogram.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExactDedup {
    /// Simplify texts before hashing.
    #[serde(default)]
    pub normalize: bool,
    /// Hash partitions: tasks of the `duplicates` phase.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// Keep every document and add `dedup_cluster` / `dedup_cluster_size` instead.
    #[serde(default)]
    pub mark_only: bool,
    /// Memory a `hashes` task may use for hash records (32 bytes per document in memory; a
    /// size: `256MiB`, `1GiB`; 1 GiB when unset): a larger shard is written as sorted runs
    /// merged at the end, with the same result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
}

fn default_partitions() -> usize {
    16
}

/// Hash records held per task when no `memory_budget` is set.
const DEFAULT_BUDGET: ByteSize = ByteSize(1 << 30);

pub const REASON: &str = "exact_duplicate";

impl StageConfig for ExactDedup {
    const TYPE: &'static str = "exact_dedup";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(1..=4096).contains(&self.partitions) {
            problems.push(ParamProblem {
                param: "partitions",
                message: format!("`partitions` {} is not in 1..=4096", self.partitions),
            });
        }
        if let Some(b) = self.memory_budget
            && b.0 < 1024
        {
            problems.push(ParamProblem {
                param: "memory_budget",
                message: format!("`memory_budget` {b} is under 1KiB"),
            });
        }
        problems
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Barrier(Arc::new(ExactBarrier {
            config: self.clone(),
        })))
    }
}

struct ExactBarrier {
    config: ExactDedup,
}

/// A document's hash and place, ordered by hash then input order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Keyed {
    hash: u128,
    shard: u32,
    row: u32,
}

impl Record for Keyed {
    const SIZE: usize = 24;
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.hash.to_le_bytes());
        out[16..20].copy_from_slice(&self.shard.to_le_bytes());
        out[20..].copy_from_slice(&self.row.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Keyed {
            hash: u128::from_le_bytes(b[..16].try_into().expect("16 bytes")),
            shard: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            row: u32::from_le_bytes(b[20..].try_into().expect("4 bytes")),
        }
    }
}

fn hashes_file(dir: &Path, partition: usize, shard: usize) -> PathBuf {
    dir.join(format!("hashes/{partition:04}/{shard:06}.bin"))
}

/// Merges sorted runs into `out`, in passes of at most [`crate::dedup::runs::MAX_OPEN_RUNS`] open runs.
fn merge_runs(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    merge_in_passes(runs, out, &|group, path| {
        let mut merge = Merge::<Keyed>::open(group)?;
        let mut writer = RunWriter::<Keyed>::create(path)?;
        while let Some((r, _)) = merge.next_record()? {
            writer.push(&r)?;
        }
        writer.commit().map(|_| ())
    })?;
    Ok(out.to_path_buf())
}

/// Run `run` of partition `partition` of a shard, while its hashes are written in chunks.
fn hashes_run_file(dir: &Path, partition: usize, shard: usize, run: usize) -> PathBuf {
    dir.join(format!("hashes/{partition:04}/{shard:06}.run{run:05}.bin"))
}

fn members_file(dir: &Path, partition: usize, shard: usize) -> PathBuf {
    dir.join(format!("members/{partition:04}/{shard:06}.bin"))
}

fn count_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("counts/{shard:06}.json"))
}

impl Barrier for ExactBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["hashes", "duplicates"]
    }

    fn output_phase(&self) -> &'static str {
        "filter"
    }

    fn task_count(&self, phase: usize, inputs: &[BarrierInput]) -> usize {
        match phase {
            0 => inputs.len(),
            _ => self.config.partitions,
        }
    }

    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(Some(crate::dedup::membership::output_schema(
            &input,
            self.mode(),
        )))
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        match task.phase {
            0 => self.hash_shard(task),
            _ => self.find_duplicates(task),
        }
    }

    fn start_output(
        &self,
        dir: &Path,
        shard: usize,
        input: SchemaRef,
    ) -> Result<Box<dyn TransformTask>> {
        let files = (0..self.config.partitions)
            .map(|p| members_file(dir, p, shard))
            .filter(|f| f.exists())
            .collect();
        Ok(Box::new(DedupOutput::open(
            files,
            &input,
            self.mode(),
            REASON,
        )?))
    }
}

impl ExactBarrier {
    fn mode(&self) -> Mode {
        Mode::from_mark_only(self.config.mark_only)
    }

    fn hash_shard(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let k = task.index;
        let parts = self.config.partitions;
        // Half the budget for the records; the sort is in place.
        let budget = self.config.memory_budget.unwrap_or(DEFAULT_BUDGET).0;
        let chunk = (budget / 2 / std::mem::size_of::<Keyed>() as u64).max(1024) as usize;
        remove_stale_runs(&task.dir.join("hashes"), &format!("{k:06}.run"));
        let mut buckets: Vec<Vec<Keyed>> = vec![Vec::new(); parts];
        let mut held = 0usize;
        let mut runs: Vec<Vec<PathBuf>> = vec![Vec::new(); parts];
        let mut row = 0u32;
        let hashed = for_each_stored_batch(&task.inputs[k].path, task.batch_size, |batch| {
            for text in text_values(batch)? {
                let text = text.unwrap_or("");
                let hash = match self.config.normalize {
                    true => xxhash_rust::xxh3::xxh3_128(simplify_text(text).as_bytes()),
                    false => xxhash_rust::xxh3::xxh3_128(text.as_bytes()),
                };
                let p = ((hash >> 64) as u64 % parts as u64) as usize;
                buckets[p].push(Keyed {
                    hash,
                    shard: k as u32,
                    row,
                });
                row = row.checked_add(1).ok_or_else(|| {
                    GristError::Usage("a dedup input shard has more than 2^32 rows".into())
                })?;
                held += 1;
                if held >= chunk {
                    for (p, records) in buckets.iter_mut().enumerate() {
                        let path = hashes_run_file(task.dir, p, k, runs[p].len());
                        runs[p].push(path.clone());
                        write_sorted(&path, records)?;
                        records.clear();
                    }
                    held = 0;
                }
            }
            Ok(())
        });
        let remove_runs = |runs: &[Vec<PathBuf>]| {
            for path in runs.iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
        };
        if let Err(e) = hashed {
            remove_runs(&runs);
            return Err(e);
        }
        let spilled = runs[0].len();
        let mut outputs = Vec::with_capacity(parts + 1);
        for (p, mut records) in buckets.into_iter().enumerate() {
            let path = hashes_file(task.dir, p, k);
            if runs[p].is_empty() {
                outputs.push(write_sorted(&path, &mut records)?);
                continue;
            }
            // The records still held are one more run; then the runs merge in order.
            let written = (|| -> Result<PathBuf> {
                if !records.is_empty() {
                    let last = hashes_run_file(task.dir, p, k, runs[p].len());
                    runs[p].push(last.clone());
                    write_sorted(&last, &mut records)?;
                }
                merge_runs(&runs[p], &path)
            })();
            match written {
                Ok(path) => outputs.push(path),
                Err(e) => {
                    remove_runs(&runs);
                    return Err(e);
                }
            }
        }
        remove_runs(&runs);
        let counts = count_file(task.dir, k);
        write_count(&counts, u64::from(row))?;
        outputs.push(counts);
        let mut stats = StageStats::default();
        stats.metrics.insert("documents".into(), f64::from(row));
        if spilled > 0 {
            stats
                .metrics
                .insert("hash_runs_spilled".into(), spilled as f64);
        }
        Ok(BarrierOutcome { outputs, stats })
    }

    fn find_duplicates(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let p = task.index;
        let shards = task.inputs.len();
        let counts = read_counts((0..shards).map(|k| count_file(task.dir, k)))?;
        let offsets = offsets(&counts);
        let files: Vec<PathBuf> = (0..shards).map(|k| hashes_file(task.dir, p, k)).collect();
        let mut merge = Merge::<Keyed>::open(&files)?;
        let mut members: Vec<Vec<Membership>> = vec![Vec::new(); shards];
        let mut histogram: BTreeMap<String, f64> = BTreeMap::new();
        let mut removed = 0u64;
        let mut run: Vec<Keyed> = Vec::new();
        let mut flush = |run: &mut Vec<Keyed>, members: &mut Vec<Vec<Membership>>| {
            if run.len() > 1 {
                let first = run[0];
                let cluster = offsets[first.shard as usize] + u64::from(first.row);
                for (i, d) in run.iter().enumerate() {
                    members[d.shard as usize].push(Membership {
                        row: d.row,
                        cluster,
                        size: run.len() as u32,
                        removed: i > 0,
                    });
                }
                removed += run.len() as u64 - 1;
                *histogram.entry(size_bin(run.len() as u64)).or_default() += 1.0;
            }
            run.clear();
        };
        while let Some((r, _)) = merge.next_record()? {
            if run.last().is_some_and(|last| last.hash != r.hash) {
                flush(&mut run, &mut members);
            }
            run.push(r);
        }
        flush(&mut run, &mut members);
        let mut outputs = Vec::new();
        for (k, mut records) in members.into_iter().enumerate() {
            if records.is_empty() {
                remove_stale(&members_file(task.dir, p, k))?;
                continue;
            }
            records.sort_unstable();
            outputs.push(write_run(&members_file(task.dir, p, k), &records)?);
        }
        let mut stats = StageStats {
            metrics: histogram,
            ..Default::default()
        };
        stats.metrics.insert("duplicates".into(), removed as f64);
        Ok(BarrierOutcome { outputs, stats })
    }
}
