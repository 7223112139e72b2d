//! The embedded trainer: a Llama-style decoder (RMSNorm, RoPE with its long-context scalings,
//! GQA attention with optional document masking, SwiGLU), a CPU backend in f32 with every
//! forward and backward written out (the reference for the CUDA backend to come), AdamW with
//! warmup + cosine / WSD / constant schedules, checkpoints that resume exactly, the three run
//! modes (pretrain, continual, long_context), import from `transformers` folders and GGUF files,
//! export for `transformers`, and sampling.

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod export;
pub mod generate;
pub mod gguf;
pub mod gguf_import;
pub mod import;
pub mod optim;
pub mod params;
pub mod rope;
pub mod trainer;

pub use config::{ModelConfig, Rope, RopeScaling, TrainConfig};
pub use params::Weights;
