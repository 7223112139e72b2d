//! Inference with key/value caches. A forward pass takes a ragged batch: each sequence brings
//! its own cache and new tokens (a whole prompt when it starts, one token per step after), and
//! every linear layer runs once over all the rows, so decoding many sequences together costs
//! little more than one. The layers are the training forward's ([`super::model::layers`]): only
//! the rows' kernels and their attention over the cache differ ([`CachedRows`]), and nothing is
//! kept for a backward.
//!
//! Rows of a multi-token feed (or a first feed) go through the GEMM kernel, rows of a one-token
//! decoding step through a GEMV kernel that reads each weight once without packing. Each kernel's
//! per-row arithmetic is independent of the other rows, so batching never changes a result:
//! `grist serve` under load answers exactly what `grist generate` does alone.

use rayon::prelude::*;

use super::gemm::{linear_gemm, linear_gemv};
use super::model::{Rows, head, layers};
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
        let d = cfg.hidden_size;
        // Row r is a token of sequence seq[r] at position pos[r]; prefill rows come first, then
        // one row per decoding sequence, so each block takes its own kernel.
        let is_decoding: Vec<bool> = (0..tokens.len())
            .map(|s| tokens[s].len() == 1 && caches[s].len > 0)
            .collect();
        let decoding = |s: usize| is_decoding[s];
        let order: Vec<usize> = (0..tokens.len())
            .filter(|&s| !decoding(s))
            .chain((0..tokens.len()).filter(|&s| decoding(s)))
            .collect();
        let mut seq = Vec::new();
        let mut pos = Vec::new();
        let mut flat = Vec::new();
        let mut last_row = vec![0; tokens.len()];
        for &s in &order {
            for (i, &tok) in tokens[s].iter().enumerate() {
                seq.push(s);
                pos.push((caches[s].len + i) as u32);
                flat.push(tok);
            }
            last_row[s] = flat.len() - 1;
        }
        let n = flat.len();
        let split = order
            .iter()
            .take_while(|&&s| !decoding(s))
            .map(|&s| tokens[s].len())
            .sum::<usize>();
        self.rope
            .ensure(pos.iter().max().map_or(0, |&p| p as usize + 1));
        let mut x = vec![0.0f32; n * d];
        ops::embedding_forward(&self.w.embed, &flat, d, &mut x);
        let mut rows = CachedRows {
            cfg,
            caches,
            seq: &seq,
            pos: &pos,
            split,
        };
        let x = layers(cfg, self.w, &self.rope, x, &pos, &mut rows, None);
        for (c, t) in caches.iter_mut().zip(tokens) {
            c.len += t.len();
        }
        // The last row of each sequence through the final norm and the output layer, prefill
        // sequences first again (each with the kernel its rows had).
        let mut last = Vec::with_capacity(tokens.len() * d);
        for &s in &order {
            let r = last_row[s];
            last.extend_from_slice(&x[r * d..(r + 1) * d]);
        }
        let prefilling = order.iter().take_while(|&&s| !decoding(s)).count();
        let b = tokens.len();
        let kernel = |x: &[f32], w: &[f32], k: usize, out: usize, y: &mut [f32]| {
            linear_split(x, w, prefilling, b, k, out, y)
        };
        let (logits, _, _) = head(cfg, self.w, &last, &kernel);
        let vocab = cfg.vocab_size;
        let mut out = vec![Vec::new(); b];
        for (i, &s) in order.iter().enumerate() {
            out[s] = logits[i * vocab..(i + 1) * vocab].to_vec();
        }
        out
    }
}

/// Inference's rows: new tokens of several sequences, prefill rows through the GEMM and one-token
/// decoding rows through the GEMV; each row attends to its sequence's cached keys and values up
/// to its own position (the new ones are cached first).
struct CachedRows<'a, 'c> {
    cfg: &'a ModelConfig,
    caches: &'a mut [&'c mut KvCache],
    /// The sequence and position of each row.
    seq: &'a [usize],
    pos: &'a [u32],
    /// Rows before this one are prefill rows.
    split: usize,
}

impl Rows for CachedRows<'_, '_> {
    fn linear(&self, x: &[f32], w: &[f32], k: usize, n: usize, y: &mut [f32]) {
        linear_split(x, w, self.split, self.seq.len(), k, n, y);
    }

    fn attend(&mut self, li: usize, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32]) -> Vec<f32> {
        let cfg = self.cfg;
        let hd = cfg.head_dim();
        let (heads, kv_heads) = (cfg.num_heads, cfg.kv_heads());
        let (qw, kw) = (heads * hd, kv_heads * hd);
        let (seq, pos) = (self.seq, self.pos);
        for r in 0..seq.len() {
            let c = &mut self.caches[seq[r]];
            c.keys[li].extend_from_slice(&k[r * kw..(r + 1) * kw]);
            c.values[li].extend_from_slice(&v[r * kw..(r + 1) * kw]);
        }
        let layer_kv: Vec<(&[f32], &[f32])> = self
            .caches
            .iter()
            .map(|c| (c.keys[li].as_slice(), c.values[li].as_slice()))
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        o.par_chunks_mut(hd).enumerate().for_each(|(rh, out)| {
            let (r, h) = (rh / heads, rh % heads);
            let kvh = h / (heads / kv_heads);
            let (keys, values) = layer_kv[seq[r]];
            let qv = &q[r * qw + h * hd..r * qw + (h + 1) * hd];
            let last = pos[r] as usize;
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
        Vec::new()
    }
}

/// `y = x · wᵀ` for `m` rows: the first `split` (prefill rows) through the GEMM kernel, the rest
/// (decoding rows) through the GEMV kernel.
fn linear_split(x: &[f32], w: &[f32], split: usize, m: usize, k: usize, n: usize, y: &mut [f32]) {
    let (xa, xb) = x.split_at(split * k);
    let (ya, yb) = y.split_at_mut(split * n);
    if split > 0 {
        linear_gemm(xa, w, split, k, n, ya);
    }
    if split < m {
        linear_gemv(xb, w, m - split, k, n, yb);
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

    /// Inference is the training forward with cached attention: the logits after each token of
    /// a prompt fed one by one equal the training forward's (within float rounding: the two
    /// attention kernels sum in different orders).
    #[test]
    fn cached_decoding_gives_the_training_forwards_logits() {
        let cfg = crate::train::params::tests::tiny();
        let w = Weights::init(&cfg, 5, 0.5);
        let tokens: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6];
        let t = tokens.len();
        let batch = crate::train::backend::Batch {
            batch: 1,
            seq: t,
            inputs: tokens.clone(),
            targets: vec![-100; t],
            positions: (0..t as u32).collect(),
            starts: vec![0; t],
        };
        let mut rope = RopeTable::new(&cfg.rope, cfg.head_dim());
        rope.ensure(t);
        let (_, want) = super::super::model::forward(&cfg, &w, &rope, &batch);
        let mut dec = Decoder::new(&cfg, &w);
        let v = cfg.vocab_size;
        for (i, &tok) in tokens.iter().enumerate() {
            let got = dec.feed(&[tok]);
            let row = &want[i * v..(i + 1) * v];
            let worst = got
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "token {i}: {worst}");
        }
    }
}
