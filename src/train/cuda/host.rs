//! The host reference device: the CUDA backend's buffers in host memory and each kernel replaced
//! by its CPU twin ([`super::twins`]) with the same arguments. Running the backend's plan on it
//! checks the orchestration (buffers, offsets, launch order, accumulation, casts) without a GPU:
//! it must reproduce the CPU backend's losses and gradients. Act buffers hold f32 values rounded
//! as the GPU stores them (bf16 or f32), buffers start as NaN, and every kernel's arguments are
//! checked against the buffers' bounds, so a read of something never written or a view past
//! its buffer shows up here.

use std::collections::HashMap;

use super::device::{BufId, Class, Device, Gemm, Kernel, SUM_SQUARES_BLOCKS, View};
use super::twins::{self, Round};
use crate::error::{GristError, Result};
use crate::train::config::Precision;

enum Store {
    Float(Vec<f32>),
    Int(Vec<u32>),
}

pub struct HostDevice {
    precision: Precision,
    bufs: HashMap<u32, (Class, Store)>,
    next: u32,
    /// Kernel launches and GEMMs so far (tests count them).
    pub launches: usize,
}

impl HostDevice {
    pub fn new(precision: Precision) -> HostDevice {
        HostDevice {
            precision,
            bufs: HashMap::new(),
            next: 0,
            launches: 0,
        }
    }

    fn round(&self) -> Round {
        match self.precision {
            Precision::Bf16 => twins::round_bf16,
            Precision::F32 => twins::round_f32,
        }
    }

    fn round_for(&self, class: Class) -> Round {
        match class {
            Class::Act => self.round(),
            _ => twins::round_f32,
        }
    }

    fn floats(&self, v: View) -> Result<&[f32]> {
        match self.bufs.get(&v.buf.0) {
            Some((class, Store::Float(data))) if *class == v.class => data
                .get(v.offset..v.offset + v.len)
                .ok_or_else(|| bug(format!("view {v:?} past its buffer ({})", data.len()))),
            _ => Err(bug(format!("view {v:?} is not a float buffer"))),
        }
    }

    fn ints(&self, v: View) -> Result<&[u32]> {
        match self.bufs.get(&v.buf.0) {
            Some((Class::Int, Store::Int(data))) if v.class == Class::Int => data
                .get(v.offset..v.offset + v.len)
                .ok_or_else(|| bug(format!("view {v:?} past its buffer ({})", data.len()))),
            _ => Err(bug(format!("view {v:?} is not an int buffer"))),
        }
    }

    /// A copy of a float view's values (inputs are copied so outputs may alias nothing).
    fn get(&self, v: View) -> Result<Vec<f32>> {
        self.floats(v).map(<[f32]>::to_vec)
    }

    fn get_int(&self, v: View) -> Result<Vec<u32>> {
        self.ints(v).map(<[u32]>::to_vec)
    }

    fn put(&mut self, v: View, values: &[f32]) -> Result<()> {
        let round = self.round_for(v.class);
        match self.bufs.get_mut(&v.buf.0) {
            Some((class, Store::Float(data))) if *class == v.class => {
                let dst = data
                    .get_mut(v.offset..v.offset + v.len)
                    .ok_or_else(|| bug(format!("view {v:?} past its buffer")))?;
                if values.len() != dst.len() {
                    return Err(bug(format!(
                        "{} values for a view of {}",
                        values.len(),
                        dst.len()
                    )));
                }
                for (d, &x) in dst.iter_mut().zip(values) {
                    *d = round(x);
                }
                Ok(())
            }
            _ => Err(bug(format!("view {v:?} is not a float buffer"))),
        }
    }

    fn need(v: View, len: usize, what: &str) -> Result<()> {
        if v.len < len {
            return Err(bug(format!(
                "{what}: a view of {} elements where the launch reads or writes {len}",
                v.len
            )));
        }
        Ok(())
    }

    fn run(&mut self, kernel: &Kernel) -> Result<()> {
        let round = self.round();
        match *kernel {
            Kernel::EmbeddingFwd {
                table,
                tokens,
                x,
                rows,
                d,
            } => {
                Self::need(x, rows * d, "embedding x")?;
                let (t, ids) = (self.get(table)?, self.get_int(tokens)?);
                if ids[..rows].iter().any(|&i| (i as usize + 1) * d > t.len()) {
                    return Err(bug("embedding: a token past the table".into()));
                }
                let mut out = self.get(x)?;
                twins::embedding_fwd(&t, &ids, &mut out, rows, d);
                self.put(x, &out)
            }
            Kernel::EmbeddingBwd {
                dx,
                order,
                seg_start,
                seg_token,
                dtable,
                segments,
                d,
            } => {
                let (g, o, s, t) = (
                    self.get(dx)?,
                    self.get_int(order)?,
                    self.get_int(seg_start)?,
                    self.get_int(seg_token)?,
                );
                let mut table = self.get(dtable)?;
                twins::embedding_bwd(&g, &o, &s, &t, &mut table, segments, d);
                self.put(dtable, &table)
            }
            Kernel::RmsnormFwd {
                x,
                w,
                y,
                rstd,
                rows,
                d,
                eps,
            } => {
                Self::need(y, rows * d, "rmsnorm y")?;
                Self::need(rstd, rows, "rmsnorm rstd")?;
                let (xs, ws) = (self.get(x)?, self.get(w)?);
                let (mut ys, mut rs) = (self.get(y)?, self.get(rstd)?);
                twins::rmsnorm_fwd(
                    &xs,
                    &ws,
                    &mut ys,
                    &mut rs,
                    rows,
                    d,
                    eps,
                    self.round_for(y.class),
                );
                self.put(y, &ys)?;
                self.put(rstd, &rs)
            }
            Kernel::RmsnormBwd {
                dy,
                x,
                w,
                rstd,
                dx,
                dw_part,
                rows,
                d,
                rows_per_block,
                accumulate,
            } => {
                Self::need(dx, rows * d, "rmsnorm dx")?;
                Self::need(
                    dw_part,
                    rows.div_ceil(rows_per_block) * d,
                    "rmsnorm dw_part",
                )?;
                let (g, xs, ws, rs) = (self.get(dy)?, self.get(x)?, self.get(w)?, self.get(rstd)?);
                let (mut dxs, mut part) = (self.get(dx)?, self.get(dw_part)?);
                twins::rmsnorm_bwd(
                    &g,
                    &xs,
                    &ws,
                    &rs,
                    &mut dxs,
                    &mut part,
                    rows,
                    d,
                    rows_per_block,
                    accumulate,
                );
                self.put(dx, &dxs)?;
                self.put(dw_part, &part)
            }
            Kernel::AddColumnSums {
                part,
                out,
                parts,
                d,
            } => {
                let p = self.get(part)?;
                let mut o = self.get(out)?;
                twins::add_column_sums(&p, &mut o, parts, d);
                self.put(out, &o)
            }
            Kernel::Rope {
                input,
                out,
                cos,
                sin,
                positions,
                rows,
                heads,
                head_dim,
                backward,
            } => {
                Self::need(out, rows * heads * head_dim, "rope out")?;
                let (i, c, s, p) = (
                    self.get(input)?,
                    self.get(cos)?,
                    self.get(sin)?,
                    self.get_int(positions)?,
                );
                let half = head_dim / 2;
                if p[..rows].iter().any(|&x| (x as usize + 1) * half > c.len()) {
                    return Err(bug("rope: a position past the table".into()));
                }
                let mut o = self.get(out)?;
                twins::rope(
                    &i,
                    &mut o,
                    &c,
                    &s,
                    &p,
                    rows,
                    heads,
                    head_dim,
                    backward,
                    self.round_for(out.class),
                );
                self.put(out, &o)
            }
            Kernel::SwigluFwd { gate, up, h, n } => {
                let (g, u) = (self.get(gate)?, self.get(up)?);
                let mut hs = vec![0.0; n];
                twins::swiglu_fwd(&g[..n], &u[..n], &mut hs, round);
                self.put(h.sub(0, n), &hs)
            }
            Kernel::SwigluBwd {
                dh,
                gate,
                up,
                dgate,
                dup,
                n,
            } => {
                let (d, g, u) = (self.get(dh)?, self.get(gate)?, self.get(up)?);
                let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
                twins::swiglu_bwd(&d[..n], &g[..n], &u[..n], &mut dg, &mut du, round);
                self.put(dgate.sub(0, n), &dg)?;
                self.put(dup.sub(0, n), &du)
            }
            Kernel::AttentionFwd {
                q,
                k,
                v,
                starts,
                o,
                lse,
                shape,
            } => {
                let qw = shape.heads * shape.head_dim;
                Self::need(o, shape.batch * shape.tq * qw, "attention o")?;
                Self::need(lse, shape.batch * shape.heads * shape.tq, "attention lse")?;
                let (qs, ks, vs, st) = (
                    self.get(q)?,
                    self.get(k)?,
                    self.get(v)?,
                    self.get_int(starts)?,
                );
                let (mut os, mut ls) = (self.get(o)?, self.get(lse)?);
                twins::attention_fwd(&qs, &ks, &vs, &st, &mut os, &mut ls, &shape, round);
                self.put(o, &os)?;
                self.put(lse, &ls)
            }
            Kernel::AttentionBwdDelta {
                o,
                dout,
                delta,
                rows,
                heads,
                head_dim,
            } => {
                let (os, ds) = (self.get(o)?, self.get(dout)?);
                let mut out = self.get(delta)?;
                twins::attention_bwd_delta(&os, &ds, &mut out, rows, heads, head_dim);
                self.put(delta, &out)
            }
            Kernel::AttentionBwdDq {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dq,
                shape,
            } => {
                let (qs, ks, vs, st) = (
                    self.get(q)?,
                    self.get(k)?,
                    self.get(v)?,
                    self.get_int(starts)?,
                );
                let (ds, ls, dl) = (self.get(dout)?, self.get(lse)?, self.get(delta)?);
                let mut out = self.get(dq)?;
                twins::attention_bwd_dq(&qs, &ks, &vs, &st, &ds, &ls, &dl, &mut out, &shape);
                self.put(dq, &out)
            }
            Kernel::AttentionBwdDkdv {
                q,
                k,
                v,
                starts,
                dout,
                lse,
                delta,
                dk,
                dv,
                shape,
            } => {
                let (qs, ks, vs, st) = (
                    self.get(q)?,
                    self.get(k)?,
                    self.get(v)?,
                    self.get_int(starts)?,
                );
                let (ds, ls, dl) = (self.get(dout)?, self.get(lse)?, self.get(delta)?);
                let (mut dks, mut dvs) = (self.get(dk)?, self.get(dv)?);
                twins::attention_bwd_dkdv(
                    &qs,
                    &ks,
                    &vs,
                    &st,
                    &ds,
                    &ls,
                    &dl,
                    &mut dks,
                    &mut dvs,
                    &shape,
                    self.round_for(dv.class),
                );
                self.put(dk, &dks)?;
                self.put(dv, &dvs)
            }
            Kernel::CrossEntropy {
                logits,
                targets,
                losses,
                dlogits,
                rows,
                vocab,
                grad_scale,
            } => {
                let (z, t) = (self.get(logits)?, self.get_int(targets)?);
                if t[..rows]
                    .iter()
                    .any(|&x| x as i32 >= vocab as i32 || (x as i32) < -1)
                {
                    return Err(bug("cross-entropy: a target outside the vocabulary".into()));
                }
                let mut l = self.get(losses)?;
                let mut g = dlogits.map(|v| self.get(v)).transpose()?;
                twins::cross_entropy(
                    &z,
                    &t,
                    &mut l,
                    g.as_deref_mut(),
                    rows,
                    vocab,
                    grad_scale,
                    round,
                );
                self.put(losses, &l)?;
                if let (Some(v), Some(g)) = (dlogits, g) {
                    self.put(v, &g)?;
                }
                Ok(())
            }
            Kernel::Adamw {
                p,
                g,
                m,
                v,
                scalars,
            } => {
                let gs = self.get(g)?;
                let (mut ps, mut ms, mut vs) = (self.get(p)?, self.get(m)?, self.get(v)?);
                if [gs.len(), ms.len(), vs.len()]
                    .iter()
                    .any(|&l| l != ps.len())
                {
                    return Err(bug("adamw: views of different lengths".into()));
                }
                twins::adamw(&mut ps, &gs, &mut ms, &mut vs, &scalars);
                self.put(p, &ps)?;
                self.put(m, &ms)?;
                self.put(v, &vs)
            }
            Kernel::SumSquares { x, partial } => {
                Self::need(partial, SUM_SQUARES_BLOCKS, "sum_squares partial")?;
                let xs = self.get(x)?;
                let mut out = self.get(partial)?;
                twins::sum_squares(&xs, &mut out, SUM_SQUARES_BLOCKS);
                self.put(partial, &out)
            }
            Kernel::CastToAct { x, y } => {
                if x.len != y.len {
                    return Err(bug("cast: views of different lengths".into()));
                }
                let xs = self.get(x)?;
                let mut ys = vec![0.0; xs.len()];
                twins::cast_to_act(&xs, &mut ys, self.round_for(y.class));
                self.put(y, &ys)
            }
        }
    }
}

fn bug(message: String) -> GristError {
    GristError::Internal(format!("cuda plan on the reference device: {message}"))
}

impl Device for HostDevice {
    fn describe(&self) -> String {
        format!("host reference device ({})", self.precision.as_str())
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn alloc(&mut self, class: Class, len: usize) -> Result<BufId> {
        let id = self.next;
        self.next += 1;
        let store = match class {
            Class::Int => Store::Int(vec![u32::MAX; len]),
            _ => Store::Float(vec![f32::NAN; len]),
        };
        self.bufs.insert(id, (class, store));
        Ok(BufId(id))
    }

    fn free(&mut self, buf: BufId) {
        self.bufs.remove(&buf.0);
    }

    fn upload(&mut self, dst: View, data: &[f32]) -> Result<()> {
        self.put(dst, data)
    }

    fn upload_int(&mut self, dst: View, data: &[u32]) -> Result<()> {
        match self.bufs.get_mut(&dst.buf.0) {
            Some((Class::Int, Store::Int(buf))) if data.len() == dst.len => {
                buf.get_mut(dst.offset..dst.offset + dst.len)
                    .ok_or_else(|| bug(format!("view {dst:?} past its buffer")))?
                    .copy_from_slice(data);
                Ok(())
            }
            _ => Err(bug(format!("upload of {} ints into {dst:?}", data.len()))),
        }
    }

    fn download(&self, src: View) -> Result<Vec<f32>> {
        self.get(src)
    }

    fn download_int(&self, src: View) -> Result<Vec<u32>> {
        self.get_int(src)
    }

    fn fill(&mut self, dst: View, value: f32) -> Result<()> {
        self.put(dst, &vec![value; dst.len])
    }

    fn launch(&mut self, kernel: &Kernel) -> Result<()> {
        self.launches += 1;
        kernel.check()?;
        self.run(kernel)
    }

    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        self.launches += 1;
        g.check()?;
        let (a, b) = (self.get(g.a)?, self.get(g.b)?);
        let c = g.c.map(|c| self.get(c)).transpose()?;
        let mut d = vec![0.0f32; g.m * g.n];
        twins::gemm(
            g.m,
            g.n,
            g.k,
            &a,
            g.a_trans,
            &b,
            g.b_trans,
            c.as_deref(),
            &mut d,
        );
        self.put(g.d.sub(0, g.m * g.n), &d)
    }

    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }

    fn memory_in_use(&self) -> Option<usize> {
        Some(
            self.bufs
                .values()
                .map(|(_, s)| match s {
                    Store::Float(v) => v.len() * 4,
                    Store::Int(v) => v.len() * 4,
                })
                .sum(),
        )
    }
}
