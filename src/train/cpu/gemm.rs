//! Matrix products on `matrixmultiply`'s sgemm (packed, SIMD micro-kernels), split across the
//! rayon pool by output rows. Every output element is computed by one call with the same
//! k-order whatever the split, so results do not depend on the thread count.

use rayon::prelude::*;

/// A matrix operand: its buffer and row/column strides (in elements).
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Mat<'a> {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Mat<'a> {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// The largest index an `r × c` view with these strides touches, plus one.
fn extent(r: usize, c: usize, rs: usize, cs: usize) -> usize {
    if r == 0 || c == 0 {
        0
    } else {
        (r - 1) * rs + (c - 1) * cs + 1
    }
}

/// C (m × n, row stride `rsc`) = A (m × k) · B (k × n) + beta · C, on one thread.
#[allow(clippy::too_many_arguments)] // BLAS's shape
pub fn sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: &mut [f32], rsc: usize) {
    assert!(
        extent(m, k, a.rs, a.cs) <= a.data.len(),
        "gemm: A out of bounds"
    );
    assert!(
        extent(k, n, b.rs, b.cs) <= b.data.len(),
        "gemm: B out of bounds"
    );
    assert!(extent(m, n, rsc, 1) <= c.len(), "gemm: C out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the three views are within their slices (checked above); C is exclusively borrowed.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            1,
        )
    }
}

/// Rows per parallel block: one block per thread, as each block packs B again (measured: with
/// blocks of at most 256 rows, packing took 15 % of a training step on 2 threads).
fn block_rows(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    m.div_ceil(threads).max(16)
}

/// C (m × n, row-major) = A (m × k) · B (k × n) + beta · C, in parallel over row blocks of C.
/// A must be row-major-like in its rows (any strides); blocks of rows of A are taken by offset.
pub fn par_sgemm(m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: &mut [f32]) {
    assert!(c.len() >= m * n, "gemm: C too small");
    let block = block_rows(m);
    if m <= block || n == 0 {
        return sgemm(m, k, n, a, b, beta, c, n);
    }
    c[..m * n]
        .par_chunks_mut(block * n)
        .enumerate()
        .for_each(|(i, c_block)| {
            let rows = c_block.len() / n;
            let start = i * block * a.rs;
            let a_block = Mat {
                data: &a.data[start..],
                rs: a.rs,
                cs: a.cs,
            };
            sgemm(rows, k, n, a_block, b, beta, c_block, n);
        });
}

/// y (m × n) = x (m × k) · wᵀ, w being `[n, k]` row-major (a linear layer's forward).
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, y: &mut [f32]) {
    if m < 8 {
        // Decoding: too few rows to split; split the output columns instead.
        return linear_narrow(x, w, m, k, n, y);
    }
    par_sgemm(m, k, n, Mat::rows(x, k), Mat::transposed(w, k), 0.0, y);
}

/// `linear` through the GEMM kernel whatever the row count: each row's arithmetic is the same as
/// in any other call with the same weights (inference keeps prefill rows on this path).
pub fn linear_gemm(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, y: &mut [f32]) {
    par_sgemm(m, k, n, Mat::rows(x, k), Mat::transposed(w, k), 0.0, y);
}

/// `linear` for decoding steps: a dot product per (row, output feature), each weight row read
/// once for all `m` rows, parallel over blocks of output features. Decoding is bound by reading
/// the weights, and this reads them once without packing them first. A row's result does not
/// depend on `m`.
pub fn linear_gemv(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, y: &mut [f32]) {
    const COLS: usize = 64;
    let mut yt = vec![0.0f32; n * m];
    yt.par_chunks_mut(COLS * m)
        .enumerate()
        .for_each(|(b, block)| {
            for (jj, out) in block.chunks_mut(m).enumerate() {
                let j = b * COLS + jj;
                let wr = &w[j * k..(j + 1) * k];
                #[cfg(target_arch = "x86_64")]
                if avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked); slices are bounds-checked.
                    unsafe { dots_avx2(wr, x, k, out) };
                    continue;
                }
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot(&x[i * k..(i + 1) * k], wr);
                }
            }
        });
    for r in 0..m {
        for c in 0..n {
            y[r * n + c] = yt[c * m + r];
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `out[i] = x_i · w` for the rows of `x` (`[out.len(), k]`), four rows at a time so each load
/// of `w` serves four FMAs. Each row has its own accumulator and a fixed reduction order, so its
/// result does not depend on how many rows there are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(w: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let m = out.len();
    assert!(w.len() >= k && x.len() >= m * k);
    let full = k / 8 * 8;
    let mut i = 0;
    while i < m {
        let g = (m - i).min(4);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut p = 0;
        while p < full {
            // SAFETY: p + 8 ≤ k, and rows i..i+g lie within x (asserted above).
            let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add(p)) };
            for (r, a) in acc.iter_mut().enumerate().take(g) {
                let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((i + r) * k + p)) };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            p += 8;
        }
        for (r, a) in acc.iter().enumerate().take(g) {
            let mut lanes = [0.0f32; 8];
            // SAFETY: an 8-float buffer.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            let row = &x[(i + r) * k..(i + r + 1) * k];
            let tail: f32 = row[full..]
                .iter()
                .zip(&w[full..k])
                .map(|(a, b)| a * b)
                .sum();
            out[i + r] = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
                + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
                + tail;
        }
        i += g;
    }
}

/// Σ a·b with eight independent partial sums (vectorised by the compiler), summed in a fixed
/// order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `linear` for a handful of rows, parallel over blocks of output features.
fn linear_narrow(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, y: &mut [f32]) {
    const COLS: usize = 256;
    let mut yt = vec![0.0f32; n * m];
    // yᵀ (n × m) = w (n × k) · xᵀ (k × m), blocks of w's rows in parallel.
    yt.par_chunks_mut(COLS * m)
        .enumerate()
        .for_each(|(i, block)| {
            let rows = block.len() / m;
            let wb = &w[i * COLS * k..];
            sgemm(
                rows,
                k,
                m,
                Mat::rows(wb, k),
                Mat::transposed(x, k),
                0.0,
                block,
                m,
            );
        });
    for r in 0..m {
        for c in 0..n {
            y[r * n + c] = yt[c * m + r];
        }
    }
}

/// dx (m × k) = dy (m × n) · w, plus dx when `accumulate` (a linear layer's input gradient).
pub fn linear_grad_input(
    dy: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    dx: &mut [f32],
    accumulate: bool,
) {
    let beta = if accumulate { 1.0 } else { 0.0 };
    par_sgemm(m, n, k, Mat::rows(dy, n), Mat::rows(w, k), beta, dx);
}

/// dw (n × k) += dyᵀ (n × m) · x (m × k) (a linear layer's weight gradient), in parallel over
/// blocks of dw's rows, so the sum over the m tokens is never split.
pub fn linear_grad_weight(dy: &[f32], x: &[f32], m: usize, k: usize, n: usize, dw: &mut [f32]) {
    par_sgemm(n, m, k, Mat::transposed(dy, n), Mat::rows(x, k), 1.0, dw);
}

#[cfg(test)]
mod gemv_tests {
    use super::*;

    #[test]
    fn gemv_matches_gemm_closely_and_rows_do_not_depend_on_the_batch() {
        let (k, n) = (77, 130);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 700.0)
            .collect();
        let x: Vec<f32> = (0..5 * k)
            .map(|i| ((i * 104_729 % 997) as f32 - 498.0) / 600.0)
            .collect();
        let mut all = vec![0.0; 5 * n];
        linear_gemv(&x, &w, 5, k, n, &mut all);
        let mut reference = vec![0.0; 5 * n];
        linear_gemm(&x, &w, 5, k, n, &mut reference);
        for (a, b) in all.iter().zip(&reference) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
        for r in 0..5 {
            let mut one = vec![0.0; n];
            linear_gemv(&x[r * k..(r + 1) * k], &w, 1, k, n, &mut one);
            assert_eq!(one, all[r * n..(r + 1) * n], "row {r}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        y
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn linear_and_its_gradients_match_naive_products() {
        for (m, k, n) in [(1, 5, 3), (3, 7, 600), (300, 33, 17), (70, 64, 64)] {
            let x = data(m * k, 1);
            let w = data(n * k, 2);
            let mut y = vec![0.0; m * n];
            linear(&x, &w, m, k, n, &mut y);
            let want = naive(&x, &w, m, k, n);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{m}x{k}x{n}: {a} vs {b}");
            }
            // dx = dy · w: compare with naive(dy, wᵀ).
            let dy = data(m * n, 3);
            let mut dx = vec![1.0; m * k];
            linear_grad_input(&dy, &w, m, k, n, &mut dx, true);
            let mut wt = vec![0.0; k * n];
            for j in 0..n {
                for t in 0..k {
                    wt[t * n + j] = w[j * k + t];
                }
            }
            let want = naive(&dy, &wt, m, n, k);
            for (a, b) in dx.iter().zip(&want) {
                assert!((a - 1.0 - b).abs() < 1e-4);
            }
            // dw = dyᵀ · x.
            let mut dw = vec![0.0; n * k];
            linear_grad_weight(&dy, &x, m, k, n, &mut dw);
            for j in 0..n {
                for t in 0..k {
                    let want: f32 = (0..m).map(|i| dy[i * n + j] * x[i * k + t]).sum();
                    assert!((dw[j * k + t] - want).abs() < 1e-3);
                }
            }
        }
    }
}
