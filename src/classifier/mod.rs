//! fastText classifiers: the model file format (checked before fastText sees a file), a loaded
//! model shared across threads, and supervised training.

pub mod fasttext_file;
pub mod model;
pub mod train;
