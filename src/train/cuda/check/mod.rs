//! What `grist gpu check` runs: every kernel compiled by NVRTC; on a GPU, every kernel against
//! its CPU twin on fresh random inputs with outputs poisoned (NaN) before the launch (error
//! relative to the largest reference value under 1e-5 on f32 paths and 1e-2 on bf16 paths; a
//! NaN never passes; [`parity`]); and a small model trained 20 steps on the device and on the
//! CPU backend from the same start and data.
//! The same checks run in CI with the host reference device in the GPU's place, which proves
//! the harness (a broken kernel is caught) but not the kernels.

mod parity;

pub use parity::kernel_parity;

use super::device::Device;
use super::host::HostDevice;
use super::{CudaBackend, CudaOptions};
use crate::error::Result;
use crate::train::backend::{AdamStep, Backend, Batch};
use crate::train::config::{ModelConfig, Precision, Rope, RopeScaling};
use crate::train::cpu::CpuBackend;
use crate::train::params::Weights;
use crate::util::SplitMix64;

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub check: String,
    pub pass: bool,
    pub detail: String,
}

/// The tolerance of a kernel's outputs against its twin, by precision.
pub fn tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::Bf16 => 1e-2,
    }
}

/// The largest error relative to the largest reference value, `‖a − b‖∞ / ‖b‖∞`: a single
/// wrong element shows whatever the size. Infinite when `a` holds a NaN or an infinity where
/// `b` holds a number.
pub fn rel_error(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len()
        || a.iter()
            .zip(b)
            .any(|(x, y)| !x.is_finite() && y.is_finite())
    {
        return f64::INFINITY;
    }
    let err = a
        .iter()
        .zip(b)
        .filter(|(_, y)| y.is_finite())
        .map(|(x, y)| (x - y).abs() as f64)
        .fold(0.0, f64::max);
    let scale = b
        .iter()
        .filter(|y| y.is_finite())
        .map(|y| y.abs() as f64)
        .fold(0.0, f64::max);
    err / scale.max(1e-30)
}

/// The model of the training check: small enough for the CPU backend to run 20 steps in a
/// second, with GQA, a YaRN-scaled RoPE and untied embeddings.
pub fn check_model() -> ModelConfig {
    ModelConfig {
        vocab_size: 97,
        hidden_size: 64,
        intermediate_size: 160,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: Some(2),
        head_dim: None,
        norm_eps: 1e-5,
        rope: Rope {
            theta: 10_000.0,
            scaling: RopeScaling::Yarn {
                factor: 2.0,
                original_max_position_embeddings: 16,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: None,
            },
        },
        tie_embeddings: false,
        max_position_embeddings: 64,
        bos_token_id: None,
        eos_token_id: None,
    }
}

/// Micro-batch `i` of the training check: 4 samples of 32 random tokens, each one's target a
/// fixed function of it, documents of 5 to 20 tokens with positions restarting, the last
/// target padding.
pub fn check_batch(i: u64, vocab: usize) -> Batch {
    let (b, t) = (4, 32);
    let mut rng = SplitMix64(0x7e57 + i);
    let mut next = |m: u64| (rng.next_u64() % m) as usize;
    let inputs: Vec<u32> = (0..b * t).map(|_| next(vocab as u64) as u32).collect();
    // A target that follows from its input: something to learn, so the loss falls.
    let mut targets: Vec<i32> = inputs
        .iter()
        .map(|&x| ((x as usize * 7 + 3) % vocab) as i32)
        .collect();
    targets[b * t - 1] = -1;
    let (mut positions, mut starts) = (Vec::new(), Vec::new());
    for _ in 0..b {
        let mut start = 0;
        let mut end = 5 + next(16);
        for i in 0..t {
            if i == end {
                start = i;
                end = i + 5 + next(16);
            }
            starts.push(start as u32);
            positions.push((i - start) as u32);
        }
    }
    Batch {
        batch: b,
        seq: t,
        inputs,
        targets,
        positions,
        starts,
    }
}

/// One optimizer step on one micro-batch, as the checks and `gpu bench` run it: AdamW (betas
/// 0.9/0.95, weight decay 0.1 on the matrices) at `lr`, the gradient clipped to norm 1. The
/// mean loss over the batch's counted targets.
pub fn train_step(backend: &mut dyn Backend, b: &Batch, lr: f64, step: u64) -> Result<f64> {
    let counted = b.counted().max(1);
    backend.zero_grads();
    let loss = backend.forward_backward(b, 1.0 / counted as f32)?;
    let norm = backend.grad_norm()?;
    backend.adamw_step(&AdamStep {
        lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        decay_norms_and_embeddings: false,
        step,
        grad_scale: if norm > 1.0 { 1.0 / (norm + 1e-6) } else { 1.0 },
    })?;
    Ok(loss / counted as f64)
}

/// Trains the check model `steps` steps on `backend`; the losses.
pub fn train_losses(backend: &mut dyn Backend, steps: u64) -> Result<Vec<f64>> {
    let vocab = backend.config().vocab_size;
    (1..=steps)
        .map(|step| train_step(backend, &check_batch(step, vocab), 3e-3, step))
        .collect()
}

/// The check model trained `steps` steps on `device` and on the CPU backend from the same
/// weights and batches: passes when every step's loss agrees within `limit` (relative).
pub fn train_agreement<D: Device>(device: D, steps: u64, limit: f64) -> Result<Row> {
    let cfg = check_model();
    let w = Weights::init(&cfg, 1, 0.05);
    let precision = device.precision();
    let name = device.describe();
    let mut cpu = CpuBackend::new(cfg.clone(), w.clone())?;
    let opts = CudaOptions {
        rows: 128,
        recompute: false,
        logit_chunk: None,
    };
    let mut dev = CudaBackend::new(cfg, w, device, opts)?;
    let a = train_losses(&mut cpu, steps)?;
    let b = train_losses(&mut dev, steps)?;
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            if y.is_finite() {
                (x - y).abs() / x.abs()
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max);
    Ok(Row {
        check: format!("{steps} training steps vs cpu ({})", precision.as_str()),
        pass: worst < limit && b.first() > b.last(),
        detail: format!(
            "losses {:.4} → {:.4} on {name}, {:.4} → {:.4} on cpu; worst step differs by {:.1e} (limit {limit:.0e})",
            b[0],
            b[b.len() - 1],
            a[0],
            a[a.len() - 1],
            worst
        ),
    })
}

/// The host reference device in the GPU's place: what CI can run of the device checks.
pub fn reference_rows(precision: Precision) -> Result<Vec<Row>> {
    let (mut a, mut b) = (HostDevice::new(precision), HostDevice::new(precision));
    let mut rows = kernel_parity(&mut a, &mut b, 1)?;
    let limit = match precision {
        Precision::F32 => 1e-4,
        Precision::Bf16 => 1e-2,
    };
    rows.push(train_agreement(HostDevice::new(precision), 20, limit)?);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::cuda::device::{BufId, Class, Gemm, Kernel, View};

    /// A device that runs one kernel wrong (a perturbed output) and otherwise the host's.
    struct Broken {
        inner: HostDevice,
        kernel: &'static str,
    }

    impl Device for Broken {
        fn describe(&self) -> String {
            "broken".into()
        }
        fn precision(&self) -> Precision {
            self.inner.precision()
        }
        fn alloc(&mut self, class: Class, len: usize) -> Result<BufId> {
            self.inner.alloc(class, len)
        }
        fn free(&mut self, buf: BufId) {
            self.inner.free(buf)
        }
        fn upload(&mut self, dst: View, data: &[f32]) -> Result<()> {
            self.inner.upload(dst, data)
        }
        fn upload_int(&mut self, dst: View, data: &[u32]) -> Result<()> {
            self.inner.upload_int(dst, data)
        }
        fn download(&self, src: View) -> Result<Vec<f32>> {
            self.inner.download(src)
        }
        fn download_int(&self, src: View) -> Result<Vec<u32>> {
            self.inner.download_int(src)
        }
        fn fill(&mut self, dst: View, value: f32) -> Result<()> {
            self.inner.fill(dst, value)
        }
        fn launch(&mut self, k: &Kernel) -> Result<()> {
            if k.name() != self.kernel {
                return self.inner.launch(k);
            }
            // A NaN (dkdv) or a wrong value (the others) in the first element of the last
            // output: the check must see both.
            self.inner.launch(k)?;
            let out = *k.outputs().last().expect("an output");
            let mut v = self.inner.download(out)?;
            v[0] = if self.kernel == "attention_bwd_dkdv" {
                f32::NAN
            } else {
                v[0] * 1.5 + 1.0
            };
            self.inner.upload(out, &v)
        }
        fn gemm(&mut self, g: &Gemm) -> Result<()> {
            self.inner.gemm(g)
        }
        fn synchronize(&mut self) -> Result<()> {
            Ok(())
        }
        fn memory_in_use(&self) -> Option<usize> {
            None
        }
    }

    #[test]
    fn the_reference_device_passes_its_own_checks() {
        for p in [Precision::F32, Precision::Bf16] {
            let rows = reference_rows(p).unwrap();
            assert!(rows.len() > 40, "{}", rows.len());
            for r in &rows {
                assert!(r.pass, "{}: {}", r.check, r.detail);
            }
        }
    }

    #[test]
    fn a_broken_kernel_fails_its_check_and_only_its() {
        for kernel in ["rope_fwd", "attention_bwd_dkdv", "cross_entropy", "adamw"] {
            let mut bad = Broken {
                inner: HostDevice::new(Precision::Bf16),
                kernel,
            };
            let mut good = HostDevice::new(Precision::Bf16);
            let rows = kernel_parity(&mut bad, &mut good, 2).unwrap();
            for r in &rows {
                let is_it = r.check.starts_with(kernel);
                assert_eq!(r.pass, !is_it, "{kernel}: {} — {}", r.check, r.detail);
            }
        }
    }

    #[test]
    fn a_nan_never_passes() {
        assert_eq!(rel_error(&[1.0, f32::NAN], &[1.0, 2.0]), f64::INFINITY);
        assert!(rel_error(&[1.0, 2.0], &[1.0, 2.0]) == 0.0);
    }
}
