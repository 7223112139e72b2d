//! Training samples from a `mix` output: each document of the packed Megatron dataset is one
//! sample of `seq_len + 1` tokens, each sequence in it one document fragment. The order is a
//! seeded permutation per epoch; the position is the count of samples consumed, saved in
//! checkpoints. `continual` runs interleave a replay share of an older mixture exactly:
//! sample s comes from the old data when ⌊(s+1)·f⌋ > ⌊s·f⌋.

use std::path::{Path, PathBuf};

use super::backend::Batch;
use super::cpu::ops::IGNORE;
use crate::error::{GristError, Result};
use crate::tokens::megatron::Dataset;
use crate::util::permutation;

/// One split (`train` or `valid`) of a mix directory.
pub struct Samples {
    ds: Dataset,
    seq_len: usize,
    /// Padding id when the mix packed best-fit (a trailing fragment of it is padding).
    pad_id: Option<u32>,
    seed: u64,
    /// The permutation of the epoch last asked for.
    order: Option<(u64, Vec<u32>)>,
}

/// The token layout of one sample.
pub struct Sample {
    pub tokens: Vec<u32>,
    /// Start of each fragment within the sample, and its length.
    pub fragments: Vec<(usize, usize)>,
    /// Tokens from here on are padding.
    pub padding_from: usize,
}

impl Samples {
    /// Opens `<dir>/<split>` and checks its samples hold `seq_len + 1` tokens.
    pub fn open(dir: &Path, split: &str, seq_len: usize, seed: u64) -> Result<Samples> {
        let prefix = dir.join(split);
        let ds = Dataset::open(&prefix)?;
        let mix_json = dir.join("mix.json");
        let pad_id = match std::fs::read(&mix_json) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes)
                    .map_err(|e| GristError::data(&mix_json, format!("not JSON: {e}")))?;
                (v["packing"] == "best_fit")
                    .then(|| v["pad_id"].as_u64().map(|p| p as u32))
                    .flatten()
            }
            Err(_) => None,
        };
        if ds.num_documents() == 0 {
            return Err(GristError::data(&prefix, "the dataset has no samples"));
        }
        for d in 0..ds.num_documents() {
            let len: u64 = ds.document_sequences(d).map(|s| ds.length(s) as u64).sum();
            if len != seq_len as u64 + 1 {
                return Err(GristError::data(
                    &prefix,
                    format!(
                        "sample {d} holds {len} tokens, but seq_len {seq_len} needs {} (samples of a `mix` output with the same seq_len)",
                        seq_len + 1
                    ),
                ));
            }
        }
        Ok(Samples {
            ds,
            seq_len,
            pad_id,
            seed,
            order: None,
        })
    }

    pub fn len(&self) -> usize {
        self.ds.num_documents()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> PathBuf {
        self.ds.prefix().to_path_buf()
    }

    /// Sample `i` in the dataset's own order.
    pub fn sample(&self, i: usize) -> Sample {
        let mut tokens = Vec::with_capacity(self.seq_len + 1);
        let mut fragments = Vec::new();
        for s in self.ds.document_sequences(i) {
            let seq = self.ds.sequence(s);
            fragments.push((tokens.len(), seq.len()));
            tokens.extend_from_slice(&seq);
        }
        let mut padding_from = tokens.len();
        if let (Some(pad), Some(&(start, len))) = (self.pad_id, fragments.last())
            && fragments.len() > 1
            && tokens[start..start + len].iter().all(|&t| t == pad)
        {
            padding_from = start;
        }
        Sample {
            tokens,
            fragments,
            padding_from,
        }
    }

    /// The `n`-th sample of the seeded order (epoch after epoch).
    pub fn nth(&mut self, n: u64) -> Sample {
        let len = self.len() as u64;
        let epoch = n / len;
        if self.order.as_ref().map(|o| o.0) != Some(epoch) {
            let seed = self.seed ^ epoch.wrapping_mul(0x9e3779b97f4a7c15);
            self.order = Some((epoch, permutation(len as usize, seed)));
        }
        let order = &self.order.as_ref().expect("just set").1;
        self.sample(order[(n % len) as usize] as usize)
    }
}

/// How samples become batch rows.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub document_masking: bool,
    pub reset_position_ids: bool,
}

/// Builds a batch from samples: inputs are tokens 0..seq, targets 1..=seq with padding ignored.
pub fn batch(samples: &[Sample], seq: usize, layout: Layout) -> Batch {
    let mut b = Batch {
        batch: samples.len(),
        seq,
        inputs: Vec::with_capacity(samples.len() * seq),
        targets: Vec::with_capacity(samples.len() * seq),
        positions: Vec::with_capacity(samples.len() * seq),
        starts: Vec::with_capacity(samples.len() * seq),
    };
    for s in samples {
        b.inputs.extend_from_slice(&s.tokens[..seq]);
        for t in 0..seq {
            let next = t + 1;
            b.targets.push(if next >= s.padding_from {
                IGNORE
            } else {
                s.tokens[next] as i32
            });
        }
        for &(start, len) in &s.fragments {
            for t in start..(start + len).min(seq) {
                b.starts.push(if layout.document_masking {
                    start as u32
                } else {
                    0
                });
                b.positions.push(if layout.reset_position_ids {
                    (t - start) as u32
                } else {
                    t as u32
                });
            }
        }
    }
    b
}

/// The training stream: the new data and, for `continual`, the replayed old data.
pub struct Stream {
    pub main: Samples,
    pub replay: Option<(Samples, f64)>,
}

impl Stream {
    /// Which source sample `s` (0-based, global) comes from, and its index in that source.
    pub fn locate(&self, s: u64) -> (bool, u64) {
        match &self.replay {
            Some((_, f)) => locate(s, *f),
            None => (false, s),
        }
    }

    /// Sample `s` of the stream, and whether it came from the replayed old data.
    pub fn nth(&mut self, s: u64) -> (Sample, bool) {
        match self.locate(s) {
            (true, i) => (self.replay.as_mut().expect("replay").0.nth(i), true),
            (false, i) => (self.main.nth(i), false),
        }
    }
}

/// Sample `s` of a stream replaying a share `f`: (from the old data?, index in its source).
/// The old data gives sample s when ⌊(s+1)·f⌋ > ⌊s·f⌋, so every prefix holds ⌊n·f⌋ of them.
pub fn locate(s: u64, f: f64) -> (bool, u64) {
    let before = (s as f64 * f).floor() as u64;
    let after = ((s + 1) as f64 * f).floor() as u64;
    if after > before {
        (true, before)
    } else {
        (false, s - before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ignores_padding_and_masks_by_fragment() {
        let s = Sample {
            tokens: vec![5, 6, 7, 8, 9, 0, 0],
            fragments: vec![(0, 2), (2, 3), (5, 2)],
            padding_from: 5,
        };
        let b = batch(
            &[s],
            6,
            Layout {
                document_masking: true,
                reset_position_ids: true,
            },
        );
        assert_eq!(b.inputs, vec![5, 6, 7, 8, 9, 0]);
        assert_eq!(b.targets, vec![6, 7, 8, 9, IGNORE, IGNORE]);
        assert_eq!(b.starts, vec![0, 0, 2, 2, 2, 5]);
        assert_eq!(b.positions, vec![0, 1, 0, 1, 2, 0]);
    }

    #[test]
    fn replay_share_is_exact_and_each_source_is_read_in_order() {
        for f in [0.25, 0.1, 0.5] {
            let located: Vec<(bool, u64)> = (0..1000u64).map(|s| locate(s, f)).collect();
            let old: Vec<u64> = located.iter().filter(|l| l.0).map(|l| l.1).collect();
            let new: Vec<u64> = located.iter().filter(|l| !l.0).map(|l| l.1).collect();
            assert_eq!(old.len(), (1000.0 * f) as usize, "share {f}");
            assert_eq!(old, (0..old.len() as u64).collect::<Vec<_>>());
            assert_eq!(new, (0..new.len() as u64).collect::<Vec<_>>());
        }
    }

    /// Fuzz (issue 16): a mutated `mix.json` (or random bytes) beside a good mix: the trainer
    /// opens its samples or refuses naming the file, and `grist inspect` reports it; never a
    /// panic.
    #[test]
    fn fuzz_mix_reports() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/megatron/mix");
        let dir = tempfile::tempdir().unwrap();
        for f in ["train.idx", "train.bin", "valid.idx", "valid.bin"] {
            std::fs::copy(fixture.join(f), dir.path().join(f)).unwrap();
        }
        let seed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture.join("mix.json")).unwrap()).unwrap();
        let report = dir.path().join("mix.json");
        crate::fuzz::fuzz(
            "mix.json",
            2000,
            crate::fuzz::json_inputs(vec![seed]),
            |bytes| {
                std::fs::write(&report, &bytes).unwrap();
                let (result, peak) = crate::fuzz::peak_bytes(|| -> Result<usize> {
                    let mut samples = Samples::open(dir.path(), "valid", 255, 1)?;
                    for n in 0..samples.len() as u64 {
                        let s = samples.nth(n);
                        let b = batch(
                            &[s],
                            255,
                            Layout {
                                document_masking: true,
                                reset_position_ids: true,
                            },
                        );
                        assert_eq!(b.targets.len(), 255);
                    }
                    let file = crate::tokens::inspect::detect(report.to_str().unwrap()).unwrap();
                    Ok(crate::tokens::inspect::inspect(file, 2, None)?.len())
                });
                if let Err(e) = result
                    && !e.to_string().contains("mix.json")
                {
                    return Err(format!("an error that does not name the file: {e}"));
                }
                crate::fuzz::within("mix.json", peak, 64 * bytes.len() + (1 << 20), bytes.len())
            },
        );
    }
}
