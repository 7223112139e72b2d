//! The CUDA backend's memory plan, made once per run: where every tensor, gradient, moment and
//! activation lives. Parameters, gradients and both moments share one f32 buffer (four equal
//! regions, each tensor at the same offset in each), so zeroing the gradients, their norm and a
//! refresh of the bf16 weight copies are one launch each. Activations are carved from one buffer
//! per element class for a capacity of rows; nothing is allocated per step.

use super::device::{BufId, Class, Device, SUM_SQUARES_BLOCKS, View};
use crate::error::{GristError, Result};
use crate::train::config::ModelConfig;
use crate::train::params::{TensorKind, Weights, tensor_specs};

/// Rows per block of the RMSNorm backward (its weight-gradient partial sums).
pub const NORM_ROWS_PER_BLOCK: usize = 32;

/// Logits are made, turned into loss and gradient, and consumed a chunk of rows at a time so
/// that `[rows, vocab]` never exists whole: at most this many bytes of f32 logits.
pub const LOGIT_CHUNK_BYTES: usize = 256 << 20;

/// Every tensor and view starts at a multiple of this many elements: 256 bytes in bf16, the
/// alignment cuBLASLt's fastest kernels ask for.
pub const ALIGN: usize = 128;

/// Index of each field of a layer among its nine tensors (canonical order).
pub mod field {
    pub const ATTN_NORM: usize = 0;
    pub const Q: usize = 1;
    pub const K: usize = 2;
    pub const V: usize = 3;
    pub const O: usize = 4;
    pub const MLP_NORM: usize = 5;
    pub const GATE: usize = 6;
    pub const UP: usize = 7;
    pub const DOWN: usize = 8;
}

/// The tensors' places: tensor `t` (canonical order) at `offsets[t]` in each region.
pub struct ParamLayout {
    /// Elements of one region: the parameters, each tensor's start aligned to [`ALIGN`] (the
    /// gaps stay zero).
    pub total: usize,
    pub offsets: Vec<usize>,
    pub lens: Vec<usize>,
    pub kinds: Vec<TensorKind>,
    layers: usize,
    tied: bool,
    /// f32: parameters, gradients, first and second moments.
    pub master: BufId,
    /// Act: the parameters as GEMM operands (bf16 copies, or f32 copies).
    pub copies: BufId,
}

impl ParamLayout {
    /// The layout of `cfg`'s tensors with `regions` regions: 4 for training (parameters,
    /// gradients, moments), 1 for inference.
    pub fn new(cfg: &ModelConfig, dev: &mut dyn Device, regions: usize) -> Result<ParamLayout> {
        let specs = tensor_specs(cfg);
        let mut offsets = Vec::with_capacity(specs.len());
        let mut total = 0;
        for s in &specs {
            offsets.push(total);
            total = (total + s.len()).div_ceil(ALIGN) * ALIGN;
        }
        let master = dev.alloc(Class::F32, regions * total)?;
        let copies = dev.alloc(Class::Act, total)?;
        Ok(ParamLayout {
            total,
            offsets,
            lens: specs.iter().map(|s| s.len()).collect(),
            kinds: specs.iter().map(|s| s.kind).collect(),
            layers: cfg.num_layers,
            tied: cfg.tie_embeddings,
            master,
            copies,
        })
    }

    /// `w`'s tensors laid out as one region (the gaps zero), for one upload.
    pub fn flatten(&self, w: &Weights) -> Result<Vec<f32>> {
        let tensors = w.tensors();
        if tensors.len() != self.count()
            || tensors.iter().zip(&self.lens).any(|(t, &l)| t.len() != l)
        {
            return Err(GristError::Usage(
                "weights do not match the model's tensors".into(),
            ));
        }
        let mut flat = vec![0.0f32; self.total];
        for (t, &o) in tensors.iter().zip(&self.offsets) {
            flat[o..o + t.len()].copy_from_slice(t);
        }
        Ok(flat)
    }

    fn region(&self, t: usize, region: usize) -> View {
        View {
            buf: self.master,
            class: Class::F32,
            offset: region * self.total + self.offsets[t],
            len: self.lens[t],
        }
    }

    pub fn param(&self, t: usize) -> View {
        self.region(t, 0)
    }
    pub fn grad(&self, t: usize) -> View {
        self.region(t, 1)
    }
    pub fn m(&self, t: usize) -> View {
        self.region(t, 2)
    }
    pub fn v(&self, t: usize) -> View {
        self.region(t, 3)
    }
    /// The tensor as a GEMM operand.
    pub fn copy(&self, t: usize) -> View {
        View {
            buf: self.copies,
            class: Class::Act,
            offset: self.offsets[t],
            len: self.lens[t],
        }
    }

    /// A whole region: 0 parameters, 1 gradients, 2 and 3 the moments.
    pub fn all(&self, region: usize) -> View {
        View {
            buf: self.master,
            class: Class::F32,
            offset: region * self.total,
            len: self.total,
        }
    }

    pub fn all_copies(&self) -> View {
        View {
            buf: self.copies,
            class: Class::Act,
            offset: 0,
            len: self.total,
        }
    }

    pub fn count(&self) -> usize {
        self.offsets.len()
    }

    pub const EMBED: usize = 0;

    /// Tensor index of layer `l`'s field `f` ([`field`]).
    pub fn layer(&self, l: usize, f: usize) -> usize {
        debug_assert!(l < self.layers && f < 9);
        1 + 9 * l + f
    }

    pub fn final_norm(&self) -> usize {
        1 + 9 * self.layers
    }

    /// The output projection: `lm_head`, or the embedding when tied.
    pub fn head(&self) -> usize {
        if self.tied {
            Self::EMBED
        } else {
            self.final_norm() + 1
        }
    }
}

/// One layer's activations as the forward leaves them for the backward.
#[derive(Debug, Clone, Copy)]
pub struct LayerActs {
    pub x_in: View,
    pub xn1: View,
    pub rstd1: View,
    pub q: View,
    pub k: View,
    pub v: View,
    pub o: View,
    pub lse: View,
    pub x_mid: View,
    pub xn2: View,
    pub rstd2: View,
    pub gate: View,
    pub up: View,
    pub h: View,
}

/// The activation and scratch buffers for up to `rows` rows.
#[derive(Debug, Clone)]
pub struct ActPlan {
    pub rows: usize,
    /// Rows of logits per chunk.
    pub chunk: usize,
    pub recompute: bool,
    /// With `recompute`, every layer shares one set (only `x_in` is each layer's own).
    pub layers: Vec<LayerActs>,
    pub x_final: View,
    pub xnf: View,
    pub rstdf: View,
    pub q32: View,
    pub k32: View,
    pub dx: View,
    pub dx_act: View,
    pub dxn: View,
    pub dh: View,
    pub dgate: View,
    pub dup: View,
    pub dout: View,
    pub dq32: View,
    pub dk32: View,
    pub dq: View,
    pub dk: View,
    pub dv: View,
    pub delta: View,
    pub logits: View,
    pub dlogits: View,
    pub losses: View,
    pub dw_part: View,
    pub partial: View,
    pub tokens: View,
    pub targets: View,
    pub positions: View,
    pub starts: View,
    pub order: View,
    pub seg_start: View,
    pub seg_token: View,
    pub bufs: [BufId; 3],
}

/// Hands out consecutive views of three buffers (one per class); run once to size them and
/// once more, identically, with the real buffers.
struct Carver {
    bufs: [BufId; 3],
    used: [usize; 3],
}

impl Carver {
    fn take(&mut self, class: Class, len: usize) -> View {
        let i = class_index(class);
        let offset = self.used[i];
        self.used[i] += len.div_ceil(ALIGN) * ALIGN;
        View {
            buf: self.bufs[i],
            class,
            offset,
            len,
        }
    }
}

fn class_index(c: Class) -> usize {
    match c {
        Class::F32 => 0,
        Class::Act => 1,
        Class::Int => 2,
    }
}

/// Rows of logits per chunk for a vocabulary (at least 1).
pub fn logit_chunk(rows: usize, vocab: usize) -> usize {
    (LOGIT_CHUNK_BYTES / (4 * vocab.max(1))).clamp(1, rows.max(1))
}

impl ActPlan {
    /// Plans and allocates for `rows` rows; `chunk` overrides the logit chunk (tests).
    pub fn new(
        cfg: &ModelConfig,
        rows: usize,
        recompute: bool,
        chunk: Option<usize>,
        dev: &mut dyn Device,
    ) -> Result<ActPlan> {
        let chunk = chunk
            .unwrap_or_else(|| logit_chunk(rows, cfg.vocab_size))
            .clamp(1, rows.max(1));
        let mut sizing = Carver {
            bufs: [BufId(u32::MAX); 3],
            used: [0; 3],
        };
        Self::carve(cfg, rows, chunk, recompute, &mut sizing);
        let mut bufs = [BufId(0); 3];
        for (i, class) in [Class::F32, Class::Act, Class::Int].into_iter().enumerate() {
            bufs[i] = dev.alloc(class, sizing.used[i].max(ALIGN))?;
        }
        let mut real = Carver { bufs, used: [0; 3] };
        Ok(Self::carve(cfg, rows, chunk, recompute, &mut real))
    }

    /// Bytes the plan's buffers take on a GPU of this precision.
    pub fn bytes(cfg: &ModelConfig, rows: usize, recompute: bool, act_bytes: usize) -> usize {
        let chunk = logit_chunk(rows, cfg.vocab_size);
        let mut sizing = Carver {
            bufs: [BufId(u32::MAX); 3],
            used: [0; 3],
        };
        Self::carve(cfg, rows, chunk, recompute, &mut sizing);
        4 * sizing.used[0] + act_bytes * sizing.used[1] + 4 * sizing.used[2]
    }

    fn carve(
        cfg: &ModelConfig,
        rows: usize,
        chunk: usize,
        recompute: bool,
        c: &mut Carver,
    ) -> ActPlan {
        let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (qw, kw, heads) = (cfg.num_heads * hd, cfg.kv_heads() * hd, cfg.num_heads);
        let n = rows;
        let layer = |c: &mut Carver, x_in: View| LayerActs {
            x_in,
            xn1: c.take(Class::Act, n * d),
            rstd1: c.take(Class::F32, n),
            q: c.take(Class::Act, n * qw),
            k: c.take(Class::Act, n * kw),
            v: c.take(Class::Act, n * kw),
            o: c.take(Class::Act, n * qw),
            lse: c.take(Class::F32, n * heads),
            x_mid: c.take(Class::F32, n * d),
            xn2: c.take(Class::Act, n * d),
            rstd2: c.take(Class::F32, n),
            gate: c.take(Class::Act, n * f),
            up: c.take(Class::Act, n * f),
            h: c.take(Class::Act, n * f),
        };
        let layers = if recompute {
            let x_ins: Vec<View> = (0..cfg.num_layers)
                .map(|_| c.take(Class::F32, n * d))
                .collect();
            let shared = layer(c, x_ins[0]);
            x_ins
                .into_iter()
                .map(|x_in| LayerActs { x_in, ..shared })
                .collect()
        } else {
            (0..cfg.num_layers)
                .map(|_| {
                    let x_in = c.take(Class::F32, n * d);
                    layer(c, x_in)
                })
                .collect()
        };
        ActPlan {
            rows,
            chunk,
            recompute,
            layers,
            x_final: c.take(Class::F32, n * d),
            xnf: c.take(Class::Act, n * d),
            rstdf: c.take(Class::F32, n),
            q32: c.take(Class::F32, n * qw),
            k32: c.take(Class::F32, n * kw),
            dx: c.take(Class::F32, n * d),
            dx_act: c.take(Class::Act, n * d),
            dxn: c.take(Class::F32, n * d),
            dh: c.take(Class::F32, n * f),
            dgate: c.take(Class::Act, n * f),
            dup: c.take(Class::Act, n * f),
            dout: c.take(Class::F32, n * qw),
            dq32: c.take(Class::F32, n * qw),
            dk32: c.take(Class::F32, n * kw),
            dq: c.take(Class::Act, n * qw),
            dk: c.take(Class::Act, n * kw),
            dv: c.take(Class::Act, n * kw),
            delta: c.take(Class::F32, n * heads),
            logits: c.take(Class::F32, chunk * cfg.vocab_size),
            dlogits: c.take(Class::Act, chunk * cfg.vocab_size),
            losses: c.take(Class::F32, n),
            dw_part: c.take(Class::F32, n.div_ceil(NORM_ROWS_PER_BLOCK) * d),
            partial: c.take(Class::F32, SUM_SQUARES_BLOCKS),
            tokens: c.take(Class::Int, n),
            targets: c.take(Class::Int, n),
            positions: c.take(Class::Int, n),
            starts: c.take(Class::Int, n),
            order: c.take(Class::Int, n),
            seg_start: c.take(Class::Int, n + 1),
            seg_token: c.take(Class::Int, n),
            bufs: c.bufs,
        }
    }

    pub fn free(&self, dev: &mut dyn Device) {
        for b in self.bufs {
            dev.free(b);
        }
    }
}
