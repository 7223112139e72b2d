//! Inference with the keys and values cached on the device (`grist generate --backend cuda`):
//! one sequence, its prompt fed in one forward (every row through the GEMMs, causal attention
//! over the prompt), then one token per step attending to the cache. The layers are the
//! training forward's kernels; RoPE writes each new key straight into its cache row and the
//! value GEMM writes into the value cache, so nothing is copied.

use super::device::{AttnShape, Class, Device, Gemm, Kernel, View};
use super::model::RopeViews;
use super::plan::{ALIGN, ParamLayout, field};
use crate::error::{GristError, Result};
use crate::train::config::ModelConfig;
use crate::train::generate::Feed;
use crate::train::params::Weights;
use crate::train::rope::RopeTable;

/// Scratch for up to `rows` new tokens per feed.
struct Scratch {
    rows: usize,
    x: View,
    x_mid: View,
    xn: View,
    q32: View,
    k32: View,
    q: View,
    o: View,
    lse: View,
    gate: View,
    up: View,
    h: View,
    rstd: View,
    logits: View,
    tokens: View,
    positions: View,
    starts: View,
}

pub struct DeviceDecoder<D: Device> {
    cfg: ModelConfig,
    dev: D,
    params: ParamLayout,
    /// Per layer, keys and values `[capacity, kv_heads · head_dim]`.
    cache: Vec<(View, View)>,
    capacity: usize,
    len: usize,
    scratch: Scratch,
    rope: RopeViews,
}

fn take(dev: &mut dyn Device, class: Class, len: usize) -> Result<View> {
    let len = len.max(1);
    let buf = dev.alloc(class, len.div_ceil(ALIGN) * ALIGN)?;
    Ok(View {
        buf,
        class,
        offset: 0,
        len,
    })
}

impl<D: Device> DeviceDecoder<D> {
    /// A decoder for sequences of up to `capacity` tokens, feeding at most `max_feed` at once.
    pub fn new(
        cfg: ModelConfig,
        weights: &Weights,
        mut dev: D,
        capacity: usize,
        max_feed: usize,
    ) -> Result<Self> {
        super::check_model(&cfg)?;
        let params = ParamLayout::new(&cfg, &mut dev, 1)?;
        let flat = params.flatten(weights)?;
        dev.upload(params.all(0), &flat)?;
        dev.launch(&Kernel::CastToAct {
            x: params.all(0),
            y: params.all_copies(),
        })?;
        let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (qw, kw) = (cfg.num_heads * hd, cfg.kv_heads() * hd);
        let n = max_feed.max(1);
        let mut cache = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            cache.push((
                take(&mut dev, Class::Act, capacity * kw)?,
                take(&mut dev, Class::Act, capacity * kw)?,
            ));
        }
        let scratch = Scratch {
            rows: n,
            x: take(&mut dev, Class::F32, n * d)?,
            x_mid: take(&mut dev, Class::F32, n * d)?,
            xn: take(&mut dev, Class::Act, n * d)?,
            q32: take(&mut dev, Class::F32, n * qw)?,
            k32: take(&mut dev, Class::F32, n * kw)?,
            q: take(&mut dev, Class::Act, n * qw)?,
            o: take(&mut dev, Class::Act, n * qw)?,
            lse: take(&mut dev, Class::F32, n * cfg.num_heads)?,
            gate: take(&mut dev, Class::Act, n * f)?,
            up: take(&mut dev, Class::Act, n * f)?,
            h: take(&mut dev, Class::Act, n * f)?,
            rstd: take(&mut dev, Class::F32, n)?,
            logits: take(&mut dev, Class::F32, cfg.vocab_size)?,
            tokens: take(&mut dev, Class::Int, n)?,
            positions: take(&mut dev, Class::Int, n)?,
            starts: take(&mut dev, Class::Int, n)?,
        };
        let mut table = RopeTable::new(&cfg.rope, hd);
        table.ensure(capacity.max(1));
        let half = hd / 2;
        let (cos, sin) = table.tables();
        let (cv, sv) = (
            take(&mut dev, Class::F32, capacity.max(1) * half)?,
            take(&mut dev, Class::F32, capacity.max(1) * half)?,
        );
        dev.upload(cv, &cos[..cv.len])?;
        dev.upload(sv, &sin[..sv.len])?;
        Ok(DeviceDecoder {
            cfg,
            dev,
            params,
            cache,
            capacity,
            len: 0,
            scratch,
            rope: RopeViews {
                cos: cv,
                sin: sv,
                positions: capacity,
            },
        })
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn rmsnorm(&mut self, x: View, w: usize, y: View, rows: usize) -> Result<()> {
        let d = self.cfg.hidden_size;
        self.dev.launch(&Kernel::RmsnormFwd {
            x: x.sub(0, rows * d),
            w: self.params.param(w),
            y: y.sub(0, rows * d),
            rstd: self.scratch.rstd.sub(0, rows),
            rows,
            d,
            eps: self.cfg.norm_eps as f32,
        })
    }

    /// Feeds `tokens` at positions continuing the cache; the logits after the last one.
    pub fn feed_tokens(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let m = tokens.len();
        if m == 0 || m > self.scratch.rows {
            return Err(GristError::Usage(format!(
                "cuda decoder: {m} tokens in one feed (1..={})",
                self.scratch.rows
            )));
        }
        if self.len + m > self.capacity {
            return Err(GristError::Usage(format!(
                "cuda decoder: {} tokens exceed the {} it was made for",
                self.len + m,
                self.capacity
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(GristError::Usage(format!(
                "token {t} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let cfg = self.cfg.clone();
        let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_heads, cfg.kv_heads());
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let p0 = self.len;
        let s = &self.scratch;
        let (tok_v, pos_v, start_v) = (
            s.tokens.sub(0, m),
            s.positions.sub(0, m),
            s.starts.sub(0, m),
        );
        let positions: Vec<u32> = (p0..p0 + m).map(|p| p as u32).collect();
        self.dev.upload_int(tok_v, tokens)?;
        self.dev.upload_int(pos_v, &positions)?;
        self.dev.upload_int(start_v, &vec![0; m])?;
        let s = &self.scratch;
        let (x, x_mid, xn) = (s.x.sub(0, m * d), s.x_mid.sub(0, m * d), s.xn.sub(0, m * d));
        let (q32, k32, q, o) = (
            s.q32.sub(0, m * qw),
            s.k32.sub(0, m * kw),
            s.q.sub(0, m * qw),
            s.o.sub(0, m * qw),
        );
        let (lse, gate, up, h) = (
            s.lse.sub(0, m * heads),
            s.gate.sub(0, m * f),
            s.up.sub(0, m * f),
            s.h.sub(0, m * f),
        );
        let p = &self.params;
        self.dev.launch(&Kernel::EmbeddingFwd {
            table: p.param(ParamLayout::EMBED),
            tokens: tok_v,
            x,
            rows: m,
            d,
        })?;
        let shape = AttnShape {
            batch: 1,
            tq: m,
            tk: p0 + m,
            q_offset: p0,
            heads,
            kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        for l in 0..cfg.num_layers {
            let t: [usize; 9] = std::array::from_fn(|fld| self.params.layer(l, fld));
            let w: [View; 9] = std::array::from_fn(|fld| self.params.copy(t[fld]));
            let (wq, wk, wv, wo) = (w[field::Q], w[field::K], w[field::V], w[field::O]);
            let (wg, wu, wd) = (w[field::GATE], w[field::UP], w[field::DOWN]);
            let (kc, vc) = self.cache[l];
            self.rmsnorm(x, t[field::ATTN_NORM], xn, m)?;
            self.dev.gemm(&Gemm::linear(xn, wq, m, d, qw, q32))?;
            self.rope(q32, q, m, heads)?;
            self.dev.gemm(&Gemm::linear(xn, wk, m, d, kw, k32))?;
            self.rope(k32, kc.sub(p0 * kw, m * kw), m, kv_heads)?;
            self.dev
                .gemm(&Gemm::linear(xn, wv, m, d, kw, vc.sub(p0 * kw, m * kw)))?;
            self.dev.launch(&Kernel::AttentionFwd {
                q,
                k: kc.sub(0, (p0 + m) * kw),
                v: vc.sub(0, (p0 + m) * kw),
                starts: start_v,
                o,
                lse,
                shape,
            })?;
            self.dev
                .gemm(&Gemm::linear(o, wo, m, qw, d, x_mid).plus(x))?;
            self.rmsnorm(x_mid, t[field::MLP_NORM], xn, m)?;
            self.dev.gemm(&Gemm::linear(xn, wg, m, d, f, gate))?;
            self.dev.gemm(&Gemm::linear(xn, wu, m, d, f, up))?;
            self.dev.launch(&Kernel::SwigluFwd {
                gate,
                up,
                h,
                n: m * f,
            })?;
            self.dev
                .gemm(&Gemm::linear(h, wd, m, f, d, x).plus(x_mid))?;
        }
        // Only the last row's logits are wanted.
        let last = x.sub((m - 1) * d, d);
        self.rmsnorm(last, self.params.final_norm(), xn, 1)?;
        let logits = self.scratch.logits.sub(0, cfg.vocab_size);
        let head = self.params.copy(self.params.head());
        self.dev.gemm(&Gemm::linear(
            xn.sub(0, d),
            head,
            1,
            d,
            cfg.vocab_size,
            logits,
        ))?;
        self.len += m;
        self.dev.download(logits)
    }

    fn rope(&mut self, input: View, out: View, rows: usize, heads: usize) -> Result<()> {
        let hd = self.cfg.head_dim();
        self.dev.launch(&Kernel::Rope {
            input,
            out,
            cos: self.rope.cos,
            sin: self.rope.sin,
            positions: self.scratch.positions.sub(0, rows),
            rows,
            heads,
            head_dim: hd,
            backward: false,
        })
    }
}

impl<D: Device> Feed for DeviceDecoder<D> {
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.feed_tokens(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::super::host::HostDevice;
    use super::*;
    use crate::train::config::Precision;
    use crate::train::cpu::infer::Decoder;

    /// The device decoder (f32 reference device) gives the CPU decoder's logits, prompt and
    /// steps, and greedy generation the same tokens.
    #[test]
    fn device_decoding_gives_the_cpu_decoders_logits() {
        let cfg = ModelConfig {
            tie_embeddings: true,
            ..crate::train::params::tests::tiny()
        };
        let w = Weights::init(&cfg, 4, 0.5);
        let prompt = [3u32, 1, 4, 1, 5, 9];
        let mut cpu = Decoder::new(&cfg, &w);
        let mut dev =
            DeviceDecoder::new(cfg.clone(), &w, HostDevice::new(Precision::F32), 12, 6).unwrap();
        let close = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
        };
        assert!(close(
            &dev.feed_tokens(&prompt).unwrap(),
            &cpu.feed(&prompt)
        ));
        for t in [2u32, 6, 5] {
            assert!(close(&dev.feed_tokens(&[t]).unwrap(), &cpu.feed(&[t])));
        }
        assert_eq!(dev.len(), 9);
        let e = dev.feed_tokens(&[1, 2, 3, 4]).unwrap_err().to_string();
        assert!(e.contains("exceed"), "{e}");
    }
}
