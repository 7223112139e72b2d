//! Readers and writers of document files, shard listing and atomic commits.

pub mod atomic;
pub mod compress;
pub mod jsonl;
pub mod normalize;
pub mod parquet;
pub mod shards;

/// The column every stage reads documents from.
pub const TEXT_COLUMN: &str = "text";
/// The document id column; derived from file and row when the input has none.
pub const ID_COLUMN: &str = "id";
/// Rows per batch read from a shard unless the pipeline says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
