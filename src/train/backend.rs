//! What the training loop asks of a compute backend. The loop (trainer.rs) only talks to this
//! trait, so the CUDA backend (cudarc, `kernels/`) plugs in beside `cpu` without touching it:
//! weights, gradients and optimizer moments live on the backend, batches go in, scalars come
//! out, and the host copies weights back only for checkpoints.

use super::config::ModelConfig;
use super::cpu::ops::IGNORE;
use super::params::Weights;
use crate::error::{GristError, Result};

/// One micro-batch: `batch` samples of `seq` tokens, flattened sample-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub inputs: Vec<u32>,
    /// The next token of each input, or [`IGNORE`](super::cpu::ops::IGNORE) (padding).
    pub targets: Vec<i32>,
    /// RoPE position of each input.
    pub positions: Vec<u32>,
    /// First position (within its sample) each input may attend to: 0 without document
    /// masking, its fragment's first position with it.
    pub starts: Vec<u32>,
}

impl Batch {
    /// Targets that count towards the loss.
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&t| t >= 0).count()
    }

    /// Refuses a batch a model with `vocab` tokens cannot take: arrays that do not match
    /// `batch × seq`, token ids outside the vocabulary, a start after its position.
    pub fn check(&self, vocab: usize) -> Result<()> {
        let n = self.batch * self.seq;
        if [
            self.inputs.len(),
            self.targets.len(),
            self.positions.len(),
            self.starts.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(GristError::Usage(
                "batch: arrays do not match batch × seq".into(),
            ));
        }
        if let Some(t) = self.inputs.iter().find(|&&t| t as usize >= vocab) {
            return Err(GristError::Usage(format!(
                "token id {t} is outside the model's vocabulary ({vocab}); was the data made with another tokenizer?"
            )));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|&&t| t >= vocab as i32 || t < IGNORE)
        {
            return Err(GristError::Usage(format!(
                "token id {t} is outside the model's vocabulary ({vocab})"
            )));
        }
        for (i, &s) in self.starts.iter().enumerate() {
            if s as usize > i % self.seq {
                return Err(GristError::Usage(
                    "batch: a start lies after its position".into(),
                ));
            }
        }
        Ok(())
    }

    /// One past the largest position.
    pub fn positions_needed(&self) -> usize {
        self.positions.iter().max().map_or(0, |&p| p as usize + 1)
    }
}

/// One AdamW update (PyTorch's `AdamW` arithmetic).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decay_norms_and_embeddings: bool,
    /// The update's 1-based index (bias correction).
    pub step: u64,
    /// Multiplies the gradients first (clipping).
    pub grad_scale: f64,
}

pub trait Backend {
    fn name(&self) -> &'static str;
    fn config(&self) -> &ModelConfig;
    /// The weights, copied to the host.
    fn weights(&self) -> Result<Weights>;
    fn zero_grads(&mut self);
    /// Forward and backward of one micro-batch: adds `grad_scale` × the gradient of the summed
    /// token losses to the gradients; returns the summed loss (nats) over counted targets.
    fn forward_backward(&mut self, batch: &Batch, grad_scale: f32) -> Result<f64>;
    /// The summed loss (nats) over counted targets, no gradients.
    fn loss(&mut self, batch: &Batch) -> Result<f64>;
    /// The logits `[batch·seq, vocab]`, copied to the host.
    fn logits(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// The accumulated gradients, copied to the host.
    fn grads(&self) -> Result<Weights>;
    /// The global L2 norm of the accumulated gradients.
    fn grad_norm(&mut self) -> Result<f64>;
    fn adamw_step(&mut self, step: &AdamStep) -> Result<()>;
    /// The first and second moments, copied to the host.
    fn optimizer_state(&self) -> Result<(Weights, Weights)>;
    fn set_optimizer_state(&mut self, m: Weights, v: Weights) -> Result<()>;
    /// Waits for the work queued so far (a backend with a device queue; a no-op otherwise).
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }
    /// Device memory in use, in bytes, where the backend has a device.
    fn device_memory(&self) -> Option<usize> {
        None
    }
    /// The device's dense bf16 peak in FLOP/s, where known (for MFU).
    fn peak_flops(&self) -> Option<f64> {
        None
    }
}
