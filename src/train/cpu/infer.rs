//! Inference with key/value caches. A forward pass takes a ragged batch: each sequence brings
//! its own cache and new tokens (a whole prompt when it starts, one token per step after), and
//! every linear layer runs once over all the rows, so decoding many sequences together costs
//! little more than one. Same operations and weights as training, no saved activations; a row's
//! arithmetic does not depend on the other rows, so batching does not change results.

use rayon::prelude::*;

use super::gemm::linear;
use super::ops;
use crate::train::config::ModelConfig;
use crate::train::params::Weights;
use crate::train::rope::RopeTable;

/// One sequence's keys and values, per layer `[pos, kv_heads·head_dim]`.
#[derive(Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); cfg.num_layers],
            values: vec![Vec::new(); cfg.num_layers],
            len: 0,
        }
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for (k, v) in self.keys.iter_mut().zip(&mut self.values) {
            let width = k.len() / self.len;
            k.truncate(len * width);
            v.truncate(len * width);
        }
        self.len = len;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|k| k.len() * 4)
            .sum()
    }
}

/// A model ready to run forward passes over cached sequences.
pub struct Forward<'a> {
    cfg: &'a ModelConfig,
    w: &'a Weights,
    rope: RopeTable,
}

impl<'a> Forward<'a> {
    pub fn new(cfg: &'a ModelConfig, w: &'a Weights) -> Forward<'a> {
        Forward {
            rope: RopeTable::new(&cfg.rope, cfg.head_dim()),
            cfg,
            w,
        }
    }

    /// Feeds `tokens[s]` (non-empty) to sequence `s`, whose positions continue from its cache,
    /// and returns, per sequence, the logits after its last token.
    pub fn run(&mut self, caches: &mut [&mut KvCache], tokens: &[&[u32]]) -> Vec<Vec<f32>> {
        assert_eq!(caches.len(), tokens.len());
        assert!(tokens.iter().all(|t| !t.is_empty()), "feed needs tokens");
        let cfg = self.cfg;
        let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_heads, cfg.kv_heads());
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let eps = cfg.norm_eps as f32;
        // Row r is token tokens[seq[r]][..] at position pos[r].
        let mut seq = Vec::new();
        let mut pos = Vec::new();
        let mut flat = Vec::new();
        for (s, (c, t)) in caches.iter().zip(tokens).enumerate() {
            for (i, &tok) in t.iter().enumerate() {
                seq.push(s);
                pos.push(c.len + i);
                flat.push(tok);
            }
        }
        let n = flat.len();
        self.rope.ensure(pos.iter().max().map_or(0, |p| p + 1));
        let mut x = vec![0.0f32; n * d];
        ops::embedding_forward(&self.w.embed, &flat, d, &mut x);
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
            for r in 0..n {
                for h in q[r * qw..(r + 1) * qw].chunks_mut(hd) {
                    self.rope.rotate(h, pos[r]);
                }
                for h in k[r * kw..(r + 1) * kw].chunks_mut(hd) {
                    self.rope.rotate(h, pos[r]);
                }
            }
            for r in 0..n {
                let c = &mut caches[seq[r]];
                c.keys[li].extend_from_slice(&k[r * kw..(r + 1) * kw]);
                c.values[li].extend_from_slice(&v[r * kw..(r + 1) * kw]);
            }
            let layer_kv: Vec<(&[f32], &[f32])> = caches
                .iter()
                .map(|c| (c.keys[li].as_slice(), c.values[li].as_slice()))
                .collect();
            let mut o = vec![0.0f32; n * qw];
            o.par_chunks_mut(hd).enumerate().for_each(|(rh, out)| {
                let (r, h) = (rh / heads, rh % heads);
                let kvh = h / (heads / kv_heads);
                let (keys, values) = layer_kv[seq[r]];
                let qv = &q[r * qw + h * hd..r * qw + (h + 1) * hd];
                let last = pos[r];
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
        for (c, t) in caches.iter_mut().zip(tokens) {
            c.len += t.len();
        }
        // The last row of each sequence through the final norm and the output layer.
        let b = tokens.len();
        let mut last = Vec::with_capacity(b * d);
        let mut end = 0;
        for t in tokens {
            end += t.len();
            last.extend_from_slice(&x[(end - 1) * d..end * d]);
        }
        let mut xf = vec![0.0f32; b * d];
        let mut r = vec![0.0f32; b];
        ops::rmsnorm_forward(&last, &self.w.norm, eps, d, &mut xf, &mut r);
        let vocab = cfg.vocab_size;
        let mut logits = vec![0.0f32; b * vocab];
        linear(&xf, self.w.output(), b, d, vocab, &mut logits);
        logits.chunks(vocab).map(<[f32]>::to_vec).collect()
    }
}

/// One sequence decoded alone.
pub struct Decoder<'a> {
    forward: Forward<'a>,
    cache: KvCache,
}

impl<'a> Decoder<'a> {
    pub fn new(cfg: &'a ModelConfig, w: &'a Weights) -> Decoder<'a> {
        Decoder {
            forward: Forward::new(cfg, w),
            cache: KvCache::new(cfg),
        }
    }

    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.cache.len
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Feeds `tokens` (positions continue from the cache) and returns the logits after the
    /// last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Vec<f32> {
        let mut out = self.forward.run(&mut [&mut self.cache], &[tokens]);
        out.pop().expect("one sequence")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_gives_each_sequence_what_it_gets_alone() {
        let cfg = crate::train::params::tests::tiny();
        let w = Weights::init(&cfg, 3, 0.5);
        let prompts: [&[u32]; 3] = [&[1, 5, 9, 2], &[7], &[3, 3, 4, 8, 1, 0, 2, 6, 5, 9, 10]];
        let alone: Vec<(Vec<f32>, Vec<f32>)> = prompts
            .iter()
            .map(|p| {
                let mut dec = Decoder::new(&cfg, &w);
                let a = dec.feed(p);
                (a, dec.feed(&[4]))
            })
            .collect();
        let mut fwd = Forward::new(&cfg, &w);
        let mut caches: Vec<KvCache> = prompts.iter().map(|_| KvCache::new(&cfg)).collect();
        let mut refs: Vec<&mut KvCache> = caches.iter_mut().collect();
        let first = fwd.run(&mut refs, &prompts);
        let second = fwd.run(&mut refs, &[&[4], &[4], &[4]]);
        for (s, (a, b)) in alone.iter().enumerate() {
            assert_eq!(&first[s], a, "prefill of sequence {s}");
            assert_eq!(&second[s], b, "step of sequence {s}");
        }
        // A cache cut back to a prefix continues like a fresh one fed that prefix.
        let mut c = caches[2].clone();
        c.truncate(3);
        let mut fresh = Decoder::new(&cfg, &w);
        fresh.feed(&prompts[2][..3]);
        let resumed = fwd.run(&mut [&mut c], &[&prompts[2][3..]]);
        assert_eq!(resumed[0], fresh.feed(&prompts[2][3..]));
    }
}
