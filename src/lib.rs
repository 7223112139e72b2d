//! grist: curates LLM training data. A pipeline (YAML) is a DAG of stages over Arrow record
//! batches streamed from Parquet / JSON Lines shards; the engine splits it into phases and tasks
//! that run on a local worker pool or as batch-scheduler array jobs, resumably.

pub mod classifier;
pub mod commands;
pub mod config;
pub mod dedup;
pub mod diagnostic;
pub mod engine;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod io;
pub mod stages;
pub mod synth;
pub mod text;
pub mod tokens;
pub mod train;
pub mod util;

pub use error::{GristError, Result};
