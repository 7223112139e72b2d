//! Plumbing shared by the per-document heuristic filters (`gopher_repetition`, `gopher_quality`,
//! `c4_quality`, `fineweb_quality`). Each filter only says what becomes of one text
//! ([`DocFilter::judge`]); [`stage`] wraps it in a transform that judges the rows of a batch in
//! parallel, rebuilds the `text` column when a filter rewrote a kept document, and rejects the
//! dropped rows with their reasons.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, GenericStringBuilder, OffsetSizeTrait};
use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use rayon::prelude::*;
use rustc_hash::FxHashSet;

use super::{Filtered, Stage, Transform, TransformTask, text_values};
use crate::error::{GristError, Result};
use crate::io::TEXT_COLUMN;
use crate::io::stats::{Drops, Histogram, Scale, StageStats};
use crate::text::python;

/// What a filter decides for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Keep the document with this text in place of its own.
    Rewrite(String),
    /// Drop the document; the reason goes to the rejects and the stats.
    Drop(Cow<'static, str>),
}

impl Verdict {
    pub fn drop(reason: impl Into<Cow<'static, str>>) -> Self {
        Verdict::Drop(reason.into())
    }

    pub fn is_kept(&self) -> bool {
        !matches!(self, Verdict::Drop(_))
    }

    /// The drop reason; `None` for a kept document.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Drop(reason) => Some(reason),
            _ => None,
        }
    }
}

/// A filter that judges each document on its text alone.
pub trait DocFilter: Send + Sync + 'static {
    /// Must not panic, whatever the text (empty, whitespace, binary-looking, very long). Sets
    /// in `m` the figures its rules computed (slot `k` of [`DocFilter::measures`]); a rule that
    /// was not reached (an earlier one dropped the document) leaves its slot unset.
    fn judge_measured(&self, text: &str, m: &mut Measured) -> Verdict;

    fn judge(&self, text: &str) -> Verdict {
        self.judge_measured(text, &mut Measured::default())
    }

    /// The histograms of the figures the rules compute, in slot order, thresholds drawn.
    fn measures(&self) -> Vec<(String, Histogram)> {
        Vec::new()
    }
}

/// Most figures one filter records per document.
pub const MAX_MEASURES: usize = 16;

/// The figures a filter computed for one document; NaN where a rule was not reached.
#[derive(Debug, Clone, Copy)]
pub struct Measured([f64; MAX_MEASURES]);

impl Default for Measured {
    fn default() -> Self {
        Measured([f64::NAN; MAX_MEASURES])
    }
}

impl Measured {
    /// Sets slot `slot`; slots past [`MAX_MEASURES`] are not kept.
    pub fn set(&mut self, slot: usize, value: f64) {
        if let Some(v) = self.0.get_mut(slot) {
            *v = value;
        }
    }

    /// Records the slots that were set into `hists` (one per slot, in order).
    fn record_into(&self, hists: &mut [(String, Histogram)]) {
        for (v, (_, h)) in self.0.iter().zip(hists.iter_mut()) {
            if !v.is_nan() {
                h.record(*v);
            }
        }
    }
}

/// The first [`MAX_MEASURES`] measures, each ranked by its slot (the order of the rules).
fn ranked(mut measures: Vec<(String, Histogram)>) -> Vec<(String, Histogram)> {
    measures.truncate(MAX_MEASURES);
    for (k, (_, h)) in measures.iter_mut().enumerate() {
        h.rank = k as u32;
    }
    measures
}

/// A ratio histogram over [0, 1] in 20 bins, with the rule's threshold.
pub(crate) fn ratio_histogram(label: &str, threshold: Option<f64>, drops: Drops) -> Histogram {
    Histogram::new(label, 0.0, 1.0 + 1e-9, 20, Scale::Linear).threshold(threshold, drops)
}

/// datatrove tests thresholds for truth: `None` and `0` both switch a check off.
pub(crate) fn enabled(threshold: Option<f64>) -> Option<f64> {
    threshold.filter(|t| *t != 0.0)
}

/// datatrove's `find_duplicates`: how many items repeat an earlier item, and their characters.
pub(crate) fn find_duplicates(items: &[&str]) -> (usize, usize) {
    let mut seen = FxHashSet::with_capacity_and_hasher(items.len(), Default::default());
    let (mut duplicates, mut duplicate_chars) = (0, 0);
    for item in items {
        if !seen.insert(*item) {
            duplicates += 1;
            duplicate_chars += python::len(item);
        }
    }
    (duplicates, duplicate_chars)
}

/// The reason a row with a null text is dropped (the readers already reject such rows).
const NULL_TEXT: &str = "null_text";

/// The transform stage that applies `filter` to every document.
pub fn stage<F: DocFilter>(stage_id: &str, filter: F) -> Stage {
    Stage::Transform(Arc::new(FilterTransform {
        stage_id: stage_id.to_string(),
        filter: Arc::new(filter),
    }))
}

struct FilterTransform<F> {
    stage_id: String,
    filter: Arc<F>,
}

/// Fails unless `input` has a string `text` column.
pub(crate) fn check_text_column(stage_id: &str, input: &SchemaRef) -> Result<()> {
    match input.field_with_name(TEXT_COLUMN).map(|f| f.data_type()) {
        Ok(DataType::Utf8 | DataType::LargeUtf8) => Ok(()),
        Ok(other) => Err(GristError::stage(
            stage_id,
            format!("the `{TEXT_COLUMN}` column is {other}, not a string"),
        )),
        Err(_) => Err(GristError::stage(
            stage_id,
            format!("the input has no `{TEXT_COLUMN}` column"),
        )),
    }
}

impl<F: DocFilter> Transform for FilterTransform<F> {
    fn start(&self, input: SchemaRef) -> Result<Box<dyn TransformTask>> {
        check_text_column(&self.stage_id, &input)?;
        let measured = ranked(self.filter.measures());
        Ok(Box::new(FilterTask {
            measured,
            filter: self.filter.clone(),
            schema: input,
        }))
    }
}

struct FilterTask<F> {
    filter: Arc<F>,
    schema: SchemaRef,
    /// What the rules measured since the last [`TransformTask::observe`].
    measured: Vec<(String, Histogram)>,
}

impl<F: DocFilter> TransformTask for FilterTask<F> {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn observe(&mut self, stats: &mut StageStats) {
        for (name, h) in self.take_measured() {
            if h.count > 0 {
                let mut one = StageStats::default();
                one.histograms.insert(name, h);
                stats.merge(&one);
            }
        }
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Filtered> {
        let texts = text_values(&batch)?;
        let measuring = !self.measured.is_empty();
        let judged: Vec<(Verdict, Measured)> = texts
            .par_iter()
            .map(|text| {
                let mut m = Measured::default();
                let v = match text {
                    Some(text) if measuring => self.filter.judge_measured(text, &mut m),
                    Some(text) => self.filter.judge(text),
                    None => Verdict::drop(NULL_TEXT),
                };
                (v, m)
            })
            .collect();
        let mut verdicts = Vec::with_capacity(judged.len());
        for (v, m) in judged {
            m.record_into(&mut self.measured);
            verdicts.push(v);
        }
        let batch = if verdicts.iter().any(|v| matches!(v, Verdict::Rewrite(_))) {
            with_rewritten_text(&batch, &texts, &verdicts)?
        } else {
            batch
        };
        if verdicts.iter().all(Verdict::is_kept) {
            return Ok(Filtered::all_kept(batch));
        }
        let keep = BooleanArray::from(verdicts.iter().map(Verdict::is_kept).collect::<Vec<_>>());
        let reasons = StringArray::from_iter_values(verdicts.iter().filter_map(Verdict::reason));
        Filtered::split(&batch, &keep, reasons)
    }
}

impl<F: DocFilter> FilterTask<F> {
    fn take_measured(&mut self) -> Vec<(String, Histogram)> {
        let fresh = ranked(self.filter.measures());
        std::mem::replace(&mut self.measured, fresh)
    }
}

/// `batch` with its `text` column replaced by the rewritten texts, of the same string type.
pub(crate) fn with_rewritten_text(
    batch: &RecordBatch,
    texts: &[Option<&str>],
    verdicts: &[Verdict],
) -> Result<RecordBatch> {
    let (index, field) = batch
        .schema()
        .column_with_name(TEXT_COLUMN)
        .map(|(i, f)| (i, f.data_type().clone()))
        .expect("text_values found the text column");
    let column: ArrayRef = match field {
        DataType::LargeUtf8 => Arc::new(rewritten::<i64>(texts, verdicts)),
        _ => Arc::new(rewritten::<i32>(texts, verdicts)),
    };
    let mut columns = batch.columns().to_vec();
    columns[index] = column;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn rewritten<O: OffsetSizeTrait>(
    texts: &[Option<&str>],
    verdicts: &[Verdict],
) -> arrow::array::GenericStringArray<O> {
    let bytes: usize = texts
        .iter()
        .zip(verdicts)
        .map(|(text, verdict)| match verdict {
            Verdict::Rewrite(new) => new.len(),
            _ => text.map_or(0, str::len),
        })
        .sum();
    let mut builder = GenericStringBuilder::<O>::with_capacity(texts.len(), bytes);
    for (text, verdict) in texts.iter().zip(verdicts) {
        match verdict {
            Verdict::Rewrite(new) => builder.append_value(new),
            _ => builder.append_option(*text),
        }
    }
    let array = builder.finish();
    debug_assert_eq!(array.len(), texts.len());
    array
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Field, Schema};

    /// Drops texts that contain "bad", upper-cases texts that contain "loud", keeps the rest.
    struct Toy;

    impl DocFilter for Toy {
        fn judge_measured(&self, text: &str, _: &mut Measured) -> Verdict {
            if text.contains("bad") {
                Verdict::drop("bad")
            } else if text.contains("loud") {
                Verdict::Rewrite(text.to_uppercase())
            } else {
                Verdict::Keep
            }
        }
    }

    fn run(text_type: DataType, texts: Vec<Option<&str>>) -> Filtered {
        let schema = Arc::new(Schema::new(vec![
            Field::new("text", text_type.clone(), true),
            Field::new("id", DataType::Utf8, false),
        ]));
        let ids: Vec<String> = (0..texts.len()).map(|i| i.to_string()).collect();
        let text: ArrayRef = match text_type {
            DataType::LargeUtf8 => Arc::new(arrow::array::LargeStringArray::from(texts)),
            _ => Arc::new(StringArray::from(texts)),
        };
        let batch =
            RecordBatch::try_new(schema.clone(), vec![text, Arc::new(StringArray::from(ids))])
                .unwrap();
        let Stage::Transform(t) = stage("toy", Toy) else {
            unreachable!()
        };
        let mut task = t.start(schema.clone()).unwrap();
        assert_eq!(task.output_schema(), schema);
        task.process(batch).unwrap()
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
        let col = batch.column_by_name(column).unwrap();
        let values: Vec<Option<&str>> = match col.data_type() {
            DataType::LargeUtf8 => col.as_string::<i64>().iter().collect(),
            _ => col.as_string::<i32>().iter().collect(),
        };
        values
            .into_iter()
            .map(|v| v.unwrap_or("<null>").to_string())
            .collect()
    }

    #[test]
    fn keeps_rewrites_and_rejects_with_reasons() {
        for text_type in [DataType::Utf8, DataType::LargeUtf8] {
            let out = run(
                text_type.clone(),
                vec![Some("fine"), Some("bad one"), Some("loud"), None, Some("")],
            );
            assert_eq!(strings(&out.kept, "text"), ["fine", "LOUD", ""]);
            assert_eq!(strings(&out.kept, "id"), ["0", "2", "4"]);
            assert_eq!(out.kept.schema().field(0).data_type(), &text_type);
            let rejected = out.rejected.unwrap();
            assert_eq!(strings(&rejected.rows, "id"), ["1", "3"]);
            // Dropped rows keep their original text.
            assert_eq!(strings(&rejected.rows, "text"), ["bad one", "<null>"]);
            let reasons: Vec<&str> = rejected.reasons.iter().map(Option::unwrap).collect();
            assert_eq!(reasons, ["bad", "null_text"]);
        }
    }

    #[test]
    fn all_kept_has_no_rejects() {
        let out = run(DataType::Utf8, vec![Some("a"), Some("b")]);
        assert_eq!(out.kept.num_rows(), 2);
        assert!(out.rejected.is_none());
        let out = run(DataType::Utf8, vec![]);
        assert_eq!(out.kept.num_rows(), 0);
    }

    #[test]
    fn a_missing_or_non_string_text_column_is_an_error() {
        let Stage::Transform(t) = stage("toy", Toy) else {
            unreachable!()
        };
        let no_text = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let e = t.start(no_text).err().unwrap().to_string();
        assert!(e.contains("no `text` column"), "{e}");
        let int_text = Arc::new(Schema::new(vec![Field::new("text", DataType::Int64, true)]));
        let e = t.start(int_text).err().unwrap().to_string();
        assert!(e.contains("not a string"), "{e}");
    }
}
