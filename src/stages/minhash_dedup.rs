//! `minhash_dedup`: near-duplicate removal with MinHash-LSH, as datatrove 0.10.1 (FineWeb) does it
//! (tests/parity/MINHASH.md). A barrier: `signatures` (per input shard) → `buckets` (per band) →
//! `clusters` (one task) → the output stream drops (or marks) duplicates shard by shard.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind, TransformTask, for_each_stored_batch, text_values,
};
use crate::dedup::membership::{DedupOutput, Membership, Mode};
use crate::dedup::minhash::{MinHasher, ShingleHash};
use crate::dedup::runs::{Record, RunReader, RunWriter, merge_in_passes, write_run};
use crate::dedup::union_find::UnionFind;
use crate::dedup::{offsets, read_counts, remove_stale, remove_stale_runs, size_bin, write_count};
use crate::error::{GristError, IoContext, Result};
use crate::io::atomic::PendingFile;
use crate::io::stats::StageStats;
use crate::util::size::ByteSize;

/// Removes near-duplicates with MinHash-LSH, with FineWeb's defaults (datatrove 0.10.1's
/// `MinhashConfig`): texts simplified (lowercase, digits to 0, punctuation to spaces, accents
/// dropped, whitespace collapsed), split into words as spaCy's English tokenizer does, shingled
/// into `n_grams`-word windows hashed to 64 bits (`hash`: `xxhash`, or `sha1` to reproduce
/// FineWeb exactly), `num_buckets` bands of `hashes_per_bucket` permutations
/// `(a·h + b) mod (2^61 − 1)` drawn from `seed` as numpy does. Two documents are candidates when
/// a band is equal; candidates are joined into clusters (union-find) and one document of each
/// cluster is kept (datatrove's choice: the root of the union by size). Documents shorter than
/// `n_grams` words are never matched. Two documents with Jaccard similarity `s` of their shingle
/// sets are candidates with probability `1 − (1 − s^r)^b` (r rows, b bands: about 0.5 at
/// s = 0.75, 0.92 at s = 0.85 with the defaults). With `mark_only`, nothing is dropped:
/// `dedup_cluster` (the index of the kept document, in input order) and `dedup_cluster_size` are
/// added to documents in clusters. Reason: `near_duplicate`. Phases: `signatures` (one task per
/// input shard), `buckets` (one per band), `clusters` (one; 12 bytes of memory per document in
/// a candidate pair); the
/// stats hold candidate pairs, the cluster size histogram and the share of documents removed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinhashDedup {
    /// Words per shingle.
    #[serde(default = "default_n_grams")]
    pub n_grams: usize,
    /// Bands (LSH buckets).
    #[serde(default = "default_num_buckets")]
    pub num_buckets: usize,
    /// Permutations (rows) per band.
    #[serde(default = "default_hashes_per_bucket")]
    pub hashes_per_bucket: usize,
    /// Seeds the permutations (numpy `RandomState`).
    #[serde(default = "default_seed")]
    pub seed: u32,
    /// Shingle hash: `xxhash` (XXH64) or `sha1`.
    #[serde(default = "default_hash")]
    pub hash: ShingleHash,
    /// Keep every document and add `dedup_cluster` / `dedup_cluster_size` instead.
    #[serde(default)]
    pub mark_only: bool,
    /// Memory a task may use (a size: `256MiB`, `1GiB`). `signatures`: a shard with more
    /// documents than fit (about 590 k per GiB with the defaults; 1 GiB when unset) is hashed in
    /// chunks, each written as sorted runs and merged; the result is the same. `clusters`:
    /// about 12 bytes per document in a candidate pair (up to twice that while the pairs are
    /// read); when set, a run needing more stops with an error saying how much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget: Option<ByteSize>,
}

/// Signatures held per task when no `memory_budget` is set.
const DEFAULT_SIGNATURE_BUDGET: ByteSize = ByteSize(1 << 30);

fn default_n_grams() -> usize {
    5
}
fn default_num_buckets() -> usize {
    14
}
fn default_hashes_per_bucket() -> usize {
    8
}
fn default_seed() -> u32 {
    1
}
fn default_hash() -> ShingleHash {
    ShingleHash::Xxhash
}

pub const REASON: &str = "near_duplicate";

/// Most rows per band a band record holds.
const MAX_ROWS: usize = 32;

impl StageConfig for MinhashDedup {
    const TYPE: &'static str = "minhash_dedup";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut problem = |param, message| problems.push(ParamProblem { param, message });
        if self.n_grams == 0 {
            problem("n_grams", "`n_grams` must be at least 1".into());
        }
        if !(1..=1024).contains(&self.num_buckets) {
            problem(
                "num_buckets",
                format!("`num_buckets` {} is not in 1..=1024", self.num_buckets),
            );
        }
        if let Some(b) = self.memory_budget
            && b.0 < 1024
        {
            problem(
                "memory_budget",
                format!("`memory_budget` {b} is under 1KiB"),
            );
        }
        if !(1..=MAX_ROWS).contains(&self.hashes_per_bucket) {
            problem(
                "hashes_per_bucket",
                format!(
                    "`hashes_per_bucket` {} is not in 1..={MAX_ROWS}",
                    self.hashes_per_bucket
                ),
            );
        }
        problems
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Stage> {
        Ok(Stage::Barrier(Arc::new(MinhashBarrier {
            config: self.clone(),
            hasher: MinHasher::new(
                self.n_grams,
                self.num_buckets * self.hashes_per_bucket,
                self.seed,
                self.hash,
            ),
        })))
    }
}

struct MinhashBarrier {
    config: MinhashDedup,
    hasher: MinHasher,
}

fn band_file(dir: &Path, band: usize, shard: usize) -> PathBuf {
    dir.join(format!("signatures/{band:04}/{shard:06}.bin"))
}

/// Run `part` of band `band` of a shard, while its signatures are written in chunks.
fn band_part_file(dir: &Path, band: usize, shard: usize, part: usize) -> PathBuf {
    dir.join(format!("signatures/{band:04}/{shard:06}.part{part:05}.bin"))
}

/// Merges sorted band runs into one sorted band file at `out` (same record format). Records
/// order by (values, shard, row), the order sorting all of them at once gives. More than
/// [`crate::dedup::runs::MAX_OPEN_RUNS`] runs merge in passes, through intermediate runs beside `out`.
fn merge_band_runs(runs: &[PathBuf], out: &Path, rows: usize) -> Result<()> {
    merge_in_passes(runs, out, &|group, path| {
        merge_band_runs_once(group, path, rows)
    })
}

fn merge_band_runs_once(runs: &[PathBuf], out: &Path, rows: usize) -> Result<()> {
    let mut readers = Vec::with_capacity(runs.len());
    let mut heap: BinaryHeap<Reverse<(BandEntry, usize)>> = BinaryHeap::new();
    for (i, path) in runs.iter().enumerate() {
        let mut reader = BandReader::open(path, rows)?;
        if let Some(e) = reader.next_entry()? {
            heap.push(Reverse((e, i)));
        }
        readers.push(reader);
    }
    let file = File::create(out).at(out)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    while let Some(Reverse(((values, shard, row), i))) = heap.pop() {
        for v in &values[..rows] {
            w.write_all(&v.to_le_bytes()).at(out)?;
        }
        w.write_all(&shard.to_le_bytes()).at(out)?;
        w.write_all(&row.to_le_bytes()).at(out)?;
        if let Some(next) = readers[i].next_entry()? {
            heap.push(Reverse((next, i)));
        }
    }
    w.flush().at(out)
}

fn count_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("signatures/counts/{shard:06}.txt"))
}

fn pairs_file(dir: &Path, band: usize) -> PathBuf {
    dir.join(format!("pairs/{band:04}.bin"))
}

fn members_file(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("members/{shard:06}.bin"))
}

/// A candidate pair: (shard, row) of two documents with an equal band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    a: (u32, u32),
    b: (u32, u32),
}

impl Record for Pair {
    const SIZE: usize = 16;
    fn encode(&self, out: &mut [u8]) {
        for (i, v) in [self.a.0, self.a.1, self.b.0, self.b.1].iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    fn decode(b: &[u8]) -> Self {
        let v = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        Pair {
            a: (v(0), v(1)),
            b: (v(2), v(3)),
        }
    }
}

/// One document's band: its values, then where it is. Ordered as datatrove sorts and merges
/// band records: by the values, then by shard and row.
type BandEntry = ([u64; MAX_ROWS], u32, u32);

/// Reads a band file of `rows`-value records.
struct BandReader {
    input: BufReader<File>,
    path: PathBuf,
    rows: usize,
    buf: Vec<u8>,
}

impl BandReader {
    fn open(path: &Path, rows: usize) -> Result<Self> {
        let file = File::open(path).at(path)?;
        Ok(BandReader {
            input: BufReader::with_capacity(1 << 16, file),
            path: path.to_path_buf(),
            rows,
            buf: vec![0u8; rows * 8 + 8],
        })
    }

    fn next_entry(&mut self) -> Result<Option<BandEntry>> {
        match self.input.read_exact(&mut self.buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(GristError::io(&self.path, e)),
        }
        let mut values = [0u64; MAX_ROWS];
        for (i, v) in values.iter_mut().take(self.rows).enumerate() {
            *v = u64::from_le_bytes(self.buf[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        }
        let at = self.rows * 8;
        let word = |i: usize| u32::from_le_bytes(self.buf[i..i + 4].try_into().expect("4 bytes"));
        Ok(Some((values, word(at), word(at + 4))))
    }
}

impl Barrier for MinhashBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["signatures", "buckets", "clusters"]
    }

    fn output_phase(&self) -> &'static str {
        "filter"
    }

    fn task_count(&self, phase: usize, inputs: &[BarrierInput]) -> usize {
        match phase {
            0 => inputs.len(),
            1 => self.config.num_buckets,
            _ => 1,
        }
    }

    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(Some(crate::dedup::membership::output_schema(
            &input,
            self.mode(),
        )))
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let started = Instant::now();
        let (mut outcome, phase) = match task.phase {
            0 => (self.signatures(task)?, "signatures"),
            1 => (self.buckets(task)?, "buckets"),
            _ => (self.clusters(task)?, "clusters"),
        };
        outcome
            .stats
            .metrics
            .insert(format!("{phase}_seconds"), started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    fn start_output(
        &self,
        dir: &Path,
        shard: usize,
        input: SchemaRef,
    ) -> Result<Box<dyn TransformTask>> {
        let file = members_file(dir, shard);
        let files = if file.exists() { vec![file] } else { vec![] };
        Ok(Box::new(DedupOutput::open(
            files,
            &input,
            self.mode(),
            REASON,
        )?))
    }
}

impl MinhashBarrier {
    fn mode(&self) -> Mode {
        Mode::from_mark_only(self.config.mark_only)
    }

    /// Writes band `band` of the signatures in memory to `path`, sorted by the band's values
    /// (ties in row order): records of `hashes_per_bucket` values, the shard, the row.
    fn write_band(
        &self,
        path: &Path,
        band: usize,
        shard: usize,
        sigs: &[u64],
        rows: &[u32],
    ) -> Result<()> {
        let hashes = self.hasher.num_hashes();
        let r = self.config.hashes_per_bucket;
        let values = |d: u32| {
            let start = d as usize * hashes + band * r;
            &sigs[start..start + r]
        };
        let mut order: Vec<u32> = (0..rows.len() as u32).collect();
        // Rows ascend with d, so ties come out in row order.
        order.sort_unstable_by(|&x, &y| values(x).cmp(values(y)).then(x.cmp(&y)));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let file = File::create(path).at(path)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        for &d in &order {
            for v in values(d) {
                out.write_all(&v.to_le_bytes()).at(path)?;
            }
            out.write_all(&(shard as u32).to_le_bytes()).at(path)?;
            out.write_all(&rows[d as usize].to_le_bytes()).at(path)?;
        }
        out.flush().at(path)
    }

    /// Signatures of one input shard, written as one sorted file per band. Signatures are
    /// held for at most a chunk of documents that fits in `memory_budget`; a shard with more
    /// is written as sorted runs per band (one per chunk) merged into the band file at the end,
    /// which gives the same file as sorting the whole shard at once.
    fn signatures(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let k = task.index;
        let hashes = self.hasher.num_hashes();
        // Half the budget for the signatures and their sort order (the rest: the batch being
        // read and hashed, the reader, buffers).
        let per_doc = (hashes * 8 + 8) as u64;
        let budget = self
            .config
            .memory_budget
            .unwrap_or(DEFAULT_SIGNATURE_BUDGET);
        let chunk_docs = (budget.0 / 2 / per_doc).max(1024) as usize;
        remove_stale_runs(&task.dir.join("signatures"), &format!("{k:06}.part"));
        // Flat signatures of the documents that have one, with their rows.
        let mut sigs: Vec<u64> = Vec::new();
        let mut rows: Vec<u32> = Vec::new();
        let mut parts: Vec<Vec<PathBuf>> = vec![Vec::new(); self.config.num_buckets];
        let mut total = 0u64;
        let mut with_signature = 0u64;
        let result = for_each_stored_batch(&task.inputs[k].path, task.batch_size, |batch| {
            let texts = text_values(batch)?;
            let batch_sigs: Vec<Option<Vec<u64>>> = texts
                .par_iter()
                .map(|t| self.hasher.signature(t.unwrap_or("")))
                .collect();
            for sig in batch_sigs {
                if let Some(sig) = sig {
                    sigs.extend_from_slice(&sig);
                    rows.push(u32::try_from(total).map_err(|_| {
                        GristError::Usage("a dedup input shard has more than 2^32 rows".into())
                    })?);
                    with_signature += 1;
                }
                total += 1;
                if rows.len() >= chunk_docs {
                    let part = parts[0].len();
                    for (band, paths) in parts.iter_mut().enumerate() {
                        let path = band_part_file(task.dir, band, k, part);
                        // Listed first, so a half-written part is removed on failure too.
                        paths.push(path.clone());
                        self.write_band(&path, band, k, &sigs, &rows)?;
                    }
                    sigs.clear();
                    rows.clear();
                }
            }
            Ok(())
        });
        let remove_parts = |parts: &[Vec<PathBuf>]| {
            for path in parts.iter().flatten() {
                let _ = std::fs::remove_file(path);
            }
        };
        if let Err(e) = result {
            remove_parts(&parts);
            return Err(e);
        }
        let mut outputs = Vec::with_capacity(self.config.num_buckets + 1);
        for band in 0..self.config.num_buckets {
            let path = band_file(task.dir, band, k);
            let pending = PendingFile::new(path)?;
            let written = if parts[band].is_empty() {
                self.write_band(&pending.tmp, band, k, &sigs, &rows)
            } else {
                // What is left is one more run; then every run merges into the band file.
                let last = band_part_file(task.dir, band, k, parts[band].len());
                let left = if rows.is_empty() {
                    Ok(())
                } else {
                    parts[band].push(last.clone());
                    self.write_band(&last, band, k, &sigs, &rows)
                };
                left.and_then(|()| {
                    merge_band_runs(&parts[band], &pending.tmp, self.config.hashes_per_bucket)
                })
            };
            match written {
                Ok(()) => outputs.push(pending.commit()?),
                Err(e) => {
                    pending.abandon();
                    remove_parts(&parts);
                    return Err(e);
                }
            }
        }
        let runs = parts[0].len();
        remove_parts(&parts);
        let counts = count_file(task.dir, k);
        write_count(&counts, total)?;
        outputs.push(counts);
        let mut stats = StageStats::default();
        stats.metrics.insert("documents".into(), total as f64);
        if runs > 0 {
            stats
                .metrics
                .insert("signature_runs_spilled".into(), runs as f64);
        }
        stats
            .metrics
            .insert("documents_with_signature".into(), with_signature as f64);
        Ok(BarrierOutcome { outputs, stats })
    }

    /// One band over all shards: the sorted band files merged; each record paired with the one
    /// before it when their bands are equal (datatrove's `MinhashDedupBuckets`).
    fn buckets(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let band = task.index;
        let r = self.config.hashes_per_bucket;
        let mut readers = Vec::with_capacity(task.inputs.len());
        let mut heap: BinaryHeap<Reverse<(BandEntry, usize)>> = BinaryHeap::new();
        for k in 0..task.inputs.len() {
            let mut reader = BandReader::open(&band_file(task.dir, band, k), r)?;
            if let Some(e) = reader.next_entry()? {
                heap.push(Reverse((e, k)));
            }
            readers.push(reader);
        }
        let mut pairs = RunWriter::<Pair>::create(&pairs_file(task.dir, band))?;
        let mut count = 0u64;
        let mut last: Option<BandEntry> = None;
        while let Some(Reverse((entry, k))) = heap.pop() {
            if let Some(next) = readers[k].next_entry()? {
                heap.push(Reverse((next, k)));
            }
            if let Some(prev) = last
                && prev.0 == entry.0
            {
                pairs.push(&Pair {
                    a: (prev.1, prev.2),
                    b: (entry.1, entry.2),
                })?;
                count += 1;
            }
            last = Some(entry);
        }
        let path = pairs.commit()?;
        let mut stats = StageStats::default();
        stats.metrics.insert("candidate_pairs".into(), count as f64);
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats,
        })
    }

    /// Union-find over every band's pairs, band 0 first; each cluster's root is kept. Only the
    /// documents that appear in a candidate pair are held (their global indices, sorted, and a
    /// union-find over their ranks: 12 bytes each), so memory follows the duplicates, not the
    /// corpus. Ranks keep the order of the indices and unions come in the same order, so the
    /// roots are those of a union-find over every document.
    fn clusters(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let shards = task.inputs.len();
        let counts = read_counts((0..shards).map(|k| count_file(task.dir, k)))?;
        let starts = offsets(&counts);
        let total: u64 = counts.iter().sum();
        if total >= u64::from(u32::MAX) {
            return Err(GristError::Usage(format!(
                "{total} documents: one minhash_dedup handles fewer than 2^32; split the input"
            )));
        }
        let global = |(shard, row): (u32, u32)| -> Result<u32> {
            let k = shard as usize;
            if k >= shards || u64::from(row) >= counts[k] {
                return Err(GristError::Usage(format!(
                    "a candidate pair names row {row} of shard {shard}, which does not exist"
                )));
            }
            Ok((starts[k] + u64::from(row)) as u32)
        };
        // Without a budget, as many as there are (as before budgets existed).
        let budget = self.config.memory_budget.map_or(u64::MAX, |b| b.0);
        let over_budget = |n: usize| {
            GristError::Usage(format!(
                "minhash_dedup's clusters phase needs about {} MiB for the {n} documents in \
                 candidate pairs, more than its memory_budget of {}; raise memory_budget",
                (n as u64 * 12) >> 20,
                ByteSize(budget)
            ))
        };
        // Pass 1: the documents in any pair, sorted and distinct (compacted as they come).
        let mut ids: Vec<u32> = Vec::new();
        let mut compact_at = 1 << 20;
        for band in 0..self.config.num_buckets {
            let mut reader = RunReader::<Pair>::open(&pairs_file(task.dir, band))?;
            while let Some(p) = reader.next_record()? {
                ids.push(global(p.a)?);
                ids.push(global(p.b)?);
                if ids.len() >= compact_at {
                    ids.sort_unstable();
                    ids.dedup();
                    if (ids.len() as u64).saturating_mul(12) > budget {
                        return Err(over_budget(ids.len()));
                    }
                    compact_at = (ids.len() * 2).max(1 << 20);
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.shrink_to_fit();
        if (ids.len() as u64).saturating_mul(12) > budget {
            return Err(over_budget(ids.len()));
        }
        let rank = |g: u32| {
            ids.binary_search(&g)
                .expect("every paired document is listed") as u32
        };
        // Pass 2: the unions, in the same order as over every document.
        let mut uf = UnionFind::new(ids.len());
        for band in 0..self.config.num_buckets {
            let mut reader = RunReader::<Pair>::open(&pairs_file(task.dir, band))?;
            while let Some(p) = reader.next_record()? {
                uf.union(rank(global(p.a)?), rank(global(p.b)?));
            }
        }
        let mut outputs = Vec::new();
        let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
        let (mut removed, mut clusters) = (0u64, 0u64);
        let mut members: Vec<Vec<Membership>> = vec![Vec::new(); shards];
        // Global indices ascend with (shard, row): walk the shards alongside.
        let mut k = 0;
        for (x, &g) in ids.iter().enumerate() {
            let x = x as u32;
            while u64::from(g) >= starts[k] + counts[k] {
                k += 1;
            }
            let root = uf.find(x);
            let size = uf.size_of_root(root);
            if size < 2 {
                continue;
            }
            if root == x {
                clusters += 1;
                *metrics.entry(size_bin(u64::from(size))).or_default() += 1.0;
            } else {
                removed += 1;
            }
            members[k].push(Membership {
                row: (u64::from(g) - starts[k]) as u32,
                cluster: u64::from(ids[root as usize]),
                size,
                removed: root != x,
            });
        }
        for (k, members) in members.iter().enumerate() {
            let path = members_file(task.dir, k);
            if members.is_empty() {
                remove_stale(&path)?;
            } else {
                outputs.push(write_run(&path, members)?);
            }
        }
        metrics.insert("clusters".into(), clusters as f64);
        metrics.insert("duplicates_removed".into(), removed as f64);
        metrics.insert(
            "removed_share".into(),
            if total == 0 {
                0.0
            } else {
                removed as f64 / total as f64
            },
        );
        let stats = StageStats {
            metrics,
            ..Default::default()
        };
        Ok(BarrierOutcome { outputs, stats })
    }
}
