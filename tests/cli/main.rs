//! Integration tests of the `grist` binary: one test binary, a few lines per test.

mod bad_input;
mod classifier;
mod config;
mod crawl;
mod dedup;
mod filters;
mod gpu;
pub mod hardening;
mod langid;
mod layers;
pub mod report;
mod resume;
mod run;
mod synth;
mod text;
mod tokens;
mod train;
mod util;
