//! The model's shape and the run's settings, as written in a train config (YAML) or a `train`
//! stage. Defaults follow common small-model practice (Llama: RMSNorm eps 1e-5, RoPE theta
//! 10 000; AdamW betas 0.9/0.95, weight decay 0.1, clip 1.0).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Llama-style decoder's shape. The same fields as `transformers`' `LlamaConfig`, under
/// grist's names, plus the RoPE scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub vocab_size: usize,
    /// Width of the residual stream (`hidden_size`).
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Key/value heads (GQA); default: `num_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_kv_heads: Option<usize>,
    /// Default: `hidden_size / num_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub rope: Rope,
    /// The output projection is the token embedding.
    #[serde(default)]
    pub tie_embeddings: bool,
    /// The context the model is meant for (exported as `max_position_embeddings`).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
}

/// Bounds of a model's shape. Past them a value is a typo or a hostile file (a GGUF claiming
/// 2³² layers), and building the model would exhaust memory before any tensor is read.
pub const MAX_VOCAB: usize = 1 << 24;
pub const MAX_WIDTH: usize = 1 << 17;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_POSITIONS: usize = 1 << 24;
/// A trillion: far past anything one process trains or serves.
pub const MAX_PARAMETERS: usize = 1 << 40;

fn default_norm_eps() -> f64 {
    1e-5
}

fn default_max_positions() -> usize {
    2048
}

impl ModelConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_kv_heads.unwrap_or(self.num_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_heads.max(1))
    }

    /// Every shape problem at once, as `field: message`. (Negated comparisons: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_layers", self.num_layers, MAX_LAYERS),
            ("num_heads", self.num_heads, MAX_HEADS),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ] {
            if v == 0 {
                out.push(format!("{name}: must be at least 1"));
            } else if v > max {
                out.push(format!("{name}: {v} is more than {max}"));
            }
        }
        for (name, v, max) in [
            ("num_kv_heads", self.num_kv_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_WIDTH),
        ] {
            if let Some(v) = v
                && v > max
            {
                out.push(format!("{name}: {v} is more than {max}"));
            }
        }
        if out.is_empty()
            && self
                .checked_parameter_count()
                .is_none_or(|n| n > MAX_PARAMETERS)
        {
            out.push(format!(
                "the model has more than {MAX_PARAMETERS} parameters (vocab_size × hidden_size, \
                 num_heads × head_dim × hidden_size, ... per layer): check its sizes"
            ));
        }
        if self.num_heads > 0 && self.kv_heads() == 0 {
            out.push("num_kv_heads: must be at least 1".into());
        }
        if self.num_heads > 0
            && self.kv_heads() > 0
            && !self.num_heads.is_multiple_of(self.kv_heads())
        {
            out.push(format!(
                "num_kv_heads: {} does not divide num_heads {}",
                self.kv_heads(),
                self.num_heads
            ));
        }
        if self.head_dim.is_none()
            && self.num_heads > 0
            && !self.hidden_size.is_multiple_of(self.num_heads)
        {
            out.push(format!(
                "num_heads: {} does not divide hidden_size {}; set head_dim",
                self.num_heads, self.hidden_size
            ));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            out.push(format!(
                "head_dim: {} must be even (RoPE rotates pairs)",
                self.head_dim()
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps <= 1.0) {
            out.push(format!("norm_eps: {} must be in (0, 1]", self.norm_eps));
        }
        out.extend(self.rope.problems());
        for (name, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if let Some(id) = id
                && id as usize >= self.vocab_size
            {
                out.push(format!(
                    "{name}: {id} is outside the vocabulary ({})",
                    self.vocab_size
                ));
            }
        }
        out
    }

    /// Training FLOPs per token at sequence length `seq` (forward and backward): 6·N for the
    /// matrix products, N the parameters without the input embedding when it is not tied (a
    /// lookup, not a product), plus 6·L·H·head_dim·seq for causal attention's scores and
    /// weighted sums (half of a full attention's 12·L·H·head_dim·seq). The MFU formula of
    /// PaLM's appendix B, as llm.c and nanoGPT count it.
    pub fn flops_per_token(&self, seq: usize) -> f64 {
        let lookup = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * self.hidden_size
        };
        let n = self.parameter_count().saturating_sub(lookup) as f64;
        let attention =
            6.0 * (self.num_layers * self.num_heads * self.head_dim()) as f64 * seq as f64;
        6.0 * n + attention
    }

    /// Parameters in all (the output projection counted once when tied); `usize::MAX` for a
    /// shape too large to count ([`problems`](Self::problems) reports it).
    pub fn parameter_count(&self) -> usize {
        self.checked_parameter_count().unwrap_or(usize::MAX)
    }

    /// Parameters in all, or `None` when the count overflows.
    fn checked_parameter_count(&self) -> Option<usize> {
        let (d, f, hd) = (self.hidden_size, self.intermediate_size, self.head_dim());
        let q = self.num_heads.checked_mul(hd)?;
        let kv = self.kv_heads().checked_mul(hd)?;
        let layer = [
            d.checked_mul(2)?,
            d.checked_mul(q)?.checked_mul(2)?,
            d.checked_mul(kv)?.checked_mul(2)?,
            d.checked_mul(f)?.checked_mul(3)?,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)?;
        let embed = self.vocab_size.checked_mul(d)?;
        let head = if self.tie_embeddings { 0 } else { embed };
        [embed, self.num_layers.checked_mul(layer)?, d, head]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
    }
}

/// Rotary position embedding: base `theta` and an optional long-context scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rope {
    #[serde(default = "default_theta")]
    pub theta: f64,
    #[serde(default)]
    pub scaling: RopeScaling,
}

fn default_theta() -> f64 {
    10_000.0
}

impl Default for Rope {
    fn default() -> Self {
        Rope {
            theta: default_theta(),
            scaling: RopeScaling::None,
        }
    }
}

/// How RoPE frequencies are stretched for contexts beyond the trained one. The formulas are
/// those of `transformers`' `modeling_rope_utils` (linear, yarn, llama3); `ntk` is the static
/// NTK-aware base change, theta' = theta · factor^(d/(d−2)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RopeScaling {
    #[default]
    None,
    /// Position interpolation (Chen et al. 2023): every frequency divided by `factor`.
    Linear { factor: f64 },
    /// NTK-aware scaling: a larger base, theta · factor^(d/(d−2)).
    Ntk { factor: f64 },
    /// YaRN (Peng et al. 2023): interpolation blended with extrapolation by wavelength, and
    /// attention scaled by `attention_factor` (default 0.1·ln(factor) + 1).
    Yarn {
        factor: f64,
        original_max_position_embeddings: usize,
        #[serde(default = "default_beta_fast")]
        beta_fast: f64,
        #[serde(default = "default_beta_slow")]
        beta_slow: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attention_factor: Option<f64>,
    },
    /// Llama 3.1's scaling: long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between.
    Llama3 {
        factor: f64,
        #[serde(default = "default_one")]
        low_freq_factor: f64,
        #[serde(default = "default_four")]
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

fn default_beta_fast() -> f64 {
    32.0
}
fn default_beta_slow() -> f64 {
    1.0
}
fn default_one() -> f64 {
    1.0
}
fn default_four() -> f64 {
    4.0
}

impl Rope {
    #[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must fail the checks
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(self.theta > 1.0 && self.theta.is_finite()) {
            out.push(format!(
                "rope.theta: {} must be a finite number above 1",
                self.theta
            ));
        }
        let factor = match &self.scaling {
            RopeScaling::None => None,
            RopeScaling::Linear { factor } | RopeScaling::Ntk { factor } => Some(*factor),
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                ..
            } => {
                if *original_max_position_embeddings == 0 {
                    out.push(
                        "rope.scaling.original_max_position_embeddings: must be positive".into(),
                    );
                }
                Some(*factor)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                if *original_max_position_embeddings == 0 {
                    out.push(
                        "rope.scaling.original_max_position_embeddings: must be positive".into(),
                    );
                }
                if !(high_freq_factor > low_freq_factor) {
                    out.push("rope.scaling.high_freq_factor: must be above low_freq_factor".into());
                }
                Some(*factor)
            }
        };
        if let Some(f) = factor
            && !(f >= 1.0 && f.is_finite())
        {
            out.push(format!(
                "rope.scaling.factor: {f} must be a finite number of at least 1"
            ));
        }
        out
    }
}

/// Trains a Llama-style model on a `mix` output (`data.path`: its `train` split, evaluated on
/// `valid`): `mode: pretrain` from random weights of shape `model`; `continual` from the
/// `init_from` checkpoint on new data with a `data.replay` share of the old, the learning rate
/// re-warmed and re-decayed; `long_context` from `init_from` with a longer `seq_len`, a new
/// `rope` and document masking. AdamW with warmup + cosine / WSD / constant schedule, gradient
/// clipping and accumulation. Writes `output/metrics.jsonl` (step, tokens, loss, val loss and
/// bits per byte, lr, grad norm, tokens/s), `output/checkpoints/step-N/` (safetensors weights,
/// optimizer, data position; the newest `checkpoint.keep`) and `output/summary.json` (with a
/// unigram model's bits per byte as the baseline). A killed run resumes from its newest
/// checkpoint and continues exactly. Also `grist train CONFIG` with the same fields.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `pretrain` (random init), `continual` (from `init_from`, new data with `replay`, LR
    /// re-warmed and re-decayed) or `long_context` (from `init_from`, longer `seq_len`, new
    /// `rope`, document masking on).
    #[serde(default)]
    pub mode: Mode,
    /// The model's shape: required for `pretrain`; taken from the checkpoint otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// The checkpoint (a grist checkpoint directory, e.g. from `grist import`) that `continual`
    /// and `long_context` start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// Run directory: `metrics.jsonl`, `checkpoints/`, `summary.json`.
    pub output: String,
    pub data: DataConfig,
    /// Tokens per sample the model sees; the packed samples hold `seq_len + 1`.
    pub seq_len: usize,
    #[serde(default = "default_micro_batch")]
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "default_one_usize")]
    pub grad_accum_steps: usize,
    /// Optimizer steps in all.
    pub steps: u64,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    #[serde(default)]
    pub schedule: Schedule,
    /// Attend only within each packed document fragment (default: on for `long_context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_masking: Option<bool>,
    /// Positions restart at 0 in every document fragment (Megatron's `reset_position_ids`).
    #[serde(default)]
    pub reset_position_ids: bool,
    /// `long_context`: the new RoPE (theta and scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope: Option<Rope>,
    /// `long_context`: the new context the model is meant for (default: `seq_len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// `tokenizer.json` saved with the checkpoints and used for bits per byte (default: the
    /// one in `init_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Seeds the initialisation and the data order.
    #[serde(default)]
    pub seed: u64,
    /// Standard deviation of the random initialisation (`pretrain`).
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// `cpu` (f32, the reference) or `cuda` (an NVIDIA GPU; see the README's trainer section).
    #[serde(default)]
    pub backend: BackendKind,
    /// `cuda`: `bf16` (default: bf16 activations and GEMM operands, f32 master weights, moments
    /// and accumulation) or `f32` (everything f32, for checking). `cpu` is always f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// `cuda`: keep only each layer's input for the backward and recompute the rest of the
    /// layer then (less memory for long sequences, about a third more compute).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recompute: bool,
}

fn default_micro_batch() -> usize {
    8
}
fn default_one_usize() -> usize {
    1
}
fn default_init_std() -> f64 {
    0.02
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Pretrain,
    Continual,
    LongContext,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    #[default]
    Cpu,
    Cuda,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// The CUDA backend's number formats: `bf16` keeps f32 master weights, gradients and AdamW
/// moments and runs activations and GEMM operands in bf16 (f32 accumulation); `f32` runs
/// everything in f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Bf16,
    F32,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::F32 => "f32",
        }
    }
}

/// Where samples come from: a `mix` output directory (`train` and `valid` datasets).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The `mix` stage's `path`.
    pub path: String,
    /// `continual`: a share of every batch drawn from the old data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The old data's `mix` directory.
    pub path: String,
    /// Share of samples from the old data, in [0, 1).
    pub fraction: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Learning rate at the end of the decay.
    #[serde(default)]
    pub min_lr: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_adam_eps")]
    pub eps: f64,
    /// Decoupled weight decay (Loshchilov & Hutter), applied to the matrices.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Also decay norms and embeddings (off by default).
    #[serde(default)]
    pub decay_norms_and_embeddings: bool,
    /// Clip the global gradient norm to this (0: no clipping).
    #[serde(default = "default_one")]
    pub grad_clip: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_adam_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    0.1
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: default_lr(),
            min_lr: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_adam_eps(),
            weight_decay: default_weight_decay(),
            decay_norms_and_embeddings: false,
            grad_clip: 1.0,
        }
    }
}

/// Linear warmup, then `cosine` decay to `min_lr`, `wsd` (warmup-stable-decay: flat, then a
/// linear decay over the last `decay_fraction` of the steps) or `constant`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default)]
    pub kind: ScheduleKind,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default = "default_decay_fraction")]
    pub decay_fraction: f64,
}

fn default_decay_fraction() -> f64 {
    0.2
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            decay_fraction: default_decay_fraction(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    #[default]
    Cosine,
    Wsd,
    Constant,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate on the validation split every this many steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Validation samples per evaluation (default: all, up to 256).
    #[serde(default = "default_eval_samples")]
    pub samples: usize,
}

fn default_eval_samples() -> usize {
    256
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 0,
            samples: default_eval_samples(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every this many steps (0: only at the end).
    #[serde(default)]
    pub every: u64,
    /// Checkpoints kept (the newest); the final one is always written.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    2
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: 0,
            keep: default_keep(),
        }
    }
}

impl TrainConfig {
    /// Every problem of the settings at once, as messages (`field: what is wrong`).
    pub fn problems(&self) -> Vec<String> {
        self.param_problems().into_iter().map(|(_, m)| m).collect()
    }

    /// Every problem of the settings at once, each with the top-level field it is about.
    /// (Negated comparisons: NaN fails them.)
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn param_problems(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        match (self.mode, &self.model, &self.init_from) {
            (Mode::Pretrain, None, _) => {
                out.push(("model", "model: required for mode `pretrain`".into()))
            }
            (Mode::Pretrain, _, Some(_)) => out.push((
                "init_from",
                "init_from: mode `pretrain` starts from random weights; use mode `continual`"
                    .into(),
            )),
            (Mode::Continual | Mode::LongContext, _, None) => out.push((
                "init_from",
                "init_from: required for modes `continual` and `long_context`".into(),
            )),
            (Mode::Continual | Mode::LongContext, Some(_), _) => out.push((
                "model",
                "model: the shape comes from the `init_from` checkpoint; remove `model`".into(),
            )),
            _ => {}
        }
        if let Some(m) = &self.model {
            out.extend(
                m.problems()
                    .into_iter()
                    .map(|p| ("model", format!("model.{p}"))),
            );
        }
        if self.mode != Mode::LongContext
            && (self.rope.is_some() || self.max_position_embeddings.is_some())
        {
            out.push((
                "rope",
                "rope / max_position_embeddings: only for mode `long_context`".into(),
            ));
        }
        if let Some(r) = &self.rope {
            out.extend(r.problems().into_iter().map(|p| ("rope", p)));
        }
        if let Some(r) = &self.data.replay {
            if self.mode != Mode::Continual {
                out.push(("data", "data.replay: only for mode `continual`".into()));
            }
            if !(0.0..1.0).contains(&r.fraction) {
                out.push((
                    "data",
                    format!("data.replay.fraction: {} must be in [0, 1)", r.fraction),
                ));
            }
        }
        for (name, v, max) in [
            ("seq_len", self.seq_len, MAX_POSITIONS),
            ("micro_batch_size", self.micro_batch_size, 1 << 16),
            ("grad_accum_steps", self.grad_accum_steps, 1 << 20),
        ] {
            if v == 0 {
                out.push((name, format!("{name}: must be at least 1")));
            } else if v > max {
                out.push((name, format!("{name}: {v} is more than {max}")));
            }
        }
        if self.steps == 0 {
            out.push(("steps", "steps: must be at least 1".into()));
        }
        let o = &self.optimizer;
        let lr_ok = o.lr > 0.0 && o.lr.is_finite() && o.min_lr >= 0.0 && o.min_lr <= o.lr;
        if !lr_ok {
            out.push((
                "optimizer",
                "optimizer: need a finite lr > 0 and 0 <= min_lr <= lr".into(),
            ));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            out.push((
                "optimizer",
                "optimizer: beta1 and beta2 must be in [0, 1)".into(),
            ));
        }
        let finite = [o.eps, o.weight_decay, o.grad_clip]
            .iter()
            .all(|x| x.is_finite());
        if !(finite && o.eps > 0.0 && o.weight_decay >= 0.0 && o.grad_clip >= 0.0) {
            out.push((
                "optimizer",
                "optimizer: need eps > 0, weight_decay >= 0, grad_clip >= 0".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.schedule.decay_fraction) {
            out.push((
                "schedule",
                "schedule.decay_fraction: must be in [0, 1]".into(),
            ));
        }
        if self.checkpoint.keep == 0 {
            out.push(("checkpoint", "checkpoint.keep: must be at least 1".into()));
        }
        if self.backend == BackendKind::Cpu {
            if self.precision == Some(Precision::Bf16) {
                out.push((
                    "precision",
                    "precision: the cpu backend runs in f32 only; drop `precision` or use `backend: cuda`".into(),
                ));
            }
            if self.recompute {
                out.push((
                    "recompute",
                    "recompute: only the cuda backend recomputes activations".into(),
                ));
            }
        }
        if !(self.init_std > 0.0 && self.init_std <= 10.0) {
            out.push((
                "init_std",
                format!("init_std: {} must be in (0, 10]", self.init_std),
            ));
        }
        out
    }

    /// Bytes a CPU training step of `model` holds, roughly: weights, gradients and AdamW's two
    /// moments (16 bytes a parameter), and the activations kept for the backward pass of one
    /// micro-batch (each layer's inputs, attention and MLP values, the logits).
    pub fn memory_estimate(&self, model: &ModelConfig) -> u128 {
        let (d, f) = (model.hidden_size as u128, model.intermediate_size as u128);
        let hd = model.head_dim() as u128;
        let (qw, kw) = (model.num_heads as u128 * hd, model.kv_heads() as u128 * hd);
        let tokens = self.micro_batch_size as u128 * self.seq_len as u128;
        let per_token = model.num_layers as u128 * (6 * d + 2 * qw + 2 * kw + 3 * f)
            + 2 * model.vocab_size as u128
            + 4 * d;
        16 * model.parameter_count() as u128 + 4 * tokens * per_token
    }

    pub fn document_masking(&self) -> bool {
        self.document_masking
            .unwrap_or(self.mode == Mode::LongContext)
    }
}
