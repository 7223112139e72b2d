//! Sampling from a model: greedy (temperature 0), or temperature, then top-k, then top-p
//! (nucleus), the order `transformers`' `generate` applies them; seeded, so a run repeats.

use super::config::ModelConfig;
use super::cpu::infer::Decoder;
use super::params::Weights;
use crate::error::Result;
use crate::util::SplitMix64;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0: greedy (the first of equal maxima, as `argmax` does).
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: all).
    pub top_p: f32,
    pub max_new_tokens: usize,
    /// Generation stops after any of these (the EOS id, by default).
    pub stop_ids: Vec<u32>,
    pub seed: u64,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

pub struct Generated {
    pub ids: Vec<u32>,
    pub finish: Finish,
    /// The next-token logits after the prompt.
    pub prompt_logits: Vec<f32>,
}

fn uniform(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Picks the next token from `logits`.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut SplitMix64) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &z) in logits.iter().enumerate() {
            if z > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if p.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if p.top_k > 0 {
        order.truncate(p.top_k.max(1));
    }
    let max = logits[order[0] as usize] / p.temperature;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i as usize] / p.temperature - max) as f64).exp())
        .collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= z);
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= z);
    }
    let mut u = uniform(rng);
    for (i, q) in probs.iter().enumerate() {
        if u < *q {
            return order[i];
        }
        u -= q;
    }
    order[probs.len() - 1]
}

/// A model with a key/value cache: feeds tokens, answers the logits after the last.
pub trait Feed {
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
}

impl Feed for Decoder<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(Decoder::feed(self, tokens))
    }
}

/// Continues `prompt` (non-empty) with up to `p.max_new_tokens` tokens, on the CPU.
pub fn generate(cfg: &ModelConfig, w: &Weights, prompt: &[u32], p: &SamplingParams) -> Generated {
    generate_with(&mut Decoder::new(cfg, w), prompt, p).expect("the CPU decoder does not fail")
}

/// Continues `prompt` (non-empty) with up to `p.max_new_tokens` tokens from `dec`.
pub fn generate_with(dec: &mut dyn Feed, prompt: &[u32], p: &SamplingParams) -> Result<Generated> {
    let mut rng = SplitMix64(p.seed ^ 0x5a3b1e);
    let mut logits = dec.feed(prompt)?;
    let prompt_logits = logits.clone();
    let mut ids = Vec::new();
    let mut finish = Finish::Length;
    while ids.len() < p.max_new_tokens {
        let next = sample(&logits, p, &mut rng);
        ids.push(next);
        if p.stop_ids.contains(&next) {
            finish = Finish::Stop;
            break;
        }
        if ids.len() == p.max_new_tokens {
            break;
        }
        logits = dec.feed(&[next])?;
    }
    Ok(Generated {
        ids,
        finish,
        prompt_logits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            max_new_tokens: 1,
            stop_ids: vec![],
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = SplitMix64(1);
        assert_eq!(
            sample(&[0.1, 2.0, 2.0, -1.0], &params(0.0, 0, 1.0), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let logits = [1.0, 3.0, 2.9, -5.0];
        let mut rng = SplitMix64(2);
        for _ in 0..50 {
            assert_eq!(sample(&logits, &params(1.0, 1, 1.0), &mut rng), 1);
            let t = sample(&logits, &params(1.0, 0, 0.5), &mut rng);
            assert!(t == 1 || t == 2, "{t}");
        }
        // Full sampling reaches the unlikely token 0 sometimes, never beyond the vocabulary.
        let seen: std::collections::BTreeSet<u32> = (0..2000)
            .map(|_| sample(&logits, &params(1.0, 0, 1.0), &mut rng))
            .collect();
        assert!(seen.contains(&0) && seen.iter().all(|&t| t < 4));
    }
}
