//! What the generating stages (`self_instruct`, `evol_instruct`) share: a barrier with one
//! phase, one task, that makes rows with an LLM client, writes them all (kept and rejected) to
//! `<stage dir>/generated.parquet`, and streams that file on, kept rows to the next stages and
//! the others to the rejects with their reasons; and the checks of the `llm` block.

use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;

use super::{
    Barrier, BarrierInput, BarrierOutcome, BarrierTask, BuildContext, ParamProblem, TransformTask,
};
use crate::error::{GristError, Result};
use crate::synth::llm::{LlmClient, LlmConfig};
use crate::synth::rows::{self, SynthRow, TextFormat};

/// Makes the stage's client (loading a local model) once the stage knows it has work.
pub type Client<'a> = &'a dyn Fn() -> Result<LlmClient>;

/// What one generating run produced.
pub struct Generated {
    pub rows: Vec<SynthRow>,
    /// The instructions the report's ROUGE-L histogram compares kept ones with.
    pub seeds: Vec<String>,
    /// Stage-specific figures for the stats.
    pub metrics: Vec<(String, f64)>,
    /// The client used (its counters go into the stats).
    pub client: LlmClient,
}

/// A generating stage's config.
pub trait Generate: Send + Sync + 'static {
    const PHASE: &'static str;
    fn llm(&self) -> &LlmConfig;
    fn text_format(&self) -> TextFormat;
    fn generate(&self, task: &BarrierTask, client: Client) -> Result<Generated>;
}

pub struct GeneratingBarrier<T>(pub T);

pub const GENERATED: &str = "generated.parquet";

// Defaults both stages use.
pub fn default_true() -> bool {
    true
}
pub fn default_seed() -> u64 {
    42
}
pub fn default_format() -> TextFormat {
    TextFormat::Chatml
}

impl<T: Generate> Barrier for GeneratingBarrier<T> {
    fn phases(&self) -> Vec<&'static str> {
        vec![T::PHASE]
    }

    fn task_count(&self, _phase: usize, _inputs: &[BarrierInput]) -> usize {
        1
    }

    fn output_files(&self, dir: &Path, _inputs: &[BarrierInput]) -> Option<Vec<PathBuf>> {
        Some(vec![dir.join(GENERATED)])
    }

    fn output_schema(&self, _input: SchemaRef) -> Result<Option<SchemaRef>> {
        Ok(Some(rows::output_schema()))
    }

    fn start_output(&self, _: &Path, _: usize, _: SchemaRef) -> Result<Box<dyn TransformTask>> {
        Ok(Box::new(SplitByReason))
    }

    fn run_task(&self, task: &BarrierTask) -> Result<BarrierOutcome> {
        let cache = cache_dir(task.dir);
        let make = || LlmClient::new(self.0.llm(), Some(&cache));
        let g = self.0.generate(task, &make)?;
        let path = task.dir.join(GENERATED);
        rows::write(&path, &g.rows, self.0.text_format())?;
        let mut stats = rows::report(&g.rows, &g.client.stats, &g.seeds);
        stats.metrics.extend(g.metrics);
        Ok(BarrierOutcome {
            outputs: vec![path],
            stats,
        })
    }
}

/// `llm` problems as parameter problems.
pub fn llm_problems(llm: &LlmConfig) -> Vec<ParamProblem> {
    llm.problems()
        .into_iter()
        .map(|message| ParamProblem {
            param: "llm",
            message,
        })
        .collect()
}

/// The local model, when the stage runs one: a file the stage reads.
pub fn llm_files(llm: &LlmConfig) -> Vec<PathBuf> {
    match llm.backend {
        crate::synth::llm::Backend::Local => vec![PathBuf::from(&llm.model)],
        crate::synth::llm::Backend::Openai => Vec::new(),
    }
}

/// Adds a problem about `param` unless `ok`.
pub fn require(problems: &mut Vec<ParamProblem>, param: &'static str, ok: bool, message: &str) {
    if !ok {
        problems.push(ParamProblem {
            param,
            message: message.into(),
        });
    }
}

/// `top_p` must be in (0, 1].
pub fn require_top_p(problems: &mut Vec<ParamProblem>, top_p: f32) {
    require(
        problems,
        "top_p",
        top_p > 0.0 && top_p <= 1.0,
        "must be in (0, 1]",
    );
}

/// A `local` model must exist unless a stage of the pipeline makes it (a `train` stage's output).
pub fn check_local_model(llm: &LlmConfig, ctx: &BuildContext) -> Result<()> {
    if llm.backend == crate::synth::llm::Backend::Local {
        let p = Path::new(&llm.model);
        if !p.exists() && !ctx.made_by_pipeline(p) {
            return Err(GristError::Usage(format!(
                "llm.model: {} does not exist (a grist checkpoint directory or a .gguf file; `bash tests/fetch_smollm2.sh` fetches the default SmolLM2)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// `<workdir>/llm-cache`, from a barrier's `<workdir>/barriers/<id>`.
pub fn cache_dir(task_dir: &Path) -> PathBuf {
    task_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(task_dir)
        .join("llm-cache")
}

/// The `text` of every stored input row.
pub fn input_texts(task: &BarrierTask) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for input in task.inputs {
        super::for_each_stored_batch(&input.path, task.batch_size, |b| {
            out.extend(
                super::text_values(b)?
                    .into_iter()
                    .flatten()
                    .map(str::to_string),
            );
            Ok(())
        })?;
    }
    Ok(out)
}

/// Streams a generating stage's stored rows on: kept ones pass, rejected ones go out with their
/// reason.
struct SplitByReason;

impl TransformTask for SplitByReason {
    fn output_schema(&self) -> SchemaRef {
        rows::output_schema()
    }

    fn process(&mut self, batch: arrow::array::RecordBatch) -> Result<super::Filtered> {
        rows::split_by_reason(batch)
    }
}
