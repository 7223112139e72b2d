//! The training loop, backend-agnostic: data → micro-batches → forward/backward (accumulated,
//! each token weighted equally across the step) → clip → AdamW → metrics, evaluation and
//! checkpoints. A run directory resumes from its newest checkpoint: the metrics file is cut
//! back to that step and the same samples follow, so the loss sequence equals an
//! uninterrupted run's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::backend::{AdamStep, Backend, Batch};
use super::checkpoint::{self, Checkpoint, TrainState};
use super::config::{BackendKind, Mode, ModelConfig, TrainConfig};
use super::cpu::CpuBackend;
use super::data::{self, Layout, Samples, Stream};
use super::optim::learning_rate;
use super::params::Weights;
use crate::error::{GristError, Result};
use crate::io::atomic;
use crate::util::hook;

/// What a finished (or already finished) run reports; also written to `summary.json`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub json: serde_json::Value,
    pub checkpoint: PathBuf,
}

/// The model a run starts from, before any step.
pub struct Start {
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Option<PathBuf>,
}

/// Resolves the starting model of `cfg`: random init (`pretrain`) or the `init_from`
/// checkpoint, with `long_context`'s new RoPE and context.
pub fn start(cfg: &TrainConfig) -> Result<Start> {
    let tokenizer = cfg.tokenizer.as_ref().map(PathBuf::from);
    match cfg.mode {
        Mode::Pretrain => {
            let model = cfg.model.clone().expect("checked: pretrain has a model");
            let weights = Weights::init(&model, cfg.seed, cfg.init_std);
            Ok(Start {
                config: model,
                weights,
                tokenizer,
            })
        }
        Mode::Continual | Mode::LongContext => {
            let dir = PathBuf::from(cfg.init_from.as_ref().expect("checked: has init_from"));
            let loaded = checkpoint::load_model(&dir)?;
            let mut config = loaded.config;
            if cfg.mode == Mode::LongContext {
                if let Some(r) = &cfg.rope {
                    config.rope = r.clone();
                }
                config.max_position_embeddings = cfg
                    .max_position_embeddings
                    .unwrap_or(cfg.seq_len.max(config.max_position_embeddings));
            }
            Ok(Start {
                config,
                weights: loaded.weights,
                tokenizer: tokenizer.or(loaded.tokenizer),
            })
        }
    }
}

/// The backend a run trains on, with its weights loaded.
pub fn make_backend(
    cfg: &TrainConfig,
    config: ModelConfig,
    weights: Weights,
) -> Result<Box<dyn Backend>> {
    match cfg.backend {
        BackendKind::Cpu => Ok(Box::new(CpuBackend::new(config, weights)?)),
        BackendKind::Cuda => super::cuda::open_backend(
            config,
            weights,
            cfg.precision.unwrap_or_default(),
            super::cuda::CudaOptions {
                rows: cfg.micro_batch_size * cfg.seq_len,
                recompute: cfg.recompute,
                logit_chunk: None,
            },
        ),
    }
}

/// Identifies a run's settings in its checkpoints, so a run directory is not resumed by
/// another run. Where it runs is not part of it: a run started on `cuda` resumes on `cpu` and
/// the other way round.
fn config_hash(cfg: &TrainConfig) -> String {
    let mut what = cfg.clone();
    what.backend = BackendKind::Cpu;
    what.precision = None;
    what.recompute = false;
    let text = serde_json::to_string(&what).expect("serializable");
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// Refuses a CPU run that cannot fit in this machine's memory before allocating any of it (an
/// allocation that fails aborts the process). A CUDA run holds its activations on the GPU, where
/// an allocation that fails is an error that says so.
fn check_memory(cfg: &TrainConfig, model: &ModelConfig) -> Result<()> {
    if cfg.backend == BackendKind::Cuda {
        return Ok(());
    }
    let needed = cfg.memory_estimate(model);
    let Some(available) = crate::util::available_memory() else {
        return Ok(());
    };
    if needed > available as u128 {
        return Err(GristError::Usage(format!(
            "this run needs about {:.1} GB (weights, gradients and AdamW moments of {} parameters, \
             and the activations of {} × {} tokens), more than the {:.1} GB available: lower \
             micro_batch_size or seq_len (grad_accum_steps keeps the batch), or the model's size",
            needed as f64 / 1e9,
            model.parameter_count(),
            cfg.micro_batch_size,
            cfg.seq_len,
            available as f64 / 1e9
        )));
    }
    Ok(())
}

/// Runs (or resumes) the training run `cfg`.
pub fn run(cfg: &TrainConfig) -> Result<Summary> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(GristError::Usage(format!(
            "train config:\n  {}",
            problems.join("\n  ")
        )));
    }
    let out = PathBuf::from(&cfg.output);
    std::fs::create_dir_all(&out).map_err(|e| GristError::io(&out, e))?;
    let root = out.join("checkpoints");
    let hash = config_hash(cfg);
    if let Some(model) = &cfg.model {
        check_memory(cfg, model)?;
    }
    let start = start(cfg)?;
    check_memory(cfg, &start.config)?;
    let layout = Layout {
        document_masking: cfg.document_masking(),
        reset_position_ids: cfg.reset_position_ids,
    };
    let data_dir = Path::new(&cfg.data.path);
    let mut stream = Stream {
        main: Samples::open(data_dir, "train", cfg.seq_len, cfg.seed)?,
        replay: match &cfg.data.replay {
            Some(r) => Some((
                Samples::open(
                    Path::new(&r.path),
                    "train",
                    cfg.seq_len,
                    cfg.seed ^ 0x7e91a7,
                )?,
                r.fraction,
            )),
            None => None,
        },
    };
    // A mix without a validation split (validation_fraction 0) trains without evaluations;
    // a split that is there but unreadable is an error.
    let valid = if crate::tokens::megatron::idx_path(&data_dir.join("valid")).is_file() {
        Some(Samples::open(data_dir, "valid", cfg.seq_len, cfg.seed)?)
    } else {
        tracing::warn!(
            "{}: no validation split; no evaluations",
            data_dir.display()
        );
        None
    };
    let tokenizer = match &start.tokenizer {
        Some(p) => Some(crate::tokens::encoder::load_tokenizer(p)?),
        None => None,
    };
    let config = start.config.clone();
    let (mut backend, mut state) = match checkpoint::list(&root)?.pop() {
        Some((_, dir)) => {
            let (m, v, saved) = checkpoint::load_training(&dir, &config)?;
            if saved.config_hash != hash {
                return Err(GristError::Usage(format!(
                    "{} holds checkpoints of a run with another config; give this run its own `output` (or delete the old one)",
                    out.display()
                )));
            }
            let loaded = checkpoint::load_model(&dir)?;
            let mut backend = make_backend(cfg, config.clone(), loaded.weights)?;
            backend.set_optimizer_state(m, v)?;
            tracing::info!("resuming {} at step {}", out.display(), saved.step);
            (backend, saved)
        }
        None => {
            let state = TrainState {
                step: 0,
                samples: 0,
                tokens: 0,
                seed: cfg.seed,
                config_hash: hash.clone(),
            };
            (make_backend(cfg, start.config, start.weights)?, state)
        }
    };
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = MetricsFile::open(&metrics_path, state.step)?;
    let total_steps = cfg.steps;
    let per_step = cfg.micro_batch_size * cfg.grad_accum_steps;
    let started = Instant::now();
    let mut last_ckpt = checkpoint::list(&root)?.pop().map(|c| c.1);
    let progress = Progress::new(total_steps, state.step);
    while state.step < total_steps {
        let step = state.step + 1;
        let t0 = Instant::now();
        // Samples this step took from the replayed old data (continual runs).
        let mut replayed = 0usize;
        let batches: Vec<Batch> = (0..cfg.grad_accum_steps)
            .map(|a| {
                let first = state.samples + (a * cfg.micro_batch_size) as u64;
                let samples: Vec<_> = (0..cfg.micro_batch_size as u64)
                    .map(|i| {
                        let (sample, from_replay) = stream.nth(first + i);
                        replayed += usize::from(from_replay);
                        sample
                    })
                    .collect();
                data::batch(&samples, cfg.seq_len, layout)
            })
            .collect();
        let counted: usize = batches.iter().map(Batch::counted).sum();
        backend.zero_grads();
        let mut loss_sum = 0.0;
        if counted > 0 {
            let scale = 1.0 / counted as f32;
            for b in &batches {
                loss_sum += backend.forward_backward(b, scale)?;
            }
        }
        let grad_norm = backend.grad_norm()?;
        if !grad_norm.is_finite() || !loss_sum.is_finite() {
            return Err(GristError::stage(
                "train",
                format!(
                    "step {step}: loss or gradient is not finite (loss sum {loss_sum}, grad norm {grad_norm}); lower the learning rate"
                ),
            ));
        }
        let clip = cfg.optimizer.grad_clip;
        let grad_scale = if clip > 0.0 && grad_norm > clip {
            clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        let o = &cfg.optimizer;
        let lr = learning_rate(&cfg.schedule, o.lr, o.min_lr, step, total_steps);
        backend.adamw_step(&AdamStep {
            lr,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            decay_norms_and_embeddings: o.decay_norms_and_embeddings,
            step,
            grad_scale,
        })?;
        state.step = step;
        state.samples += per_step as u64;
        state.tokens += counted as u64;
        let secs = t0.elapsed().as_secs_f64();
        let tokens_per_s = (per_step * cfg.seq_len) as f64 / secs.max(1e-9);
        let mut record = json!({
            "step": step,
            "samples": state.samples,
            "tokens": state.tokens,
            "loss": if counted > 0 { loss_sum / counted as f64 } else { 0.0 },
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s,
        });
        if let Some(peak) = backend.peak_flops() {
            record["mfu"] = json!(tokens_per_s * config.flops_per_token(cfg.seq_len) / peak);
        }
        if let Some(bytes) = backend.device_memory() {
            record["device_memory_bytes"] = json!(bytes);
        }
        if stream.replay.is_some() {
            record["replay_samples"] = json!(replayed);
        }
        let eval_now =
            (cfg.eval.every > 0 && step.is_multiple_of(cfg.eval.every)) || step == total_steps;
        if eval_now && let Some(valid) = &valid {
            let span = EvalSpan {
                seq_len: cfg.seq_len,
                max_samples: cfg.eval.samples,
                batch_size: cfg.micro_batch_size,
                layout,
            };
            let e = evaluate(backend.as_mut(), valid, &span, tokenizer.as_ref())?;
            record["val_loss"] = json!(e.loss);
            if let Some(bpb) = e.bits_per_byte {
                record["val_bpb"] = json!(bpb);
            }
        }
        metrics.append(&record)?;
        progress.step(step, &record);
        hook::checkpoint("train_step");
        let save_now = (cfg.checkpoint.every > 0 && step.is_multiple_of(cfg.checkpoint.every))
            || step == total_steps;
        if save_now {
            let weights = backend.weights()?;
            let (m, v) = backend.optimizer_state()?;
            let dir = checkpoint::save(
                &root,
                &Checkpoint {
                    config: &config,
                    weights: &weights,
                    m: &m,
                    v: &v,
                    state: &state,
                    tokenizer: start.tokenizer.as_deref(),
                },
                cfg.checkpoint.keep,
            )?;
            last_ckpt = Some(dir);
        }
    }
    progress.finish();
    let checkpoint =
        last_ckpt.ok_or_else(|| GristError::stage("train", "no checkpoint written"))?;
    let summary = summarize(
        cfg,
        &config,
        &metrics_path,
        &checkpoint,
        stream.main.path(),
        valid.as_ref(),
        tokenizer.as_ref(),
        started,
    )?;
    Ok(summary)
}

/// Evaluation figures on the validation split.
pub struct Eval {
    pub loss: f64,
    pub tokens: usize,
    pub bits_per_byte: Option<f64>,
}

/// Which samples an evaluation reads and how it batches them.
pub struct EvalSpan {
    pub seq_len: usize,
    pub max_samples: usize,
    pub batch_size: usize,
    pub layout: Layout,
}

/// Mean loss over the first `max_samples` samples (dataset order), and bits per byte when the
/// tokenizer is known. The run's periodic evaluation and `grist evaluate` both use it.
pub fn evaluate(
    backend: &mut dyn Backend,
    split: &Samples,
    span: &EvalSpan,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> Result<Eval> {
    let n = span.max_samples.min(split.len());
    let (mut loss, mut tokens, mut bytes) = (0.0, 0usize, 0usize);
    for first in (0..n).step_by(span.batch_size.max(1)) {
        let samples: Vec<_> = (first..(first + span.batch_size).min(n))
            .map(|i| split.sample(i))
            .collect();
        if let Some(t) = tokenizer {
            bytes += samples.iter().map(|s| target_bytes(s, t)).sum::<usize>();
        }
        let b = data::batch(&samples, span.seq_len, span.layout);
        tokens += b.counted();
        loss += backend.loss(&b)?;
    }
    Ok(Eval {
        loss: if tokens > 0 {
            loss / tokens as f64
        } else {
            0.0
        },
        tokens,
        bits_per_byte: (tokenizer.is_some() && bytes > 0)
            .then(|| loss / std::f64::consts::LN_2 / bytes as f64),
    })
}

/// UTF-8 bytes of a sample's target tokens (1..padding), decoded fragment by fragment.
pub fn target_bytes(s: &data::Sample, tok: &tokenizers::Tokenizer) -> usize {
    s.fragments
        .iter()
        .map(|&(start, len)| {
            let (lo, hi) = (start.max(1), (start + len).min(s.padding_from));
            if lo >= hi {
                return 0;
            }
            tok.decode(&s.tokens[lo..hi], true)
                .map(|t| t.len())
                .unwrap_or(0)
        })
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &TrainConfig,
    model: &ModelConfig,
    metrics_path: &Path,
    checkpoint: &Path,
    train_path: PathBuf,
    valid: Option<&Samples>,
    tokenizer: Option<&tokenizers::Tokenizer>,
    started: Instant,
) -> Result<Summary> {
    let text =
        std::fs::read_to_string(metrics_path).map_err(|e| GristError::io(metrics_path, e))?;
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last = records.last().cloned().unwrap_or(json!({}));
    let first_loss = records.first().map(|r| r["loss"].clone());
    let mut summary = json!({
        "mode": cfg.mode,
        "parameters": model.parameter_count(),
        "steps": last["step"],
        "tokens": last["tokens"],
        "first_loss": first_loss,
        "final_loss": last["loss"],
        "val_loss": last["val_loss"],
        "val_bpb": last["val_bpb"],
        "checkpoint": checkpoint.display().to_string(),
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    if let (Some(valid), Some(tok)) = (valid, tokenizer) {
        summary["unigram_bpb"] = json!(unigram_bits_per_byte(
            cfg,
            &train_path,
            valid,
            tok,
            model.vocab_size
        )?);
    }
    let path = Path::new(&cfg.output).join("summary.json");
    let mut bytes = serde_json::to_vec_pretty(&summary).expect("json");
    bytes.push(b'\n');
    atomic::write(&path, &bytes)?;
    Ok(Summary {
        json: summary,
        checkpoint: checkpoint.to_path_buf(),
    })
}

/// The baseline a trained model must beat: a unigram model of the training split's tokens
/// (add-one smoothed), in bits per byte on the same validation targets as [`evaluate`].
fn unigram_bits_per_byte(
    cfg: &TrainConfig,
    train_prefix: &Path,
    valid: &Samples,
    tok: &tokenizers::Tokenizer,
    vocab: usize,
) -> Result<f64> {
    let train = crate::tokens::megatron::Dataset::open(train_prefix)?;
    let mut counts = vec![1u64; vocab];
    for s in 0..train.num_sequences() {
        for t in train.sequence(s) {
            if (t as usize) < vocab {
                counts[t as usize] += 1;
            }
        }
    }
    let total: u64 = counts.iter().sum();
    let layout = Layout {
        document_masking: false,
        reset_position_ids: false,
    };
    let (mut bits, mut bytes) = (0.0f64, 0usize);
    for i in 0..cfg.eval.samples.min(valid.len()) {
        let s = valid.sample(i);
        bytes += target_bytes(&s, tok);
        let b = data::batch(std::slice::from_ref(&s), cfg.seq_len, layout);
        for &t in b.targets.iter().filter(|&&t| t >= 0) {
            let count = counts.get(t as usize).ok_or_else(|| {
                GristError::data(
                    valid.path(),
                    format!("validation token {t} is outside the vocabulary ({vocab})"),
                )
            })?;
            bits -= (*count as f64 / total as f64).log2();
        }
    }
    Ok(if bytes > 0 { bits / bytes as f64 } else { 0.0 })
}

/// `metrics.jsonl`, cut back to the resumed step so a resumed run appends what an
/// uninterrupted one would have written.
struct MetricsFile {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsFile {
    fn open(path: &Path, keep_through: u64) -> Result<MetricsFile> {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let kept: String = old
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= keep_through)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        atomic::write(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| GristError::io(path, e))?;
        Ok(MetricsFile {
            file,
            path: path.to_path_buf(),
        })
    }

    fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        writeln!(self.file, "{record}").map_err(|e| GristError::io(&self.path, e))
    }
}

/// A progress bar on a terminal, a log line every tenth of the run otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
}

impl Progress {
    fn new(total: u64, done: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("train {bar:30} {pos}/{len} steps {msg}")
                    .expect("template"),
            );
            b.set_position(done);
            b
        });
        Progress { bar, total }
    }

    fn step(&self, step: u64, record: &serde_json::Value) {
        let msg = format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            record["loss"].as_f64().unwrap_or(0.0),
            record["lr"].as_f64().unwrap_or(0.0),
            record["tokens_per_s"].as_f64().unwrap_or(0.0)
        );
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg);
            }
            None if step.is_multiple_of((self.total / 10).max(1)) || step == self.total => {
                tracing::info!("step {step}/{}: {msg}", self.total)
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
