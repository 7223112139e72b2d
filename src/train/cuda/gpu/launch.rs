//! Each kernel's launch: its arguments in its C signature's order and types, and its grid
//! (kernels/README.md gives both; every block is 256 threads).

use super::super::device::{Kernel, SUM_SQUARES_BLOCKS, View};
use crate::error::{GristError, Result};

/// Threads per block of every kernel.
pub const BLOCK: u32 = 256;

/// One kernel argument as its C type.
pub enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

fn int(x: usize) -> Result<Arg> {
    i32::try_from(x)
        .map(Arg::I32)
        .map_err(|_| GristError::Usage(format!("cuda: a size of {x} does not fit a kernel's int")))
}

/// Blocks for a grid-stride loop over `n` elements, 256 threads each.
fn grid_1d(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256).clamp(1, 65_535) as u32, 1, 1)
}

fn grid_rows(rows: usize) -> Result<(u32, u32, u32)> {
    u32::try_from(rows.max(1))
        .map(|r| (r, 1, 1))
        .map_err(|_| GristError::Usage(format!("cuda: {rows} rows is too many for one launch")))
}

/// The grid and the arguments of `kernel`, its views resolved to device addresses by `ptr`.
pub fn launch_args(
    kernel: &Kernel,
    ptr: &dyn Fn(View) -> Result<u64>,
) -> Result<((u32, u32, u32), Vec<Arg>)> {
    use Arg::*;
    let p = |v: View| ptr(v).map(Ptr);
    match *kernel {
        Kernel::EmbeddingFwd {
            table,
            tokens,
            x,
            rows,
            d,
        } => {
            let args = [p(table)?, p(tokens)?, p(x)?, int(rows)?, int(d)?];
            Ok((grid_1d(rows * d), args.into()))
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
            let args = [
                p(dx)?,
                p(order)?,
                p(seg_start)?,
                p(seg_token)?,
                p(dtable)?,
                int(segments)?,
                int(d)?,
            ];
            Ok((grid_rows(segments)?, args.into()))
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
            let args = [p(x)?, p(w)?, p(y)?, p(rstd)?, int(rows)?, int(d)?, F32(eps)];
            Ok((grid_rows(rows)?, args.into()))
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
            let args = [
                p(dy)?,
                p(x)?,
                p(w)?,
                p(rstd)?,
                p(dx)?,
                p(dw_part)?,
                int(rows)?,
                int(d)?,
                int(rows_per_block)?,
                I32(accumulate as i32),
            ];
            Ok((grid_rows(rows.div_ceil(rows_per_block))?, args.into()))
        }
        Kernel::AddColumnSums {
            part,
            out,
            parts,
            d,
        } => {
            let args = [p(part)?, p(out)?, int(parts)?, int(d)?];
            Ok((grid_1d(d), args.into()))
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
            ..
        } => {
            let args = [
                p(input)?,
                p(out)?,
                p(cos)?,
                p(sin)?,
                p(positions)?,
                int(rows)?,
                int(heads)?,
                int(head_dim)?,
            ];
            Ok((grid_1d(rows * heads * head_dim / 2), args.into()))
        }
        Kernel::SwigluFwd { gate, up, h, n } => {
            let args = [p(gate)?, p(up)?, p(h)?, I64(n as i64)];
            Ok((grid_1d(n), args.into()))
        }
        Kernel::SwigluBwd {
            dh,
            gate,
            up,
            dgate,
            dup,
            n,
        } => {
            let args = [p(dh)?, p(gate)?, p(up)?, p(dgate)?, p(dup)?, I64(n as i64)];
            Ok((grid_1d(n), args.into()))
        }
        Kernel::AttentionFwd {
            q,
            k,
            v,
            starts,
            o,
            lse,
            shape: s,
        } => {
            let args = [
                p(q)?,
                p(k)?,
                p(v)?,
                p(starts)?,
                p(o)?,
                p(lse)?,
                int(s.batch)?,
                int(s.tq)?,
                int(s.tk)?,
                int(s.q_offset)?,
                int(s.heads)?,
                int(s.kv_heads)?,
                int(s.head_dim)?,
                F32(s.scale),
            ];
            let grid = attention_grid(s.tq, s.heads, s.batch)?;
            Ok((grid, args.into()))
        }
        Kernel::AttentionBwdDelta {
            o,
            dout,
            delta,
            rows,
            heads,
            head_dim,
        } => {
            let args = [
                p(o)?,
                p(dout)?,
                p(delta)?,
                int(rows)?,
                int(heads)?,
                int(head_dim)?,
            ];
            Ok((grid_1d(rows * heads), args.into()))
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
            shape: s,
        } => {
            let args = [
                p(q)?,
                p(k)?,
                p(v)?,
                p(starts)?,
                p(dout)?,
                p(lse)?,
                p(delta)?,
                p(dq)?,
                int(s.batch)?,
                int(s.tq)?,
                int(s.heads)?,
                int(s.kv_heads)?,
                int(s.head_dim)?,
                F32(s.scale),
            ];
            let grid = attention_grid(s.tq, s.heads, s.batch)?;
            Ok((grid, args.into()))
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
            shape: s,
        } => {
            let args = [
                p(q)?,
                p(k)?,
                p(v)?,
                p(starts)?,
                p(dout)?,
                p(lse)?,
                p(delta)?,
                p(dk)?,
                p(dv)?,
                int(s.batch)?,
                int(s.tq)?,
                int(s.heads)?,
                int(s.kv_heads)?,
                int(s.head_dim)?,
                F32(s.scale),
            ];
            let grid = attention_grid(s.tq, s.kv_heads, s.batch)?;
            Ok((grid, args.into()))
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
            let dl = match dlogits {
                Some(v) => p(v)?,
                None => Ptr(0),
            };
            let args = [
                p(logits)?,
                p(targets)?,
                p(losses)?,
                dl,
                int(rows)?,
                int(vocab)?,
                F32(grad_scale),
                I32(dlogits.is_some() as i32),
            ];
            Ok((grid_rows(rows)?, args.into()))
        }
        Kernel::Adamw {
            p: param,
            g,
            m,
            v,
            scalars: s,
        } => {
            let args = [
                p(param)?,
                p(g)?,
                p(m)?,
                p(v)?,
                I64(param.len as i64),
                F64(s.beta1),
                F64(s.beta2),
                F64(s.eps),
                F64(s.decay),
                F64(s.step_size),
                F64(s.bc2_sqrt),
                F64(s.grad_scale),
            ];
            Ok((grid_1d(param.len), args.into()))
        }
        Kernel::SumSquares { x, partial } => {
            let args = [p(x)?, I64(x.len as i64), p(partial)?];
            Ok(((SUM_SQUARES_BLOCKS as u32, 1, 1), args.into()))
        }
        Kernel::CastToAct { x, y } => {
            let args = [p(x)?, p(y)?, I64(x.len as i64)];
            Ok((grid_1d(x.len), args.into()))
        }
    }
}

fn attention_grid(t: usize, heads: usize, batch: usize) -> Result<(u32, u32, u32)> {
    let x = u32::try_from(t.div_ceil(8).max(1))
        .map_err(|_| GristError::Usage("cuda: sequence too long".into()))?;
    if heads > 65_535 || batch > 65_535 {
        return Err(GristError::Usage(
            "cuda: more than 65,535 heads or samples in one launch".into(),
        ));
    }
    Ok((x, heads as u32, batch as u32))
}

#[cfg(test)]
mod tests {
    use super::super::super::device::{AdamScalars, AttnShape, BufId, Class};
    use super::super::super::nvrtc;
    use super::*;

    /// The C parameter kinds of `name` as its source declares them.
    fn c_params(name: &str) -> Vec<&'static str> {
        let family = nvrtc::family_of(name).expect("a family");
        let src = nvrtc::program(family).unwrap();
        let at = src
            .match_indices(&format!("{name}("))
            .map(|(i, _)| i)
            .find(|&i| src[..i].ends_with(|c: char| c.is_whitespace()))
            .expect("declared");
        let params = &src[at + name.len() + 1..];
        let params = &params[..params.find(')').unwrap()];
        params
            .split(',')
            .map(|p| {
                let p = p.trim();
                if p.contains('*') {
                    "ptr"
                } else if p.starts_with("long long") {
                    "i64"
                } else if p.starts_with("int") {
                    "i32"
                } else if p.starts_with("float") {
                    "f32"
                } else if p.starts_with("double") {
                    "f64"
                } else {
                    panic!("{name}: parameter `{p}`")
                }
            })
            .collect()
    }

    fn kind(a: &Arg) -> &'static str {
        match a {
            Arg::Ptr(_) => "ptr",
            Arg::I32(_) => "i32",
            Arg::I64(_) => "i64",
            Arg::F32(_) => "f32",
            Arg::F64(_) => "f64",
        }
    }

    /// One launch of every kernel: what the GPU device passes matches each kernel's C
    /// signature, argument for argument (the order and C type), and every grid is in range.
    #[test]
    fn every_launch_passes_what_its_kernel_declares() {
        let v = View {
            buf: BufId(0),
            class: Class::F32,
            offset: 0,
            len: 1 << 20,
        };
        let shape = AttnShape {
            batch: 2,
            tq: 40,
            tk: 40,
            q_offset: 0,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            scale: 0.125,
        };
        let s = AdamScalars {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            decay: 1.0,
            step_size: 1e-3,
            bc2_sqrt: 0.5,
            grad_scale: 1.0,
        };
        let kernels = [
            Kernel::EmbeddingFwd {
                table: v,
                tokens: v,
                x: v,
                rows: 3,
                d: 8,
            },
            Kernel::EmbeddingBwd {
                dx: v,
                order: v,
                seg_start: v,
                seg_token: v,
                dtable: v,
                segments: 2,
                d: 8,
            },
            Kernel::RmsnormFwd {
                x: v,
                w: v,
                y: v,
                rstd: v,
                rows: 3,
                d: 8,
                eps: 1e-5,
            },
            Kernel::RmsnormBwd {
                dy: v,
                x: v,
                w: v,
                rstd: v,
                dx: v,
                dw_part: v,
                rows: 3,
                d: 8,
                rows_per_block: 32,
                accumulate: true,
            },
            Kernel::AddColumnSums {
                part: v,
                out: v,
                parts: 1,
                d: 8,
            },
            Kernel::Rope {
                input: v,
                out: v,
                cos: v,
                sin: v,
                positions: v,
                rows: 3,
                heads: 2,
                head_dim: 8,
                backward: false,
            },
            Kernel::Rope {
                input: v,
                out: v,
                cos: v,
                sin: v,
                positions: v,
                rows: 3,
                heads: 2,
                head_dim: 8,
                backward: true,
            },
            Kernel::SwigluFwd {
                gate: v,
                up: v,
                h: v,
                n: 10,
            },
            Kernel::SwigluBwd {
                dh: v,
                gate: v,
                up: v,
                dgate: v,
                dup: v,
                n: 10,
            },
            Kernel::AttentionFwd {
                q: v,
                k: v,
                v,
                starts: v,
                o: v,
                lse: v,
                shape,
            },
            Kernel::AttentionBwdDelta {
                o: v,
                dout: v,
                delta: v,
                rows: 80,
                heads: 4,
                head_dim: 64,
            },
            Kernel::AttentionBwdDq {
                q: v,
                k: v,
                v,
                starts: v,
                dout: v,
                lse: v,
                delta: v,
                dq: v,
                shape,
            },
            Kernel::AttentionBwdDkdv {
                q: v,
                k: v,
                v,
                starts: v,
                dout: v,
                lse: v,
                delta: v,
                dk: v,
                dv: v,
                shape,
            },
            Kernel::CrossEntropy {
                logits: v,
                targets: v,
                losses: v,
                dlogits: Some(v),
                rows: 3,
                vocab: 50,
                grad_scale: 1.0,
            },
            Kernel::Adamw {
                p: v,
                g: v,
                m: v,
                v,
                scalars: s,
            },
            Kernel::SumSquares { x: v, partial: v },
            Kernel::CastToAct { x: v, y: v },
        ];
        let mut seen = std::collections::BTreeSet::new();
        for k in &kernels {
            let (grid, args) = launch_args(k, &|v| Ok(0x1000 + v.offset as u64)).unwrap();
            let got: Vec<&str> = args.iter().map(kind).collect();
            assert_eq!(got, c_params(k.name()), "{}", k.name());
            assert!(
                grid.0 >= 1 && grid.1 >= 1 && grid.2 >= 1,
                "{}: {grid:?}",
                k.name()
            );
            seen.insert(k.name());
        }
        let all: std::collections::BTreeSet<&str> = super::super::super::device::FAMILIES
            .iter()
            .flat_map(|(_, ks)| ks.iter().copied())
            .collect();
        assert_eq!(seen, all, "every kernel is launched here");
    }
}
