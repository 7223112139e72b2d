//! AdamW (Loshchilov & Hutter: decoupled weight decay), with PyTorch's arithmetic, and the
//! learning-rate schedules.

use rayon::prelude::*;

use super::backend::AdamStep;
use super::config::{Schedule, ScheduleKind};

/// One AdamW update of a tensor `p` from its gradient `g` (scaled by `s.grad_scale`) and
/// moments `m`, `v`, as `torch.optim.AdamW` does it: p ← p·(1 − lr·wd), then
/// p ← p − lr · m̂ / (√v̂ + eps).
pub fn adamw_update(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: &AdamStep,
    decays: bool,
) {
    let (b1, b2) = (s.beta1, s.beta2);
    let bc1 = 1.0 - b1.powi(s.step as i32);
    let bc2 = 1.0 - b2.powi(s.step as i32);
    let step_size = s.lr / bc1;
    let bc2_sqrt = bc2.sqrt();
    let decay = if decays {
        1.0 - s.lr * s.weight_decay
    } else {
        1.0
    };
    const BLOCK: usize = 8192;
    p.par_chunks_mut(BLOCK)
        .zip(m.par_chunks_mut(BLOCK))
        .zip(v.par_chunks_mut(BLOCK))
        .enumerate()
        .for_each(|(b, ((p, m), v))| {
            let g = &g[b * BLOCK..];
            for i in 0..p.len() {
                let gi = g[i] as f64 * s.grad_scale;
                let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
                let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
                m[i] = mi as f32;
                v[i] = vi as f32;
                let denom = (vi.sqrt() / bc2_sqrt) + s.eps;
                p[i] = ((p[i] as f64) * decay - step_size * mi / denom) as f32;
            }
        });
}

/// The learning rate of update `step` (1-based) of `total`.
pub fn learning_rate(schedule: &Schedule, peak: f64, min: f64, step: u64, total: u64) -> f64 {
    let warmup = schedule.warmup_steps.min(total);
    if step <= warmup && warmup > 0 {
        return peak * step as f64 / warmup as f64;
    }
    match schedule.kind {
        ScheduleKind::Constant => peak,
        ScheduleKind::Cosine => {
            let span = (total - warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
            min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        ScheduleKind::Wsd => {
            let decay_steps = ((total - warmup) as f64 * schedule.decay_fraction).round() as u64;
            let decay_start = total - decay_steps;
            if step <= decay_start || decay_steps == 0 {
                peak
            } else {
                let progress = (step - decay_start) as f64 / decay_steps as f64;
                peak + (min - peak) * progress
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_warm_up_then_decay_to_min() {
        let mut s = Schedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: 10,
            decay_fraction: 0.2,
        };
        assert!((learning_rate(&s, 1.0, 0.1, 5, 100) - 0.5).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 0.1, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 0.1, 100, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 0.1, 55, 100) - 0.55).abs() < 1e-12);
        s.kind = ScheduleKind::Wsd;
        assert_eq!(learning_rate(&s, 1.0, 0.1, 82, 100), 1.0);
        assert!((learning_rate(&s, 1.0, 0.1, 91, 100) - 0.55).abs() < 1e-12);
        assert!((learning_rate(&s, 1.0, 0.1, 100, 100) - 0.1).abs() < 1e-12);
        s.kind = ScheduleKind::Constant;
        assert_eq!(learning_rate(&s, 1.0, 0.1, 100, 100), 1.0);
    }

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let s = AdamStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.5,
            decay_norms_and_embeddings: false,
            step: 1,
            grad_scale: 1.0,
        };
        let mut p = vec![1.0f32, 1.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        adamw_update(&mut p, &[2.0, -3.0], &mut m, &mut v, &s, true);
        // Decay first: 1 · (1 − 0.05) = 0.95, then ∓ lr.
        assert!((p[0] - 0.85).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - 1.05).abs() < 1e-6, "{}", p[1]);
    }
}
