//! What the `grist` subcommands do beyond running a pipeline file, as library functions the
//! binary calls: commands that stand for a stage (`classifier train`, `tokenizer train|encode`)
//! write the pipeline they mean and run it; the trainer's commands; `inspect`. The top layer:
//! it may use everything below.

pub mod classifier;
pub mod generated;
pub mod gpu;
pub mod inspect;
pub mod report;
pub mod tokenizer;
pub mod train;
