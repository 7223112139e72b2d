//! The trainer's subcommands: `train`, `import`, `export`, `generate`, `evaluate`, and `serve`
//! (an OpenAI-compatible server over the same inference).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use grist::commands::train::{self as command, EvaluateCommand, GenerateCommand};
use grist::train::config::{BackendKind, Precision};
use grist::train::generate::SamplingParams;

#[derive(Args)]
pub struct TrainArgs {
    /// The run's config (YAML): mode, model, data, optimizer, schedule, checkpoints.
    pub config: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_parser = crate::thread_count)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct ImportArgs {
    /// A `transformers` folder (config.json + safetensors) or a GGUF file.
    pub src: PathBuf,
    /// The checkpoint directory to write.
    pub checkpoint: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A grist checkpoint directory (from `grist train` or `grist import`).
    pub checkpoint: PathBuf,
    /// The folder to write config.json, model.safetensors and tokenizer.json into.
    pub dir: PathBuf,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A grist checkpoint directory or a GGUF file.
    pub checkpoint: PathBuf,
    /// Text to continue (encoded with the checkpoint's tokenizer.json).
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Token ids to continue, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Put the model's BOS id first.
    #[arg(long)]
    pub bos: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Token ids that end generation (default: the model's EOS).
    #[arg(long, value_delimiter = ',')]
    pub stop_ids: Vec<u32>,
    /// Print JSON (prompt ids, ids, text, finish reason).
    #[arg(long)]
    pub json: bool,
    /// With --json: also the next-token logits after the prompt.
    #[arg(long, requires = "json")]
    pub logits: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_parser = crate::thread_count)]
    pub threads: Option<usize>,
}

#[derive(Args)]
pub struct EvaluateArgs {
    pub checkpoint: PathBuf,
    /// A `mix` output directory.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "valid")]
    pub split: String,
    #[arg(long)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 256)]
    pub max_samples: usize,
    #[arg(long)]
    pub document_masking: bool,
    #[arg(long)]
    pub reset_position_ids: bool,
    /// Another RoPE, as JSON: {"theta": 500000, "scaling": {"type": "yarn", ...}}.
    #[arg(long)]
    pub rope: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Where a model runs.
#[derive(Args)]
pub struct DeviceArgs {
    /// `cpu` (f32) or `cuda` (an NVIDIA GPU).
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// `cuda`: bf16 activations with f32 accumulation, or f32 throughout.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16)]
    pub precision: PrecisionArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    Bf16,
    F32,
}

impl DeviceArgs {
    pub fn backend(&self) -> BackendKind {
        match self.backend {
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Cuda => BackendKind::Cuda,
        }
    }

    pub fn precision(&self) -> Precision {
        match self.precision {
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::F32 => Precision::F32,
        }
    }
}

fn threads(n: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = n {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()?;
    }
    Ok(())
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    threads(a.threads)?;
    let summary = command::train(&a.config)?;
    println!("{}", serde_json::to_string_pretty(&summary.json)?);
    Ok(())
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let cfg = grist::train::import::import(&a.src, &a.checkpoint)?;
    println!(
        "checkpoint: {} ({} parameters, {} layers, vocabulary {})",
        a.checkpoint.display(),
        cfg.parameter_count(),
        cfg.num_layers,
        cfg.vocab_size
    );
    Ok(())
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    grist::train::export::export(&a.checkpoint, &a.dir)?;
    println!("exported: {}", a.dir.display());
    Ok(())
}

pub fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    threads(a.threads)?;
    let c = GenerateCommand {
        checkpoint: &a.checkpoint,
        prompt: a.prompt.as_deref(),
        prompt_ids: a.prompt_ids,
        bos: a.bos,
        params: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            max_new_tokens: a.max_new_tokens,
            stop_ids: a.stop_ids,
            seed: a.seed,
        },
        logits: a.logits,
        backend: a.device.backend(),
        precision: a.device.precision(),
    };
    let out = command::run_generate(&c)?;
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{}{}",
            a.prompt.unwrap_or_default(),
            out["text"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ServeArgs {
    /// A grist checkpoint directory (with tokenizer.json) or a GGUF file.
    pub model: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The model id `/v1/models` reports (default: the file or folder name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Append one JSON line per request (body hash, status, tokens, milliseconds) to this file.
    #[arg(long)]
    pub request_log: Option<PathBuf>,
    /// Requests decoded together at most (continuous batching); each holds its keys and values
    /// for up to the model's context.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_batch: u16,
    /// Recent long prompts whose keys and values are kept for prompts sharing their prefix.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub prefix_cache: u16,
    /// Worker threads for the model (default: all cores).
    #[arg(long, short = 'j', value_parser = crate::thread_count)]
    pub threads: Option<usize>,
    /// Connections served at once; past it the one waiting longest for its request is closed.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..=16384))]
    pub max_connections: u16,
    /// Seconds a request may take to arrive, from its first byte (however slowly it drips).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=3600))]
    pub request_timeout_s: u16,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(1..=3600))]
    pub idle_timeout_s: u16,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    threads(a.threads)?;
    let model = grist::synth::local::ServedModel::load(&a.model)?;
    grist::synth::serve::serve(
        model,
        &grist::synth::serve::ServeOptions {
            host: a.host,
            port: a.port,
            model_name: a.model_name,
            request_log: a.request_log,
            engine: grist::synth::local::EngineOptions {
                max_batch: a.max_batch.into(),
                prefix_cache: a.prefix_cache.into(),
            },
            limits: grist::synth::http::Limits {
                max_connections: a.max_connections.into(),
                idle: std::time::Duration::from_secs(a.idle_timeout_s.into()),
                request_deadline: std::time::Duration::from_secs(a.request_timeout_s.into()),
            },
        },
    )?;
    Ok(())
}

pub fn evaluate(a: EvaluateArgs) -> anyhow::Result<()> {
    let rope = match &a.rope {
        Some(text) => Some(
            serde_json::from_str(text)
                .map_err(|e| grist::GristError::Usage(format!("--rope: {e}")))?,
        ),
        None => None,
    };
    let out = command::evaluate(&EvaluateCommand {
        checkpoint: &a.checkpoint,
        data: &a.data,
        split: &a.split,
        seq_len: a.seq_len,
        max_samples: a.max_samples,
        document_masking: a.document_masking,
        reset_position_ids: a.reset_position_ids,
        rope,
        backend: a.device.backend(),
        precision: a.device.precision(),
    })?;
    println!("{out}");
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum GpuAction {
    /// Report NVRTC, the driver and the GPU; compile every kernel; on a GPU, check every kernel
    /// against its CPU twin and 20 training steps against the CPU backend. Exit 1 if a check
    /// fails, 2 if NVRTC, the driver or the GPU is missing.
    Check {
        /// Only compile the kernels (needs NVRTC alone, no GPU).
        #[arg(long)]
        compile_only: bool,
        /// Architectures to compile for, e.g. 80,90 (default: the GPU's, or 80 and 90).
        #[arg(long, value_delimiter = ',')]
        arch: Vec<u32>,
        /// Print the rows as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train for some steps and print tokens/s, MFU and device memory as one JSON line.
    Bench(BenchArgs),
}

#[derive(Args)]
pub struct BenchArgs {
    /// A model config (JSON, grist's model fields), randomly initialised.
    #[arg(long, conflicts_with = "init", required_unless_present = "init")]
    pub model: Option<PathBuf>,
    /// Start from this grist checkpoint directory or GGUF file instead.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Train on this text (encoded with --init's tokenizer) instead of random tokens.
    #[arg(long, requires = "init")]
    pub text: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 1024)]
    pub seq: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Attend within random documents of seq/16 to seq/2 tokens.
    #[arg(long)]
    pub document_masking: bool,
    /// Recompute each layer's activations in the backward.
    #[arg(long)]
    pub recompute: bool,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Steps over which the learning rate rises linearly to --lr.
    #[arg(long, default_value_t = 0)]
    pub lr_warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `cuda`, or `cpu` for a comparison.
    #[arg(long, value_enum, default_value_t = BackendArg::Cuda)]
    pub backend: BackendArg,
    /// `cuda`: bf16 activations with f32 accumulation, or f32 throughout.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Bf16)]
    pub precision: PrecisionArg,
}

pub fn gpu(action: GpuAction) -> anyhow::Result<()> {
    use grist::commands::gpu;
    match action {
        GpuAction::Check {
            compile_only,
            arch,
            json,
        } => {
            let rows = gpu::check(&gpu::CheckCommand {
                compile_only,
                archs: arch,
            })?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", gpu::render(&rows));
            }
            let failed = rows.iter().filter(|r| !r.pass).count();
            if failed > 0 {
                return Err(grist::GristError::stage(
                    "gpu check",
                    format!("{failed} of {} checks failed", rows.len()),
                )
                .into());
            }
        }
        GpuAction::Bench(a) => {
            let out = gpu::bench(&gpu::BenchCommand {
                model: a.model,
                init: a.init,
                text: a.text,
                batch: a.batch,
                seq: a.seq,
                steps: a.steps,
                warmup: a.warmup,
                document_masking: a.document_masking,
                backend: DeviceArgs {
                    backend: a.backend,
                    precision: a.precision,
                }
                .backend(),
                precision: DeviceArgs {
                    backend: a.backend,
                    precision: a.precision,
                }
                .precision(),
                recompute: a.recompute,
                lr: a.lr,
                lr_warmup: a.lr_warmup,
                seed: a.seed,
            })?;
            println!("{out}");
        }
    }
    Ok(())
}
