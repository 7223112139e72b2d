//! The model's tensors, named as `transformers`' `LlamaForCausalLM` names them (so checkpoints,
//! exports and imports share one naming), each a row-major f32 buffer; linear weights are
//! `[out, in]`. Gradients and the optimizer's moments use the same structure.

use super::config::ModelConfig;
use crate::util::SplitMix64;

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub o: Vec<f32>,
    pub mlp_norm: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub embed: Vec<f32>,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// Absent when the embedding is tied.
    pub lm_head: Option<Vec<f32>>,
}

/// What a tensor is, for weight decay and initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    Embedding,
    Norm,
    Matrix,
    /// A projection back into the residual stream (attention output, MLP down): initialised
    /// with std / sqrt(2 · layers), as GPT-2 does.
    ResidualMatrix,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tensors of a model of shape `cfg`, in the canonical order [`Weights::tensors`] uses.
pub fn tensor_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (q, kv) = (cfg.num_heads * hd, cfg.kv_heads() * hd);
    let spec = |name: String, shape: Vec<usize>, kind| TensorSpec { name, shape, kind };
    let mut out = vec![spec(
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab_size, d],
        TensorKind::Embedding,
    )];
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        out.push(spec(
            format!("{p}.input_layernorm.weight"),
            vec![d],
            TensorKind::Norm,
        ));
        out.push(spec(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, d],
            TensorKind::Matrix,
        ));
        out.push(spec(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, d],
            TensorKind::Matrix,
        ));
        out.push(spec(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, d],
            TensorKind::Matrix,
        ));
        out.push(spec(
            format!("{p}.self_attn.o_proj.weight"),
            vec![d, q],
            TensorKind::ResidualMatrix,
        ));
        out.push(spec(
            format!("{p}.post_attention_layernorm.weight"),
            vec![d],
            TensorKind::Norm,
        ));
        out.push(spec(
            format!("{p}.mlp.gate_proj.weight"),
            vec![f, d],
            TensorKind::Matrix,
        ));
        out.push(spec(
            format!("{p}.mlp.up_proj.weight"),
            vec![f, d],
            TensorKind::Matrix,
        ));
        out.push(spec(
            format!("{p}.mlp.down_proj.weight"),
            vec![d, f],
            TensorKind::ResidualMatrix,
        ));
    }
    out.push(spec("model.norm.weight".into(), vec![d], TensorKind::Norm));
    if !cfg.tie_embeddings {
        out.push(spec(
            "lm_head.weight".into(),
            vec![cfg.vocab_size, d],
            TensorKind::Matrix,
        ));
    }
    out
}

impl Weights {
    /// All zeros (gradients, optimizer moments).
    pub fn zeros(cfg: &ModelConfig) -> Weights {
        Weights::from_fn(cfg, |spec| vec![0.0; spec.len()])
    }

    /// Builds every tensor from its spec, in canonical order.
    pub fn from_fn(cfg: &ModelConfig, mut make: impl FnMut(&TensorSpec) -> Vec<f32>) -> Weights {
        let specs = tensor_specs(cfg);
        let mut it = specs.iter().map(&mut make);
        let mut next = || it.next().expect("one tensor per spec");
        let embed = next();
        let layers = (0..cfg.num_layers)
            .map(|_| Layer {
                attn_norm: next(),
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                mlp_norm: next(),
                gate: next(),
                up: next(),
                down: next(),
            })
            .collect();
        let norm = next();
        let lm_head = (!cfg.tie_embeddings).then(&mut next);
        Weights {
            embed,
            layers,
            norm,
            lm_head,
        }
    }

    /// The model's tensors from buffers in canonical order (lengths checked by the caller).
    pub fn from_tensors(cfg: &ModelConfig, tensors: Vec<Vec<f32>>) -> Weights {
        let mut it = tensors.into_iter();
        Weights::from_fn(cfg, |_| it.next().expect("one tensor per spec"))
    }

    /// Random initialisation: normal(0, `std`) matrices and embeddings (residual projections
    /// scaled by 1/sqrt(2·layers)), norms at 1. Deterministic in `seed`.
    pub fn init(cfg: &ModelConfig, seed: u64, std: f64) -> Weights {
        let mut rng = Normal::new(seed);
        let residual_std = std / (2.0 * cfg.num_layers.max(1) as f64).sqrt();
        Weights::from_fn(cfg, |spec| match spec.kind {
            TensorKind::Norm => vec![1.0; spec.len()],
            TensorKind::ResidualMatrix => rng.fill(spec.len(), residual_std),
            TensorKind::Matrix | TensorKind::Embedding => rng.fill(spec.len(), std),
        })
    }

    /// The tensors in canonical order (that of [`tensor_specs`]).
    pub fn tensors(&self) -> Vec<&Vec<f32>> {
        let mut out = vec![&self.embed];
        for l in &self.layers {
            out.extend([
                &l.attn_norm,
                &l.q,
                &l.k,
                &l.v,
                &l.o,
                &l.mlp_norm,
                &l.gate,
                &l.up,
                &l.down,
            ]);
        }
        out.push(&self.norm);
        out.extend(self.lm_head.as_ref());
        out
    }

    pub fn tensors_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out = vec![&mut self.embed];
        for l in &mut self.layers {
            out.extend([
                &mut l.attn_norm,
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.mlp_norm,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ]);
        }
        out.push(&mut self.norm);
        out.extend(self.lm_head.as_mut());
        out
    }

    /// The output projection: `lm_head`, or the embedding when tied.
    pub fn output(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    pub fn fill(&mut self, value: f32) {
        for t in self.tensors_mut() {
            t.fill(value);
        }
    }
}

/// Gaussian samples from SplitMix64 by Box–Muller: deterministic on every platform.
pub struct Normal {
    rng: SplitMix64,
    spare: Option<f64>,
}

impl Normal {
    pub fn new(seed: u64) -> Normal {
        Normal {
            rng: SplitMix64(seed ^ 0x6e6f726d616c),
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        // 53 random bits in (0, 1]: never 0, so the log below is finite.
        ((self.rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    pub fn fill(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n).map(|_| (self.sample() * std) as f32).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model small enough for finite differences.
    pub fn tiny() -> ModelConfig {
        ModelConfig {
            vocab_size: 11,
            hidden_size: 8,
            intermediate_size: 12,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: Some(1),
            head_dim: None,
            norm_eps: 1e-5,
            rope: Default::default(),
            tie_embeddings: false,
            max_position_embeddings: 32,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    #[test]
    fn specs_match_tensors_and_count() {
        for tie in [false, true] {
            let cfg = ModelConfig {
                tie_embeddings: tie,
                ..tiny()
            };
            let w = Weights::init(&cfg, 1, 0.02);
            let specs = tensor_specs(&cfg);
            let tensors = w.tensors();
            assert_eq!(specs.len(), tensors.len());
            for (s, t) in specs.iter().zip(&tensors) {
                assert_eq!(s.len(), t.len(), "{}", s.name);
            }
            let total: usize = tensors.iter().map(|t| t.len()).sum();
            assert_eq!(total, cfg.parameter_count());
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut n = Normal::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| n.sample()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
    }
}
