//! `evol_instruct`: each input instruction (the rows' `text`) evolved over M rounds with an LLM,
//! as WizardLM's Evol-Instruct does (the algorithm is in [`crate::synth::evol_instruct`]).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::Array;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::generating::{
    Client, Generate, Generated, GeneratingBarrier, check_local_model, llm_files, llm_problems,
    require, require_top_p,
};
use super::{BarrierTask, BuildContext, ParamProblem, Stage, StageConfig, StageKind};
use crate::error::{GristError, Result};
use crate::synth::evol_instruct::{self, Operation, Root, Settings};
use crate::synth::llm::LlmConfig;
use crate::synth::rows::TextFormat;

/// Evol-Instruct over any OpenAI-compatible endpoint or a local model. One row per input
/// instruction and round: kept (`instruction` evolved, `output` its response when `responses`,
/// `parent`, `root_id`, `round`, `operation`, `generator`, `prompt_hash`) or rejected with the
/// elimination rule that removed it: `no_information_gain` (rule 1, the LLM judged the two
/// equal), `llm_struggles` (rule 2), `response_only_stop_words` (rule 3), `copies_prompt_words`
/// (rule 4), plus `empty_evolution` and `llm_*` (`judge_llm_*`, `response_llm_*`) for failed
/// requests. A rewrite cut by `max_tokens` is kept with `finish_reason: length`, as upstream keeps it.
/// Answers are cached in `<workdir>/llm-cache`: a killed run resumes without asking again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvolInstruct {
    pub llm: LlmConfig,
    /// Evolution rounds (M).
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    /// Operations picked from uniformly each round (default: all five).
    #[serde(default = "default_operations")]
    pub operations: Vec<Operation>,
    /// Answer each evolved instruction (rules 2 and 3 judge the answer; without responses they
    /// do not apply and `output` is null).
    #[serde(default = "crate::stages::generating::default_true")]
    pub responses: bool,
    /// A column appended to the instruction (upstream: `instruction + "\r\n" + input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_column: Option<String>,
    /// Input instructions used at most (the first ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instructions: Option<usize>,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default = "default_max_tokens")]
    pub response_max_tokens: usize,
    /// Sampling (upstream: temperature 1, top_p 0.95); the equality judgement is greedy.
    #[serde(default = "default_temperature")]
    pub temperature: f32,
    #[serde(default = "default_top_p")]
    pub top_p: f32,
    /// Seeds the operation choices and every request's `seed`.
    #[serde(default = "crate::stages::generating::default_seed")]
    pub seed: u64,
    #[serde(default = "crate::stages::generating::default_format")]
    pub text_format: TextFormat,
}

fn default_rounds() -> u32 {
    4
}
fn default_operations() -> Vec<Operation> {
    Operation::ALL.to_vec()
}
fn default_max_tokens() -> usize {
    2048
}
fn default_temperature() -> f32 {
    1.0
}
fn default_top_p() -> f32 {
    0.95
}

impl StageConfig for EvolInstruct {
    const TYPE: &'static str = "evol_instruct";
    const KIND: StageKind = StageKind::Barrier;

    fn check(&self) -> Vec<ParamProblem> {
        let mut p = llm_problems(&self.llm);
        require(&mut p, "rounds", self.rounds > 0, "must be at least 1");
        require(
            &mut p,
            "operations",
            !self.operations.is_empty(),
            "name at least one operation",
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

impl EvolInstruct {
    fn roots(&self, task: &BarrierTask) -> Result<Vec<Root>> {
        let mut roots = Vec::new();
        for input in task.inputs {
            super::for_each_stored_batch(&input.path, task.batch_size, |b| {
                let texts = super::text_values(b)?;
                let ids = super::string_column(b, crate::io::ID_COLUMN)?;
                let extra = match &self.input_column {
                    Some(name) => Some(super::string_column(b, name)?.ok_or_else(|| {
                        GristError::Usage(format!("input_column: the rows have no column `{name}`"))
                    })?),
                    None => None,
                };
                for (i, t) in texts.into_iter().enumerate() {
                    let Some(t) = t else { continue };
                    let mut instruction = t.trim().to_string();
                    if let Some(e) = &extra
                        && !e.is_null(i)
                        && !e.value(i).trim().is_empty()
                    {
                        instruction = format!("{instruction}\r\n{}", e.value(i).trim());
                    }
                    let id = match &ids {
                        Some(a) if !a.is_null(i) => a.value(i).to_string(),
                        _ => format!("evol-{:06}", roots.len()),
                    };
                    roots.push(Root { id, instruction });
                }
                Ok(())
            })?;
        }
        if let Some(n) = self.max_instructions {
            roots.truncate(n);
        }
        Ok(roots)
    }
}

impl Generate for EvolInstruct {
    const PHASE: &'static str = "evolve";

    fn llm(&self) -> &LlmConfig {
        &self.llm
    }

    fn text_format(&self) -> TextFormat {
        self.text_format
    }

    fn generate(&self, task: &BarrierTask, client: Client) -> Result<Generated> {
        let roots = self.roots(task)?;
        let client = client()?;
        let settings = Settings {
            rounds: self.rounds,
            operations: self.operations.clone(),
            responses: self.responses,
            max_tokens: self.max_tokens,
            response_max_tokens: self.response_max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            generator: self.llm.generator(),
        };
        let rows = evol_instruct::run(&client, &roots, &settings);
        Ok(Generated {
            rows,
            seeds: roots.iter().map(|r| r.instruction.clone()).collect(),
            metrics: vec![("input_instructions".to_string(), roots.len() as f64)],
            client,
        })
    }
}
