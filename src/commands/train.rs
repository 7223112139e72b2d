//! The trainer's commands: `grist train CONFIG`, `grist import`, `grist export`,
//! `grist generate` and `grist evaluate`, as library functions the CLI calls.

use std::path::Path;

use serde_json::json;

use crate::config::de;
use crate::config::yaml;
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::error::{GristError, Result};
use crate::train::backend::Backend;
use crate::train::checkpoint;
use crate::train::config::{BackendKind, Precision, Rope, TrainConfig};
use crate::train::cpu::CpuBackend;
use crate::train::cuda;
use crate::train::data::{Layout, Samples};
use crate::train::generate::{SamplingParams, generate, generate_with};
use crate::train::trainer::{self, EvalSpan, Summary};

/// Reads a train config (YAML); every error carries FILE:LINE:COL.
pub fn load_config(path: &Path) -> Result<TrainConfig> {
    let source = std::fs::read_to_string(path).map_err(|e| GristError::io(path, e))?;
    let mut diags = Diagnostics::new(path, &source);
    let node = match yaml::parse(&source) {
        Ok(n) => n,
        Err(e) => {
            diags.push(Diagnostic::error(
                e.span,
                format!("YAML syntax: {}", e.message),
            ));
            return Err(GristError::Config(Box::new(diags)));
        }
    };
    let cfg: TrainConfig = match de::from_node(&node) {
        Ok(c) => c,
        Err(e) => {
            diags.push(Diagnostic::error(e.span, e.message));
            return Err(GristError::Config(Box::new(diags)));
        }
    };
    for p in cfg.problems() {
        let key = p.split([':', '.', ' ']).next().unwrap_or("");
        diags.push(Diagnostic::error(node.get(key).map(|n| n.span), p));
    }
    if diags.has_errors() {
        return Err(GristError::Config(Box::new(diags)));
    }
    Ok(cfg)
}

pub fn train(path: &Path) -> Result<Summary> {
    trainer::run(&load_config(path)?)
}

/// `grist evaluate`: the mean loss of a checkpoint on the first `max_samples` samples of a
/// `mix` split, optionally with another RoPE (as a `long_context` run would start).
pub struct EvaluateCommand<'a> {
    pub checkpoint: &'a Path,
    pub data: &'a Path,
    pub split: &'a str,
    pub seq_len: usize,
    pub max_samples: usize,
    pub document_masking: bool,
    pub reset_position_ids: bool,
    pub rope: Option<Rope>,
    pub backend: BackendKind,
    /// `cuda`: the number formats.
    pub precision: Precision,
}

pub fn evaluate(c: &EvaluateCommand) -> Result<serde_json::Value> {
    let mut model = checkpoint::load_model(c.checkpoint)?;
    if let Some(r) = &c.rope {
        model.config.rope = r.clone();
    }
    let samples = Samples::open(c.data, c.split, c.seq_len, 0)?;
    let layout = Layout {
        document_masking: c.document_masking,
        reset_position_ids: c.reset_position_ids,
    };
    const BATCH: usize = 8;
    let mut backend: Box<dyn Backend> = match c.backend {
        BackendKind::Cpu => Box::new(CpuBackend::new(model.config, model.weights)?),
        BackendKind::Cuda => cuda::open_backend(
            model.config,
            model.weights,
            c.precision,
            cuda::CudaOptions {
                rows: BATCH * c.seq_len,
                recompute: false,
                logit_chunk: None,
            },
        )?,
    };
    let span = EvalSpan {
        seq_len: c.seq_len,
        max_samples: c.max_samples,
        batch_size: BATCH,
        layout,
    };
    let e = trainer::evaluate(backend.as_mut(), &samples, &span, None)?;
    Ok(json!({"samples": c.max_samples.min(samples.len()), "tokens": e.tokens, "loss": e.loss}))
}

/// `grist generate`.
pub struct GenerateCommand<'a> {
    pub checkpoint: &'a Path,
    pub prompt: Option<&'a str>,
    pub prompt_ids: Option<Vec<u32>>,
    pub bos: bool,
    pub params: SamplingParams,
    pub logits: bool,
    pub backend: BackendKind,
    /// `cuda`: the number formats.
    pub precision: Precision,
}

pub fn run_generate(c: &GenerateCommand) -> Result<serde_json::Value> {
    // A checkpoint directory, or a GGUF file read directly (as `grist serve` does).
    let (model, tokenizer) = if c.checkpoint.is_file() {
        let m = crate::synth::local::ServedModel::load(c.checkpoint)?;
        let model = checkpoint::LoadedModel {
            config: m.config,
            weights: m.weights,
            tokenizer: None,
            chat_template: None,
        };
        (model, Some(m.tokenizer))
    } else {
        let model = checkpoint::load_model(c.checkpoint)?;
        let tokenizer = match &model.tokenizer {
            Some(p) => Some(crate::tokens::encoder::load_tokenizer(p)?),
            None => None,
        };
        (model, tokenizer)
    };
    let mut ids = match (&c.prompt_ids, c.prompt, &tokenizer) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(text), Some(tok)) => tok
            .encode(text, false)
            .map_err(|e| GristError::Usage(format!("cannot encode the prompt: {e}")))?
            .get_ids()
            .to_vec(),
        (None, Some(_), None) => {
            return Err(GristError::Usage(format!(
                "{} has no tokenizer.json: give --prompt-ids",
                c.checkpoint.display()
            )));
        }
        (None, None, _) => return Err(GristError::Usage("give --prompt or --prompt-ids".into())),
    };
    if c.bos {
        let bos = model
            .config
            .bos_token_id
            .ok_or_else(|| GristError::Usage("the model has no bos_token_id; drop --bos".into()))?;
        ids.insert(0, bos);
    }
    if ids.is_empty() {
        return Err(GristError::Usage("the prompt is empty".into()));
    }
    if let Some(t) = ids.iter().find(|&&t| t as usize >= model.config.vocab_size) {
        return Err(GristError::Usage(format!(
            "prompt token {t} is outside the vocabulary ({})",
            model.config.vocab_size
        )));
    }
    let mut params = c.params.clone();
    if params.stop_ids.is_empty()
        && let Some(eos) = model.config.eos_token_id
    {
        params.stop_ids.push(eos);
    }
    let out = match c.backend {
        BackendKind::Cpu => generate(&model.config, &model.weights, &ids, &params),
        BackendKind::Cuda => {
            let capacity = ids.len() + params.max_new_tokens;
            let mut dec = cuda::open_decoder(
                model.config.clone(),
                &model.weights,
                c.precision,
                capacity,
                ids.len(),
            )?;
            generate_with(dec.as_mut(), &ids, &params)?
        }
    };
    let text = tokenizer
        .as_ref()
        .and_then(|t| t.decode(&out.ids, true).ok());
    let mut v = json!({
        "prompt_ids": ids,
        "ids": out.ids,
        "text": text,
        "finish_reason": out.finish.as_str(),
    });
    if c.logits {
        v["prompt_logits"] = json!(out.prompt_logits);
    }
    Ok(v)
}
