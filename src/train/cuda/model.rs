//! The launch sequence of one training step's forward and backward, the same model as the CPU
//! backend's (`cpu::model`), as kernels and GEMMs on a [`Device`]. Per layer: x → RMSNorm →
//! q, k, v (+RoPE) → attention → o_proj (+x, in the GEMM) → RMSNorm → SwiGLU MLP (+x, in the
//! GEMM); then the final RMSNorm and the output projection, a chunk of rows at a time, each
//! chunk's logits turned into loss and gradient at once (the probabilities are never stored).
//!
//! GEMM outputs feeding RoPE (q, k) and every gradient that is summed stay f32; activations a
//! later GEMM or the backward reads are stored in the activation precision.

use super::device::{AttnShape, Device, Gemm, Kernel, View};
use super::plan::{ActPlan, LayerActs, NORM_ROWS_PER_BLOCK, ParamLayout, field};
use crate::error::Result;
use crate::train::config::ModelConfig;

/// The RoPE tables on the device: `half` cos and sin values per position.
#[derive(Debug, Clone, Copy)]
pub struct RopeViews {
    pub cos: View,
    pub sin: View,
    pub positions: usize,
}

/// What the head does with each chunk of logits.
pub enum Head<'a> {
    /// The loss and the gradient, scaled by `grad_scale`, through the output projection into
    /// `dxn` and the head's weight gradient.
    Grad(f32),
    /// The loss alone.
    Loss,
    /// The logits, copied to the host.
    Logits(&'a mut Vec<f32>),
}

/// One forward/backward's view of the plan: `rows` rows as `batch` samples of `seq` tokens.
pub struct Pass<'a> {
    pub dev: &'a mut dyn Device,
    pub cfg: &'a ModelConfig,
    pub params: &'a ParamLayout,
    pub acts: &'a ActPlan,
    pub rope: RopeViews,
    pub batch: usize,
    pub seq: usize,
}

impl Pass<'_> {
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// The first `width` values of each of the pass's rows of `v`.
    fn r(&self, v: View, width: usize) -> View {
        v.sub(0, self.rows() * width)
    }

    fn dims(&self) -> (usize, usize, usize, usize, usize) {
        let c = self.cfg;
        let hd = c.head_dim();
        (
            c.hidden_size,
            c.intermediate_size,
            hd,
            c.num_heads * hd,
            c.kv_heads() * hd,
        )
    }

    fn shape(&self) -> AttnShape {
        AttnShape {
            batch: self.batch,
            tq: self.seq,
            tk: self.seq,
            q_offset: 0,
            heads: self.cfg.num_heads,
            kv_heads: self.cfg.kv_heads(),
            head_dim: self.cfg.head_dim(),
            scale: 1.0 / (self.cfg.head_dim() as f32).sqrt(),
        }
    }

    fn launch(&mut self, k: Kernel) -> Result<()> {
        self.dev.launch(&k)
    }

    fn gemm(&mut self, g: Gemm) -> Result<()> {
        self.dev.gemm(&g)
    }

    fn rope(&mut self, input: View, out: View, heads: usize, backward: bool) -> Result<()> {
        let n = self.rows();
        let hd = self.cfg.head_dim();
        self.launch(Kernel::Rope {
            input: input.sub(0, n * heads * hd),
            out: out.sub(0, n * heads * hd),
            cos: self.rope.cos,
            sin: self.rope.sin,
            positions: self.acts.positions.sub(0, n),
            rows: n,
            heads,
            head_dim: hd,
            backward,
        })
    }

    fn rmsnorm(&mut self, x: View, w: usize, y: View, rstd: View) -> Result<()> {
        let (d, ..) = self.dims();
        let n = self.rows();
        let w = self.params.param(w);
        self.launch(Kernel::RmsnormFwd {
            x: x.sub(0, n * d),
            w,
            y: y.sub(0, n * d),
            rstd: rstd.sub(0, n),
            rows: n,
            d,
            eps: self.cfg.norm_eps as f32,
        })
    }

    /// RMSNorm's backward from `acts.dxn` into `acts.dx` (added to when `accumulate`), and its
    /// weight gradient into tensor `w`'s gradient.
    fn rmsnorm_back(&mut self, x: View, w: usize, rstd: View, accumulate: bool) -> Result<()> {
        let (d, ..) = self.dims();
        let n = self.rows();
        let parts = n.div_ceil(NORM_ROWS_PER_BLOCK);
        let a = self.acts;
        self.launch(Kernel::RmsnormBwd {
            dy: self.r(a.dxn, d),
            x: x.sub(0, n * d),
            w: self.params.param(w),
            rstd: rstd.sub(0, n),
            dx: self.r(a.dx, d),
            dw_part: a.dw_part.sub(0, parts * d),
            rows: n,
            d,
            rows_per_block: NORM_ROWS_PER_BLOCK,
            accumulate,
        })?;
        self.launch(Kernel::AddColumnSums {
            part: a.dw_part.sub(0, parts * d),
            out: self.params.grad(w),
            parts,
            d,
        })
    }

    /// The embedding lookup and every layer; leaves the final normalised rows in `acts.xnf`.
    pub fn forward(&mut self) -> Result<()> {
        let (d, ..) = self.dims();
        let n = self.rows();
        let a = self.acts;
        self.launch(Kernel::EmbeddingFwd {
            table: self.params.param(ParamLayout::EMBED),
            tokens: a.tokens.sub(0, n),
            x: self.r(a.layers[0].x_in, d),
            rows: n,
            d,
        })?;
        for l in 0..self.cfg.num_layers {
            let out = match a.layers.get(l + 1) {
                Some(next) => next.x_in,
                None => a.x_final,
            };
            self.layer_forward(l, Some(out))?;
        }
        self.rmsnorm(a.x_final, self.params.final_norm(), a.xnf, a.rstdf)
    }

    /// Layer `l`'s forward from its `x_in`; writes its output to `out` (none when recomputing
    /// a layer for the backward: the next layer's input is kept already).
    fn layer_forward(&mut self, l: usize, out: Option<View>) -> Result<()> {
        let (d, f, _, qw, kw) = self.dims();
        let n = self.rows();
        let (p, a) = (self.params, self.acts);
        let la: LayerActs = a.layers[l];
        let t = |fld| p.layer(l, fld);
        let (heads, kv_heads) = (self.cfg.num_heads, self.cfg.kv_heads());
        self.rmsnorm(la.x_in, t(field::ATTN_NORM), la.xn1, la.rstd1)?;
        let xn1 = self.r(la.xn1, d);
        self.gemm(Gemm::linear(
            xn1,
            p.copy(t(field::Q)),
            n,
            d,
            qw,
            self.r(a.q32, qw),
        ))?;
        self.rope(a.q32, la.q, heads, false)?;
        self.gemm(Gemm::linear(
            xn1,
            p.copy(t(field::K)),
            n,
            d,
            kw,
            self.r(a.k32, kw),
        ))?;
        self.rope(a.k32, la.k, kv_heads, false)?;
        self.gemm(Gemm::linear(
            xn1,
            p.copy(t(field::V)),
            n,
            d,
            kw,
            self.r(la.v, kw),
        ))?;
        let shape = self.shape();
        self.launch(Kernel::AttentionFwd {
            q: self.r(la.q, qw),
            k: self.r(la.k, kw),
            v: self.r(la.v, kw),
            starts: a.starts.sub(0, n),
            o: self.r(la.o, qw),
            lse: self.r(la.lse, heads),
            shape,
        })?;
        let o_proj = Gemm::linear(
            self.r(la.o, qw),
            p.copy(t(field::O)),
            n,
            qw,
            d,
            self.r(la.x_mid, d),
        );
        self.gemm(o_proj.plus(self.r(la.x_in, d)))?;
        self.rmsnorm(la.x_mid, t(field::MLP_NORM), la.xn2, la.rstd2)?;
        let xn2 = self.r(la.xn2, d);
        self.gemm(Gemm::linear(
            xn2,
            p.copy(t(field::GATE)),
            n,
            d,
            f,
            self.r(la.gate, f),
        ))?;
        self.gemm(Gemm::linear(
            xn2,
            p.copy(t(field::UP)),
            n,
            d,
            f,
            self.r(la.up, f),
        ))?;
        self.launch(Kernel::SwigluFwd {
            gate: self.r(la.gate, f),
            up: self.r(la.up, f),
            h: self.r(la.h, f),
            n: n * f,
        })?;
        if let Some(out) = out {
            let down = Gemm::linear(
                self.r(la.h, f),
                p.copy(t(field::DOWN)),
                n,
                f,
                d,
                self.r(out, d),
            );
            self.gemm(down.plus(self.r(la.x_mid, d)))?;
        }
        Ok(())
    }

    /// The output projection and cross-entropy over every chunk of rows; returns the summed
    /// loss over counted targets (not for [`Head::Logits`]).
    pub fn head(&mut self, mut mode: Head<'_>) -> Result<f64> {
        let (d, ..) = self.dims();
        let v = self.cfg.vocab_size;
        let n = self.rows();
        let a = self.acts;
        let p = self.params;
        let head = p.head();
        let mut start = 0;
        while start < n {
            let rows = a.chunk.min(n - start);
            let xnf = a.xnf.sub(start * d, rows * d);
            let logits = a.logits.sub(0, rows * v);
            self.gemm(Gemm::linear(xnf, p.copy(head), rows, d, v, logits))?;
            match &mut mode {
                Head::Logits(out) => out.extend(self.dev.download(logits)?),
                Head::Loss => self.launch(Kernel::CrossEntropy {
                    logits,
                    targets: a.targets.sub(start, rows),
                    losses: a.losses.sub(start, rows),
                    dlogits: None,
                    rows,
                    vocab: v,
                    grad_scale: 0.0,
                })?,
                Head::Grad(scale) => {
                    let dlogits = a.dlogits.sub(0, rows * v);
                    self.launch(Kernel::CrossEntropy {
                        logits,
                        targets: a.targets.sub(start, rows),
                        losses: a.losses.sub(start, rows),
                        dlogits: Some(dlogits),
                        rows,
                        vocab: v,
                        grad_scale: *scale,
                    })?;
                    let dxn = a.dxn.sub(start * d, rows * d);
                    self.gemm(Gemm::grad_input(dlogits, p.copy(head), rows, d, v, dxn))?;
                    self.gemm(Gemm::grad_weight(dlogits, xnf, rows, d, v, p.grad(head)))?;
                }
            }
            start += rows;
        }
        if let Head::Logits(_) = mode {
            return Ok(0.0);
        }
        let losses = self.dev.download(a.losses.sub(0, n))?;
        Ok(losses.iter().map(|&l| l as f64).sum())
    }

    /// The backward from `acts.dxn` (the head's gradient wrt the final normalised rows): adds
    /// every weight's gradient.
    pub fn backward(&mut self) -> Result<()> {
        let (d, f, _, qw, kw) = self.dims();
        let n = self.rows();
        let (p, a) = (self.params, self.acts);
        let (heads, kv_heads) = (self.cfg.num_heads, self.cfg.kv_heads());
        self.rmsnorm_back(a.x_final, p.final_norm(), a.rstdf, false)?;
        for l in (0..self.cfg.num_layers).rev() {
            if a.recompute {
                self.layer_forward(l, None)?;
            }
            let la = a.layers[l];
            let t = |fld| p.layer(l, fld);
            let (dx_act, dxn) = (self.r(a.dx_act, d), self.r(a.dxn, d));
            // MLP: out = x_mid + down(silu(gate(xn2)) · up(xn2)).
            self.cast(self.r(a.dx, d), dx_act)?;
            self.gemm(Gemm::grad_input(
                dx_act,
                p.copy(t(field::DOWN)),
                n,
                f,
                d,
                self.r(a.dh, f),
            ))?;
            self.gemm(Gemm::grad_weight(
                dx_act,
                self.r(la.h, f),
                n,
                f,
                d,
                p.grad(t(field::DOWN)),
            ))?;
            self.launch(Kernel::SwigluBwd {
                dh: self.r(a.dh, f),
                gate: self.r(la.gate, f),
                up: self.r(la.up, f),
                dgate: self.r(a.dgate, f),
                dup: self.r(a.dup, f),
                n: n * f,
            })?;
            let (dgate, dup, xn2) = (self.r(a.dgate, f), self.r(a.dup, f), self.r(la.xn2, d));
            self.gemm(Gemm::grad_input(
                dgate,
                p.copy(t(field::GATE)),
                n,
                d,
                f,
                dxn,
            ))?;
            self.gemm(Gemm::grad_input(dup, p.copy(t(field::UP)), n, d, f, dxn).plus(dxn))?;
            self.gemm(Gemm::grad_weight(
                dgate,
                xn2,
                n,
                d,
                f,
                p.grad(t(field::GATE)),
            ))?;
            self.gemm(Gemm::grad_weight(dup, xn2, n, d, f, p.grad(t(field::UP))))?;
            self.rmsnorm_back(la.x_mid, t(field::MLP_NORM), la.rstd2, true)?;
            // Attention: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)).
            self.cast(self.r(a.dx, d), dx_act)?;
            let dout = self.r(a.dout, qw);
            self.gemm(Gemm::grad_input(
                dx_act,
                p.copy(t(field::O)),
                n,
                qw,
                d,
                dout,
            ))?;
            self.gemm(Gemm::grad_weight(
                dx_act,
                self.r(la.o, qw),
                n,
                qw,
                d,
                p.grad(t(field::O)),
            ))?;
            self.launch(Kernel::AttentionBwdDelta {
                o: self.r(la.o, qw),
                dout,
                delta: self.r(a.delta, heads),
                rows: n,
                heads,
                head_dim: self.cfg.head_dim(),
            })?;
            let shape = self.shape();
            let (q, k, v) = (self.r(la.q, qw), self.r(la.k, kw), self.r(la.v, kw));
            let (starts, lse, delta) = (
                a.starts.sub(0, n),
                self.r(la.lse, heads),
                self.r(a.delta, heads),
            );
            self.launch(Kernel::AttentionBwdDq {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dq: self.r(a.dq32, qw),
                shape,
            })?;
            self.launch(Kernel::AttentionBwdDkdv {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dk: self.r(a.dk32, kw),
                dv: self.r(a.dv, kw),
                shape,
            })?;
            self.rope(a.dq32, a.dq, heads, true)?;
            self.rope(a.dk32, a.dk, kv_heads, true)?;
            let (dq, dk, dv, xn1) = (
                self.r(a.dq, qw),
                self.r(a.dk, kw),
                self.r(a.dv, kw),
                self.r(la.xn1, d),
            );
            self.gemm(Gemm::grad_input(dq, p.copy(t(field::Q)), n, d, qw, dxn))?;
            self.gemm(Gemm::grad_input(dk, p.copy(t(field::K)), n, d, kw, dxn).plus(dxn))?;
            self.gemm(Gemm::grad_input(dv, p.copy(t(field::V)), n, d, kw, dxn).plus(dxn))?;
            self.gemm(Gemm::grad_weight(dq, xn1, n, d, qw, p.grad(t(field::Q))))?;
            self.gemm(Gemm::grad_weight(dk, xn1, n, d, kw, p.grad(t(field::K))))?;
            self.gemm(Gemm::grad_weight(dv, xn1, n, d, kw, p.grad(t(field::V))))?;
            self.rmsnorm_back(la.x_in, t(field::ATTN_NORM), la.rstd1, true)?;
        }
        Ok(())
    }

    /// The embedding's backward: `segments` groups of rows sharing a token (uploaded with the
    /// batch) into the embedding's gradient.
    pub fn embedding_backward(&mut self, segments: usize) -> Result<()> {
        let (d, ..) = self.dims();
        let n = self.rows();
        let a = self.acts;
        self.launch(Kernel::EmbeddingBwd {
            dx: self.r(a.dx, d),
            order: a.order.sub(0, n),
            seg_start: a.seg_start.sub(0, segments + 1),
            seg_token: a.seg_token.sub(0, segments),
            dtable: self.params.grad(ParamLayout::EMBED),
            segments,
            d,
        })
    }

    fn cast(&mut self, x: View, y: View) -> Result<()> {
        self.launch(Kernel::CastToAct { x, y })
    }
}

/// The rows of each token in order: `(order, seg_start, seg_token)`, rows sorted by token
/// (stable), one segment per distinct token (what the embedding's backward sums).
pub fn token_segments(tokens: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
    order.sort_by_key(|&r| tokens[r as usize]);
    let mut seg_start = Vec::new();
    let mut seg_token = Vec::new();
    for (i, &r) in order.iter().enumerate() {
        let t = tokens[r as usize];
        if seg_token.last() != Some(&t) {
            seg_start.push(i as u32);
            seg_token.push(t);
        }
    }
    seg_start.push(order.len() as u32);
    (order, seg_start, seg_token)
}
