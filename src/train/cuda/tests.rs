//! The CUDA backend's plan on the host reference device against the CPU backend: losses,
//! logits and every gradient, for every RoPE scaling, with and without document masking, tied
//! and untied, in f32 (within 1e-5) and bf16 (loss within 2e-3, each gradient within 8e-2 in relative L2 norm; measured worst 4.7e-2, a norm weight and q_proj, whose sums cancel); activation recomputation and logit
//! chunks change nothing; AdamW steps follow the CPU's.

use super::host::HostDevice;
use super::*;
use crate::train::config::{Precision, Rope, RopeScaling};
use crate::train::cpu::CpuBackend;
use crate::train::cpu::ops::IGNORE;

fn model(scaling: RopeScaling, tie: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: 37,
        hidden_size: 16,
        intermediate_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: Some(2),
        head_dim: None,
        norm_eps: 1e-5,
        rope: Rope {
            theta: 100.0,
            scaling,
        },
        tie_embeddings: tie,
        max_position_embeddings: 16,
        bos_token_id: None,
        eos_token_id: None,
    }
}

fn scalings() -> Vec<RopeScaling> {
    vec![
        RopeScaling::None,
        RopeScaling::Linear { factor: 2.0 },
        RopeScaling::Ntk { factor: 3.0 },
        RopeScaling::Yarn {
            factor: 2.0,
            original_max_position_embeddings: 4,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        },
        RopeScaling::Llama3 {
            factor: 4.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 4,
        },
    ]
}

/// Three samples of 7 tokens; with `masking`, the second and third hold two documents each
/// (positions restart), and the last target is padding.
fn batch(masking: bool, seed: u64) -> Batch {
    let (b, t) = (3, 7);
    let mut rng = crate::util::SplitMix64(seed);
    let inputs: Vec<u32> = (0..b * t).map(|_| (rng.next_u64() % 37) as u32).collect();
    let mut targets: Vec<i32> = (0..b * t).map(|_| (rng.next_u64() % 37) as i32).collect();
    targets[b * t - 1] = IGNORE;
    let (mut positions, mut starts) = (Vec::new(), Vec::new());
    for s in 0..b {
        let boundary = if masking && s > 0 { 2 + s } else { 0 };
        for i in 0..t {
            let start = if i >= boundary { boundary } else { 0 };
            starts.push(start as u32);
            positions.push(if masking {
                (i - start) as u32
            } else {
                i as u32
            });
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

fn reference(
    cfg: &ModelConfig,
    w: &Weights,
    p: Precision,
    opts: CudaOptions,
) -> CudaBackend<HostDevice> {
    CudaBackend::new(cfg.clone(), w.clone(), HostDevice::new(p), opts).unwrap()
}

fn opts(rows: usize) -> CudaOptions {
    CudaOptions {
        rows,
        recompute: false,
        logit_chunk: None,
    }
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    assert!(a.iter().all(|x| x.is_finite()), "a value is not finite");
    (num / den.max(1e-30)).sqrt()
}

/// Compares loss and gradients of one forward/backward; returns the worst relative error.
fn compare(cfg: &ModelConfig, b: &Batch, p: Precision, o: CudaOptions) -> (f64, f64) {
    let w = Weights::init(cfg, 7, 0.3);
    let scale = 1.0 / b.counted() as f32;
    let mut cpu = CpuBackend::new(cfg.clone(), w.clone()).unwrap();
    let mut dev = reference(cfg, &w, p, o);
    let l_cpu = cpu.forward_backward(b, scale).unwrap();
    let l_dev = dev.forward_backward(b, scale).unwrap();
    let loss_err = (l_dev - l_cpu).abs() / l_cpu.abs();
    let (g_cpu, g_dev) = (cpu.grads().unwrap(), dev.grads().unwrap());
    let specs = crate::train::params::tensor_specs(cfg);
    let mut worst: f64 = 0.0;
    for ((a, c), s) in g_dev.tensors().iter().zip(g_cpu.tensors()).zip(&specs) {
        let e = rel(a, c);
        assert!(e.is_finite(), "{}: gradient error {e}", s.name);
        if std::env::var("GRIST_SHOW").is_ok() {
            eprintln!("{:?} {}: {e:.2e} (loss {loss_err:.1e})", p, s.name);
        }
        worst = worst.max(e);
    }
    (loss_err, worst)
}

#[test]
fn f32_plan_reproduces_the_cpu_backend_for_every_rope_scaling_and_mask() {
    for (i, scaling) in scalings().into_iter().enumerate() {
        for masking in [false, true] {
            let cfg = model(scaling.clone(), i % 2 == 1);
            let (loss, grad) = compare(&cfg, &batch(masking, i as u64), Precision::F32, opts(21));
            assert!(
                loss < 1e-5,
                "{scaling:?} masking {masking}: loss error {loss}"
            );
            assert!(
                grad < 1e-5,
                "{scaling:?} masking {masking}: gradient error {grad}"
            );
        }
    }
}

#[test]
fn bf16_plan_stays_within_bf16_of_the_cpu_backend() {
    for (i, scaling) in scalings().into_iter().enumerate() {
        for masking in [false, true] {
            let cfg = model(scaling.clone(), i % 2 == 0);
            let (loss, grad) = compare(
                &cfg,
                &batch(masking, 10 + i as u64),
                Precision::Bf16,
                opts(21),
            );
            assert!(
                loss < 2e-3,
                "{scaling:?} masking {masking}: loss error {loss}"
            );
            assert!(
                grad < 8e-2,
                "{scaling:?} masking {masking}: gradient error {grad}"
            );
        }
    }
}

/// Recomputation re-runs the same kernels on the same inputs: the same numbers, bit for bit.
/// Logit chunks of 4 rows (and a batch larger than planned) give the same too.
#[test]
fn recompute_chunks_and_replanning_change_nothing() {
    let cfg = model(RopeScaling::Linear { factor: 2.0 }, false);
    let w = Weights::init(&cfg, 3, 0.3);
    let b = batch(true, 5);
    let run = |o: CudaOptions| {
        let mut be = reference(&cfg, &w, Precision::Bf16, o);
        let loss = be.forward_backward(&b, 0.05).unwrap();
        (loss, be.grads().unwrap())
    };
    let base = run(opts(21));
    let recompute = run(CudaOptions {
        recompute: true,
        ..opts(21)
    });
    assert_eq!(base.0, recompute.0);
    assert_eq!(base.1, recompute.1);
    let chunked = run(CudaOptions {
        logit_chunk: Some(4),
        ..opts(8)
    });
    assert!((chunked.0 - base.0).abs() < 1e-6 * base.0);
    for (a, c) in chunked.1.tensors().iter().zip(base.1.tensors()) {
        assert!(rel(a, c) < 1e-6);
    }
}

#[test]
fn logits_loss_and_weights_round_trip() {
    let cfg = model(RopeScaling::None, true);
    let w = Weights::init(&cfg, 11, 0.3);
    let b = batch(false, 3);
    let mut cpu = CpuBackend::new(cfg.clone(), w.clone()).unwrap();
    let mut dev = reference(&cfg, &w, Precision::F32, opts(4));
    assert_eq!(dev.weights().unwrap(), w);
    assert!(rel(&dev.logits(&b).unwrap(), &cpu.logits(&b).unwrap()) < 1e-5);
    let (a, c) = (dev.loss(&b).unwrap(), cpu.loss(&b).unwrap());
    assert!((a - c).abs() < 1e-5 * c);
    let (m, v) = (Weights::init(&cfg, 1, 1.0), Weights::init(&cfg, 2, 1.0));
    dev.set_optimizer_state(m.clone(), v.clone()).unwrap();
    assert_eq!(dev.optimizer_state().unwrap(), (m, v));
}

/// Five optimizer steps with accumulation over two micro-batches and clipping, as the trainer
/// runs them: the losses follow the CPU backend's.
#[test]
fn training_steps_follow_the_cpu_backend() {
    let cfg = model(
        RopeScaling::Yarn {
            factor: 2.0,
            original_max_position_embeddings: 4,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        },
        false,
    );
    let w = Weights::init(&cfg, 9, 0.2);
    let mut cpu: Box<dyn Backend> = Box::new(CpuBackend::new(cfg.clone(), w.clone()).unwrap());
    let mut dev: Box<dyn Backend> = Box::new(reference(&cfg, &w, Precision::F32, opts(21)));
    let mut losses = (Vec::new(), Vec::new());
    for step in 1..=5u64 {
        for (be, out) in [(&mut cpu, &mut losses.0), (&mut dev, &mut losses.1)] {
            let micro = [batch(true, 100 + step), batch(false, 200 + step)];
            let counted: usize = micro.iter().map(Batch::counted).sum();
            be.zero_grads();
            let mut loss = 0.0;
            for m in &micro {
                loss += be.forward_backward(m, 1.0 / counted as f32).unwrap();
            }
            let norm = be.grad_norm().unwrap();
            be.adamw_step(&AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                decay_norms_and_embeddings: false,
                step,
                grad_scale: if norm > 0.5 { 0.5 / (norm + 1e-6) } else { 1.0 },
            })
            .unwrap();
            out.push((loss / counted as f64, norm));
        }
    }
    for ((lc, nc), (ld, nd)) in losses.0.iter().zip(&losses.1) {
        assert!((lc - ld).abs() < 1e-5 * lc, "loss {lc} vs {ld}");
        assert!((nc - nd).abs() < 1e-4 * nc, "grad norm {nc} vs {nd}");
    }
    let (wc, wd) = (cpu.weights().unwrap(), dev.weights().unwrap());
    for (a, c) in wd.tensors().iter().zip(wc.tensors()) {
        assert!(rel(a, c) < 1e-5);
    }
}

#[test]
fn a_bad_batch_is_refused_before_any_launch() {
    let cfg = model(RopeScaling::None, false);
    let w = Weights::init(&cfg, 1, 0.1);
    let mut dev = reference(&cfg, &w, Precision::F32, opts(21));
    let mut b = batch(false, 1);
    b.inputs[3] = 99;
    let before = dev.device().launches;
    let e = dev.loss(&b).unwrap_err().to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    assert_eq!(dev.device().launches, before);
}

/// Heads the attention kernels do not take are refused when the backend is made, not found as
/// NaNs on a GPU; a launch with them is refused by either device.
#[test]
fn heads_the_kernels_do_not_take_are_refused() {
    let cfg = ModelConfig {
        head_dim: Some(512),
        ..model(RopeScaling::None, false)
    };
    let w = Weights::init(&cfg, 1, 0.1);
    let e = CudaBackend::new(cfg, w, HostDevice::new(Precision::F32), opts(4))
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("head_dim: 512 is more than the 256"), "{e}");
    let mut dev = HostDevice::new(Precision::F32);
    let buf = dev.alloc(device::Class::Act, 4096).unwrap();
    let v = View {
        buf,
        class: device::Class::Act,
        offset: 0,
        len: 4096,
    };
    let k = Kernel::AttentionFwd {
        q: v,
        k: v,
        v,
        starts: v,
        o: v,
        lse: v,
        shape: device::AttnShape {
            batch: 1,
            tq: 1,
            tk: 1,
            q_offset: 0,
            heads: 3,
            kv_heads: 2,
            head_dim: 8,
            scale: 1.0,
        },
    };
    assert!(
        dev.launch(&k)
            .unwrap_err()
            .to_string()
            .contains("multiple of")
    );
}
