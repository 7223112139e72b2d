//! The CUDA backend: the CPU backend's model and training arithmetic as kernels (`kernels/`,
//! compiled by NVRTC at start-up) and cuBLASLt GEMMs on an NVIDIA GPU, through cudarc with the
//! CUDA libraries loaded at run time (grist builds and runs without CUDA; `backend: cuda` then
//! says what is missing). Mixed precision as is standard: f32 master weights, gradients and
//! AdamW moments; bf16 activations and GEMM operands with f32 accumulation (`precision: f32`
//! runs everything in f32). Memory is planned once per run ([`plan`]); the launch sequence
//! ([`model`]) runs on any [`device::Device`]: the GPU, or the host reference device whose
//! kernels are CPU twins, which is how CI checks the orchestration against the CPU backend.

pub mod check;
pub mod decode;
pub mod device;
pub mod gpu;
pub mod host;
pub mod model;
pub mod nvrtc;
pub mod plan;
pub mod twins;

#[cfg(test)]
mod tests;

use self::device::{AdamScalars, Class, Device, Kernel, SUM_SQUARES_BLOCKS, View};
use self::model::{Head, Pass, RopeViews, token_segments};
use self::plan::{ActPlan, ParamLayout};
use super::backend::{AdamStep, Backend, Batch};
use super::config::{ModelConfig, Precision};
use super::generate::Feed;
use super::params::{TensorKind, Weights};
use super::rope::RopeTable;
use crate::error::{GristError, Result};

/// How a CUDA backend is set up.
#[derive(Debug, Clone, Copy)]
pub struct CudaOptions {
    /// Rows (micro-batch × sequence) to plan activations for; a larger batch re-plans.
    pub rows: usize,
    pub recompute: bool,
    /// Rows of logits per chunk (default: as many as fit in 256 MiB).
    pub logit_chunk: Option<usize>,
}

/// Which device `backend: cuda` runs on: the GPU, or with `GRIST_CUDA_DEVICE=reference` the
/// host reference device (the same plan with CPU twins: slow, for testing without a GPU).
pub fn reference_requested() -> Result<bool> {
    match std::env::var("GRIST_CUDA_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("gpu") => Ok(false),
        Ok("reference") => Ok(true),
        Ok(other) => Err(GristError::Usage(format!(
            "GRIST_CUDA_DEVICE={other}: `gpu` (the default) or `reference`"
        ))),
    }
}

/// The CUDA backend on device 0 (or the reference device, see [`reference_requested`]).
pub fn open_backend(
    cfg: ModelConfig,
    weights: Weights,
    precision: Precision,
    opts: CudaOptions,
) -> Result<Box<dyn Backend>> {
    if reference_requested()? {
        let dev = host::HostDevice::new(precision);
        return Ok(Box::new(CudaBackend::new(cfg, weights, dev, opts)?));
    }
    let dev = gpu::GpuDevice::new(precision)?;
    let info = dev.info().clone();
    tracing::info!(
        "cuda: {} ({} kernel families compiled, {} from the PTX cache)",
        dev.describe(),
        dev.compiled.0,
        dev.compiled.1
    );
    let peak = gpu::peak_bf16_flops(&info.name, info.compute_capability);
    Ok(Box::new(
        CudaBackend::new(cfg, weights, dev, opts)?.with_peak_flops(peak),
    ))
}

/// A key/value-cache decoder on the GPU (or the reference device) for sequences of up to
/// `capacity` tokens, feeding at most `max_feed` at once.
pub fn open_decoder(
    cfg: ModelConfig,
    weights: &Weights,
    precision: Precision,
    capacity: usize,
    max_feed: usize,
) -> Result<Box<dyn Feed>> {
    if reference_requested()? {
        let dev = host::HostDevice::new(precision);
        return Ok(Box::new(decode::DeviceDecoder::new(
            cfg, weights, dev, capacity, max_feed,
        )?));
    }
    let dev = gpu::GpuDevice::new(precision)?;
    Ok(Box::new(decode::DeviceDecoder::new(
        cfg, weights, dev, capacity, max_feed,
    )?))
}

/// Refuses a model the CUDA backend cannot run, before anything is allocated: a shape the
/// config check refuses, or heads the attention kernels do not take.
pub fn check_model(cfg: &ModelConfig) -> Result<()> {
    let mut problems = cfg.problems();
    if cfg.head_dim() > device::MAX_HEAD_DIM {
        problems.push(format!(
            "head_dim: {} is more than the {} the CUDA backend's attention takes",
            cfg.head_dim(),
            device::MAX_HEAD_DIM
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(GristError::Usage(format!(
            "model config: {}",
            problems.join("; ")
        )))
    }
}

pub struct CudaBackend<D: Device> {
    cfg: ModelConfig,
    dev: D,
    params: ParamLayout,
    acts: ActPlan,
    opts: CudaOptions,
    rope: RopeTable,
    rope_views: Option<RopeViews>,
    rope_bufs: Vec<device::BufId>,
    peak_flops: Option<f64>,
}

impl<D: Device> CudaBackend<D> {
    pub fn new(cfg: ModelConfig, weights: Weights, mut dev: D, opts: CudaOptions) -> Result<Self> {
        check_model(&cfg)?;
        let params = ParamLayout::new(&cfg, &mut dev, 4)?;
        let acts = ActPlan::new(
            &cfg,
            opts.rows.max(1),
            opts.recompute,
            opts.logit_chunk,
            &mut dev,
        )?;
        let rope = RopeTable::new(&cfg.rope, cfg.head_dim());
        let mut be = CudaBackend {
            cfg,
            dev,
            params,
            acts,
            opts,
            rope,
            rope_views: None,
            rope_bufs: Vec::new(),
            peak_flops: None,
        };
        be.load_weights(&weights)?;
        for region in 1..4 {
            let all = be.params.all(region);
            be.dev.fill(all, 0.0)?;
        }
        Ok(be)
    }

    /// Sets the dense bf16 peak that MFU is measured against.
    pub fn with_peak_flops(mut self, peak: Option<f64>) -> Self {
        self.peak_flops = peak;
        self
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    fn upload_tensors(&mut self, w: &Weights, region: usize) -> Result<()> {
        let flat = self.params.flatten(w)?;
        let all = self.params.all(region);
        self.dev.upload(all, &flat)
    }

    fn download_tensors(&self, region: usize) -> Result<Weights> {
        let flat = self.dev.download(self.params.all(region))?;
        let tensors = self
            .params
            .offsets
            .iter()
            .zip(&self.params.lens)
            .map(|(&o, &l)| flat[o..o + l].to_vec())
            .collect();
        Ok(Weights::from_tensors(&self.cfg, tensors))
    }

    fn load_weights(&mut self, w: &Weights) -> Result<()> {
        self.upload_tensors(w, 0)?;
        self.refresh_copies()
    }

    /// The GEMM copies of the parameters, from the master weights.
    fn refresh_copies(&mut self) -> Result<()> {
        let (x, y) = (self.params.all(0), self.params.all_copies());
        self.dev.launch(&Kernel::CastToAct { x, y })
    }

    /// Uploads the batch (and the RoPE table it needs) and returns its embedding segments.
    fn prepare(&mut self, batch: &Batch) -> Result<usize> {
        batch.check(self.cfg.vocab_size)?;
        let n = batch.batch * batch.seq;
        if n > self.acts.rows {
            tracing::debug!("cuda: re-planning activations for {n} rows");
            self.acts.free(&mut self.dev);
            self.acts = ActPlan::new(
                &self.cfg,
                n,
                self.opts.recompute,
                self.opts.logit_chunk,
                &mut self.dev,
            )?;
            self.opts.rows = n;
        }
        self.ensure_rope(batch.positions_needed())?;
        let a = &self.acts;
        let (tokens, targets, positions, starts) = (
            a.tokens.sub(0, n),
            a.targets.sub(0, n),
            a.positions.sub(0, n),
            a.starts.sub(0, n),
        );
        self.dev.upload_int(tokens, &batch.inputs)?;
        let targets_bits: Vec<u32> = batch.targets.iter().map(|&t| t as u32).collect();
        self.dev.upload_int(targets, &targets_bits)?;
        self.dev.upload_int(positions, &batch.positions)?;
        self.dev.upload_int(starts, &batch.starts)?;
        let (order, seg_start, seg_token) = token_segments(&batch.inputs);
        let a = &self.acts;
        let (o, ss, st) = (
            a.order.sub(0, n),
            a.seg_start.sub(0, seg_start.len()),
            a.seg_token.sub(0, seg_token.len()),
        );
        self.dev.upload_int(o, &order)?;
        self.dev.upload_int(ss, &seg_start)?;
        self.dev.upload_int(st, &seg_token)?;
        Ok(seg_token.len())
    }

    fn ensure_rope(&mut self, positions: usize) -> Result<()> {
        if self.rope_views.is_some_and(|r| r.positions >= positions) {
            return Ok(());
        }
        // Grow geometrically so a run with growing positions re-uploads rarely.
        let have = self.rope_views.map_or(0, |r| r.positions);
        let want = positions
            .max(2 * have)
            .max(self.cfg.max_position_embeddings.min(1 << 16));
        self.rope.ensure(want);
        let half = self.cfg.head_dim() / 2;
        for b in self.rope_bufs.drain(..) {
            self.dev.free(b);
        }
        let (cos, sin) = self.rope.tables();
        let (cos, sin) = (cos[..want * half].to_vec(), sin[..want * half].to_vec());
        let (cb, sb) = (
            self.dev.alloc(Class::F32, want * half)?,
            self.dev.alloc(Class::F32, want * half)?,
        );
        let view = |buf| View {
            buf,
            class: Class::F32,
            offset: 0,
            len: want * half,
        };
        self.dev.upload(view(cb), &cos)?;
        self.dev.upload(view(sb), &sin)?;
        self.rope_bufs = vec![cb, sb];
        self.rope_views = Some(RopeViews {
            cos: view(cb),
            sin: view(sb),
            positions: want,
        });
        Ok(())
    }

    fn pass(&mut self, batch: &Batch) -> Pass<'_> {
        Pass {
            dev: &mut self.dev,
            cfg: &self.cfg,
            params: &self.params,
            acts: &self.acts,
            rope: self.rope_views.expect("prepared"),
            batch: batch.batch,
            seq: batch.seq,
        }
    }
}

impl<D: Device> Backend for CudaBackend<D> {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn weights(&self) -> Result<Weights> {
        self.download_tensors(0)
    }

    fn zero_grads(&mut self) {
        let g = self.params.all(1);
        if let Err(e) = self.dev.fill(g, 0.0) {
            tracing::error!("cuda: zeroing the gradients failed: {e}");
        }
    }

    fn forward_backward(&mut self, batch: &Batch, grad_scale: f32) -> Result<f64> {
        let segments = self.prepare(batch)?;
        let mut pass = self.pass(batch);
        pass.forward()?;
        let loss = pass.head(Head::Grad(grad_scale))?;
        pass.backward()?;
        pass.embedding_backward(segments)?;
        Ok(loss)
    }

    fn loss(&mut self, batch: &Batch) -> Result<f64> {
        self.prepare(batch)?;
        let mut pass = self.pass(batch);
        pass.forward()?;
        pass.head(Head::Loss)
    }

    fn logits(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        self.prepare(batch)?;
        let mut out = Vec::with_capacity(batch.batch * batch.seq * self.cfg.vocab_size);
        let mut pass = self.pass(batch);
        pass.forward()?;
        pass.head(Head::Logits(&mut out))?;
        Ok(out)
    }

    fn grads(&self) -> Result<Weights> {
        self.download_tensors(1)
    }

    fn grad_norm(&mut self) -> Result<f64> {
        let partial = self.acts.partial.sub(0, SUM_SQUARES_BLOCKS);
        let x = self.params.all(1);
        self.dev.launch(&Kernel::SumSquares { x, partial })?;
        let parts = self.dev.download(partial)?;
        Ok(parts.iter().map(|&p| p as f64).sum::<f64>().sqrt())
    }

    fn adamw_step(&mut self, step: &AdamStep) -> Result<()> {
        let bc1 = 1.0 - step.beta1.powi(step.step as i32);
        let bc2 = 1.0 - step.beta2.powi(step.step as i32);
        for t in 0..self.params.count() {
            let decays = match self.params.kinds[t] {
                TensorKind::Matrix | TensorKind::ResidualMatrix => true,
                TensorKind::Norm | TensorKind::Embedding => step.decay_norms_and_embeddings,
            };
            let scalars = AdamScalars {
                beta1: step.beta1,
                beta2: step.beta2,
                eps: step.eps,
                decay: if decays {
                    1.0 - step.lr * step.weight_decay
                } else {
                    1.0
                },
                step_size: step.lr / bc1,
                bc2_sqrt: bc2.sqrt(),
                grad_scale: step.grad_scale,
            };
            let k = Kernel::Adamw {
                p: self.params.param(t),
                g: self.params.grad(t),
                m: self.params.m(t),
                v: self.params.v(t),
                scalars,
            };
            self.dev.launch(&k)?;
        }
        self.refresh_copies()
    }

    fn optimizer_state(&self) -> Result<(Weights, Weights)> {
        Ok((self.download_tensors(2)?, self.download_tensors(3)?))
    }

    fn set_optimizer_state(&mut self, m: Weights, v: Weights) -> Result<()> {
        self.upload_tensors(&m, 2)?;
        self.upload_tensors(&v, 3)
    }

    fn synchronize(&mut self) -> Result<()> {
        self.dev.synchronize()
    }

    fn device_memory(&self) -> Option<usize> {
        self.dev.memory_in_use()
    }

    fn peak_flops(&self) -> Option<f64> {
        self.peak_flops
    }
}
