//! Text primitives shared by the filters and, later, MinHash: Python `str` semantics (what
//! datatrove's filters are written in) and a port of spaCy's blank English tokenizer and
//! sentencizer (what datatrove 0.10 splits English words and sentences with).

mod affix;
pub mod python;
pub mod spacy_en;
pub mod tld;
#[rustfmt::skip]
mod tables;

pub use spacy_en::{sentence_count, words};
