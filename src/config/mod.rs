//! The pipeline file: YAML with positions, typed stage configs, diagnostics, JSON Schema.

pub mod de;
pub mod registry;
pub mod schema;
pub mod spec;
pub mod yaml;

pub use spec::{Loaded, PipelineSpec, StageSpec, load, parse};
