//! Stage types. Each module holds one stage: its config struct (serde + JSON Schema, whose doc
//! comments are the user docs), its logic and its tests. `config::registry` maps type names to them.
//!
//! Three kinds of stage flow through the engine:
//! - a [`Source`] lists shards and reads each as a stream of batches;
//! - a [`Transform`] maps one batch to kept rows and rejected rows (with a reason per row);
//! - a [`Sink`] writes the batches of each task to one output file;
//! - a [`Barrier`] needs all of its input before it can finish (training, deduplication): the
//!   engine stores its input, runs its phases, then streams its output (if any) onwards.

pub mod c4_quality;
pub mod classifier_train;
pub mod doc_filter;
pub mod evol_instruct;
pub mod exact_dedup;
pub mod fineweb_quality;
pub mod generating;
pub mod gopher_quality;
pub mod gopher_repetition;
pub mod html_extract;
pub mod langid;
pub mod minhash_dedup;
pub mod mix;
pub mod pii;
pub mod quality_classifier;
pub mod read_jsonl;
pub mod read_parquet;
pub mod read_text;
pub mod read_warc;
pub mod self_instruct;
pub mod sql;
pub mod tokenize;
pub mod tokenizer_train;
pub mod train;
pub mod url_filter;
pub mod write_jsonl;
pub mod write_parquet;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
pub use crate::io::batch::{
    Filtered, Rejected, Shard, SourceReader, batch_with_added, schema_with_added, string_column,
    text_bytes, text_values,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Source,
    Transform,
    Sink,
    Barrier,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Source => "source",
            StageKind::Transform => "transform",
            StageKind::Sink => "sink",
            StageKind::Barrier => "barrier",
        }
    }
}

/// A stage's parameters as written in the pipeline file.
pub trait StageConfig: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static {
    const TYPE: &'static str;
    const KIND: StageKind;
    /// Bump when the same config starts producing different output: it is part of every task
    /// fingerprint, so completed tasks re-run after an upgrade that changes results.
    const VERSION: u32 = 1;
    /// Whether the stage reads rows from `inputs`. A stage that reads only files (`mix` reads
    /// token datasets) has no implicit input and takes no `inputs`; it runs after the stages that
    /// make its files.
    const READS_ROWS: bool = true;

    /// Checks beyond types; each problem names the parameter it is about.
    fn check(&self) -> Vec<ParamProblem> {
        Vec::new()
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage>;

    /// Files this stage reads besides its input rows (a model): part of its tasks' fingerprints,
    /// and when another stage of the pipeline writes one, this stage runs after that one.
    fn uses_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Files this (barrier) stage writes for other stages to read (a trained model).
    fn makes_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// What a stage knows when it is built.
pub struct BuildContext<'a> {
    pub stage_id: &'a str,
    /// Files that stages of this pipeline write before this one runs: not there yet, so a stage
    /// reading one checks it when its tasks start instead of now.
    pub made_by_pipeline: &'a [PathBuf],
}

impl BuildContext<'_> {
    /// Whether `path` is written by a stage of the pipeline (compared lexically; a stage may
    /// make a whole directory).
    pub fn made_by_pipeline(&self, path: &Path) -> bool {
        let path = lexical(path);
        self.made_by_pipeline
            .iter()
            .any(|p| path.starts_with(lexical(p)))
    }
}

/// `path` without `.` components, for comparing paths as written.
pub fn lexical(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// A semantic problem with one parameter, found after parsing.
#[derive(Debug, Clone)]
pub struct ParamProblem {
    pub param: &'static str,
    pub message: String,
}

/// Object-safe face of a [`StageConfig`], for the registry and the engine.
pub trait DynStageConfig: Send + Sync + std::fmt::Debug {
    fn type_name(&self) -> &'static str;
    fn kind(&self) -> StageKind;
    fn version(&self) -> u32;
    fn to_json(&self) -> serde_json::Value;
    fn check(&self) -> Vec<ParamProblem>;
    fn build(&self, ctx: &BuildContext) -> Result<Stage>;
    fn uses_files(&self) -> Vec<PathBuf>;
    fn makes_files(&self) -> Vec<PathBuf>;
}

impl<T: StageConfig + std::fmt::Debug> DynStageConfig for T {
    fn type_name(&self) -> &'static str {
        T::TYPE
    }
    fn kind(&self) -> StageKind {
        T::KIND
    }
    fn version(&self) -> u32 {
        T::VERSION
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("stage configs serialize to JSON")
    }
    fn check(&self) -> Vec<ParamProblem> {
        StageConfig::check(self)
    }
    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        StageConfig::build(self, ctx)
    }
    fn uses_files(&self) -> Vec<PathBuf> {
        StageConfig::uses_files(self)
    }
    fn makes_files(&self) -> Vec<PathBuf> {
        StageConfig::makes_files(self)
    }
}

/// A stage ready to run.
#[derive(Clone)]
pub enum Stage {
    Source(Arc<dyn Source>),
    Transform(Arc<dyn Transform>),
    Sink(Arc<dyn Sink>),
    Barrier(Arc<dyn Barrier>),
}

pub trait Source: Send + Sync {
    /// The shards in a deterministic order (sorted paths).
    fn shards(&self) -> Result<Vec<Shard>>;
    /// The schema batches of this shard will have (after text renaming and id derivation).
    fn schema(&self, shard: &Shard) -> Result<SchemaRef>;
    fn open(&self, shard: &Shard, batch_size: usize) -> Result<Box<dyn SourceReader>>;
    /// Whether a file written at `path` would be read as one of this source's shards.
    fn would_read(&self, path: &Path) -> bool;
}

pub trait Transform: Send + Sync {
    /// Prepares the stage for one task whose input has `input` schema. Errors here are config
    /// errors when found at check time (a column the SQL names does not exist, ...).
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>>;
}

pub trait TransformTask: Send {
    fn output_schema(&self) -> SchemaRef;
    fn process(&mut self, batch: RecordBatch) -> Result<Filtered>;
    /// Moves what the stage measured since the last call (histograms of the figures its rules
    /// compute, counts by category) into `stats`; called after every batch.
    fn observe(&mut self, stats: &mut crate::io::stats::StageStats) {
        let _ = stats;
    }
}

/// The dedup stages' output: each stored shard streamed against its cluster records.
impl TransformTask for crate::dedup::membership::DedupOutput {
    fn output_schema(&self) -> SchemaRef {
        crate::dedup::membership::DedupOutput::output_schema(self)
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        crate::dedup::membership::DedupOutput::process(self, batch)
    }

    fn observe(&mut self, stats: &mut crate::io::stats::StageStats) {
        crate::dedup::membership::DedupOutput::observe(self, stats)
    }
}

pub trait Sink: Send + Sync {
    fn output_dir(&self) -> &Path;
    fn rejects_dir(&self) -> Option<&Path>;
    /// File extension of the files this sink writes, without the dot.
    fn extension(&self) -> &str;
    /// Starts writing one file at `path` (the engine passes a temporary path and renames it).
    fn create(&self, path: &Path, schema: SchemaRef) -> Result<Box<dyn SinkWriter>>;
}

pub trait SinkWriter: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A stage that sees all of its input before producing anything. The engine writes the rows
/// reaching it to `dir/input/<input stage>/<task>.parquet` (its input shards), runs its phases in
/// order (each phase's tasks may run in parallel or on different machines), then, if it passes
/// rows on, streams each input shard through [`Barrier::start_output`] and the stages after it.
pub trait Barrier: Send + Sync {
    /// Phase names, in the order they run (`train`; `signatures`, `buckets`, ...).
    fn phases(&self) -> Vec<&'static str>;
    /// How many tasks phase `phase` has, given the input shards.
    fn task_count(&self, phase: usize, inputs: &[BarrierInput]) -> usize;
    /// Runs one task of one phase. Everything it writes goes through temporary files renamed at
    /// the end, so a killed task is simply run again.
    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome>;
    /// Names the stream phase that passes this barrier's rows on (`<stage>.<name>`), when no
    /// other stage's rows stream in it.
    fn output_phase(&self) -> &'static str {
        "output"
    }
    /// Whether the phases count the stage's rows (in, kept, rejected): then the stream passing
    /// its rows on does not count them again. Otherwise the output stream does the counting.
    fn counts_rows_in_phases(&self) -> bool {
        false
    }
    /// Files the phases write that the output stream reads instead of the input shards (rows a
    /// generator made), one stream task each, in order; `None`: the input shards stream through.
    fn output_files(&self, dir: &Path, inputs: &[BarrierInput]) -> Option<Vec<PathBuf>> {
        let _ = (dir, inputs);
        None
    }
    /// The schema of the rows passed on, or `None` when the stage passes no rows on.
    fn output_schema(&self, input: SchemaRef) -> Result<Option<SchemaRef>>;
    /// The transform applied to input shard `shard` after the last phase (called only when
    /// [`Barrier::output_schema`] is `Some`).
    fn start_output(
        &self,
        dir: &Path,
        shard: usize,
        input: SchemaRef,
    ) -> Result<Box<dyn TransformTask>> {
        let _ = (dir, shard, input);
        Err(crate::GristError::Usage(
            "this stage passes no rows on".into(),
        ))
    }
}

/// One input shard of a barrier: the rows one stream task sent it through one of its inputs.
#[derive(Debug, Clone)]
pub struct BarrierInput {
    pub path: PathBuf,
    /// The id of the input stage the rows came through.
    pub via: String,
}

/// One task of one barrier phase.
pub struct BarrierTask<'a> {
    pub stage_id: &'a str,
    pub phase: usize,
    pub index: usize,
    /// `workdir/barriers/<stage id>`: the stage's own files.
    pub dir: &'a Path,
    pub inputs: &'a [BarrierInput],
    pub batch_size: usize,
}

/// What a barrier task did: the files it wrote (the task is complete while they exist) and its
/// counts (rows it read, kept and rejected, plus stage-specific metrics).
#[derive(Debug, Default)]
pub struct BarrierOutcome {
    pub outputs: Vec<PathBuf>,
    pub stats: crate::io::stats::StageStats,
}

/// Reads a barrier's stored input shard, batch by batch.
pub fn for_each_stored_batch(
    path: &Path,
    batch_size: usize,
    mut f: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<()> {
    let shard = Shard {
        path: path.to_path_buf(),
        name: path.display().to_string(),
    };
    let opts = crate::io::parquet::ReadOptions::default();
    let mut reader = crate::io::parquet::open(&shard, &opts, batch_size)?;
    while let Some(out) = reader.next_batch()? {
        if out.rejected.as_ref().is_some_and(|r| r.num_rows() > 0) {
            return Err(crate::GristError::data(
                path,
                "stored input has unreadable rows",
            ));
        }
        f(&out.kept)?;
    }
    Ok(())
}
