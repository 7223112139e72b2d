//! Packing documents into training samples of exactly `seq_len + 1` tokens. `concat` joins the
//! documents in order and cuts every `seq_len + 1` tokens (the tail that does not fill a sample
//! is dropped). `best_fit` is best-fit decreasing (Ding et al. 2024, "Fewer Truncations Improve
//! Language Modeling"): a document longer than a sample is cut into whole samples plus a
//! remainder, remainders go longest first into the fullest sample they fit, and what is left of a
//! sample is padding. Samples are lists of pieces (item, start, length), so boundaries are kept.

use std::collections::BTreeSet;

use crate::util::permutation;

/// Part of one item (a selected document) placed in a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub item: u32,
    pub start: u64,
    pub len: u32,
}

/// Samples as runs of pieces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Packed {
    pub pieces: Vec<Piece>,
    /// End (exclusive) in `pieces` of each sample.
    pub sample_ends: Vec<usize>,
    /// Padding tokens at the end of each sample.
    pub padding: Vec<u32>,
    /// Tokens of each item that no sample holds (`concat`'s tail), as (item, tokens).
    pub dropped: Vec<(u32, u64)>,
}

impl Packed {
    pub fn samples(&self) -> usize {
        self.sample_ends.len()
    }

    pub fn sample(&self, s: usize) -> &[Piece] {
        let start = if s == 0 { 0 } else { self.sample_ends[s - 1] };
        &self.pieces[start..self.sample_ends[s]]
    }
}

/// Concatenate in order and cut every `sample_len` tokens.
pub fn concat(lengths: &[u64], sample_len: u32) -> Packed {
    let cap = sample_len as u64;
    let mut p = Packed::default();
    let mut fill = 0u64;
    for (item, &len) in lengths.iter().enumerate() {
        let mut start = 0u64;
        while start < len {
            let take = (len - start).min(cap - fill);
            p.pieces.push(Piece {
                item: item as u32,
                start,
                len: take as u32,
            });
            start += take;
            fill += take;
            if fill == cap {
                p.sample_ends.push(p.pieces.len());
                p.padding.push(0);
                fill = 0;
            }
        }
    }
    let open = p.sample_ends.last().copied().unwrap_or(0);
    for piece in p.pieces.drain(open..) {
        p.dropped.push((piece.item, piece.len as u64));
    }
    p
}

/// Best-fit decreasing; the samples come out in a seeded random order.
pub fn best_fit(lengths: &[u64], sample_len: u32, seed: u64) -> Packed {
    let cap = sample_len as u64;
    let mut samples: Vec<Vec<Piece>> = Vec::new();
    let mut rest: Vec<Piece> = Vec::new();
    for (item, &len) in lengths.iter().enumerate() {
        let whole = len / cap;
        for k in 0..whole {
            samples.push(vec![Piece {
                item: item as u32,
                start: k * cap,
                len: sample_len,
            }]);
        }
        if len % cap > 0 {
            rest.push(Piece {
                item: item as u32,
                start: whole * cap,
                len: (len % cap) as u32,
            });
        }
    }
    // Longest first; equal lengths keep their (already shuffled) order.
    rest.sort_by_key(|p| std::cmp::Reverse(p.len));
    let mut bins: Vec<Vec<Piece>> = Vec::new();
    // (room left, bin): the first entry with room >= len is the best fit.
    let mut room: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut left: Vec<u32> = Vec::new();
    for piece in rest {
        match room.range((piece.len, 0)..).next().copied() {
            Some((r, b)) => {
                room.remove(&(r, b));
                bins[b as usize].push(piece);
                left[b as usize] = r - piece.len;
                if r > piece.len {
                    room.insert((r - piece.len, b));
                }
            }
            None => {
                let b = bins.len() as u32;
                bins.push(vec![piece]);
                left.push(sample_len - piece.len);
                if sample_len > piece.len {
                    room.insert((sample_len - piece.len, b));
                }
            }
        }
    }
    let mut padding = vec![0u32; samples.len()];
    samples.extend(bins);
    padding.extend(left);
    let mut p = Packed::default();
    for s in permutation(samples.len(), seed) {
        p.pieces.extend_from_slice(&samples[s as usize]);
        p.sample_ends.push(p.pieces.len());
        p.padding.push(padding[s as usize]);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &Packed, lengths: &[u64], sample_len: u32) {
        let mut placed = vec![0u64; lengths.len()];
        for s in 0..p.samples() {
            let used: u64 = p.sample(s).iter().map(|x| x.len as u64).sum();
            assert_eq!(used + p.padding[s] as u64, sample_len as u64);
        }
        for x in &p.pieces {
            placed[x.item as usize] += x.len as u64;
        }
        for &(item, n) in &p.dropped {
            placed[item as usize] += n;
        }
        assert_eq!(placed, lengths, "every token placed or dropped once");
    }

    #[test]
    fn concat_cuts_full_samples_and_drops_the_tail() {
        let lengths = [5, 3, 9, 1];
        let p = concat(&lengths, 4);
        check(&p, &lengths, 4);
        assert_eq!(p.samples(), 4);
        assert_eq!(p.dropped, [(2, 1), (3, 1)]);
        assert_eq!(
            p.sample(1),
            [
                Piece {
                    item: 0,
                    start: 4,
                    len: 1
                },
                Piece {
                    item: 1,
                    start: 0,
                    len: 3
                }
            ]
        );
    }

    #[test]
    fn best_fit_splits_long_documents_and_fills_bins() {
        let lengths = [10, 3, 1, 2, 4, 7];
        let p = best_fit(&lengths, 4, 1);
        check(&p, &lengths, 4);
        assert!(p.dropped.is_empty());
        // Whole chunks: 10 -> 2, 4 -> 1, 7 -> 1; remainders 2, 3, 1, 2, 3 fill 3 bins.
        assert_eq!(p.samples(), 4 + 3);
        let padding: u32 = p.padding.iter().sum();
        assert_eq!(padding, 7 * 4 - 27);
        assert_eq!(p, best_fit(&lengths, 4, 1));
    }

    #[test]
    fn packing_properties_hold_on_random_lengths() {
        let mut rng = crate::util::SplitMix64(5);
        let lengths: Vec<u64> = (0..500).map(|_| rng.next_u64() % 3000).collect();
        check(&concat(&lengths, 1025), &lengths, 1025);
        let p = best_fit(&lengths, 1025, 0);
        check(&p, &lengths, 1025);
        // Best fit wastes little: under 1% padding on these lengths.
        let padding: u64 = p.padding.iter().map(|&x| x as u64).sum();
        assert!(padding * 100 < lengths.iter().sum::<u64>(), "{padding}");
    }
}
