//! DAG → phases → tasks, the local executor, completion markers and stats.

pub mod executor;
pub mod k8s;
pub mod lock;
pub mod observe;
pub mod plan;
pub mod runlog;
pub mod slurm;
pub mod spec;
pub mod stats;
pub mod task;

pub use executor::{RunOptions, RunSummary, Selection, run};
pub use plan::{Pipeline, Plan, prepare};
