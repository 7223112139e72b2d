//! A pipeline as the engine takes it: its stages, each with its parameters (typed), its inputs,
//! and where it was written (so checks on the data can point at a parameter). The config layer
//! makes it from a pipeline file; commands that generate pipelines go through the same path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::diagnostic::{Diagnostics, Span};
use crate::stages::{DynStageConfig, StageKind};

#[derive(Debug)]
pub struct PipelineSpec {
    pub file: PathBuf,
    pub name: String,
    pub workdir: PathBuf,
    pub batch_size: usize,
    pub stages: Vec<StageSpec>,
}

#[derive(Debug)]
pub struct StageSpec {
    pub id: String,
    pub type_name: &'static str,
    pub kind: StageKind,
    /// Resolved: explicit `inputs`, else the previous stage.
    pub inputs: Vec<String>,
    pub config: Box<dyn DynStageConfig>,
    pub span: Span,
    /// Where each parameter is written, so data errors can point at it.
    pub param_spans: BTreeMap<String, Span>,
}

impl StageSpec {
    /// The position of `param` if written, else of the stage.
    pub fn span_of(&self, param: &str) -> Span {
        self.param_spans.get(param).copied().unwrap_or(self.span)
    }
}

impl PipelineSpec {
    pub fn stage(&self, id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.id == id)
    }
}

/// A parsed pipeline and its warnings.
pub struct Loaded {
    pub spec: PipelineSpec,
    pub diagnostics: Diagnostics,
}
