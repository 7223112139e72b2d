//! `self_instruct`: new instructions, inputs and outputs bootstrapped from seed tasks with an
//! LLM, as Self-Instruct does (the algorithm is in [`crate::synth::self_instruct`]). The seed
//! instructions are the `text` of the rows reaching the stage (`read_jsonl` of
//! `seed_tasks.jsonl` with `text_column: instruction`).

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::generating::{
    Client, Generate, Generated, GeneratingBarrier, check_local_model, input_texts, llm_files,
    llm_problems, require, require_top_p,
};
use super::{BarrierTask, BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::{GristError, Result};
use crate::synth::llm::LlmConfig;
use crate::synth::rows::TextFormat;
use crate::synth::self_instruct::{self, Settings};

/// Self-Instruct over any OpenAI-compatible endpoint or a local model. Rows out: one per
/// generated instance (`instruction`, `input`, `output`, `text` in `text_format`, and provenance:
/// `generator`, `prompt_hash`, `round`, `is_classification`, `rouge_max`, `rouge_mean`,
/// `most_similar`). Every candidate dropped on the way is a rejected row with its reason:
/// `too_short`, `too_long`, `keyword_blacklist`, `write_a_program`, `starts_with_punctuation`,
/// `starts_with_non_ascii`, `too_similar` (ROUGE-L), `response_cut_by_length`,
/// `no_instructions_parsed`, `no_valid_instances`, or `llm_*` when a request failed for good.
/// Answers are cached in `<workdir>/llm-cache`: a killed run resumes without asking again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfInstruct {
    pub llm: LlmConfig,
    /// Machine instructions to reach before instance generation.
    #[serde(default = "default_num_instructions")]
    pub num_instructions: usize,
    /// Instruction-generation requests at most (the stage stops there if the model rarely
    /// writes instructions that pass the filters). Default: 4 × `num_instructions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<usize>,
    /// In-context instructions per prompt.
    #[serde(default = "default_prompt_instructions")]
    pub prompt_instructions: usize,
    /// Of which machine-written ones, once the pool has them.
    #[serde(default = "default_machine_in_prompt")]
    pub machine_in_prompt: usize,
    /// Instruction requests sent together before their answers join the pool.
    #[serde(default = "default_batch")]
    pub request_batch_size: usize,
    /// Instances kept per instruction at most.
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// A candidate whose ROUGE-L F against any pool instruction exceeds this is dropped.
    #[serde(default = "default_threshold")]
    pub similarity_threshold: f64,
    /// Upstream applies Python's `capitalize()`, which also lower-cases the rest of the
    /// instruction; `false` only upper-cases the first letter.
    #[serde(default = "crate::stages::generating::default_true")]
    pub lowercase_rest: bool,
    #[serde(default = "default_instruction_max_tokens")]
    pub instruction_max_tokens: usize,
    #[serde(default = "default_instance_max_tokens")]
    pub instance_max_tokens: usize,
    /// Sampling for instruction generation (upstream: 0.7 and 0.5); the classification and
    /// instance steps are greedy.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Seeds prompt sampling and every request's `seed`.
    #[serde(default = "crate::stages::generating::default_seed")]
    pub seed: u64,
    #[serde(default = "crate::stages::generating::default_format")]
    pub text_format: TextFormat,
}

fn default_num_instructions() -> usize {
    100
}
fn default_prompt_instructions() -> usize {
    8
}
fn default_machine_in_prompt() -> usize {
    2
}
fn default_batch() -> usize {
    8
}
fn default_max_instances() -> usize {
    5
}
fn default_threshold() -> f64 {
    0.7
}
fn default_instruction_max_tokens() -> usize {
    1024
}
fn default_instance_max_tokens() -> usize {
    350
}
fn default_temperature() -> f32 {
    0.7
}
fn default_top_p() -> f32 {
    0.5
}

impl StageConfig for SelfInstruct {
    const TYPE: &'static str = "self_instruct";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut p = llm_problems(&self.llm);
        require(
            &mut p,
            "num_instructions",
            self.num_instructions > 0,
            "must be at least 1",
        );
        require(
            &mut p,
            "prompt_instructions",
            self.prompt_instructions > 0,
            "must be at least 1",
        );
        require(
            &mut p,
            "machine_in_prompt",
            self.machine_in_prompt <= self.prompt_instructions,
            "cannot exceed prompt_instructions",
        );
        require(
            &mut p,
            "request_batch_size",
            self.request_batch_size > 0,
            "must be at least 1",
        );
        require(
            &mut p,
            "max_instances",
            self.max_instances > 0,
            "must be at least 1",
        );
        require(
            &mut p,
            "similarity_threshold",
            (0.0..=1.0).contains(&self.similarity_threshold),
            "must be in [0, 1]",
        );
        require_top_p(&mut p, self.top_p);
        p
    }

    fn uses_files(&self) -> Vec<PathBuf> {
        llm_files(&self.llm)
    }

    fn build(&self, ctx: &BuildContext) -> Result<Stage> {
        check_local_model(&self.llm, ctx)?;
        Ok(Stage::Barrier(Arc::new(GeneratingBarrier(self.clone()))))
    }
}

impl Generate for SelfInstruct {
    const PHASE: &'static str = "generate";

    fn llm(&self) -> &LlmConfig {
        &self.llm
    }

    fn text_format(&self) -> TextFormat {
        self.text_format
    }

    fn generate(&self, task: &BarrierTask, client: Client) -> Result<Generated> {
        let seeds = input_texts(task)?;
        if seeds.len() < self.prompt_instructions {
            return Err(GristError::Usage(format!(
                "self_instruct needs at least prompt_instructions = {} seed instructions; its input has {}",
                self.prompt_instructions,
                seeds.len()
            )));
        }
        let client = client()?;
        let settings = Settings {
            num_instructions: self.num_instructions,
            max_requests: self
                .max_requests
                .unwrap_or(self.num_instructions.saturating_mul(4)),
            prompt_instructions: self.prompt_instructions,
            machine_in_prompt: self.machine_in_prompt,
            request_batch_size: self.request_batch_size,
            max_instances: self.max_instances,
            similarity_threshold: self.similarity_threshold,
            lowercase_rest: self.lowercase_rest,
            instruction_max_tokens: self.instruction_max_tokens,
            instance_max_tokens: self.instance_max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            generator: self.llm.generator(),
        };
        let (rows, report) = self_instruct::run(&client, self.llm.api, &seeds, &settings);
        let metrics = vec![
            ("seed_instructions".to_string(), seeds.len() as f64),
            ("instruction_requests".to_string(), report.requests as f64),
            (
                "accepted_instructions".to_string(),
                report.accepted_instructions as f64,
            ),
        ];
        Ok(Generated {
            rows,
            seeds,
            metrics,
            client,
        })
    }
}
