//! `mix`: draws a token budget from several tokenized sources by weight or fixed target, caps
//! each source's epochs (UniMax-style upsampling), holds out a validation split and packs both
//! splits into Megatron datasets of `seq_len + 1`-token samples with document boundaries kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, Stage,
    StageConfig, StageKind,
};
use crate::error::{GristError, Result};
use crate::io::atomic;
use crate::io::stats::StageStats;
use crate::tokens::megatron::{self, Dataset, DatasetWriter, Dtype};
use crate::tokens::mixing::{Pool, allocate, select};
use crate::tokens::packing::{Packed, best_fit, concat};
use crate::util::permutation;

/// Mixes tokenized sources (Megatron datasets, e.g. from `tokenize`) into packed training data:
/// `<path>/train.idx/.bin`, `<path>/valid.idx/.bin` and `<path>/mix.json`. Each source gets
/// `total_tokens` × its share (`weight`, normalised; default: its size) or a fixed `tokens`; with
/// `temperature` T the shares go as weight^(1/T). No source is repeated more than `max_epochs`
/// times: what a capped source cannot give goes to the others (UniMax). Without `total_tokens` the
/// budget is the largest the caps allow. `long_documents` repeats a source's documents of at
/// least `min_tokens` tokens `factor` times per epoch (long-context data). A seeded
/// `validation_fraction` of each source's documents is held out and mixed the same way, one epoch
/// at most. Samples hold exactly `seq_len + 1` tokens; each sample is a document of the index and
/// each source-document fragment in it a sequence. `packing: best_fit` (default) packs best-fit
/// decreasing and pads the rest with `pad_id`; `concat` concatenates and cuts, dropping the tail.
/// The same seed gives byte-identical output. `mix.json` records target and realised shares,
/// epochs and every source token (used, unused, held out, dropped). Reads files, not rows: it
/// takes no `inputs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Output directory.
    pub path: String,
    /// The sources by name.
    pub sources: BTreeMap<String, MixSource>,
    /// Training tokens to draw in all (default: the most the `max_epochs` caps allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Tokens a model sees per sample; samples hold `seq_len + 1` (inputs and shifted targets).
    pub seq_len: u32,
    /// `best_fit` or `concat`.
    #[serde(default)]
    pub packing: Packing,
    /// Shares go as weight^(1/temperature): above 1 flattens the mixture.
    #[serde(default = "default_one")]
    pub temperature: f64,
    /// Default cap on the epochs of each source.
    #[serde(default = "default_max_epochs")]
    pub max_epochs: f64,
    /// Share of each source's documents held out for the validation split.
    #[serde(default = "default_validation_fraction")]
    pub validation_fraction: f64,
    /// Token id of `best_fit`'s padding.
    #[serde(default)]
    pub pad_id: u32,
    /// Seeds the held-out split, the sampling and the order.
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixSource {
    /// Dataset prefix (`PREFIX.idx` + `PREFIX.bin`), e.g. `out/tokens/wiki`.
    pub dataset: String,
    /// Relative weight (default: the source's size in tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// A fixed number of training tokens instead of a weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Cap on this source's epochs (default: the stage's `max_epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epochs: Option<f64>,
    /// Upsample long documents: those of at least `min_tokens` come `factor` times per epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_documents: Option<LongDocuments>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LongDocuments {
    pub min_tokens: u64,
    pub factor: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    #[default]
    BestFit,
    Concat,
}

fn default_one() -> f64 {
    1.0
}
fn default_max_epochs() -> f64 {
    4.0
}
fn default_validation_fraction() -> f64 {
    0.01
}

/// Copies of a long document per epoch, at most (a typo guard: 10⁴ copies is already absurd).
const MAX_FACTOR: u32 = 10_000;

impl StageConfig for Mix {
    const TYPE: &'static str = "mix";
    const KIND: StageKind = StageKind::Barrier;
    const READS_ROWS: bool = false;

    fn check(&self) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let mut problem = |param, message: String| problems.push(ParamProblem { param, message });
        if self.sources.is_empty() {
            problem("sources", "`sources` is empty".into());
        }
        for (name, s) in &self.sources {
            if s.weight.is_some() && s.tokens.is_some() {
                problem(
                    "sources",
                    format!("source `{name}` has both `weight` and `tokens`; give one"),
                );
            }
            if s.weight.is_some_and(|w| !(w.is_finite() && w >= 0.0)) {
                problem(
                    "sources",
                    format!("source `{name}`: `weight` must be a number ≥ 0"),
                );
            }
            if s.max_epochs.is_some_and(|e| !(e.is_finite() && e > 0.0)) {
                problem(
                    "sources",
                    format!("source `{name}`: `max_epochs` must be positive"),
                );
            }
            if s.long_documents
                .as_ref()
                .is_some_and(|l| !(1..=MAX_FACTOR).contains(&l.factor))
            {
                problem(
                    "sources",
                    format!("source `{name}`: `long_documents.factor` must be in 1..={MAX_FACTOR}"),
                );
            }
            if name.is_empty() || name.contains(['/', '\\']) {
                problem(
                    "sources",
                    format!("source name `{name}` must be a plain name"),
                );
            }
        }
        if self.seq_len == 0 || self.seq_len >= i32::MAX as u32 {
            problem(
                "seq_len",
                format!("`seq_len` {} is not a usable length", self.seq_len),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            problem("temperature", "`temperature` must be positive".into());
        }
        if !(self.max_epochs.is_finite() && self.max_epochs > 0.0) {
            problem("max_epochs", "`max_epochs` must be positive".into());
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            problem(
                "validation_fraction",
                format!(
                    "`validation_fraction` {} is not in [0, 1)",
                    self.validation_fraction
                ),
            );
        }
        problems
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        self.sources
            .values()
            .flat_map(|s| {
                let p = PathBuf::from(&s.dataset);
                [megatron::idx_path(&p), megatron::bin_path(&p)]
            })
            .collect()
    }

    fn makes_files(&self) -> Vec<PathBuf> {
        vec![PathBuf::from(&self.path)]
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        for (name, s) in &self.sources {
            let prefix = Path::new(&s.dataset);
            if !ctx.made_by_pipeline(&megatron::idx_path(prefix)) {
                Dataset::open(prefix).map_err(|e| {
                    GristError::param(ctx.stage_id, "sources", format!("source `{name}`: {e}"))
                })?;
            }
        }
        Ok(Stage::Barrier(Arc::new(MixBarrier {
            config: self.clone(),
        })))
    }
}

struct MixBarrier {
    config: Mix,
}

impl Barrier for MixBarrier {
    fn phases(&self) -> Vec<&'static str> {
        vec!["pack"]
    }

    fn task_count(&self, _phase: usize, _inputs: &[BarrierInput]) -> usize {
        1
    }

    fn output_schema(&self, _input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(None)
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let c = &self.config;
        let sources: Vec<(&String, &MixSource, Dataset)> = c
            .sources
            .iter()
            .map(|(name, s)| {
                Dataset::open(Path::new(&s.dataset))
                    .map(|ds| (name, s, ds))
                    .map_err(|e| {
                        GristError::param(task.stage_id, "sources", format!("source `{name}`: {e}"))
                    })
            })
            .collect::<Result<_>>()?;
        let dtype = match sources.iter().any(|(_, _, ds)| ds.dtype() == Dtype::I32) {
            true => Dtype::I32,
            false => Dtype::U16,
        };
        let dir = PathBuf::from(&c.path);
        let splits = Splits::new(c, &sources);
        let mut report = serde_json::Map::new();
        let mut source_reports: Vec<serde_json::Map<String, serde_json::Value>> =
            splits.reports.clone();
        let mut outputs = Vec::new();
        let mut stats = StageStats::default();
        for (split, seed_offset) in [("train", 0u64), ("valid", 1)] {
            let plan = splits.plan(c, split == "valid", seed_offset)?;
            let packed = match c.packing {
                Packing::BestFit => {
                    best_fit(&plan.lengths, c.seq_len + 1, c.seed ^ 0x5eed ^ seed_offset)
                }
                Packing::Concat => concat(&plan.lengths, c.seq_len + 1),
            };
            let prefix = dir.join(split);
            let written = write_split(&prefix, dtype, &sources, &plan, &packed, c.pad_id)?;
            outputs.push(megatron::idx_path(&prefix));
            outputs.push(megatron::bin_path(&prefix));
            let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 0.0 };
            let all: u64 = written.packed.iter().sum();
            for (i, r) in source_reports.iter_mut().enumerate() {
                let pool = splits.pool_tokens(i, split == "valid");
                r.insert(
                    split.into(),
                    json!({
                        "target_tokens": plan.targets[i].round() as u64,
                        "target_share": plan.shares[i],
                        "selected_tokens": plan.selected[i],
                        "packed_tokens": written.packed[i],
                        "dropped_tokens": plan.selected[i] - written.packed[i],
                        "realised_share": ratio(written.packed[i], all),
                        "epochs": ratio(plan.selected[i], pool),
                        "unique_tokens": plan.unique[i],
                        "unused_tokens": pool - plan.unique[i],
                    }),
                );
            }
            report.insert(
                split.into(),
                json!({
                    "samples": packed.samples(),
                    "tokens": written.tokens,
                    "fragments": written.fragments,
                    "padding_tokens": written.padding,
                    "dropped_tokens": packed.dropped.iter().map(|d| d.1).sum::<u64>(),
                    "total_tokens_target": plan.total.round() as u64,
                }),
            );
            stats
                .metrics
                .insert(format!("{split}_samples"), packed.samples() as f64);
            stats
                .metrics
                .insert(format!("{split}_tokens"), written.tokens as f64);
        }
        let mut doc = serde_json::Map::new();
        doc.insert("version".into(), json!(1));
        doc.insert("seed".into(), json!(c.seed));
        doc.insert("seq_len".into(), json!(c.seq_len));
        doc.insert("packing".into(), json!(c.packing));
        doc.insert("pad_id".into(), json!(c.pad_id));
        doc.insert("dtype".into(), json!(dtype.name()));
        doc.insert("total_tokens".into(), json!(c.total_tokens));
        doc.insert("temperature".into(), json!(c.temperature));
        doc.insert("validation_fraction".into(), json!(c.validation_fraction));
        let mut by_name = serde_json::Map::new();
        for ((name, _, _), r) in sources.iter().zip(source_reports) {
            by_name.insert((*name).clone(), serde_json::Value::Object(r));
        }
        doc.insert("sources".into(), serde_json::Value::Object(by_name));
        doc.extend(report);
        let path = dir.join("mix.json");
        let mut bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(doc)).expect("json");
        bytes.push(b'\n');
        atomic::write(&path, &bytes)?;
        outputs.push(path);
        Ok(BarrierOutcome { outputs, stats })
    }
}

/// Each source's documents split into train and validation pools.
struct Splits {
    /// Per source: (document, tokens, copies per epoch) of the train and the validation pool.
    train: Vec<Vec<(u32, u64, u32)>>,
    valid: Vec<Vec<(u32, u64, u32)>>,
    pools: Vec<Pool>,
    reports: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// What one split draws: every selected document, in order, with its source.
struct Plan {
    /// (source, document) of each selected item, in training order.
    items: Vec<(u16, u32)>,
    lengths: Vec<u64>,
    targets: Vec<f64>,
    shares: Vec<f64>,
    selected: Vec<u64>,
    unique: Vec<u64>,
    total: f64,
}

fn document_tokens(ds: &Dataset, d: usize) -> u64 {
    ds.document_sequences(d).map(|s| ds.length(s) as u64).sum()
}

impl Splits {
    fn new(c: &Mix, sources: &[(&String, &MixSource, Dataset)]) -> Splits {
        let mut out = Splits {
            train: Vec::new(),
            valid: Vec::new(),
            pools: Vec::new(),
            reports: Vec::new(),
        };
        let threshold = (c.validation_fraction * u64::MAX as f64) as u64;
        for (name, s, ds) in sources {
            let (mut train, mut valid) = (Vec::new(), Vec::new());
            let mut long = 0u64;
            for d in 0..ds.num_documents() {
                let tokens = document_tokens(ds, d);
                if tokens == 0 {
                    continue;
                }
                let key = format!("{name}/{d}");
                let h = xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), c.seed);
                let copies = match &s.long_documents {
                    Some(l) if tokens >= l.min_tokens => {
                        long += 1;
                        l.factor
                    }
                    _ => 1,
                };
                match c.validation_fraction > 0.0 && h < threshold {
                    true => valid.push((d as u32, tokens, 1)),
                    false => train.push((d as u32, tokens, copies)),
                }
            }
            let sum = |v: &[(u32, u64, u32)]| v.iter().map(|x| x.1).sum::<u64>();
            let epoch: u64 = train.iter().map(|x| x.1 * x.2 as u64).sum();
            let mut r = serde_json::Map::new();
            r.insert("dataset".into(), json!(s.dataset));
            r.insert("documents".into(), json!(ds.num_documents()));
            r.insert("tokens".into(), json!(ds.total_tokens()));
            r.insert("weight".into(), json!(s.weight));
            r.insert("fixed_tokens".into(), json!(s.tokens));
            r.insert(
                "max_epochs".into(),
                json!(s.max_epochs.unwrap_or(c.max_epochs)),
            );
            r.insert(
                "train_pool".into(),
                json!({"documents": train.len(), "tokens": sum(&train), "epoch_tokens": epoch}),
            );
            r.insert(
                "validation_pool".into(),
                json!({"documents": valid.len(), "tokens": sum(&valid)}),
            );
            r.insert(
                "empty_documents".into(),
                json!(ds.num_documents() - train.len() - valid.len()),
            );
            if let Some(l) = &s.long_documents {
                r.insert(
                    "long_documents".into(),
                    json!({"min_tokens": l.min_tokens, "factor": l.factor, "documents": long}),
                );
            }
            out.pools.push(Pool {
                name: (*name).clone(),
                epoch_tokens: epoch,
                weight: s.weight,
                target: s.tokens,
                max_epochs: s.max_epochs.unwrap_or(c.max_epochs),
            });
            out.train.push(train);
            out.valid.push(valid);
            out.reports.push(r);
        }
        out
    }

    fn pool_tokens(&self, source: usize, valid: bool) -> u64 {
        let pool = if valid {
            &self.valid[source]
        } else {
            &self.train[source]
        };
        pool.iter().map(|x| x.1).sum()
    }

    fn plan(&self, c: &Mix, valid: bool, seed_offset: u64) -> Result<Plan> {
        let train_alloc = allocate(&self.pools, c.total_tokens, c.temperature)?;
        let alloc = match valid {
            false => train_alloc,
            // The validation split follows the training shares, one epoch of held-out text at most.
            true => {
                let budget =
                    train_alloc.total * c.validation_fraction / (1.0 - c.validation_fraction);
                let pools: Vec<Pool> = self
                    .pools
                    .iter()
                    .enumerate()
                    .map(|(i, p)| Pool {
                        name: p.name.clone(),
                        epoch_tokens: self.pool_tokens(i, true),
                        weight: Some(train_alloc.targets[i]),
                        target: None,
                        max_epochs: 1.0,
                    })
                    .collect();
                allocate(&pools, Some(budget.round() as u64), 1.0)?
            }
        };
        let mut items: Vec<(u16, u32)> = Vec::new();
        let mut selected = vec![0u64; self.pools.len()];
        let mut unique = vec![0u64; self.pools.len()];
        for (i, target) in alloc.targets.iter().enumerate() {
            let pool = if valid {
                &self.valid[i]
            } else {
                &self.train[i]
            };
            let lengths: Vec<u64> = pool.iter().map(|x| x.1).collect();
            let copies: Vec<u32> = pool.iter().map(|x| x.2).collect();
            let seed = c.seed ^ (i as u64).wrapping_mul(0x9E37_79B9) ^ (seed_offset << 32);
            let chosen =
                select(&lengths, &copies, *target, seed).map_err(|e| GristError::Stage {
                    stage: "mix".into(),
                    message: format!("source `{}`: {e}", self.pools[i].name),
                })?;
            let mut seen = vec![false; pool.len()];
            for &k in &chosen {
                selected[i] += lengths[k as usize];
                if !std::mem::replace(&mut seen[k as usize], true) {
                    unique[i] += lengths[k as usize];
                }
                items.push((i as u16, pool[k as usize].0));
            }
        }
        let order = permutation(items.len(), c.seed ^ 0x0dde ^ seed_offset);
        let items: Vec<(u16, u32)> = order.iter().map(|&k| items[k as usize]).collect();
        let lengths = items
            .iter()
            .map(|&(s, d)| {
                let pool = if valid {
                    &self.valid[s as usize]
                } else {
                    &self.train[s as usize]
                };
                // Pools are in document order: find the document's length by binary search.
                let k = pool
                    .binary_search_by_key(&d, |x| x.0)
                    .expect("selected from the pool");
                pool[k].1
            })
            .collect();
        Ok(Plan {
            items,
            lengths,
            targets: alloc.targets,
            shares: alloc.shares,
            selected,
            unique,
            total: alloc.total,
        })
    }
}

struct Written {
    tokens: u64,
    fragments: u64,
    padding: u64,
    packed: Vec<u64>,
}

fn write_split(
    prefix: &Path,
    dtype: Dtype,
    sources: &[(&String, &MixSource, Dataset)],
    plan: &Plan,
    packed: &Packed,
    pad_id: u32,
) -> Result<Written> {
    let mut w = DatasetWriter::create(prefix, dtype)?;
    let mut written = Written {
        tokens: 0,
        fragments: 0,
        padding: 0,
        packed: vec![0; sources.len()],
    };
    let mut ids: Vec<u32> = Vec::new();
    for s in 0..packed.samples() {
        for piece in packed.sample(s) {
            let (src, doc) = plan.items[piece.item as usize];
            let ds = &sources[src as usize].2;
            let parts = byte_range(ds, doc as usize, piece.start, piece.len as u64);
            // Same dtype: write the stored bytes as they are; else go through ids.
            if ds.dtype() == dtype {
                w.add_sequence_parts(&parts)?;
            } else {
                ids.clear();
                for part in parts {
                    ids.extend(megatron::decode(part, ds.dtype()));
                }
                w.add_sequence(&ids)?;
            }
            written.packed[src as usize] += piece.len as u64;
            written.fragments += 1;
        }
        let pad = packed.padding[s] as usize;
        if pad > 0 {
            ids.clear();
            ids.resize(pad, pad_id);
            w.add_sequence(&ids)?;
            written.padding += pad as u64;
        }
        w.end_document();
    }
    written.tokens = w.tokens();
    w.finish()?;
    Ok(written)
}

/// The stored bytes of tokens `start..start + len` of document `doc` (its sequences joined): one
/// slice of the memory map per sequence touched (one, for `tokenize`'s datasets).
fn byte_range(ds: &Dataset, doc: usize, start: u64, len: u64) -> Vec<&[u8]> {
    let size = ds.dtype().size();
    let mut parts = Vec::with_capacity(1);
    let (mut skip, mut need) = (start, len);
    for s in ds.document_sequences(doc) {
        let l = ds.length(s) as u64;
        if skip >= l {
            skip -= l;
            continue;
        }
        let take = (l - skip).min(need);
        parts.push(&ds.sequence_bytes(s)[skip as usize * size..(skip + take) as usize * size]);
        need -= take;
        skip = 0;
        if need == 0 {
            break;
        }
    }
    parts
}
