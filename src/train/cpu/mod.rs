//! The CPU backend: f32, every operation's forward and backward written out (ops.rs,
//! attention.rs), GEMMs on `matrixmultiply`, parallel with rayon. It is the reference the
//! CUDA backend is compared with.

pub mod attention;
pub mod gemm;
pub mod infer;
pub mod model;
pub mod ops;

use super::backend::{AdamStep, Backend, Batch};
use super::config::ModelConfig;
use super::optim::adamw_update;
use super::params::{TensorKind, Weights, tensor_specs};
use super::rope::RopeTable;
use crate::error::{GristError, Result};

pub struct CpuBackend {
    cfg: ModelConfig,
    rope: RopeTable,
    weights: Weights,
    grads: Weights,
    m: Weights,
    v: Weights,
}

impl CpuBackend {
    pub fn new(cfg: ModelConfig, weights: Weights) -> Result<CpuBackend> {
        let problems = cfg.problems();
        if !problems.is_empty() {
            return Err(GristError::Usage(format!(
                "model config: {}",
                problems.join("; ")
            )));
        }
        let rope = RopeTable::new(&cfg.rope, cfg.head_dim());
        Ok(CpuBackend {
            rope,
            grads: Weights::zeros(&cfg),
            m: Weights::zeros(&cfg),
            v: Weights::zeros(&cfg),
            weights,
            cfg,
        })
    }

    fn check(&mut self, batch: &Batch) -> Result<()> {
        batch.check(self.cfg.vocab_size)?;
        self.rope.ensure(batch.positions_needed());
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weights(&self) -> Result<Weights> {
        Ok(self.weights.clone())
    }

    fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    fn forward_backward(&mut self, batch: &Batch, grad_scale: f32) -> Result<f64> {
        self.check(batch)?;
        let (acts, mut logits) = model::forward(&self.cfg, &self.weights, &self.rope, batch);
        let loss = ops::cross_entropy(
            &mut logits,
            &batch.targets,
            self.cfg.vocab_size,
            Some(grad_scale),
        );
        model::backward(
            &self.cfg,
            &self.weights,
            &self.rope,
            batch,
            &acts,
            &logits,
            &mut self.grads,
        );
        Ok(loss)
    }

    fn loss(&mut self, batch: &Batch) -> Result<f64> {
        self.check(batch)?;
        let (_, mut logits) = model::forward(&self.cfg, &self.weights, &self.rope, batch);
        Ok(ops::cross_entropy(
            &mut logits,
            &batch.targets,
            self.cfg.vocab_size,
            None,
        ))
    }

    fn logits(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.check(batch)?;
        Ok(model::forward(&self.cfg, &self.weights, &self.rope, batch).1)
    }

    fn grads(&self) -> Result<Weights> {
        Ok(self.grads.clone())
    }

    fn grad_norm(&mut self) -> Result<f64> {
        let sq: f64 = self
            .grads
            .tensors()
            .iter()
            .map(|t| t.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
            .sum();
        Ok(sq.sqrt())
    }

    fn adamw_step(&mut self, step: &AdamStep) -> Result<()> {
        let specs = tensor_specs(&self.cfg);
        let params = self.weights.tensors_mut();
        let grads = self.grads.tensors();
        let ms = self.m.tensors_mut();
        let vs = self.v.tensors_mut();
        for ((((spec, p), g), m), v) in specs.iter().zip(params).zip(grads).zip(ms).zip(vs) {
            let decays = match spec.kind {
                TensorKind::Matrix | TensorKind::ResidualMatrix => true,
                TensorKind::Norm | TensorKind::Embedding => step.decay_norms_and_embeddings,
            };
            adamw_update(p, g, m, v, step, decays);
        }
        Ok(())
    }

    fn optimizer_state(&self) -> Result<(Weights, Weights)> {
        Ok((self.m.clone(), self.v.clone()))
    }

    fn set_optimizer_state(&mut self, m: Weights, v: Weights) -> Result<()> {
        let shapes = |w: &Weights| w.tensors().iter().map(|t| t.len()).collect::<Vec<_>>();
        if shapes(&m) != shapes(&self.weights) || shapes(&v) != shapes(&self.weights) {
            return Err(GristError::Usage(
                "optimizer state does not match the model's tensors".into(),
            ));
        }
        self.m = m;
        self.v = v;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops mirror the formulas
mod tests {
    use super::ops::tests::numeric;
    use super::*;
    use crate::train::config::{Rope, RopeScaling};

    fn tiny(tie: bool) -> ModelConfig {
        ModelConfig {
            rope: Rope {
                theta: 100.0,
                scaling: RopeScaling::Yarn {
                    factor: 2.0,
                    original_max_position_embeddings: 4,
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    attention_factor: None,
                },
            },
            tie_embeddings: tie,
            max_position_embeddings: 16,
            ..crate::train::params::tests::tiny()
        }
    }

    /// Two samples of 5 tokens; the second holds two documents, its last target is padding.
    fn batch() -> Batch {
        Batch {
            batch: 2,
            seq: 5,
            inputs: vec![1, 4, 2, 9, 3, 7, 0, 5, 5, 10],
            targets: vec![4, 2, 9, 3, 8, 0, 5, 5, 10, ops::IGNORE],
            positions: vec![0, 1, 2, 3, 4, 0, 1, 0, 1, 2],
            starts: vec![0, 0, 0, 0, 0, 0, 0, 2, 2, 2],
        }
    }

    /// The whole model's gradient (every tensor, tied and untied output) against central
    /// differences of the loss.
    #[test]
    fn model_gradients_match_finite_differences() {
        for tie in [false, true] {
            let cfg = tiny(tie);
            let weights = Weights::init(&cfg, 3, 0.3);
            let b = batch();
            let counted = b.counted() as f64;
            let mut backend = CpuBackend::new(cfg.clone(), weights.clone()).unwrap();
            backend.forward_backward(&b, 1.0 / counted as f32).unwrap();
            let grads = backend.grads().unwrap();
            let specs = tensor_specs(&cfg);
            for (t, spec) in specs.iter().enumerate() {
                let g = &grads.tensors()[t];
                let flat = weights.tensors()[t].clone();
                for i in (0..flat.len()).step_by((flat.len() / 5).max(1)) {
                    let mut loss_at = |x: &[f32]| {
                        let mut w = weights.clone();
                        w.tensors_mut()[t].copy_from_slice(x);
                        let mut be = CpuBackend::new(cfg.clone(), w).unwrap();
                        be.loss(&b).unwrap() / counted
                    };
                    let num = numeric(&mut loss_at, &flat, i, 2e-3);
                    let tol = 2e-2 * num.abs().max(g[i].abs() as f64) + 2e-4;
                    assert!(
                        (g[i] as f64 - num).abs() <= tol,
                        "tie {tie}, {}[{i}]: analytic {} vs numeric {num}",
                        spec.name,
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn document_masking_keeps_documents_apart() {
        let cfg = tiny(false);
        let w = Weights::init(&cfg, 5, 0.5);
        let mut be = CpuBackend::new(cfg, w).unwrap();
        let b = batch();
        let base = be.logits(&b).unwrap();
        // Change the first document of sample 1: the second document's logits stay put.
        let mut changed = b.clone();
        changed.inputs[5] = 3;
        let after = be.logits(&changed).unwrap();
        let v = 11;
        assert_ne!(base[5 * v..6 * v], after[5 * v..6 * v]);
        assert_eq!(base[7 * v..], after[7 * v..]);
    }
}
