//! Causal self-attention with grouped key/value heads and optional document masking, forward
//! and backward. Query t of a sample attends to keys `start[t]..=t` (`start` is 0 without
//! document masking, the first position of t's document fragment with it). The forward keeps
//! only the log-sum-exp per row; the backward recomputes the probabilities from it
//! (FlashAttention's trade: T² memory per thread, not per layer).

use rayon::prelude::*;

use super::gemm::{Mat, sgemm};

/// Shapes: `batch` samples of `seq` tokens, `heads` query heads sharing `kv_heads` key/value
/// heads, `head_dim` values each. q is `[batch·seq, heads·head_dim]`, k and v
/// `[batch·seq, kv_heads·head_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// Softmax of the scaled scores in place over each row's allowed keys; zero elsewhere.
/// Returns each row's log-sum-exp (of the scaled scores).
fn softmax_rows(s: &mut [f32], t: usize, starts: &[u32], scale: f32, lse: &mut [f32]) {
    for i in 0..t {
        let row = &mut s[i * t..(i + 1) * t];
        let lo = starts[i] as usize;
        let max = row[lo..=i]
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x * scale));
        let mut sum = 0.0f32;
        for x in &mut row[lo..=i] {
            *x = (*x * scale - max).exp();
            sum += *x;
        }
        for x in &mut row[lo..=i] {
            *x /= sum;
        }
        row[..lo].fill(0.0);
        row[i + 1..].fill(0.0);
        lse[i] = max + sum.ln();
    }
}

/// Forward: fills `o` (`[batch·seq, heads·head_dim]`) and `lse` (`[batch, heads, seq]`).
pub fn forward(
    sh: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    o: &mut [f32],
    lse: &mut [f32],
) {
    let (t, hd, qw, kw) = (sh.seq, sh.head_dim, sh.q_width(), sh.kv_width());
    let outs: Vec<Vec<f32>> = lse
        .par_chunks_mut(t)
        .enumerate()
        .map(|(bh, lse)| {
            let (b, h) = (bh / sh.heads, bh % sh.heads);
            let kvh = h / sh.group();
            let starts = &starts[b * t..(b + 1) * t];
            let qm = Mat::rows(&q[b * t * qw + h * hd..], qw);
            let kt = Mat {
                data: &k[b * t * kw + kvh * hd..],
                rs: 1,
                cs: kw,
            };
            let mut s = vec![0.0f32; t * t];
            sgemm(t, hd, t, qm, kt, 0.0, &mut s, t);
            softmax_rows(&mut s, t, starts, sh.scale(), lse);
            let vm = Mat::rows(&v[b * t * kw + kvh * hd..], kw);
            let mut out = vec![0.0f32; t * hd];
            sgemm(t, t, hd, Mat::rows(&s, t), vm, 0.0, &mut out, hd);
            out
        })
        .collect();
    for (bh, out) in outs.iter().enumerate() {
        let (b, h) = (bh / sh.heads, bh % sh.heads);
        for i in 0..t {
            let dst = (b * t + i) * qw + h * hd;
            o[dst..dst + hd].copy_from_slice(&out[i * hd..(i + 1) * hd]);
        }
    }
}

/// One (sample, kv head) task's gradients: dq of each of its query heads, dk, dv.
type KvHeadGrads = (Vec<Vec<f32>>, Vec<f32>, Vec<f32>);

/// Backward: from `do_` (the gradient of `o`) and the forward's inputs, `o` and `lse`, writes
/// dq, dk and dv (overwriting them).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    sh: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    o: &[f32],
    lse: &[f32],
    do_: &[f32],
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let (t, hd, qw, kw) = (sh.seq, sh.head_dim, sh.q_width(), sh.kv_width());
    let scale = sh.scale();
    // One task per (sample, kv head): it owns dk and dv of its head and dq of its query heads.
    let parts: Vec<KvHeadGrads> = (0..sh.batch * sh.kv_heads)
        .into_par_iter()
        .map(|bk| {
            let (b, kvh) = (bk / sh.kv_heads, bk % sh.kv_heads);
            let starts = &starts[b * t..(b + 1) * t];
            let k_off = b * t * kw + kvh * hd;
            let mut dk_h = vec![0.0f32; t * hd];
            let mut dv_h = vec![0.0f32; t * hd];
            let mut dqs = Vec::with_capacity(sh.group());
            let mut p = vec![0.0f32; t * t];
            let mut dp = vec![0.0f32; t * t];
            for h in kvh * sh.group()..(kvh + 1) * sh.group() {
                let q_off = b * t * qw + h * hd;
                let lse = &lse[(b * sh.heads + h) * t..(b * sh.heads + h + 1) * t];
                let kt = Mat {
                    data: &k[k_off..],
                    rs: 1,
                    cs: kw,
                };
                sgemm(t, hd, t, Mat::rows(&q[q_off..], qw), kt, 0.0, &mut p, t);
                for i in 0..t {
                    let lo = starts[i] as usize;
                    let row = &mut p[i * t..(i + 1) * t];
                    for x in &mut row[lo..=i] {
                        *x = (*x * scale - lse[i]).exp();
                    }
                    row[..lo].fill(0.0);
                    row[i + 1..].fill(0.0);
                }
                let dom = Mat::rows(&do_[q_off..], qw);
                // dV += Pᵀ dO.
                sgemm(t, t, hd, Mat::transposed(&p, t), dom, 1.0, &mut dv_h, hd);
                // dP = dO Vᵀ.
                let vt = Mat {
                    data: &v[k_off..],
                    rs: 1,
                    cs: kw,
                };
                sgemm(t, hd, t, dom, vt, 0.0, &mut dp, t);
                // dS = P ∘ (dP − rowsum(dO ∘ O)) · scale, in place in dp.
                for i in 0..t {
                    let r = (b * t + i) * qw + h * hd;
                    let di: f32 = do_[r..r + hd]
                        .iter()
                        .zip(&o[r..r + hd])
                        .map(|(a, b)| a * b)
                        .sum();
                    for j in 0..t {
                        dp[i * t + j] = p[i * t + j] * (dp[i * t + j] - di) * scale;
                    }
                }
                // dQ = dS K; dK += dSᵀ Q.
                let mut dq_h = vec![0.0f32; t * hd];
                sgemm(
                    t,
                    t,
                    hd,
                    Mat::rows(&dp, t),
                    Mat::rows(&k[k_off..], kw),
                    0.0,
                    &mut dq_h,
                    hd,
                );
                let qm = Mat::rows(&q[q_off..], qw);
                sgemm(t, t, hd, Mat::transposed(&dp, t), qm, 1.0, &mut dk_h, hd);
                dqs.push(dq_h);
            }
            (dqs, dk_h, dv_h)
        })
        .collect();
    for (bk, (dqs, dk_h, dv_h)) in parts.into_iter().enumerate() {
        let (b, kvh) = (bk / sh.kv_heads, bk % sh.kv_heads);
        for i in 0..t {
            let kr = (b * t + i) * kw + kvh * hd;
            dk[kr..kr + hd].copy_from_slice(&dk_h[i * hd..(i + 1) * hd]);
            dv[kr..kr + hd].copy_from_slice(&dv_h[i * hd..(i + 1) * hd]);
            for (g, dq_h) in dqs.iter().enumerate() {
                let h = kvh * sh.group() + g;
                let qr = (b * t + i) * qw + h * hd;
                dq[qr..qr + hd].copy_from_slice(&dq_h[i * hd..(i + 1) * hd]);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops mirror the formulas
mod tests {
    use super::*;
    use crate::train::cpu::ops::tests::{assert_close, data, numeric};

    /// Naive attention in f64 for one sample set, as the reference.
    fn naive(sh: AttentionShape, q: &[f32], k: &[f32], v: &[f32], starts: &[u32]) -> Vec<f64> {
        let (t, hd) = (sh.seq, sh.head_dim);
        let (qw, kw) = (sh.q_width(), sh.kv_width());
        let mut out = vec![0.0f64; sh.batch * t * qw];
        for b in 0..sh.batch {
            for h in 0..sh.heads {
                let kvh = h / sh.group();
                for i in 0..t {
                    let lo = starts[b * t + i] as usize;
                    let scores: Vec<f64> = (lo..=i)
                        .map(|j| {
                            (0..hd)
                                .map(|d| {
                                    q[(b * t + i) * qw + h * hd + d] as f64
                                        * k[(b * t + j) * kw + kvh * hd + d] as f64
                                })
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for (n, j) in (lo..=i).enumerate() {
                        let p = (scores[n] - max).exp() / z;
                        for d in 0..hd {
                            out[(b * t + i) * qw + h * hd + d] +=
                                p * v[(b * t + j) * kw + kvh * hd + d] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn case() -> (AttentionShape, Vec<u32>) {
        let sh = AttentionShape {
            batch: 2,
            seq: 5,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
        };
        // Sample 0 plain causal; sample 1 two documents: positions 0-1 and 2-4.
        let starts = vec![0, 0, 0, 0, 0, 0, 0, 2, 2, 2];
        (sh, starts)
    }

    #[test]
    fn forward_matches_naive_attention_with_gqa_and_document_mask() {
        let (sh, starts) = case();
        let n = sh.batch * sh.seq;
        let (q, k, v) = (data(n * 16, 1), data(n * 8, 2), data(n * 8, 3));
        let mut o = vec![0.0; n * 16];
        let mut lse = vec![0.0; sh.batch * sh.heads * sh.seq];
        forward(sh, &q, &k, &v, &starts, &mut o, &mut lse);
        for (a, b) in o.iter().zip(naive(sh, &q, &k, &v, &starts)) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (sh, starts) = case();
        let n = sh.batch * sh.seq;
        let (q, k, v) = (data(n * 16, 4), data(n * 8, 5), data(n * 8, 6));
        let p = data(n * 16, 7);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            naive(sh, q, k, v, &starts)
                .iter()
                .zip(&p)
                .map(|(a, b)| a * *b as f64)
                .sum()
        };
        let mut o = vec![0.0; n * 16];
        let mut lse = vec![0.0; sh.batch * sh.heads * sh.seq];
        forward(sh, &q, &k, &v, &starts, &mut o, &mut lse);
        let (mut dq, mut dk, mut dv) = (vec![0.0; n * 16], vec![0.0; n * 8], vec![0.0; n * 8]);
        backward(
            sh, &q, &k, &v, &starts, &o, &lse, &p, &mut dq, &mut dk, &mut dv,
        );
        for i in (0..n * 16).step_by(3) {
            let num = numeric(&mut |x| loss(x, &k, &v), &q, i, 1e-2);
            assert_close(dq[i] as f64, num, "dq");
        }
        for i in 0..n * 8 {
            let num = numeric(&mut |x| loss(&q, x, &v), &k, i, 1e-2);
            assert_close(dk[i] as f64, num, "dk");
            let num = numeric(&mut |x| loss(&q, &k, x), &v, i, 1e-2);
            assert_close(dv[i] as f64, num, "dv");
        }
    }
}
