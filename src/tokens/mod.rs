//! From documents to the token files training jobs read: tokenizer training and encoding on the
//! Hugging Face `tokenizers` crate, the packed formats (Megatron `.idx/.bin`, llm.c `.bin`),
//! mixture planning and packing. The byte layouts are in `schemas/packed-format.md`.

pub mod bpe;
pub mod encoder;
pub mod eval;
pub mod inspect;
pub mod llmc;
pub mod megatron;
pub mod mixing;
pub mod packing;
pub mod split;
#[rustfmt::skip]
mod split_tables;
pub mod tokenizer;
