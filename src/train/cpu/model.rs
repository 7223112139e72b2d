//! The decoder's forward pass, keeping what the backward needs, and the backward pass.
//! Per layer: x → RMSNorm → q, k, v (+RoPE) → attention → o_proj → +x → RMSNorm → SwiGLU MLP
//! → +x; then a final RMSNorm and the output projection.

use rayon::prelude::*;

use super::attention::{self, AttentionShape};
use super::gemm::{linear, linear_grad_input, linear_grad_weight};
use super::ops;
use crate::train::backend::Batch;
use crate::train::config::ModelConfig;
use crate::train::params::Weights;
use crate::train::rope::RopeTable;

/// One layer's saved activations (`n` = batch · seq rows).
pub struct LayerActs {
    x_in: Vec<f32>,
    xn1: Vec<f32>,
    rstd1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
    lse: Vec<f32>,
    x_mid: Vec<f32>,
    xn2: Vec<f32>,
    rstd2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    h: Vec<f32>,
}

pub struct Acts {
    layers: Vec<LayerActs>,
    x_final: Vec<f32>,
    xnf: Vec<f32>,
    rstdf: Vec<f32>,
}

fn shape(cfg: &ModelConfig, batch: &Batch) -> AttentionShape {
    AttentionShape {
        batch: batch.batch,
        seq: batch.seq,
        heads: cfg.num_heads,
        kv_heads: cfg.kv_heads(),
        head_dim: cfg.head_dim(),
    }
}

/// Rotates every head of every row of `x` (`width` = heads · head_dim) at its position.
fn rope_rows(
    rope: &RopeTable,
    x: &mut [f32],
    width: usize,
    hd: usize,
    positions: &[u32],
    back: bool,
) {
    x.par_chunks_mut(width)
        .zip(positions.par_iter())
        .for_each(|(row, &pos)| {
            for head in row.chunks_mut(hd) {
                if back {
                    rope.rotate_back(head, pos as usize);
                } else {
                    rope.rotate(head, pos as usize);
                }
            }
        });
}

/// How one forward pass runs its rows: the linear kernel each row takes, and the attention over
/// what each row may see. Training runs whole samples (causal or document-masked attention,
/// keeping what the backward needs); inference runs new tokens against the keys and values
/// cached for their sequences ([`super::infer`]). Everything else of a layer is [`layers`].
pub trait Rows {
    /// `y = x · wᵀ` for every row (`k` inputs, `n` outputs each).
    fn linear(&self, x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]);
    /// Layer `layer`'s attention output `o` from the rows' rotated queries, keys and values;
    /// returns what the attention's backward needs (log-sum-exp per row and head), or nothing.
    fn attend(&mut self, layer: usize, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) -> Vec<f32>;
}

/// The decoder layers over the embedded rows `x` (row r at position `positions[r]`): per layer
/// x → RMSNorm → q, k, v (+RoPE) → attention → o_proj → +x → RMSNorm → SwiGLU MLP → +x. Returns
/// the last layer's output; with `keep`, each layer's activations are kept for the backward.
/// The one forward of the model: training and inference differ only in their [`Rows`].
pub fn layers(
    cfg: &ModelConfig,
    w: &Weights,
    rope: &RopeTable,
    mut x: Vec<f32>,
    positions: &[u32],
    rows: &mut dyn Rows,
    mut keep: Option<&mut Vec<LayerActs>>,
) -> Vec<f32> {
    let n = positions.len();
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (qw, kw) = (cfg.num_heads * hd, cfg.kv_heads() * hd);
    let eps = cfg.norm_eps as f32;
    for (li, l) in w.layers.iter().enumerate() {
        let (mut xn1, mut rstd1) = (vec![0.0f32; n * d], vec![0.0f32; n]);
        ops::rmsnorm_forward(&x, &l.attn_norm, eps, d, &mut xn1, &mut rstd1);
        let (mut q, mut k, mut v) = (
            vec![0.0f32; n * qw],
            vec![0.0f32; n * kw],
            vec![0.0f32; n * kw],
        );
        rows.linear(&xn1, &l.q, d, qw, &mut q);
        rows.linear(&xn1, &l.k, d, kw, &mut k);
        rows.linear(&xn1, &l.v, d, kw, &mut v);
        rope_rows(rope, &mut q, qw, hd, positions, false);
        rope_rows(rope, &mut k, kw, hd, positions, false);
        let mut o = vec![0.0f32; n * qw];
        let lse = rows.attend(li, &q, &k, &v, &mut o);
        let mut x_mid = vec![0.0f32; n * d];
        rows.linear(&o, &l.o, qw, d, &mut x_mid);
        add_into(&mut x_mid, &x);
        let (mut xn2, mut rstd2) = (vec![0.0f32; n * d], vec![0.0f32; n]);
        ops::rmsnorm_forward(&x_mid, &l.mlp_norm, eps, d, &mut xn2, &mut rstd2);
        let (mut gate, mut up, mut h) = (
            vec![0.0f32; n * f],
            vec![0.0f32; n * f],
            vec![0.0f32; n * f],
        );
        rows.linear(&xn2, &l.gate, d, f, &mut gate);
        rows.linear(&xn2, &l.up, d, f, &mut up);
        ops::swiglu_forward(&gate, &up, &mut h);
        let mut out = vec![0.0f32; n * d];
        rows.linear(&h, &l.down, f, d, &mut out);
        add_into(&mut out, &x_mid);
        if let Some(keep) = keep.as_deref_mut() {
            keep.push(LayerActs {
                x_in: x,
                xn1,
                rstd1,
                q,
                k,
                v,
                o,
                lse,
                x_mid,
                xn2,
                rstd2,
                gate,
                up,
                h,
            });
        }
        x = out;
    }
    x
}

/// Training's rows: whole samples, every row through the GEMM, attention within each sample
/// (within each document fragment with masking), keeping its log-sum-exp.
struct SampleRows<'a> {
    shape: AttentionShape,
    starts: &'a [u32],
    n: usize,
}

impl Rows for SampleRows<'_> {
    fn linear(&self, x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]) {
        linear(x, w, self.n, k, n, y);
    }

    fn attend(
        &mut self,
        _layer: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
    ) -> Vec<f32> {
        let sh = self.shape;
        let mut lse = vec![0.0f32; sh.batch * sh.heads * sh.seq];
        attention::forward(sh, q, k, v, self.starts, o, &mut lse);
        lse
    }
}

/// A linear kernel over some rows: `(x, w, k, n, y)` computes `y = x · wᵀ`.
pub type Kernel<'a> = dyn Fn(&[f32], &[f32], usize, usize, &mut [f32]) + 'a;

/// The final RMSNorm and the output projection of rows `x`: their logits `[rows, vocab]` (and,
/// for the backward, the normalised rows and their inverse RMS).
pub fn head(
    cfg: &ModelConfig,
    w: &Weights,
    x: &[f32],
    linear: &Kernel<'_>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = cfg.hidden_size;
    let rows = x.len() / d;
    let mut xnf = vec![0.0f32; rows * d];
    let mut rstdf = vec![0.0f32; rows];
    ops::rmsnorm_forward(x, &w.norm, cfg.norm_eps as f32, d, &mut xnf, &mut rstdf);
    let mut logits = vec![0.0f32; rows * cfg.vocab_size];
    linear(&xnf, w.output(), d, cfg.vocab_size, &mut logits);
    (logits, xnf, rstdf)
}

/// Forward: the saved activations and the logits `[n, vocab]`.
pub fn forward(
    cfg: &ModelConfig,
    w: &Weights,
    rope: &RopeTable,
    batch: &Batch,
) -> (Acts, Vec<f32>) {
    let n = batch.batch * batch.seq;
    let d = cfg.hidden_size;
    let mut x = vec![0.0f32; n * d];
    ops::embedding_forward(&w.embed, &batch.inputs, d, &mut x);
    let mut rows = SampleRows {
        shape: shape(cfg, batch),
        starts: &batch.starts,
        n,
    };
    let mut kept = Vec::with_capacity(cfg.num_layers);
    let x = layers(
        cfg,
        w,
        rope,
        x,
        &batch.positions,
        &mut rows,
        Some(&mut kept),
    );
    let gemm =
        |x: &[f32], w: &[f32], k: usize, out: usize, y: &mut [f32]| linear(x, w, n, k, out, y);
    let (logits, xnf, rstdf) = head(cfg, w, &x, &gemm);
    let acts = Acts {
        layers: kept,
        x_final: x,
        xnf,
        rstdf,
    };
    (acts, logits)
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.par_chunks_mut(4096)
        .zip(src.par_chunks(4096))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, s)| *d += s));
}

/// Backward from `dlogits` (the loss gradient wrt the logits): adds every weight's gradient
/// to `g`.
pub fn backward(
    cfg: &ModelConfig,
    w: &Weights,
    rope: &RopeTable,
    batch: &Batch,
    acts: &Acts,
    dlogits: &[f32],
    g: &mut Weights,
) {
    let n = batch.batch * batch.seq;
    let (d, f, hd, v) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.head_dim(),
        cfg.vocab_size,
    );
    let (qw, kw) = (cfg.num_heads * hd, cfg.kv_heads() * hd);
    let sh = shape(cfg, batch);
    // Output projection and final norm.
    let mut dxnf = vec![0.0f32; n * d];
    linear_grad_input(dlogits, w.output(), n, d, v, &mut dxnf, false);
    match g.lm_head.as_mut() {
        Some(dw) => linear_grad_weight(dlogits, &acts.xnf, n, d, v, dw),
        None => linear_grad_weight(dlogits, &acts.xnf, n, d, v, &mut g.embed),
    }
    let mut dx = vec![0.0f32; n * d];
    ops::rmsnorm_backward(
        &dxnf,
        &acts.x_final,
        &w.norm,
        &acts.rstdf,
        d,
        &mut dx,
        &mut g.norm,
        false,
    );
    let mut dh = vec![0.0f32; n * f];
    let mut dgate = vec![0.0f32; n * f];
    let mut dup = vec![0.0f32; n * f];
    let mut dxn = vec![0.0f32; n * d];
    let mut do_ = vec![0.0f32; n * qw];
    let (mut dq, mut dk, mut dv) = (
        vec![0.0f32; n * qw],
        vec![0.0f32; n * kw],
        vec![0.0f32; n * kw],
    );
    for ((l, a), gl) in w.layers.iter().zip(&acts.layers).zip(&mut g.layers).rev() {
        // MLP: out = x_mid + down(silu(gate(xn2)) · up(xn2)).
        linear_grad_input(&dx, &l.down, n, f, d, &mut dh, false);
        linear_grad_weight(&dx, &a.h, n, f, d, &mut gl.down);
        ops::swiglu_backward(&dh, &a.gate, &a.up, &mut dgate, &mut dup);
        linear_grad_input(&dgate, &l.gate, n, d, f, &mut dxn, false);
        linear_grad_input(&dup, &l.up, n, d, f, &mut dxn, true);
        linear_grad_weight(&dgate, &a.xn2, n, d, f, &mut gl.gate);
        linear_grad_weight(&dup, &a.xn2, n, d, f, &mut gl.up);
        ops::rmsnorm_backward(
            &dxn,
            &a.x_mid,
            &l.mlp_norm,
            &a.rstd2,
            d,
            &mut dx,
            &mut gl.mlp_norm,
            true,
        );
        // Attention: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)).
        linear_grad_input(&dx, &l.o, n, qw, d, &mut do_, false);
        linear_grad_weight(&dx, &a.o, n, qw, d, &mut gl.o);
        attention::backward(
            sh,
            &a.q,
            &a.k,
            &a.v,
            &batch.starts,
            &a.o,
            &a.lse,
            &do_,
            &mut dq,
            &mut dk,
            &mut dv,
        );
        rope_rows(rope, &mut dq, qw, hd, &batch.positions, true);
        rope_rows(rope, &mut dk, kw, hd, &batch.positions, true);
        linear_grad_input(&dq, &l.q, n, d, qw, &mut dxn, false);
        linear_grad_input(&dk, &l.k, n, d, kw, &mut dxn, true);
        linear_grad_input(&dv, &l.v, n, d, kw, &mut dxn, true);
        linear_grad_weight(&dq, &a.xn1, n, d, qw, &mut gl.q);
        linear_grad_weight(&dk, &a.xn1, n, d, kw, &mut gl.k);
        linear_grad_weight(&dv, &a.xn1, n, d, kw, &mut gl.v);
        ops::rmsnorm_backward(
            &dxn,
            &a.x_in,
            &l.attn_norm,
            &a.rstd1,
            d,
            &mut dx,
            &mut gl.attn_norm,
            true,
        );
    }
    ops::embedding_backward(&dx, &batch.inputs, d, &mut g.embed);
}
