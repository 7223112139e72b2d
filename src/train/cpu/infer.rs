//! Inference with a key/value cache: a prompt is run through in one pass (prefill), then one
//! token at a time. Same operations and weights as training, no saved activations.

use rayon::prelude::*;

use super::gemm::linear;
use super::ops;
use crate::train::config::ModelConfig;
use crate::train::params::Weights;
use crate::train::rope::RopeTable;

pub struct Decoder<'a> {
    cfg: &'a ModelConfig,
    w: &'a Weights,
    rope: RopeTable,
    /// Per layer: keys and values of every position so far, `[pos, kv_heads·head_dim]`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(cfg: &'a ModelConfig, w: &'a Weights) -> Decoder<'a> {
        Decoder {
            rope: RopeTable::new(&cfg.rope, cfg.head_dim()),
            keys: vec![Vec::new(); cfg.num_layers],
            values: vec![Vec::new(); cfg.num_layers],
            len: 0,
            cfg,
            w,
        }
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds `tokens` (positions continue from the cache) and returns the logits after the
    /// last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Vec<f32> {
        let cfg = self.cfg;
        let n = tokens.len();
        assert!(n > 0, "feed needs at least one token");
        let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_heads, cfg.kv_heads());
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let eps = cfg.norm_eps as f32;
        let p0 = self.len;
        self.rope.ensure(p0 + n);
        let mut x = vec![0.0f32; n * d];
        ops::embedding_forward(&self.w.embed, tokens, d, &mut x);
        let mut xn = vec![0.0f32; n * d];
        let mut rstd = vec![0.0f32; n];
        let scale = 1.0 / (hd as f32).sqrt();
        for (li, l) in self.w.layers.iter().enumerate() {
            ops::rmsnorm_forward(&x, &l.attn_norm, eps, d, &mut xn, &mut rstd);
            let mut q = vec![0.0f32; n * qw];
            let mut k = vec![0.0f32; n * kw];
            let mut v = vec![0.0f32; n * kw];
            linear(&xn, &l.q, n, d, qw, &mut q);
            linear(&xn, &l.k, n, d, kw, &mut k);
            linear(&xn, &l.v, n, d, kw, &mut v);
            for i in 0..n {
                for h in q[i * qw..(i + 1) * qw].chunks_mut(hd) {
                    self.rope.rotate(h, p0 + i);
                }
                for h in k[i * kw..(i + 1) * kw].chunks_mut(hd) {
                    self.rope.rotate(h, p0 + i);
                }
            }
            self.keys[li].extend_from_slice(&k);
            self.values[li].extend_from_slice(&v);
            let (keys, values) = (&self.keys[li], &self.values[li]);
            let mut o = vec![0.0f32; n * qw];
            o.par_chunks_mut(hd).enumerate().for_each(|(ih, out)| {
                let (i, h) = (ih / heads, ih % heads);
                let kvh = h / (heads / kv_heads);
                let qv = &q[i * qw + h * hd..i * qw + (h + 1) * hd];
                let last = p0 + i;
                let scores: Vec<f32> = (0..=last)
                    .map(|j| {
                        let kv = &keys[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                        qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f32 = weights.iter().sum();
                out.fill(0.0);
                for (j, p) in weights.iter().enumerate() {
                    let vv = &values[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                    for (o, v) in out.iter_mut().zip(vv) {
                        *o += p / z * v;
                    }
                }
            });
            let mut attn = vec![0.0f32; n * d];
            linear(&o, &l.o, n, qw, d, &mut attn);
            x.iter_mut().zip(&attn).for_each(|(x, a)| *x += a);
            ops::rmsnorm_forward(&x, &l.mlp_norm, eps, d, &mut xn, &mut rstd);
            let mut gate = vec![0.0f32; n * f];
            let mut up = vec![0.0f32; n * f];
            linear(&xn, &l.gate, n, d, f, &mut gate);
            linear(&xn, &l.up, n, d, f, &mut up);
            let mut h = vec![0.0f32; n * f];
            ops::swiglu_forward(&gate, &up, &mut h);
            let mut mlp = vec![0.0f32; n * d];
            linear(&h, &l.down, n, f, d, &mut mlp);
            x.iter_mut().zip(&mlp).for_each(|(x, a)| *x += a);
        }
        self.len += n;
        let last = &x[(n - 1) * d..];
        let mut xf = vec![0.0f32; d];
        let mut r = [0.0f32];
        ops::rmsnorm_forward(last, &self.w.norm, eps, d, &mut xf, &mut r);
        let mut logits = vec![0.0f32; cfg.vocab_size];
        linear(&xf, self.w.output(), 1, d, cfg.vocab_size, &mut logits);
        logits
    }
}
