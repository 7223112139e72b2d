//! MinHash signatures as datatrove 0.10.1 computes them (tests/parity/MINHASH.md §2–§5): spaCy
//! words of the simplified text, n-word shingles joined by one space, a 64-bit shingle hash,
//! permutations `((h·a mod 2^64) + b mod 2^64) mod (2^61 − 1)` with `a`, `b` drawn by numpy's
//! legacy `RandomState(seed).randint`, and the minimum over shingles of each permutation.

use serde::{Deserialize, Serialize};

use super::simplify::simplify_text;

pub const MERSENNE_PRIME: u64 = (1 << 61) - 1;

/// The shingle hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShingleHash {
    /// XXH64, seed 0, of the UTF-8 bytes (datatrove's default `xxhash`).
    Xxhash,
    /// The first 8 bytes of SHA-1, little-endian (datatrove's `sha1`, FineWeb's setting).
    Sha1,
}

impl ShingleHash {
    pub fn hash(self, shingle: &str) -> u64 {
        match self {
            ShingleHash::Xxhash => xxhash_rust::xxh64::xxh64(shingle.as_bytes(), 0),
            ShingleHash::Sha1 => {
                use sha1::Digest;
                let digest = sha1::Sha1::digest(shingle.as_bytes());
                u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
            }
        }
    }
}

/// `x mod (2^61 − 1)` without a division: 2^61 ≡ 1, so the high bits fold onto the low ones.
#[inline]
pub fn mod_mersenne(x: u64) -> u64 {
    let folded = (x & MERSENNE_PRIME) + (x >> 61);
    if folded >= MERSENNE_PRIME {
        folded - MERSENNE_PRIME
    } else {
        folded
    }
}

/// `sig[j] = min over shingles s of mod_mersenne(s·a[j] + b[j])` (wrapping, as numpy's uint64).
/// The loop over permutations vectorizes; on x86-64 it is compiled for AVX-512 and AVX2 too
/// and the best one the CPU has is used (same arithmetic, same result).
pub fn min_hashes(shingles: &[u64], a: &[u64], b: &[u64], sig: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { min_hashes_avx512(shingles, a, b, sig) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { min_hashes_avx2(shingles, a, b, sig) };
        }
    }
    min_hashes_portable(shingles, a, b, sig)
}

#[inline(always)]
fn min_hashes_portable(shingles: &[u64], a: &[u64], b: &[u64], sig: &mut [u64]) {
    let n = sig.len().min(a.len()).min(b.len());
    let (a, b, sig) = (&a[..n], &b[..n], &mut sig[..n]);
    for &s in shingles {
        for j in 0..n {
            let v = mod_mersenne(s.wrapping_mul(a[j]).wrapping_add(b[j]));
            sig[j] = sig[j].min(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn min_hashes_avx512(shingles: &[u64], a: &[u64], b: &[u64], sig: &mut [u64]) {
    min_hashes_portable(shingles, a, b, sig)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn min_hashes_avx2(shingles: &[u64], a: &[u64], b: &[u64], sig: &mut [u64]) {
    min_hashes_portable(shingles, a, b, sig)
}

/// numpy's MT19937 (`RandomState(seed)`), enough of it for `randint(..., dtype=uint64)`.
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// The first draw is the high half.
    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        (hi << 32) | u64::from(self.next_u32())
    }

    /// `randint(low, high)` for uint64 by masked rejection (`high` exclusive).
    fn randint(&mut self, low: u64, high: u64) -> u64 {
        let range = high - 1 - low;
        let mask = match range {
            0 => 0,
            r => u64::MAX >> r.leading_zeros(),
        };
        loop {
            let v = self.next_u64() & mask;
            if v <= range {
                return low + v;
            }
        }
    }
}

/// The permutation parameters: `a` in [1, p − 1), then `b` in [0, p − 1), from one generator.
pub fn permutations(seed: u32, count: usize) -> (Vec<u64>, Vec<u64>) {
    let mut rng = Mt19937::new(seed);
    let a = (0..count).map(|_| rng.randint(1, MERSENNE_PRIME)).collect();
    let b = (0..count).map(|_| rng.randint(0, MERSENNE_PRIME)).collect();
    (a, b)
}

/// Everything that fixes a signature.
#[derive(Debug, Clone)]
pub struct MinHasher {
    pub n_grams: usize,
    pub hash: ShingleHash,
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(n_grams: usize, num_hashes: usize, seed: u32, hash: ShingleHash) -> Self {
        let (a, b) = permutations(seed, num_hashes);
        MinHasher {
            n_grams,
            hash,
            a,
            b,
        }
    }

    pub fn num_hashes(&self) -> usize {
        self.a.len()
    }

    pub fn parameters(&self) -> (&[u64], &[u64]) {
        (&self.a, &self.b)
    }

    /// The shingle hashes of `text`: one per window of `n_grams` words (none when it has fewer).
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        let simplified = simplify_text(text);
        let words = crate::text::words(&simplified);
        if words.len() < self.n_grams {
            return Vec::new();
        }
        // A shingle is its words joined by one space. Where the simplified text already has
        // them so (one space between each), the shingle is a slice of it and needs no copy.
        let base = simplified.as_ptr() as usize;
        let span = |w: &str| {
            (
                w.as_ptr() as usize - base,
                w.as_ptr() as usize - base + w.len(),
            )
        };
        let bytes = simplified.as_bytes();
        // bad_gaps[i]: gaps before word i that are not exactly one space.
        let mut bad_gaps = Vec::with_capacity(words.len() + 1);
        bad_gaps.push(0u32);
        for pair in words.windows(2) {
            let (_, end) = span(pair[0]);
            let (next, _) = span(pair[1]);
            let single_space = next == end + 1 && bytes[end] == b' ';
            bad_gaps.push(bad_gaps[bad_gaps.len() - 1] + u32::from(!single_space));
        }
        let n = self.n_grams;
        let mut joined = String::new();
        (0..=words.len() - n)
            .map(|i| {
                if bad_gaps[i + n - 1] == bad_gaps[i] {
                    let (start, _) = span(words[i]);
                    let (_, end) = span(words[i + n - 1]);
                    return self.hash.hash(&simplified[start..end]);
                }
                joined.clear();
                for (k, word) in words[i..i + n].iter().enumerate() {
                    if k > 0 {
                        joined.push(' ');
                    }
                    joined.push_str(word);
                }
                self.hash.hash(&joined)
            })
            .collect()
    }

    /// The signature of `text`, or `None` when it has no shingles (it is then never matched).
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        let shingles = self.shingles(text);
        if shingles.is_empty() {
            return None;
        }
        let mut sig = vec![u64::MAX; self.a.len()];
        min_hashes(&shingles, &self.a, &self.b, &mut sig);
        Some(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_match_numpy_random_state_seed_1() {
        let (a, b) = permutations(1, 112);
        assert_eq!(
            &a[..3],
            [775169054918279404, 1758426461858698313, 2109959069025162]
        );
        assert_eq!(
            &b[..3],
            [
                1062448801025099917,
                1324811268927594100,
                1217488311597731462
            ]
        );
    }

    #[test]
    fn folding_modulo_equals_the_remainder() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let edges = [
            0,
            1,
            MERSENNE_PRIME - 1,
            MERSENNE_PRIME,
            MERSENNE_PRIME + 1,
            u64::MAX,
        ];
        for v in edges.into_iter().chain((0..100_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })) {
            assert_eq!(mod_mersenne(v), v % MERSENNE_PRIME, "{v}");
        }
    }

    #[test]
    fn every_min_hash_variant_agrees() {
        let (a, b) = permutations(1, 112);
        let shingles: Vec<u64> = (0..300u64)
            .map(|i| xxhash_rust::xxh64::xxh64(&i.to_le_bytes(), 0))
            .collect();
        let mut want = vec![u64::MAX; 112];
        for &s in &shingles {
            for j in 0..112 {
                want[j] = want[j].min(s.wrapping_mul(a[j]).wrapping_add(b[j]) % MERSENNE_PRIME);
            }
        }
        let mut got = vec![u64::MAX; 112];
        min_hashes(&shingles, &a, &b, &mut got);
        assert_eq!(got, want);
        let mut portable = vec![u64::MAX; 112];
        min_hashes_portable(&shingles, &a, &b, &mut portable);
        assert_eq!(portable, want);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut avx2 = vec![u64::MAX; 112];
            unsafe { min_hashes_avx2(&shingles, &a, &b, &mut avx2) };
            assert_eq!(avx2, want);
        }
    }

    #[test]
    fn short_texts_have_no_signature_and_five_words_one_shingle() {
        let m = MinHasher::new(5, 112, 1, ShingleHash::Xxhash);
        assert!(m.signature("only four words here").is_none());
        assert_eq!(m.shingles("exactly five words are here").len(), 1);
        assert_eq!(
            m.shingles("exactly five words are here")[0],
            xxhash_rust::xxh64::xxh64(b"exactly five words are here", 0)
        );
        let s = m.signature("one two three four five six").unwrap();
        assert_eq!(s.len(), 112);
        assert!(s.iter().all(|&v| v < MERSENNE_PRIME));
    }
}
