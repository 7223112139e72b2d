//! The element-wise and row-wise operations of the model, forward and backward: RMSNorm,
//! SwiGLU, embedding lookup and cross-entropy. Rows are split across rayon in fixed blocks and
//! partial sums are added in block order, so results do not depend on scheduling.

use rayon::prelude::*;

/// Rows per block for row-parallel work whose partial sums must be added in a fixed order.
const ROW_BLOCK: usize = 32;

/// y = x / rms(x) · w per row of `d` values; keeps 1/rms per row for the backward.
pub fn rmsnorm_forward(x: &[f32], w: &[f32], eps: f32, d: usize, y: &mut [f32], rstd: &mut [f32]) {
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(rstd.par_iter_mut())
        .for_each(|((y, x), r)| {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
            *r = 1.0 / (ms + eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = x * *r * w;
            }
        });
}

/// Backward of [`rmsnorm_forward`]: dx (added to when `accumulate`) and dw (added to).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    d: usize,
    dx: &mut [f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROW_BLOCK * d)
        .enumerate()
        .map(|(b, dx_block)| {
            let mut dw_part = vec![0.0f32; d];
            for (i, dx) in dx_block.chunks_mut(d).enumerate() {
                let row = b * ROW_BLOCK + i;
                let (dy, x, r) = (
                    &dy[row * d..(row + 1) * d],
                    &x[row * d..(row + 1) * d],
                    rstd[row],
                );
                let dot: f32 = dy.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
                let c = dot * r * r * r / d as f32;
                for j in 0..d {
                    let v = r * w[j] * dy[j] - c * x[j];
                    if accumulate {
                        dx[j] += v;
                    } else {
                        dx[j] = v;
                    }
                    dw_part[j] += dy[j] * x[j] * r;
                }
            }
            dw_part
        })
        .collect();
    for p in partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// h = silu(gate) · up.
pub fn swiglu_forward(gate: &[f32], up: &[f32], h: &mut [f32]) {
    h.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .for_each(|(h, (g, u))| {
            for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
                *h = g * sigmoid(*g) * u;
            }
        });
}

/// Backward of [`swiglu_forward`]: overwrites `dgate` and `dup`.
pub fn swiglu_backward(dh: &[f32], gate: &[f32], up: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    dgate
        .par_chunks_mut(4096)
        .zip(dup.par_chunks_mut(4096))
        .enumerate()
        .for_each(|(b, (dg, du))| {
            let o = b * 4096;
            for i in 0..dg.len() {
                let (g, u, d) = (gate[o + i], up[o + i], dh[o + i]);
                let s = sigmoid(g);
                let silu = g * s;
                du[i] = d * silu;
                dg[i] = d * u * s * (1.0 + g * (1.0 - s));
            }
        });
}

/// Rows of the embedding for each token.
pub fn embedding_forward(table: &[f32], tokens: &[u32], d: usize, x: &mut [f32]) {
    x.par_chunks_mut(d)
        .zip(tokens.par_iter())
        .for_each(|(x, &t)| {
            let t = t as usize;
            x.copy_from_slice(&table[t * d..(t + 1) * d]);
        });
}

/// Adds each row of `dx` to its token's row of `dtable`, in token order.
pub fn embedding_backward(dx: &[f32], tokens: &[u32], d: usize, dtable: &mut [f32]) {
    for (row, &t) in dx.chunks(d).zip(tokens) {
        let t = t as usize;
        for (a, b) in dtable[t * d..(t + 1) * d].iter_mut().zip(row) {
            *a += b;
        }
    }
}

/// A target that counts for nothing (padding).
pub const IGNORE: i32 = -1;

/// Cross-entropy of each row of `logits` (`v` columns) against `targets`. Returns the summed
/// loss (f64) over counted rows. When `grad_scale` is given, `logits` is overwritten by the
/// gradient of `grad_scale · Σ loss` (softmax − one-hot, zero for ignored rows). One f32 `exp`
/// per logit (kept in place for the gradient), summed in f64.
pub fn cross_entropy(
    logits: &mut [f32],
    targets: &[i32],
    v: usize,
    grad_scale: Option<f32>,
) -> f64 {
    let losses: Vec<f64> = logits
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            if t < 0 {
                if grad_scale.is_some() {
                    row.fill(0.0);
                }
                return 0.0;
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let target = row[t as usize];
            let loss = match grad_scale {
                Some(scale) => {
                    let mut sum = 0.0f64;
                    for z in row.iter_mut() {
                        *z = (*z - max).exp();
                        sum += *z as f64;
                    }
                    let k = (scale as f64 / sum) as f32;
                    row.iter_mut().for_each(|z| *z *= k);
                    row[t as usize] -= scale;
                    sum.ln()
                }
                None => row
                    .iter()
                    .map(|&z| (z - max).exp() as f64)
                    .sum::<f64>()
                    .ln(),
            };
            loss + (max - target) as f64
        })
        .collect();
    losses.iter().sum()
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops mirror the formulas
pub(crate) mod tests {
    use super::*;

    pub fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::train::params::Normal::new(seed);
        (0..n).map(|_| rng.sample() as f32).collect()
    }

    /// Central finite difference of a scalar function of `x` at index `i`, in f64.
    pub fn numeric(f: &mut dyn FnMut(&[f32]) -> f64, x: &[f32], i: usize, h: f32) -> f64 {
        let mut xp = x.to_vec();
        xp[i] += h;
        let mut xm = x.to_vec();
        xm[i] -= h;
        (f(&xp) - f(&xm)) / (2.0 * h as f64)
    }

    pub fn assert_close(analytic: f64, numeric: f64, what: &str) {
        let tol = 2e-2 * numeric.abs().max(analytic.abs()) + 2e-3;
        assert!(
            (analytic - numeric).abs() <= tol,
            "{what}: analytic {analytic} vs numeric {numeric}"
        );
    }

    /// Loss = Σ y·p for fixed random p: its gradient wrt y is p.
    fn dot(y: &[f32], p: &[f32]) -> f64 {
        y.iter()
            .zip(p)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    #[test]
    fn rmsnorm_gradients_match_finite_differences() {
        let (n, d) = (3, 6);
        let x = data(n * d, 1);
        let w = data(d, 2);
        let p = data(n * d, 3);
        let fwd = |x: &[f32], w: &[f32]| {
            let mut y = vec![0.0; n * d];
            let mut r = vec![0.0; n];
            rmsnorm_forward(x, w, 1e-5, d, &mut y, &mut r);
            (y, r)
        };
        let (_, r) = fwd(&x, &w);
        let mut dx = vec![0.0; n * d];
        let mut dw = vec![0.0; d];
        rmsnorm_backward(&p, &x, &w, &r, d, &mut dx, &mut dw, false);
        for i in 0..n * d {
            let num = numeric(&mut |x| dot(&fwd(x, &w).0, &p), &x, i, 1e-2);
            assert_close(dx[i] as f64, num, "rmsnorm dx");
        }
        for i in 0..d {
            let num = numeric(&mut |w| dot(&fwd(&x, w).0, &p), &w, i, 1e-2);
            assert_close(dw[i] as f64, num, "rmsnorm dw");
        }
    }

    #[test]
    fn swiglu_gradients_match_finite_differences() {
        let n = 10;
        let (g, u, p) = (data(n, 4), data(n, 5), data(n, 6));
        let fwd = |g: &[f32], u: &[f32]| {
            let mut h = vec![0.0; n];
            swiglu_forward(g, u, &mut h);
            h
        };
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&p, &g, &u, &mut dg, &mut du);
        for i in 0..n {
            let num = numeric(&mut |g| dot(&fwd(g, &u), &p), &g, i, 1e-2);
            assert_close(dg[i] as f64, num, "swiglu dgate");
            let num = numeric(&mut |u| dot(&fwd(&g, u), &p), &u, i, 1e-2);
            assert_close(du[i] as f64, num, "swiglu dup");
        }
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences_and_ignores_padding() {
        let v = 7;
        let logits = data(3 * v, 7);
        let targets = [2, IGNORE, 6];
        let mut g = logits.clone();
        let loss = cross_entropy(&mut g, &targets, v, Some(0.5));
        let mut f = |z: &[f32]| 0.5 * cross_entropy(&mut z.to_vec(), &targets, v, None);
        assert!((0.5 * loss - f(&logits)).abs() < 1e-9);
        for i in 0..3 * v {
            let num = numeric(&mut f, &logits, i, 1e-2);
            assert_close(g[i] as f64, num, "cross-entropy");
        }
        assert!(g[v..2 * v].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn embedding_backward_adds_rows_per_token() {
        let table = data(4 * 3, 8);
        let tokens = [1, 3, 1];
        let mut x = vec![0.0; 9];
        embedding_forward(&table, &tokens, 3, &mut x);
        assert_eq!(&x[3..6], &table[9..12]);
        let mut dt = vec![0.0; 12];
        embedding_backward(&[1.0; 9], &tokens, 3, &mut dt);
        assert_eq!(&dt[3..6], &[2.0; 3]);
        assert_eq!(&dt[0..3], &[0.0; 3]);
    }
}
