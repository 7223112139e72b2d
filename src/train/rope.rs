//! Rotary position embedding in the `rotate_half` layout of `transformers`' Llama (dimension i
//! pairs with i + d/2), with the frequency scalings of `modeling_rope_utils`. Angles are formed
//! in f64, so long positions keep their precision.

use super::config::{Rope, RopeScaling};

/// Static NTK-aware scaling's base: theta · factor^(d/(d−2)).
pub fn ntk_theta(theta: f64, factor: f64, head_dim: usize) -> f64 {
    let d = head_dim as f64;
    theta * factor.powf(d / (d - 2.0))
}

/// The inverse frequencies (d/2 of them) and the factor that scales cos and sin (YaRN's
/// attention scaling; 1 otherwise).
pub fn inv_freq(rope: &Rope, head_dim: usize) -> (Vec<f64>, f64) {
    let d = head_dim as f64;
    let half = head_dim / 2;
    let base_freqs = |base: f64| -> Vec<f64> {
        (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f64 / d))
            .collect()
    };
    match &rope.scaling {
        RopeScaling::None => (base_freqs(rope.theta), 1.0),
        RopeScaling::Linear { factor } => (
            base_freqs(rope.theta).iter().map(|f| f / factor).collect(),
            1.0,
        ),
        RopeScaling::Ntk { factor } => (base_freqs(ntk_theta(rope.theta, *factor, head_dim)), 1.0),
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
        } => {
            let orig = *original_max_position_embeddings as f64;
            let correction_dim = |rotations: f64| {
                d * (orig / (rotations * std::f64::consts::TAU)).ln() / (2.0 * rope.theta.ln())
            };
            let low = correction_dim(*beta_fast).floor().max(0.0);
            let high = correction_dim(*beta_slow).ceil().min(d - 1.0);
            let high = if low == high { high + 0.001 } else { high };
            let freqs = base_freqs(rope.theta);
            let inv = freqs
                .iter()
                .enumerate()
                .map(|(i, &extrapolation)| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation_weight = 1.0 - ramp;
                    let interpolation = extrapolation / factor;
                    interpolation * (1.0 - extrapolation_weight)
                        + extrapolation * extrapolation_weight
                })
                .collect();
            let scale = attention_factor.unwrap_or(if *factor <= 1.0 {
                1.0
            } else {
                0.1 * factor.ln() + 1.0
            });
            (inv, scale)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let inv = base_freqs(rope.theta)
                .into_iter()
                .map(|f| {
                    let wavelen = std::f64::consts::TAU / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect();
            (inv, 1.0)
        }
    }
}

/// cos and sin for positions 0..len, `half` values per position, scaled by the attention
/// factor; grown on demand.
#[derive(Debug, Clone)]
pub struct RopeTable {
    inv_freq: Vec<f64>,
    scale: f64,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    pub fn new(rope: &Rope, head_dim: usize) -> RopeTable {
        let (inv_freq, scale) = inv_freq(rope, head_dim);
        RopeTable {
            inv_freq,
            scale,
            cos: Vec::new(),
            sin: Vec::new(),
        }
    }

    fn half(&self) -> usize {
        self.inv_freq.len()
    }

    /// Makes sure positions below `len` are in the table.
    pub fn ensure(&mut self, len: usize) {
        let half = self.half();
        let have = self.cos.len() / half.max(1);
        for pos in have..len {
            for &f in &self.inv_freq {
                let angle = pos as f64 * f;
                self.cos.push((angle.cos() * self.scale) as f32);
                self.sin.push((angle.sin() * self.scale) as f32);
            }
        }
    }

    /// Positions in the table.
    pub fn len(&self) -> usize {
        self.cos.len() / self.half().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }

    /// The cos and sin tables, `head_dim / 2` values per position (what the CUDA backend
    /// uploads).
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    fn at(&self, pos: usize) -> (&[f32], &[f32]) {
        let half = self.half();
        (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        )
    }

    /// Rotates one head's vector `x` (head_dim values) in place for position `pos`
    /// (`ensure` must cover it).
    pub fn rotate(&self, x: &mut [f32], pos: usize) {
        let half = self.half();
        let (cos, sin) = self.at(pos);
        let (a, b) = x.split_at_mut(half);
        for i in 0..half {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * cos[i] - x1 * sin[i];
            b[i] = x1 * cos[i] + x0 * sin[i];
        }
    }

    /// The backward of [`rotate`](Self::rotate): applies the transposed rotation to the
    /// gradient `dx` in place.
    pub fn rotate_back(&self, dx: &mut [f32], pos: usize) {
        let half = self.half();
        let (cos, sin) = self.at(pos);
        let (a, b) = dx.split_at_mut(half);
        for i in 0..half {
            let (d0, d1) = (a[i], b[i]);
            a[i] = d0 * cos[i] + d1 * sin[i];
            b[i] = d1 * cos[i] - d0 * sin[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope {
            theta: 10_000.0,
            scaling,
        }
    }

    #[test]
    fn linear_divides_every_frequency() {
        let (base, _) = inv_freq(&rope(RopeScaling::None), 16);
        let (lin, s) = inv_freq(&rope(RopeScaling::Linear { factor: 4.0 }), 16);
        for (b, l) in base.iter().zip(&lin) {
            assert!((b / 4.0 - l).abs() < 1e-15);
        }
        assert_eq!(s, 1.0);
    }

    #[test]
    fn llama3_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let (base, _) = inv_freq(&rope(RopeScaling::None), 128);
        let (l3, _) = inv_freq(&rope(scaling), 128);
        assert_eq!(base[0], l3[0]);
        assert!((base[63] / 8.0 - l3[63]).abs() < 1e-18);
    }

    #[test]
    fn rotate_back_inverts_rotate_up_to_scale() {
        let mut t = RopeTable::new(&rope(RopeScaling::None), 8);
        t.ensure(10);
        let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.3 - 1.0).collect();
        let mut y = x.clone();
        t.rotate(&mut y, 7);
        t.rotate_back(&mut y, 7);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
