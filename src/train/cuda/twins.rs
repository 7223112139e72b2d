//! The CPU twin of every kernel in `kernels/`: the same arguments, the same arithmetic in the
//! same precision (f32, double where the kernel uses double, activations rounded to bf16 where
//! the kernel stores bf16), on plain slices. The host reference device runs the backend's plan
//! with them; `grist gpu check` compares each kernel on a GPU with its twin. Only summation
//! order differs from the GPU (a tree there, a line here).
#![allow(clippy::needless_range_loop)] // index loops mirror the kernels' indexing

use super::device::AttnShape;

/// Rounds a value as an activation store (`sta`) does: to bf16 (nearest even) or not at all.
pub type Round = fn(f32) -> f32;

pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

pub fn round_f32(x: f32) -> f32 {
    x
}

pub fn embedding_fwd(table: &[f32], tokens: &[u32], x: &mut [f32], rows: usize, d: usize) {
    for r in 0..rows {
        let t = tokens[r] as usize;
        x[r * d..(r + 1) * d].copy_from_slice(&table[t * d..(t + 1) * d]);
    }
}

#[allow(clippy::too_many_arguments)] // the kernel's signature
pub fn embedding_bwd(
    dx: &[f32],
    order: &[u32],
    seg_start: &[u32],
    seg_token: &[u32],
    dtable: &mut [f32],
    segments: usize,
    d: usize,
) {
    for s in 0..segments {
        let t = seg_token[s] as usize;
        for j in 0..d {
            let mut sum = 0.0f32;
            for &row in &order[seg_start[s] as usize..seg_start[s + 1] as usize] {
                sum += dx[row as usize * d + j];
            }
            dtable[t * d + j] += sum;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_fwd(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    d: usize,
    eps: f32,
    round: Round,
) {
    for r in 0..rows {
        let x = &x[r * d..(r + 1) * d];
        let ss: f32 = x.iter().map(|v| v * v).sum();
        let rs = 1.0 / (ss / d as f32 + eps).sqrt();
        rstd[r] = rs;
        for j in 0..d {
            y[r * d + j] = round(x[j] * rs * w[j]);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_bwd(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    dw_part: &mut [f32],
    rows: usize,
    d: usize,
    rows_per_block: usize,
    accumulate: bool,
) {
    let blocks = rows.div_ceil(rows_per_block);
    for b in 0..blocks {
        let part = &mut dw_part[b * d..(b + 1) * d];
        part.fill(0.0);
        for r in b * rows_per_block..((b + 1) * rows_per_block).min(rows) {
            let (dy, x, rs) = (&dy[r * d..(r + 1) * d], &x[r * d..(r + 1) * d], rstd[r]);
            let dot: f32 = (0..d).map(|j| dy[j] * w[j] * x[j]).sum();
            let c = dot * rs * rs * rs / d as f32;
            for j in 0..d {
                let v = rs * w[j] * dy[j] - c * x[j];
                if accumulate {
                    dx[r * d + j] += v;
                } else {
                    dx[r * d + j] = v;
                }
                part[j] += dy[j] * x[j] * rs;
            }
        }
    }
}

pub fn add_column_sums(part: &[f32], out: &mut [f32], parts: usize, d: usize) {
    for j in 0..d {
        let mut s = 0.0f32;
        for b in 0..parts {
            s += part[b * d + j];
        }
        out[j] += s;
    }
}

/// RoPE forward (or, with `backward`, the transposed rotation of a gradient), `in` → `out`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    input: &[f32],
    out: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    positions: &[u32],
    rows: usize,
    heads: usize,
    head_dim: usize,
    backward: bool,
    round: Round,
) {
    let half = head_dim / 2;
    for r in 0..rows {
        let p = positions[r] as usize;
        for h in 0..heads {
            let base = (r * heads + h) * head_dim;
            for i in 0..half {
                let (c, s) = (cos[p * half + i], sin[p * half + i]);
                let (a, b) = (input[base + i], input[base + i + half]);
                let (ya, yb) = if backward {
                    (a * c + b * s, b * c - a * s)
                } else {
                    (a * c - b * s, b * c + a * s)
                };
                out[base + i] = round(ya);
                out[base + i + half] = round(yb);
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn swiglu_fwd(gate: &[f32], up: &[f32], h: &mut [f32], round: Round) {
    for i in 0..h.len() {
        let g = gate[i];
        h[i] = round(g * sigmoid(g) * up[i]);
    }
}

pub fn swiglu_bwd(
    dh: &[f32],
    gate: &[f32],
    up: &[f32],
    dgate: &mut [f32],
    dup: &mut [f32],
    round: Round,
) {
    for i in 0..dh.len() {
        let (g, u, d) = (gate[i], up[i], dh[i]);
        let s = sigmoid(g);
        dup[i] = round(d * (g * s));
        dgate[i] = round(d * u * s * (1.0 + g * (1.0 - s)));
    }
}

/// The keys query `i` of sample `b` may see: `start..=end`.
fn key_range(sh: &AttnShape, starts: &[u32], b: usize, i: usize) -> (usize, usize) {
    let lo = starts[b * sh.tq + i] as usize;
    let hi = (i + sh.q_offset).min(sh.tk - 1);
    (lo, hi)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Attention forward with an online softmax over each query's keys, as the kernel runs it.
#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    o: &mut [f32],
    lse: &mut [f32],
    sh: &AttnShape,
    round: Round,
) {
    let hd = sh.head_dim;
    let (qw, kw) = (sh.heads * hd, sh.kv_heads * hd);
    let group = sh.heads / sh.kv_heads;
    for b in 0..sh.batch {
        for h in 0..sh.heads {
            let kvh = h / group;
            for i in 0..sh.tq {
                let qr = &q[(b * sh.tq + i) * qw + h * hd..][..hd];
                let (lo, hi) = key_range(sh, starts, b, i);
                let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
                let mut acc = vec![0.0f32; hd];
                for j in lo..=hi {
                    let kr = &k[(b * sh.tk + j) * kw + kvh * hd..][..hd];
                    let vr = &v[(b * sh.tk + j) * kw + kvh * hd..][..hd];
                    let s = dot(qr, kr) * sh.scale;
                    let m_new = m.max(s);
                    let corr = (m - m_new).exp();
                    let p = (s - m_new).exp();
                    l = l * corr + p;
                    for (a, &x) in acc.iter_mut().zip(vr) {
                        *a = *a * corr + p * x;
                    }
                    m = m_new;
                }
                let out = &mut o[(b * sh.tq + i) * qw + h * hd..][..hd];
                let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                for (y, a) in out.iter_mut().zip(&acc) {
                    *y = round(a * inv);
                }
                lse[(b * sh.heads + h) * sh.tq + i] = m + l.ln();
            }
        }
    }
}

pub fn attention_bwd_delta(
    o: &[f32],
    dout: &[f32],
    delta: &mut [f32],
    rows: usize,
    heads: usize,
    head_dim: usize,
) {
    for r in 0..rows {
        for h in 0..heads {
            let at = (r * heads + h) * head_dim;
            delta[r * heads + h] = dot(&dout[at..at + head_dim], &o[at..at + head_dim]);
        }
    }
}

/// The probability and the score gradient (before `scale`) of query row `qi` (of head `h`,
/// sample `b`, index `i`) against key `j`.
struct Pair<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dout: &'a [f32],
    lse: &'a [f32],
    delta: &'a [f32],
    sh: &'a AttnShape,
}

impl Pair<'_> {
    /// `(p, ds)` with `ds = p · (dp − delta)`, and the query, key rows' offsets.
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> (f32, f32, usize, usize) {
        let sh = self.sh;
        let hd = sh.head_dim;
        let (qw, kw) = (sh.heads * hd, sh.kv_heads * hd);
        let kvh = h / (sh.heads / sh.kv_heads);
        let qo = (b * sh.tq + i) * qw + h * hd;
        let ko = (b * sh.tk + j) * kw + kvh * hd;
        let s = dot(&self.q[qo..qo + hd], &self.k[ko..ko + hd]) * sh.scale;
        let p = (s - self.lse[(b * sh.heads + h) * sh.tq + i]).exp();
        let dp = dot(&self.dout[qo..qo + hd], &self.v[ko..ko + hd]);
        let ds = p * (dp - self.delta[(b * sh.tq + i) * sh.heads + h]);
        (p, ds, qo, ko)
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_dq(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    dout: &[f32],
    lse: &[f32],
    delta: &[f32],
    dq: &mut [f32],
    sh: &AttnShape,
) {
    let pair = Pair {
        q,
        k,
        v,
        dout,
        lse,
        delta,
        sh,
    };
    let hd = sh.head_dim;
    for b in 0..sh.batch {
        for h in 0..sh.heads {
            for i in 0..sh.tq {
                let (lo, hi) = key_range(sh, starts, b, i);
                let mut acc = vec![0.0f32; hd];
                for j in lo..=hi {
                    let (_, ds, _, ko) = pair.at(b, h, i, j);
                    for (a, &x) in acc.iter_mut().zip(&k[ko..ko + hd]) {
                        *a += ds * x;
                    }
                }
                let qo = (b * sh.tq + i) * sh.heads * hd + h * hd;
                for (y, a) in dq[qo..qo + hd].iter_mut().zip(&acc) {
                    *y = a * sh.scale;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd_dkdv(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    dout: &[f32],
    lse: &[f32],
    delta: &[f32],
    dk: &mut [f32],
    dv: &mut [f32],
    sh: &AttnShape,
    round: Round,
) {
    let pair = Pair {
        q,
        k,
        v,
        dout,
        lse,
        delta,
        sh,
    };
    let hd = sh.head_dim;
    let kw = sh.kv_heads * hd;
    let group = sh.heads / sh.kv_heads;
    for b in 0..sh.batch {
        for g in 0..sh.kv_heads {
            for j in 0..sh.tk {
                let (mut dk_acc, mut dv_acc) = (vec![0.0f32; hd], vec![0.0f32; hd]);
                for h in g * group..(g + 1) * group {
                    for i in j.saturating_sub(sh.q_offset)..sh.tq {
                        let (lo, hi) = key_range(sh, starts, b, i);
                        if j < lo || j > hi {
                            continue;
                        }
                        let (p, ds, qo, _) = pair.at(b, h, i, j);
                        for d in 0..hd {
                            dv_acc[d] += p * dout[qo + d];
                            dk_acc[d] += ds * q[qo + d];
                        }
                    }
                }
                let ko = (b * sh.tk + j) * kw + g * hd;
                for d in 0..hd {
                    dk[ko + d] = dk_acc[d] * sh.scale;
                    dv[ko + d] = round(dv_acc[d]);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn cross_entropy(
    logits: &[f32],
    targets: &[u32],
    losses: &mut [f32],
    mut dlogits: Option<&mut [f32]>,
    rows: usize,
    vocab: usize,
    grad_scale: f32,
    round: Round,
) {
    for r in 0..rows {
        let z = &logits[r * vocab..(r + 1) * vocab];
        let t = targets[r] as i32;
        if t < 0 {
            losses[r] = 0.0;
            if let Some(g) = dlogits.as_deref_mut() {
                g[r * vocab..(r + 1) * vocab].fill(0.0);
            }
            continue;
        }
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = z.iter().map(|&x| (x - max).exp()).sum();
        losses[r] = sum.ln() + max - z[t as usize];
        if let Some(g) = dlogits.as_deref_mut() {
            for j in 0..vocab {
                let p = grad_scale * (z[j] - max).exp() / sum;
                g[r * vocab + j] = round(if j == t as usize { p - grad_scale } else { p });
            }
        }
    }
}

/// AdamW in double, as `optim::adamw_update` (the kernel takes the derived scalars).
pub fn adamw(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    s: &super::device::AdamScalars,
) {
    for i in 0..p.len() {
        let gi = g[i] as f64 * s.grad_scale;
        let mi = s.beta1 * m[i] as f64 + (1.0 - s.beta1) * gi;
        let vi = s.beta2 * v[i] as f64 + (1.0 - s.beta2) * gi * gi;
        m[i] = mi as f32;
        v[i] = vi as f32;
        let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
        p[i] = ((p[i] as f64) * s.decay - s.step_size * mi / denom) as f32;
    }
}

/// Block `b` of `blocks` sums the squares of elements `b, b + stride, …` (a grid-stride loop
/// of `blocks × 256` threads, each block's threads summed), in double.
pub fn sum_squares(x: &[f32], partial: &mut [f32], blocks: usize) {
    const THREADS: usize = 256;
    let stride = blocks * THREADS;
    for (b, out) in partial.iter_mut().enumerate().take(blocks) {
        let mut s = 0.0f64;
        for t in 0..THREADS {
            let mut i = b * THREADS + t;
            while i < x.len() {
                s += x[i] as f64 * x[i] as f64;
                i += stride;
            }
        }
        *out = s as f32;
    }
}

pub fn cast_to_act(x: &[f32], y: &mut [f32], round: Round) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = round(x);
    }
}

/// `d = a · b + c` with f32 accumulation, for the host's GEMMs (operands already rounded to
/// their precision; `d` rounded by the caller). Row-major, `a` `[m, k]` or stored transposed.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_trans: bool,
    b: &[f32],
    b_trans: bool,
    c: Option<&[f32]>,
    d: &mut [f32],
) {
    use crate::train::cpu::gemm::{Mat, par_sgemm};
    let am = if a_trans {
        Mat::transposed(a, m)
    } else {
        Mat::rows(a, k)
    };
    let bm = if b_trans {
        Mat::transposed(b, k)
    } else {
        Mat::rows(b, n)
    };
    let beta = match c {
        Some(c) => {
            d[..m * n].copy_from_slice(&c[..m * n]);
            1.0
        }
        None => 0.0,
    };
    par_sgemm(m, k, n, am, bm, beta, &mut d[..m * n]);
}
