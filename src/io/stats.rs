//! Per-stage counters: what a stage did to the rows that reached it. Invariant, per stage and
//! per task: `rows_in = rows_kept + Σ rejected`. Stages, the generating code and the engine all
//! fill or merge them. Besides counts, a stage records what a report shows without reading the
//! data again: fixed-bin [`Histogram`]s of the figures its rules compute, counts by category
//! (languages), and a few [`Sample`]s of the rows it kept and dropped. All of them merge across
//! tasks in any order to the same result, and their size does not grow with the input.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageStats {
    pub rows_in: u64,
    pub rows_kept: u64,
    /// Rows rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Bytes in: shard file bytes for a source, `text` bytes for other stages.
    pub bytes_in: u64,
    /// `text` bytes of the kept rows.
    pub bytes_kept: u64,
    /// Time spent in the stage itself.
    pub seconds: f64,
    /// Stage-specific figures (a classifier's validation F1, ...), summed over tasks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Distributions of the figures the stage computes, by name (fixed bins).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub histograms: BTreeMap<String, Histogram>,
    /// Counts by category, by name (`language` → label → rows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// A deterministic sample of rows, by what became of them: a reject reason, `kept`, or a
    /// stage-specific group (`clusters`). The same rows are chosen whatever the task order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<Sample>>,
}

/// How many samples are kept per reason; a cluster sample keeps more (several rows per cluster).
pub const SAMPLES_PER_GROUP: usize = 4;
/// Characters of text kept per sample.
pub const SAMPLE_CHARS: usize = 500;

/// One row chosen for a report: the rows with the smallest keys are kept, so that merging
/// samples of many tasks gives the same rows as one task seeing them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Ordering key: a hash of the row's id (and, for clusters, of the cluster first).
    pub key: [u64; 2],
    pub id: String,
    /// The first [`SAMPLE_CHARS`] characters of the text.
    pub text: String,
    /// Characters of the whole text.
    pub chars: u64,
    /// What else the stage knows of this row (`cluster 12, size 3, removed`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Sample {
    pub fn new(key: [u64; 2], id: &str, text: &str, note: String) -> Self {
        let cut = text
            .char_indices()
            .nth(SAMPLE_CHARS)
            .map_or(text.len(), |(i, _)| i);
        Sample {
            key,
            id: id.to_string(),
            text: text[..cut].to_string(),
            chars: text.chars().count() as u64,
            note,
        }
    }
}

/// The key a row with this id samples under: one hash, so every stage picks the same rows.
pub fn sample_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// Keeps the `limit` samples with the smallest keys (ties broken by id, then text).
pub fn keep_smallest(samples: &mut Vec<Sample>, limit: usize) {
    samples.sort_by(|a, b| {
        (a.key, &a.id, &a.text)
            .partial_cmp(&(b.key, &b.id, &b.text))
            .expect("keys and strings are totally ordered")
    });
    // The same row offered twice (a sample merged with itself) is kept once.
    samples.dedup_by(|a, b| a.key == b.key && a.id == b.id && a.text == b.text);
    samples.truncate(limit);
}

/// How a histogram's bins divide its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    Linear,
    /// Bins of equal width in log10 (lengths, counts); `lo` must be positive.
    Log10,
}

/// Which side of a threshold a rule drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drops {
    Above,
    Below,
}

/// A distribution in fixed bins over `[lo, hi)`, with the values outside counted apart, and
/// the rule's threshold (if any) so a report can draw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// What is counted, for people (`duplicated lines / lines`).
    pub label: String,
    pub lo: f64,
    pub hi: f64,
    pub scale: Scale,
    pub bins: Vec<u64>,
    /// Values below `lo` and at or above `hi` (and NaN, which is `under`).
    pub under: u64,
    pub over: u64,
    /// Values recorded, and their sum (for the mean).
    pub count: u64,
    pub sum: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<(f64, Drops)>,
    /// Where the figure comes in the stage's order of rules (a report shows them in it).
    #[serde(default)]
    pub rank: u32,
}

impl Histogram {
    pub fn new(label: impl Into<String>, lo: f64, hi: f64, bins: usize, scale: Scale) -> Self {
        debug_assert!(hi > lo && bins > 0 && (scale == Scale::Linear || lo > 0.0));
        Histogram {
            label: label.into(),
            lo,
            hi,
            scale,
            bins: vec![0; bins],
            under: 0,
            over: 0,
            count: 0,
            sum: 0.0,
            thresholds: Vec::new(),
            rank: 0,
        }
    }

    /// Draws `threshold` on the chart: rows on the `drops` side of it are dropped.
    pub fn threshold(mut self, threshold: Option<f64>, drops: Drops) -> Self {
        if let Some(t) = threshold.filter(|t| t.is_finite()) {
            self.thresholds.push((t, drops));
        }
        self
    }

    fn position(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log10 => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    pub fn record(&mut self, v: f64) {
        self.count += 1;
        if v.is_finite() {
            self.sum += v;
        }
        if v.is_nan() || v < self.lo {
            self.under += 1;
            return;
        }
        if v >= self.hi {
            self.over += 1;
            return;
        }
        let n = self.bins.len();
        let k = ((self.position(v) * n as f64) as usize).min(n - 1);
        self.bins[k] += 1;
    }

    /// The lower edge of bin `k` (`k = bins` gives `hi`).
    pub fn edge(&self, k: usize) -> f64 {
        let f = k as f64 / self.bins.len() as f64;
        match self.scale {
            Scale::Linear => self.lo + f * (self.hi - self.lo),
            Scale::Log10 => 10f64.powf(self.lo.log10() + f * (self.hi.log10() - self.lo.log10())),
        }
    }

    /// Where `v` falls on the range, from 0 to 1 (clamped), for drawing.
    pub fn fraction(&self, v: f64) -> f64 {
        self.position(v).clamp(0.0, 1.0)
    }

    pub fn merge(&mut self, other: &Histogram) {
        if self.bins.len() != other.bins.len()
            || self.lo != other.lo
            || self.hi != other.hi
            || self.scale != other.scale
        {
            // Two versions of a stage binned differently; keep the counts, not the shape.
            self.under += other.count;
            self.count += other.count;
            self.sum += other.sum;
            return;
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a += b;
        }
        self.under += other.under;
        self.over += other.over;
        self.count += other.count;
        self.sum += other.sum;
    }
}

impl StageStats {
    pub fn rows_rejected(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Whether every row is accounted for.
    pub fn balanced(&self) -> bool {
        self.rows_in == self.rows_kept + self.rows_rejected()
    }

    pub fn merge(&mut self, other: &StageStats) {
        self.rows_in += other.rows_in;
        self.rows_kept += other.rows_kept;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_kept += other.bytes_kept;
        self.seconds += other.seconds;
        for (name, v) in &other.metrics {
            *self.metrics.entry(name.clone()).or_default() += v;
        }
        for (name, h) in &other.histograms {
            match self.histograms.get_mut(name) {
                Some(mine) => mine.merge(h),
                None => {
                    self.histograms.insert(name.clone(), h.clone());
                }
            }
        }
        for (name, counts) in &other.counts {
            let mine = self.counts.entry(name.clone()).or_default();
            for (label, n) in counts {
                *mine.entry(label.clone()).or_default() += n;
            }
        }
        for (group, samples) in &other.samples {
            let mine = self.samples.entry(group.clone()).or_default();
            mine.extend(samples.iter().cloned());
            keep_smallest(mine, sample_limit(group));
        }
    }

    /// Offers a row to the sample of `group`, keeping the rows with the smallest keys.
    pub fn offer_sample(&mut self, group: &str, sample: Sample) {
        let limit = sample_limit(group);
        let mine = self.samples.entry(group.to_string()).or_default();
        // Only a row strictly after the last kept one can be skipped: on a tie of key and id,
        // `keep_smallest` decides by text, as it would if one task had seen both rows.
        if mine.len() >= limit
            && mine
                .last()
                .is_some_and(|last| (last.key, &last.id) < (sample.key, &sample.id))
        {
            return;
        }
        mine.push(sample);
        keep_smallest(mine, limit);
    }

    /// Records `v` into the histogram `name`, made by `make` the first time.
    pub fn record(&mut self, name: &str, v: f64, make: impl FnOnce() -> Histogram) {
        if let Some(h) = self.histograms.get_mut(name) {
            h.record(v);
        } else {
            let mut h = make();
            h.record(v);
            self.histograms.insert(name.to_string(), h);
        }
    }

    pub fn count(&mut self, name: &str, label: &str, n: u64) {
        *self
            .counts
            .entry(name.to_string())
            .or_default()
            .entry(label.to_string())
            .or_default() += n;
    }

    pub fn reject(&mut self, reason: &str, n: u64) {
        *self.rejected.entry(reason.to_string()).or_default() += n;
    }
}

/// Rows kept per sample group: a few per reason, more for clusters (whole clusters, in order).
pub fn sample_limit(group: &str) -> usize {
    if group == CLUSTER_SAMPLES {
        4 * SAMPLES_PER_GROUP
    } else {
        SAMPLES_PER_GROUP
    }
}

/// The sample group dedup stages fill with rows of a few clusters.
pub const CLUSTER_SAMPLES: &str = "clusters";
/// The sample group of kept rows.
pub const KEPT_SAMPLES: &str = "kept";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_up_and_keeps_balance() {
        let mut a = StageStats {
            rows_in: 5,
            rows_kept: 3,
            ..Default::default()
        };
        a.reject("x", 2);
        let mut b = StageStats {
            rows_in: 4,
            rows_kept: 1,
            ..Default::default()
        };
        b.reject("x", 1);
        b.reject("y", 2);
        a.merge(&b);
        assert_eq!(a.rows_in, 9);
        assert_eq!(a.rejected["x"], 3);
        assert!(a.balanced());
    }

    #[test]
    fn histograms_bin_and_merge() {
        let make = || Histogram::new("x", 0.0, 1.0, 10, Scale::Linear);
        let mut a = make();
        for v in [0.0, 0.05, 0.5, 0.99, 1.0, -1.0, f64::NAN] {
            a.record(v);
        }
        assert_eq!(a.bins[0], 2);
        assert_eq!(a.bins[5], 1);
        assert_eq!(a.bins[9], 1);
        assert_eq!((a.under, a.over, a.count), (2, 1, 7));
        let mut log = Histogram::new("n", 1.0, 1e6, 6, Scale::Log10);
        for v in [1.0, 9.0, 10.0, 999_999.0] {
            log.record(v);
        }
        assert_eq!(log.bins, vec![2, 1, 0, 0, 0, 1]);
        assert!((log.edge(2) - 100.0).abs() < 1e-9);
        let b = a.clone();
        a.merge(&b);
        assert_eq!(a.bins[0], 4);
        assert_eq!(a.count, 14);
    }

    #[test]
    fn samples_are_the_same_whatever_the_order_of_tasks() {
        let sample = |i: u32| {
            Sample::new(
                [sample_key(&i.to_string()), 0],
                &i.to_string(),
                "t",
                String::new(),
            )
        };
        let mut one = StageStats::default();
        for i in 0..100 {
            one.offer_sample("r", sample(i));
        }
        let mut parts = [StageStats::default(), StageStats::default()];
        for i in (0..100).rev() {
            parts[(i % 2) as usize].offer_sample("r", sample(i));
        }
        let mut merged = StageStats::default();
        merged.merge(&parts[1]);
        merged.merge(&parts[0]);
        assert_eq!(merged.samples, one.samples);
        assert_eq!(one.samples["r"].len(), SAMPLES_PER_GROUP);
        // Rows with the same id (repeated pages) and different texts: the same one is kept
        // whichever task saw which.
        let dup = |text: &str| Sample::new([sample_key("same"), 0], "same", text, String::new());
        let low = |i: usize| Sample::new([0, 0], &format!("low{i}"), "x", String::new());
        let mut one_task = StageStats::default();
        let (mut a, mut b) = (StageStats::default(), StageStats::default());
        for i in 0..SAMPLES_PER_GROUP - 1 {
            one_task.offer_sample("d", low(i));
            a.offer_sample("d", low(i));
        }
        // The group is full when the second row with that id comes.
        one_task.offer_sample("d", dup("zzz"));
        one_task.offer_sample("d", dup("aaa"));
        a.offer_sample("d", dup("zzz"));
        b.offer_sample("d", dup("aaa"));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.samples, ba.samples);
        assert_eq!(one_task.samples, ab.samples);
        assert_eq!(one_task.samples["d"].last().unwrap().text, "aaa");
        let long = "é".repeat(2000);
        let s = Sample::new([0, 0], "x", &long, String::new());
        assert_eq!((s.text.chars().count(), s.chars), (SAMPLE_CHARS, 2000));
    }
}
