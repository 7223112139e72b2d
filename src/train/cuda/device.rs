//! What the CUDA backend's plan asks of a device: buffers of three element classes, copies in
//! and out, the kernels of `kernels/` and GEMMs. Two devices implement it: the GPU ([`super::gpu`],
//! cudarc) and the host reference device ([`super::host`]), which runs each kernel's CPU twin
//! with the same arguments. The plan ([`super::plan`]) only talks to this trait, so the launch
//! sequence that runs on a GPU is the one the tests run on the CPU.

use crate::error::{GristError, Result};
use crate::train::config::Precision;

/// The element class of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// f32: master weights, gradients, optimizer moments, the residual stream, statistics.
    F32,
    /// Activations and GEMM operands: bf16 or f32, as the run's precision says.
    Act,
    /// 4-byte integers: token ids, positions, document starts, targets (−1 = ignored).
    Int,
}

/// A buffer handed out by [`Device::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufId(pub u32);

/// `len` elements of a buffer from element `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub buf: BufId,
    pub class: Class,
    pub offset: usize,
    pub len: usize,
}

impl View {
    /// Elements `start..start + len` of this view.
    pub fn sub(&self, start: usize, len: usize) -> View {
        assert!(
            start + len <= self.len,
            "view: {start}+{len} past {}",
            self.len
        );
        View {
            offset: self.offset + start,
            len,
            ..*self
        }
    }
}

/// One launch of a kernel of `kernels/`, with the arguments its C signature takes
/// (kernels/README.md). Sizes are element counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Kernel {
    EmbeddingFwd {
        table: View,
        tokens: View,
        x: View,
        rows: usize,
        d: usize,
    },
    EmbeddingBwd {
        dx: View,
        order: View,
        seg_start: View,
        seg_token: View,
        dtable: View,
        segments: usize,
        d: usize,
    },
    RmsnormFwd {
        x: View,
        w: View,
        y: View,
        rstd: View,
        rows: usize,
        d: usize,
        eps: f32,
    },
    RmsnormBwd {
        dy: View,
        x: View,
        w: View,
        rstd: View,
        dx: View,
        dw_part: View,
        rows: usize,
        d: usize,
        rows_per_block: usize,
        accumulate: bool,
    },
    AddColumnSums {
        part: View,
        out: View,
        parts: usize,
        d: usize,
    },
    Rope {
        input: View,
        out: View,
        cos: View,
        sin: View,
        positions: View,
        rows: usize,
        heads: usize,
        head_dim: usize,
        backward: bool,
    },
    SwigluFwd {
        gate: View,
        up: View,
        h: View,
        n: usize,
    },
    SwigluBwd {
        dh: View,
        gate: View,
        up: View,
        dgate: View,
        dup: View,
        n: usize,
    },
    AttentionFwd {
        q: View,
        k: View,
        v: View,
        starts: View,
        o: View,
        lse: View,
        shape: AttnShape,
    },
    AttentionBwdDelta {
        o: View,
        dout: View,
        delta: View,
        rows: usize,
        heads: usize,
        head_dim: usize,
    },
    AttentionBwdDq {
        q: View,
        k: View,
        v: View,
        starts: View,
        dout: View,
        lse: View,
        delta: View,
        dq: View,
        shape: AttnShape,
    },
    AttentionBwdDkdv {
        q: View,
        k: View,
        v: View,
        starts: View,
        dout: View,
        lse: View,
        delta: View,
        dk: View,
        dv: View,
        shape: AttnShape,
    },
    CrossEntropy {
        logits: View,
        targets: View,
        losses: View,
        /// The gradient's destination; none for the loss alone.
        dlogits: Option<View>,
        rows: usize,
        vocab: usize,
        grad_scale: f32,
    },
    Adamw {
        p: View,
        g: View,
        m: View,
        v: View,
        scalars: AdamScalars,
    },
    SumSquares {
        x: View,
        partial: View,
    },
    CastToAct {
        x: View,
        y: View,
    },
}

/// The shape of an attention launch: `batch` samples of `tq` queries over `tk` keys, query i at
/// position `i + q_offset`; `heads` query heads over `kv_heads` key/value heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    pub batch: usize,
    pub tq: usize,
    pub tk: usize,
    pub q_offset: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// AdamW's per-step scalars, derived on the host once (as `optim::adamw_update` derives them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// 1 − lr·weight_decay for decayed tensors, 1 otherwise.
    pub decay: f64,
    /// lr / (1 − beta1^step).
    pub step_size: f64,
    /// sqrt(1 − beta2^step).
    pub bc2_sqrt: f64,
    pub grad_scale: f64,
}

/// Blocks of `sum_squares` (fixed, so its partial sums and their order are the same everywhere).
pub const SUM_SQUARES_BLOCKS: usize = 512;

impl Kernel {
    /// The kernel's C name in `kernels/`.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::EmbeddingFwd { .. } => "embedding_fwd",
            Kernel::EmbeddingBwd { .. } => "embedding_bwd",
            Kernel::RmsnormFwd { .. } => "rmsnorm_fwd",
            Kernel::RmsnormBwd { .. } => "rmsnorm_bwd",
            Kernel::AddColumnSums { .. } => "add_column_sums",
            Kernel::Rope {
                backward: false, ..
            } => "rope_fwd",
            Kernel::Rope { backward: true, .. } => "rope_bwd",
            Kernel::SwigluFwd { .. } => "swiglu_fwd",
            Kernel::SwigluBwd { .. } => "swiglu_bwd",
            Kernel::AttentionFwd { .. } => "attention_fwd",
            Kernel::AttentionBwdDelta { .. } => "attention_bwd_delta",
            Kernel::AttentionBwdDq { .. } => "attention_bwd_dq",
            Kernel::AttentionBwdDkdv { .. } => "attention_bwd_dkdv",
            Kernel::CrossEntropy { .. } => "cross_entropy",
            Kernel::Adamw { .. } => "adamw",
            Kernel::SumSquares { .. } => "sum_squares",
            Kernel::CastToAct { .. } => "cast_to_act",
        }
    }

    /// The views the kernel writes (the rest it only reads).
    pub fn outputs(&self) -> Vec<View> {
        match self {
            Kernel::EmbeddingFwd { x, .. } => vec![*x],
            Kernel::EmbeddingBwd { dtable, .. } => vec![*dtable],
            Kernel::RmsnormFwd { y, rstd, .. } => vec![*y, *rstd],
            Kernel::RmsnormBwd { dx, dw_part, .. } => vec![*dx, *dw_part],
            Kernel::AddColumnSums { out, .. } => vec![*out],
            Kernel::Rope { out, .. } => vec![*out],
            Kernel::SwigluFwd { h, .. } => vec![*h],
            Kernel::SwigluBwd { dgate, dup, .. } => vec![*dgate, *dup],
            Kernel::AttentionFwd { o, lse, .. } => vec![*o, *lse],
            Kernel::AttentionBwdDelta { delta, .. } => vec![*delta],
            Kernel::AttentionBwdDq { dq, .. } => vec![*dq],
            Kernel::AttentionBwdDkdv { dk, dv, .. } => vec![*dk, *dv],
            Kernel::CrossEntropy {
                losses, dlogits, ..
            } => std::iter::once(*losses).chain(*dlogits).collect(),
            Kernel::Adamw { p, m, v, .. } => vec![*p, *m, *v],
            Kernel::SumSquares { partial, .. } => vec![*partial],
            Kernel::CastToAct { y, .. } => vec![*y],
        }
    }
}

/// Every kernel family (one file of `kernels/` each) and the kernels it defines.
pub const FAMILIES: &[(&str, &[&str])] = &[
    ("embedding", &["embedding_fwd", "embedding_bwd"]),
    (
        "rmsnorm",
        &["rmsnorm_fwd", "rmsnorm_bwd", "add_column_sums"],
    ),
    ("rope", &["rope_fwd", "rope_bwd"]),
    ("swiglu", &["swiglu_fwd", "swiglu_bwd"]),
    (
        "attention",
        &[
            "attention_fwd",
            "attention_bwd_delta",
            "attention_bwd_dq",
            "attention_bwd_dkdv",
        ],
    ),
    ("cross_entropy", &["cross_entropy"]),
    ("adamw", &["adamw"]),
    ("norm", &["sum_squares"]),
    ("cast", &["cast_to_act"]),
];

/// `d = a · b (+ c)`, row-major: `a` is `[m, k]` (stored `[k, m]` when `a_trans`), `b` is
/// `[k, n]` (stored `[n, k]` when `b_trans`); `c`, when given, is an `[m, n]` of `d`'s class
/// added in (it may be `d` itself; cuBLASLt takes C and D of one type). Operands are
/// activations ([`Class::Act`]); `d` is f32 or Act. The products accumulate in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: View,
    pub a_trans: bool,
    pub b: View,
    pub b_trans: bool,
    pub c: Option<View>,
    pub d: View,
}

impl Gemm {
    /// `y = x · wᵀ` over `rows` rows: `x` `[rows, k]`, `w` `[n, k]` (a linear layer).
    pub fn linear(x: View, w: View, rows: usize, k: usize, n: usize, y: View) -> Gemm {
        Gemm {
            m: rows,
            n,
            k,
            a: x,
            a_trans: false,
            b: w,
            b_trans: true,
            c: None,
            d: y,
        }
    }

    /// The linear layer's input gradient, `dx = dy · w` (`dy` `[rows, n]`, `w` `[n, k]`).
    pub fn grad_input(dy: View, w: View, rows: usize, k: usize, n: usize, dx: View) -> Gemm {
        Gemm {
            m: rows,
            n: k,
            k: n,
            a: dy,
            a_trans: false,
            b: w,
            b_trans: false,
            c: None,
            d: dx,
        }
    }

    /// The linear layer's weight gradient added in, `dw += dyᵀ · x`.
    pub fn grad_weight(dy: View, x: View, rows: usize, k: usize, n: usize, dw: View) -> Gemm {
        Gemm {
            m: n,
            n: k,
            k: rows,
            a: dy,
            a_trans: true,
            b: x,
            b_trans: false,
            c: Some(dw),
            d: dw,
        }
    }

    /// The same product with `c` added in.
    pub fn plus(self, c: View) -> Gemm {
        Gemm { c: Some(c), ..self }
    }

    /// Refuses a product the devices cannot run: operand classes, `c`'s class, views shorter
    /// than the shapes, an empty inner dimension.
    pub fn check(&self) -> Result<()> {
        let bad = |why: &str| Err(GristError::Internal(format!("gemm {self:?}: {why}")));
        if self.a.class != Class::Act || self.b.class != Class::Act {
            return bad("operands must be activations");
        }
        if self.d.class == Class::Int || self.c.is_some_and(|c| c.class != self.d.class) {
            return bad("c must have d's class, a float one");
        }
        if self.k == 0 && self.m * self.n > 0 {
            return bad("an empty inner dimension");
        }
        let (mk, kn, mn) = (self.m * self.k, self.k * self.n, self.m * self.n);
        if self.a.len < mk
            || self.b.len < kn
            || self.d.len < mn
            || self.c.is_some_and(|c| c.len < mn)
        {
            return bad("a view shorter than the product");
        }
        Ok(())
    }
}

/// The largest head size the attention kernels take (kernels/attention.cu's `ATT_HD_MAX`).
pub const MAX_HEAD_DIM: usize = 256;

impl Kernel {
    /// Refuses a launch the kernels would skip without writing anything (so a NaN would be all
    /// that shows): attention with heads the kernels do not take.
    pub fn check(&self) -> Result<()> {
        let shape = match self {
            Kernel::AttentionFwd { shape, .. }
            | Kernel::AttentionBwdDq { shape, .. }
            | Kernel::AttentionBwdDkdv { shape, .. } => shape,
            _ => return Ok(()),
        };
        if shape.head_dim == 0
            || shape.head_dim > MAX_HEAD_DIM
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
        {
            return Err(GristError::Usage(format!(
                "cuda: attention takes head_dim 1..={MAX_HEAD_DIM} and num_heads a multiple of                  num_kv_heads (this model: head_dim {}, {} heads over {} key/value heads)",
                shape.head_dim, shape.heads, shape.kv_heads
            )));
        }
        Ok(())
    }
}

pub trait Device {
    /// The device in words (for logs and reports).
    fn describe(&self) -> String;
    fn precision(&self) -> Precision;
    /// A buffer of `len` elements, filled with NaN (so a read of something never written shows).
    fn alloc(&mut self, class: Class, len: usize) -> Result<BufId>;
    fn free(&mut self, buf: BufId);
    /// Copies f32 values into an F32 view, or into an Act view (rounded to its precision).
    fn upload(&mut self, dst: View, data: &[f32]) -> Result<()>;
    fn upload_int(&mut self, dst: View, data: &[u32]) -> Result<()>;
    /// The values of an F32 or Act view.
    fn download(&self, src: View) -> Result<Vec<f32>>;
    fn download_int(&self, src: View) -> Result<Vec<u32>>;
    /// Sets every element of an F32 or Act view to `value`.
    fn fill(&mut self, dst: View, value: f32) -> Result<()>;
    fn launch(&mut self, kernel: &Kernel) -> Result<()>;
    fn gemm(&mut self, g: &Gemm) -> Result<()>;
    /// Waits for the work queued so far (a no-op on the host).
    fn synchronize(&mut self) -> Result<()>;
    /// Device memory this process holds, in bytes, when the device can say.
    fn memory_in_use(&self) -> Option<usize>;
}
