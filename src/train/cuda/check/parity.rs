//! Every kernel and GEMM form on a device under test against the same launch on a reference
//! device, on fresh random inputs with the outputs poisoned (new buffers are NaN): the parity
//! half of `grist gpu check`.

use super::super::device::{
    AdamScalars, AttnShape, BufId, Class, Device, Gemm, Kernel, SUM_SQUARES_BLOCKS, View,
};
use super::{Row, rel_error, tolerance};
use crate::error::Result;
use crate::train::config::{Rope, RopeScaling};
use crate::train::params::Normal;
use crate::train::rope::RopeTable;
use crate::util::SplitMix64;

/// A buffer made on both devices.
#[derive(Clone, Copy)]
struct H(usize);

/// Resolves a buffer to one device's view of it.
type Resolve<'a> = &'a dyn Fn(H) -> View;

/// The device under test (`a`) and the reference (`b`), with the same buffers on each.
struct Twin<'a> {
    a: &'a mut dyn Device,
    b: &'a mut dyn Device,
    bufs: Vec<(View, View)>,
    rng: Normal,
    ints: SplitMix64,
}

fn whole(buf: BufId, class: Class, len: usize) -> View {
    View {
        buf,
        class,
        offset: 0,
        len,
    }
}

impl Twin<'_> {
    fn alloc(&mut self, class: Class, len: usize) -> Result<H> {
        let (x, y) = (self.a.alloc(class, len)?, self.b.alloc(class, len)?);
        self.bufs.push((whole(x, class, len), whole(y, class, len)));
        Ok(H(self.bufs.len() - 1))
    }

    /// A buffer holding `values` on both devices.
    fn input(&mut self, class: Class, values: &[f32]) -> Result<H> {
        let h = self.alloc(class, values.len())?;
        let (x, y) = self.bufs[h.0];
        self.a.upload(x, values)?;
        self.b.upload(y, values)?;
        Ok(h)
    }

    fn random(&mut self, class: Class, len: usize, std: f64) -> Result<H> {
        let v = self.rng.fill(len, std);
        self.input(class, &v)
    }

    fn ints(&mut self, values: &[u32]) -> Result<H> {
        let h = self.alloc(Class::Int, values.len())?;
        let (x, y) = self.bufs[h.0];
        self.a.upload_int(x, values)?;
        self.b.upload_int(y, values)?;
        Ok(h)
    }

    fn below(&mut self, n: usize, max: u32) -> Vec<u32> {
        (0..n)
            .map(|_| (self.ints.next_u64() % max as u64) as u32)
            .collect()
    }

    /// Launches the kernel `make` builds from each device's views on both, then compares the
    /// kernel's outputs (the views it writes).
    fn check(&mut self, what: &str, make: &dyn Fn(Resolve) -> Kernel) -> Result<Row> {
        let (bufs_a, bufs_b): (Vec<View>, Vec<View>) = self.bufs.iter().copied().unzip();
        let ka = make(&|h: H| bufs_a[h.0]);
        let kb = make(&|h: H| bufs_b[h.0]);
        self.a.launch(&ka)?;
        self.b.launch(&kb)?;
        self.compare(what, &ka.outputs(), &kb.outputs())
    }

    fn check_gemm(&mut self, what: &str, make: &dyn Fn(Resolve) -> Gemm) -> Result<Row> {
        let (bufs_a, bufs_b): (Vec<View>, Vec<View>) = self.bufs.iter().copied().unzip();
        let (ga, gb) = (make(&|h: H| bufs_a[h.0]), make(&|h: H| bufs_b[h.0]));
        self.a.gemm(&ga)?;
        self.b.gemm(&gb)?;
        self.compare(what, &[ga.d], &[gb.d])
    }

    fn compare(&mut self, what: &str, outs_a: &[View], outs_b: &[View]) -> Result<Row> {
        self.a.synchronize()?;
        let tol = tolerance(self.a.precision());
        let mut worst: f64 = 0.0;
        for (x, y) in outs_a.iter().zip(outs_b) {
            let (va, vb) = (self.a.download(*x)?, self.b.download(*y)?);
            worst = worst.max(rel_error(&va, &vb));
        }
        Ok(Row {
            check: format!("{what} ({})", self.a.precision().as_str()),
            pass: worst < tol,
            detail: format!("rel error {worst:.1e} (limit {tol:.0e})"),
        })
    }

    /// Downloads a buffer from the reference device and puts it on both (an input made by an
    /// earlier kernel, e.g. the attention forward's output for its backward).
    fn share(&mut self, h: H) -> Result<()> {
        let (x, y) = self.bufs[h.0];
        let v = self.b.download(y)?;
        self.a.upload(x, &v)?;
        self.b.upload(y, &v)
    }
}

fn rope_table(scaling: RopeScaling, hd: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let mut t = RopeTable::new(
        &Rope {
            theta: 10_000.0,
            scaling,
        },
        hd,
    );
    t.ensure(positions);
    let (c, s) = t.tables();
    (c.to_vec(), s.to_vec())
}

fn attention_shapes() -> Vec<(&'static str, AttnShape, bool)> {
    let s = |batch, tq, tk, q_offset, heads, kv_heads, head_dim: usize| AttnShape {
        batch,
        tq,
        tk,
        q_offset,
        heads,
        kv_heads,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    };
    vec![
        (
            "causal, GQA 4/2, d 64, T 77",
            s(2, 77, 77, 0, 4, 2, 64),
            false,
        ),
        (
            "documents, GQA 4/2, d 64, T 77",
            s(2, 77, 77, 0, 4, 2, 64),
            true,
        ),
        ("documents, d 128, T 45", s(1, 45, 45, 0, 2, 2, 128), true),
        ("causal, d 8, T 40", s(1, 40, 40, 0, 2, 1, 8), false),
    ]
}

/// `starts` for `batch` samples of `t`: 0, or with documents, fragment starts every 9..24
/// tokens.
fn starts_for(tw: &mut Twin, batch: usize, t: usize, documents: bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(batch * t);
    for _ in 0..batch {
        let mut start = 0;
        let mut next = if documents {
            9 + tw.below(1, 16)[0] as usize
        } else {
            usize::MAX
        };
        for i in 0..t {
            if i == next {
                start = i;
                next = i + 9 + tw.below(1, 16)[0] as usize;
            }
            out.push(start as u32);
        }
    }
    out
}

/// Every kernel and GEMM form on `dut` against `reference` (same precision), on fresh random
/// inputs.
pub fn kernel_parity(
    dut: &mut dyn Device,
    reference: &mut dyn Device,
    seed: u64,
) -> Result<Vec<Row>> {
    let mut tw = Twin {
        a: dut,
        b: reference,
        bufs: Vec::new(),
        rng: Normal::new(seed),
        ints: SplitMix64(seed ^ 0xc0ffee),
    };
    let mut rows = Vec::new();
    let act = Class::Act;
    let f32c = Class::F32;

    // Embedding.
    let (vocab, d, n) = (50, 70, 33);
    let table = tw.random(f32c, vocab * d, 1.0)?;
    let ids = tw.below(n, vocab as u32);
    let tokens = tw.ints(&ids)?;
    let x = tw.alloc(f32c, n * d)?;
    rows.push(tw.check("embedding_fwd", &|v| Kernel::EmbeddingFwd {
        table: v(table),
        tokens: v(tokens),
        x: v(x),
        rows: n,
        d,
    })?);
    let (order, seg_start, seg_token) = crate::train::cuda::model::token_segments(&ids);
    let segments = seg_token.len();
    let (o, ss, st) = (tw.ints(&order)?, tw.ints(&seg_start)?, tw.ints(&seg_token)?);
    let dx = tw.random(f32c, n * d, 1.0)?;
    let dtable = tw.random(f32c, vocab * d, 1.0)?;
    rows.push(tw.check("embedding_bwd", &|v| Kernel::EmbeddingBwd {
        dx: v(dx),
        order: v(o),
        seg_start: v(ss),
        seg_token: v(st),
        dtable: v(dtable),
        segments,
        d,
    })?);

    // RMSNorm.
    let (n, d) = (37, 300);
    let x = tw.random(f32c, n * d, 1.0)?;
    let w = tw.random(f32c, d, 1.0)?;
    let (y, rstd) = (tw.alloc(act, n * d)?, tw.alloc(f32c, n)?);
    rows.push(tw.check("rmsnorm_fwd", &|v| Kernel::RmsnormFwd {
        x: v(x),
        w: v(w),
        y: v(y),
        rstd: v(rstd),
        rows: n,
        d,
        eps: 1e-5,
    })?);
    tw.share(rstd)?;
    let dy = tw.random(f32c, n * d, 1.0)?;
    let parts = n.div_ceil(32);
    for accumulate in [false, true] {
        let dxs = tw.random(f32c, n * d, 1.0)?;
        let part = tw.alloc(f32c, parts * d)?;
        rows.push(tw.check(
            &format!(
                "rmsnorm_bwd{}",
                if accumulate { " (accumulate)" } else { "" }
            ),
            &|v| Kernel::RmsnormBwd {
                dy: v(dy),
                x: v(x),
                w: v(w),
                rstd: v(rstd),
                dx: v(dxs),
                dw_part: v(part),
                rows: n,
                d,
                rows_per_block: 32,
                accumulate,
            },
        )?);
    }
    let part = tw.random(f32c, parts * d, 1.0)?;
    let out = tw.random(f32c, d, 1.0)?;
    rows.push(tw.check("add_column_sums", &|v| Kernel::AddColumnSums {
        part: v(part),
        out: v(out),
        parts,
        d,
    })?);

    // RoPE, every scaling, forward and backward.
    let (n, heads, hd) = (20, 3, 64);
    for (name, scaling) in [
        ("none", RopeScaling::None),
        ("linear", RopeScaling::Linear { factor: 4.0 }),
        ("ntk", RopeScaling::Ntk { factor: 4.0 }),
        (
            "yarn",
            RopeScaling::Yarn {
                factor: 4.0,
                original_max_position_embeddings: 64,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: None,
            },
        ),
        (
            "llama3",
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 64,
            },
        ),
    ] {
        let (c, s) = rope_table(scaling, hd, 300);
        let (cos, sin) = (tw.input(f32c, &c)?, tw.input(f32c, &s)?);
        let pos = tw.below(n, 300);
        let positions = tw.ints(&pos)?;
        let input = tw.random(f32c, n * heads * hd, 1.0)?;
        for backward in [false, true] {
            let out = tw.alloc(act, n * heads * hd)?;
            let dir = if backward { "bwd" } else { "fwd" };
            rows.push(
                tw.check(&format!("rope_{dir} ({name})"), &|v| Kernel::Rope {
                    input: v(input),
                    out: v(out),
                    cos: v(cos),
                    sin: v(sin),
                    positions: v(positions),
                    rows: n,
                    heads,
                    head_dim: hd,
                    backward,
                })?,
            );
        }
    }

    // SwiGLU.
    let n = 1000;
    let (gate, up) = (tw.random(act, n, 2.0)?, tw.random(act, n, 1.0)?);
    let h = tw.alloc(act, n)?;
    rows.push(tw.check("swiglu_fwd", &|v| Kernel::SwigluFwd {
        gate: v(gate),
        up: v(up),
        h: v(h),
        n,
    })?);
    let dh = tw.random(f32c, n, 1.0)?;
    let (dgate, dup) = (tw.alloc(act, n)?, tw.alloc(act, n)?);
    rows.push(tw.check("swiglu_bwd", &|v| Kernel::SwigluBwd {
        dh: v(dh),
        gate: v(gate),
        up: v(up),
        dgate: v(dgate),
        dup: v(dup),
        n,
    })?);

    // Attention, forward and backward, and the decoding shapes.
    for (name, sh, documents) in attention_shapes() {
        let hd = sh.head_dim;
        let (qw, kw) = (sh.heads * hd, sh.kv_heads * hd);
        let rows_q = sh.batch * sh.tq;
        let st = starts_for(&mut tw, sh.batch, sh.tq, documents);
        let starts = tw.ints(&st)?;
        let (q, k, vv) = (
            tw.random(act, rows_q * qw, 1.0)?,
            tw.random(act, rows_q * kw, 1.0)?,
            tw.random(act, rows_q * kw, 1.0)?,
        );
        let (o, lse) = (
            tw.alloc(act, rows_q * qw)?,
            tw.alloc(f32c, rows_q * sh.heads)?,
        );
        rows.push(tw.check(&format!("attention_fwd ({name})"), &|v| {
            Kernel::AttentionFwd {
                q: v(q),
                k: v(k),
                v: v(vv),
                starts: v(starts),
                o: v(o),
                lse: v(lse),
                shape: sh,
            }
        })?);
        tw.share(o)?;
        tw.share(lse)?;
        let dout = tw.random(f32c, rows_q * qw, 1.0)?;
        let delta = tw.alloc(f32c, rows_q * sh.heads)?;
        rows.push(tw.check(&format!("attention_bwd_delta ({name})"), &|v| {
            Kernel::AttentionBwdDelta {
                o: v(o),
                dout: v(dout),
                delta: v(delta),
                rows: rows_q,
                heads: sh.heads,
                head_dim: hd,
            }
        })?);
        tw.share(delta)?;
        let dq = tw.alloc(f32c, rows_q * qw)?;
        rows.push(tw.check(&format!("attention_bwd_dq ({name})"), &|v| {
            Kernel::AttentionBwdDq {
                q: v(q),
                k: v(k),
                v: v(vv),
                starts: v(starts),
                dout: v(dout),
                lse: v(lse),
                delta: v(delta),
                dq: v(dq),
                shape: sh,
            }
        })?);
        let (dk, dv) = (tw.alloc(f32c, rows_q * kw)?, tw.alloc(act, rows_q * kw)?);
        rows.push(tw.check(&format!("attention_bwd_dkdv ({name})"), &|v| {
            Kernel::AttentionBwdDkdv {
                q: v(q),
                k: v(k),
                v: v(vv),
                starts: v(starts),
                dout: v(dout),
                lse: v(lse),
                delta: v(delta),
                dk: v(dk),
                dv: v(dv),
                shape: sh,
            }
        })?);
    }
    for (name, tq, tk) in [("decode step", 1, 50), ("prefill after a cache", 5, 30)] {
        let sh = AttnShape {
            batch: 1,
            tq,
            tk,
            q_offset: tk - tq,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            scale: 0.125,
        };
        let (qw, kw) = (4 * 64, 2 * 64);
        let starts = tw.ints(&vec![0; tq])?;
        let (q, k, vv) = (
            tw.random(act, tq * qw, 1.0)?,
            tw.random(act, tk * kw, 1.0)?,
            tw.random(act, tk * kw, 1.0)?,
        );
        let (o, lse) = (tw.alloc(act, tq * qw)?, tw.alloc(f32c, tq * 4)?);
        rows.push(tw.check(&format!("attention_fwd ({name})"), &|v| {
            Kernel::AttentionFwd {
                q: v(q),
                k: v(k),
                v: v(vv),
                starts: v(starts),
                o: v(o),
                lse: v(lse),
                shape: sh,
            }
        })?);
    }

    // Cross-entropy, with ignored rows, with and without the gradient.
    let (n, vocab) = (9, 1000);
    let logits = tw.random(f32c, n * vocab, 3.0)?;
    let mut t = tw.below(n, vocab as u32);
    t[2] = u32::MAX;
    t[7] = u32::MAX;
    let targets = tw.ints(&t)?;
    for grad in [true, false] {
        let losses = tw.alloc(f32c, n)?;
        let dl = tw.alloc(act, n * vocab)?;
        rows.push(tw.check(
            &format!("cross_entropy{}", if grad { "" } else { " (loss only)" }),
            &|v| Kernel::CrossEntropy {
                logits: v(logits),
                targets: v(targets),
                losses: v(losses),
                dlogits: grad.then(|| v(dl)),
                rows: n,
                vocab,
                grad_scale: 0.125,
            },
        )?);
    }

    // AdamW, the gradient norm, casts.
    let n = 1000;
    let (p, g, m) = (
        tw.random(f32c, n, 1.0)?,
        tw.random(f32c, n, 1.0)?,
        tw.random(f32c, n, 0.1)?,
    );
    let vals: Vec<f32> = tw.rng.fill(n, 0.01).iter().map(|x| x * x).collect();
    let vv = tw.input(f32c, &vals)?;
    let scalars = AdamScalars {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        decay: 1.0 - 3e-4 * 0.1,
        step_size: 3e-4 / (1.0 - 0.9f64.powi(3)),
        bc2_sqrt: (1.0 - 0.95f64.powi(3)).sqrt(),
        grad_scale: 0.7,
    };
    rows.push(tw.check("adamw", &|v| Kernel::Adamw {
        p: v(p),
        g: v(g),
        m: v(m),
        v: v(vv),
        scalars,
    })?);
    let x = tw.random(f32c, 100_003, 1.0)?;
    let partial = tw.alloc(f32c, SUM_SQUARES_BLOCKS)?;
    rows.push(tw.check("sum_squares", &|v| Kernel::SumSquares {
        x: v(x),
        partial: v(partial),
    })?);
    let y = tw.alloc(act, 100_003)?;
    rows.push(tw.check("cast_to_act", &|v| Kernel::CastToAct { x: v(x), y: v(y) })?);

    // The three GEMM forms of a linear layer, into f32 and into activations.
    let (m, k, nn) = (33, 70, 50);
    let (xa, wa, dya) = (
        tw.random(act, m * k, 1.0)?,
        tw.random(act, nn * k, 1.0)?,
        tw.random(act, m * nn, 1.0)?,
    );
    let (y32, yact, acc) = (
        tw.alloc(f32c, m * nn)?,
        tw.alloc(act, m * nn)?,
        tw.random(f32c, m * nn, 1.0)?,
    );
    rows.push(tw.check_gemm("gemm linear → f32", &|v| {
        Gemm::linear(v(xa), v(wa), m, k, nn, v(y32))
    })?);
    rows.push(tw.check_gemm("gemm linear → act", &|v| {
        Gemm::linear(v(xa), v(wa), m, k, nn, v(yact))
    })?);
    rows.push(tw.check_gemm("gemm linear + residual", &|v| {
        Gemm::linear(v(xa), v(wa), m, k, nn, v(acc)).plus(v(acc))
    })?);
    let dxg = tw.alloc(f32c, m * k)?;
    rows.push(tw.check_gemm("gemm input gradient", &|v| {
        Gemm::grad_input(v(dya), v(wa), m, k, nn, v(dxg))
    })?);
    let dw = tw.random(f32c, nn * k, 1.0)?;
    rows.push(tw.check_gemm("gemm weight gradient (accumulate)", &|v| {
        Gemm::grad_weight(v(dya), v(xa), m, k, nn, v(dw))
    })?);
    Ok(rows)
}
