//! What the engine records about every stage's rows for a report, besides counting them: a
//! deterministic sample of the rows each stage kept and of those it dropped (per reason), and the
//! length distributions of the documents entering the pipeline (after each source) and leaving it
//! (at each writer). Bounded: a few rows per group, fixed bins.

use arrow::array::{Array, RecordBatch};

use crate::io::stats::{
    Histogram, KEPT_SAMPLES, SAMPLES_PER_GROUP, Sample, Scale, StageStats, sample_key,
};
use crate::stages::{Rejected, string_column, text_values};

/// Histogram names of document lengths.
pub const LENGTH_CHARS: &str = "length_chars";
pub const LENGTH_WORDS: &str = "length_words";

/// Keys of the rows of `batch`: a hash of the `id` (of the text when there is none).
fn keys(batch: &RecordBatch, texts: &[Option<&str>]) -> Vec<(u64, String)> {
    match string_column(batch, "id").ok().flatten() {
        Some(ids) => (0..batch.num_rows())
            .map(|r| {
                let id = if ids.is_valid(r) { ids.value(r) } else { "" };
                (sample_key(id), id.to_string())
            })
            .collect(),
        None => texts
            .iter()
            .map(|t| (sample_key(t.unwrap_or("")), String::new()))
            .collect(),
    }
}

/// Offers the rows of `batch` for which `group(row)` names a group to the stage's samples.
fn offer<'a>(stats: &mut StageStats, batch: &RecordBatch, group: impl Fn(usize) -> &'a str) {
    let Ok(texts) = text_values(batch) else {
        return;
    };
    // Hashing every id is cheap; copying a text happens only for a row that enters a sample.
    for (r, (key, id)) in keys(batch, &texts).into_iter().enumerate() {
        let g = group(r);
        let full = stats
            .samples
            .get(g)
            .filter(|s| s.len() >= SAMPLES_PER_GROUP)
            .and_then(|s| s.last())
            .is_some_and(|last| (last.key[0], last.id.as_str()) < (key, id.as_str()));
        if !full {
            let text = texts[r].unwrap_or("");
            stats.offer_sample(g, Sample::new([key, 0], &id, text, String::new()));
        }
    }
}

pub fn sample_kept(stats: &mut StageStats, kept: &RecordBatch) {
    offer(stats, kept, |_| KEPT_SAMPLES);
}

pub fn sample_rejected(stats: &mut StageStats, rejected: &Rejected) {
    offer(stats, &rejected.rows, |r| {
        if rejected.reasons.is_valid(r) {
            rejected.reasons.value(r)
        } else {
            "unknown"
        }
    });
}

/// Records the length of every document of `batch`, in characters and in words (runs of
/// bytes between ASCII whitespace: a byte loop, several times faster than Unicode
/// `split_whitespace`, which matters when every document of a run passes here twice).
pub fn record_lengths(stats: &mut StageStats, batch: &RecordBatch) {
    let Ok(texts) = text_values(batch) else {
        return;
    };
    for t in texts.iter().flatten() {
        stats.record(LENGTH_CHARS, t.chars().count() as f64, || {
            Histogram::new("characters per document", 1.0, 1e7, 28, Scale::Log10)
        });
        stats.record(LENGTH_WORDS, ascii_words(t) as f64, || {
            Histogram::new(
                "words per document (split at ASCII whitespace)",
                1.0,
                1e6,
                24,
                Scale::Log10,
            )
        });
    }
}

/// Words separated by ASCII whitespace.
fn ascii_words(text: &str) -> usize {
    let mut words = 0;
    let mut in_word = false;
    for &b in text.as_bytes() {
        let space = b.is_ascii_whitespace();
        words += usize::from(in_word && space);
        in_word = !space;
    }
    words + usize::from(in_word)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ascii_words_counts_like_split_whitespace_on_ascii() {
        for t in ["", " ", "a", " a b  c\n", "one\ttwo\r\nthree ", "é à"] {
            assert_eq!(super::ascii_words(t), t.split_whitespace().count(), "{t:?}");
        }
    }
}
