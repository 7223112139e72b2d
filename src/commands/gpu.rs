//! `grist gpu check` and `grist gpu bench`.
//!
//! `check` is what a user runs first when the CUDA backend misbehaves: what is installed
//! (NVRTC, driver, device), every kernel compiled, and on a GPU every kernel against its CPU
//! twin and 20 training steps against the CPU backend. `--compile-only` needs NVRTC alone (CI).
//! With `GRIST_CUDA_DEVICE=reference` the device checks run on the host reference device (a
//! dry run of the GPU script on a machine without one).
//!
//! `bench` trains a model for some steps on random tokens (or a text file's) and reports
//! tokens/s, MFU and device memory as one JSON line: the figure `tests/gpu/check.sh` compares
//! with PyTorch's.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::error::{GristError, Result};
use crate::train::backend::{Backend, Batch};
use crate::train::config::{BackendKind, ModelConfig, Precision};
use crate::train::cpu::CpuBackend;
use crate::train::cuda::check::{self, Row};
use crate::train::cuda::gpu::{self, GpuDevice};
use crate::train::cuda::host::HostDevice;
use crate::train::cuda::{self as cuda, nvrtc};
use crate::train::params::Weights;
use crate::util::SplitMix64;

pub struct CheckCommand {
    pub compile_only: bool,
    /// Architectures to compile for (e.g. 80, 90); default: the device's, or 80 and 90.
    pub archs: Vec<u32>,
}

/// The report's rows, in order; `Err` (exit 2) when NVRTC, the driver or the device is missing.
pub fn check(c: &CheckCommand) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let version = nvrtc::load().map_err(GristError::Device)?;
    rows.push(Row {
        check: "nvrtc".into(),
        pass: true,
        detail: format!("NVRTC {}.{}", version.0, version.1),
    });
    let reference = cuda::reference_requested()?;
    let info = if c.compile_only || reference {
        None
    } else {
        Some(gpu::probe()?)
    };
    if let Some(i) = &info {
        rows.push(Row {
            check: "driver".into(),
            pass: true,
            detail: format!(
                "CUDA {}.{} driver, {} device(s)",
                i.driver_version / 1000,
                i.driver_version % 1000 / 10,
                i.devices
            ),
        });
        rows.push(Row {
            check: "device 0".into(),
            pass: true,
            detail: format!(
                "{}, compute capability {}.{}, {:.1} GiB, dense bf16 peak {}",
                i.name,
                i.compute_capability.0,
                i.compute_capability.1,
                i.total_memory as f64 / (1u64 << 30) as f64,
                gpu::peak_bf16_flops(&i.name, i.compute_capability)
                    .map_or("unknown".into(), |p| format!("{:.0} TFLOP/s", p / 1e12))
            ),
        });
    }
    let archs = if !c.archs.is_empty() {
        c.archs.clone()
    } else if let Some(i) = &info {
        vec![i.arch()]
    } else {
        vec![80, 90]
    };
    for arch in &archs {
        for precision in [Precision::Bf16, Precision::F32] {
            for (family, _) in crate::train::cuda::device::FAMILIES {
                let t0 = Instant::now();
                let r = nvrtc::compile(family, *arch, precision, None);
                rows.push(Row {
                    check: format!("compile {family} sm_{arch} {}", precision.as_str()),
                    pass: r.is_ok(),
                    detail: match r {
                        Ok(c) => format!(
                            "{} bytes of PTX in {:.0} ms",
                            c.ptx.len(),
                            t0.elapsed().as_secs_f64() * 1e3
                        ),
                        Err(e) => e.to_string(),
                    },
                });
            }
        }
    }
    if c.compile_only {
        return Ok(rows);
    }
    for precision in [Precision::F32, Precision::Bf16] {
        let limit = match precision {
            Precision::F32 => 1e-4,
            Precision::Bf16 => 1e-2,
        };
        let mut host = HostDevice::new(precision);
        if reference {
            let mut dut = HostDevice::new(precision);
            rows.extend(check::kernel_parity(&mut dut, &mut host, 42)?);
            rows.push(check::train_agreement(
                HostDevice::new(precision),
                20,
                limit,
            )?);
        } else {
            let mut dut = GpuDevice::new(precision)?;
            rows.extend(check::kernel_parity(&mut dut, &mut host, 42)?);
            drop(dut);
            rows.push(check::train_agreement(
                GpuDevice::new(precision)?,
                20,
                limit,
            )?);
        }
    }
    Ok(rows)
}

/// The report as a table: check, result, detail.
pub fn render(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:width$}  result  detail\n", "check");
    for r in rows {
        out.push_str(&format!(
            "{:width$}  {:6}  {}\n",
            r.check,
            if r.pass { "ok" } else { "FAILED" },
            r.detail
        ));
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    out.push_str(&format!("{} checks, {} failed\n", rows.len(), failed));
    out
}

pub struct BenchCommand {
    /// A model config (JSON, grist's `ModelConfig`), randomly initialised.
    pub model: Option<PathBuf>,
    /// Or a model to start from: a grist checkpoint directory or a GGUF file.
    pub init: Option<PathBuf>,
    /// Tokens from this text file (with the `init` model's tokenizer) instead of random ones.
    pub text: Option<PathBuf>,
    pub batch: usize,
    pub seq: usize,
    pub steps: usize,
    pub warmup: usize,
    pub document_masking: bool,
    pub backend: BackendKind,
    pub precision: Precision,
    pub recompute: bool,
    pub lr: f64,
    /// Steps over which the learning rate rises linearly to `lr` (0: none).
    pub lr_warmup: usize,
    pub seed: u64,
}

/// Micro-batches of `seq` tokens from a token stream: consecutive windows, or random ids.
struct Source {
    tokens: Option<Vec<u32>>,
    vocab: usize,
    rng: SplitMix64,
    at: usize,
}

impl Source {
    fn batch(&mut self, b: usize, seq: usize, documents: bool) -> Batch {
        let mut inputs = Vec::with_capacity(b * seq);
        let mut targets = Vec::with_capacity(b * seq);
        for _ in 0..b {
            let window: Vec<u32> = match &self.tokens {
                Some(t) => {
                    if self.at + seq + 1 > t.len() {
                        self.at = 0;
                    }
                    let w = t[self.at..self.at + seq + 1].to_vec();
                    self.at += seq;
                    w
                }
                None => (0..=seq)
                    .map(|_| (self.rng.next_u64() % self.vocab as u64) as u32)
                    .collect(),
            };
            inputs.extend_from_slice(&window[..seq]);
            targets.extend(window[1..].iter().map(|&t| t as i32));
        }
        let (mut positions, mut starts) = (Vec::new(), Vec::new());
        for _ in 0..b {
            let (mut start, mut end) = (0, usize::MAX);
            if documents {
                end = self.doc_len(seq);
            }
            for i in 0..seq {
                if i == end {
                    start = i;
                    end = i + self.doc_len(seq);
                }
                starts.push(start as u32);
                positions.push((i - start) as u32);
            }
        }
        Batch {
            batch: b,
            seq,
            inputs,
            targets,
            positions,
            starts,
        }
    }

    /// A document length between seq/16 and seq/2 (a few documents per sample).
    fn doc_len(&mut self, seq: usize) -> usize {
        let lo = (seq / 16).max(1);
        let hi = (seq / 2).max(lo);
        lo + (self.rng.next_u64() as usize) % (hi - lo + 1)
    }
}

/// Trains `steps` timed steps after `warmup` untimed ones; one JSON object of figures.
pub fn bench(c: &BenchCommand) -> Result<serde_json::Value> {
    if c.batch == 0 || c.seq == 0 || c.steps == 0 {
        return Err(GristError::Usage(
            "--batch, --seq and --steps must be at least 1".into(),
        ));
    }
    let (config, weights, tokenizer): (ModelConfig, Weights, _) = match (&c.model, &c.init) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| GristError::io(path, e))?;
            let cfg: ModelConfig = serde_json::from_str(&text)
                .map_err(|e| GristError::data(path, format!("not a model config: {e}")))?;
            let problems = cfg.problems();
            if !problems.is_empty() {
                return Err(GristError::data(path, problems.join("; ")));
            }
            let w = Weights::init(&cfg, c.seed, 0.02);
            (cfg, w, None)
        }
        (None, Some(path)) => {
            let m = crate::synth::local::ServedModel::load(path)?;
            (m.config, m.weights, Some(m.tokenizer))
        }
        _ => {
            return Err(GristError::Usage(
                "give --model CONFIG.json or --init CHECKPOINT|GGUF".into(),
            ));
        }
    };
    let tokens = match (&c.text, &tokenizer) {
        (Some(path), Some(tok)) => {
            let text = std::fs::read_to_string(path).map_err(|e| GristError::io(path, e))?;
            let ids = tok
                .encode(text.as_str(), false)
                .map_err(|e| GristError::Usage(format!("cannot encode {}: {e}", path.display())))?
                .get_ids()
                .to_vec();
            if ids.len() < c.seq + 1 {
                return Err(GristError::Usage(format!(
                    "{} has {} tokens, fewer than one sample of {}",
                    path.display(),
                    ids.len(),
                    c.seq + 1
                )));
            }
            Some(ids)
        }
        (Some(_), None) => {
            return Err(GristError::Usage(
                "--text needs --init (a model with a tokenizer)".into(),
            ));
        }
        (None, _) => None,
    };
    let params = config.parameter_count();
    let flops_per_token = config.flops_per_token(c.seq);
    let mut backend: Box<dyn Backend> = match c.backend {
        BackendKind::Cpu => Box::new(CpuBackend::new(config.clone(), weights)?),
        BackendKind::Cuda => cuda::open_backend(
            config.clone(),
            weights,
            c.precision,
            cuda::CudaOptions {
                rows: c.batch * c.seq,
                recompute: c.recompute,
                logit_chunk: None,
            },
        )?,
    };
    let mut source = Source {
        tokens,
        vocab: config.vocab_size,
        rng: SplitMix64(c.seed ^ 0xbe7c4),
        at: 0,
    };
    let mut losses = Vec::new();
    let mut timed = 0.0f64;
    for step in 1..=(c.warmup + c.steps) as u64 {
        let b = source.batch(c.batch, c.seq, c.document_masking);
        let t0 = Instant::now();
        let lr = if c.lr_warmup > 0 {
            c.lr * (step as f64 / c.lr_warmup as f64).min(1.0)
        } else {
            c.lr
        };
        let mean = check::train_step(backend.as_mut(), &b, lr, step)?;
        backend.synchronize()?;
        if !mean.is_finite() {
            return Err(GristError::stage(
                "bench",
                format!("step {step}: the loss is not finite ({mean})"),
            ));
        }
        if step as usize > c.warmup {
            timed += t0.elapsed().as_secs_f64();
        }
        losses.push(mean);
        tracing::info!("step {step}: loss {mean:.4}");
    }
    let tokens_per_s = (c.batch * c.seq * c.steps) as f64 / timed.max(1e-9);
    let peak = backend.peak_flops();
    Ok(json!({
        "tool": "grist",
        "backend": c.backend.as_str(),
        "precision": if c.backend == BackendKind::Cuda { c.precision.as_str() } else { "f32" },
        "recompute": c.recompute,
        "params": params,
        "batch": c.batch,
        "seq": c.seq,
        "steps": c.steps,
        "warmup": c.warmup,
        "document_masking": c.document_masking,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops_per_token,
        "peak_flops": peak,
        "mfu": peak.map(|p| tokens_per_s * flops_per_token / p),
        "device_memory_bytes": backend.device_memory(),
        "first_loss": losses.first(),
        "last_loss": losses.last(),
        "losses": losses,
        "seconds": timed,
    }))
}
