//! The `grist` command line: a thin layer over the library. Exit codes: 0 ok, 1 run failure,
//! 2 bad config or usage.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use grist::GristError;
use grist::classifier::train::TrainParams;
use grist::commands::classifier::TrainCommand;
use grist::config::registry;
use grist::engine::{self, RunOptions, Selection};
use grist::tokens;

mod train_cli;
use grist::tokens::tokenizer::{ModelKind, TokenizerParams};

#[derive(Parser)]
#[command(
    name = "grist",
    version,
    about = "Curate LLM training data: YAML pipelines over Parquet / JSON Lines shards"
)]
struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print nothing but errors (no logs, no progress, no summary).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline (all phases, or one phase / one task as a batch scheduler would).
    Run {
        file: PathBuf,
        /// Run only this phase (see `grist plan`).
        #[arg(long)]
        phase: Option<String>,
        /// Run only the tasks whose index is TASK modulo TASKS.
        #[arg(long, env = "SLURM_ARRAY_TASK_ID", requires = "tasks")]
        task: Option<usize>,
        /// Number of processes sharing the phase (with --task).
        /// Without --task, the task index comes from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
        #[arg(long, env = "SLURM_ARRAY_TASK_COUNT")]
        tasks: Option<usize>,
        /// Worker threads (default: all cores).
        #[arg(long, short = 'j', value_parser = crate::thread_count)]
        workers: Option<usize>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Write the run's HTML report (`<workdir>/report.html`) at the end.
        #[arg(long)]
        report: bool,
    },
    /// Write one self-contained HTML page showing what a run did to the data: funnel, reasons
    /// with examples, distributions, dedup, tokens, mixture, training curves.
    Report {
        /// A pipeline file, or the workdir of a run.
        target: PathBuf,
        /// Where to write the page (default: `<workdir>/report.html`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Check a pipeline file and its input data without running it.
    Validate { file: PathBuf },
    /// Show the phases and tasks of a pipeline.
    Plan {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = Emit::Text)]
        emit: Emit,
        /// With `--emit slurm`: array size per phase (default: one array job per task).
        #[arg(long)]
        array_size: Option<usize>,
        /// With `--emit k8s`: pods of a phase running at once (default: all of its tasks).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        parallelism: Option<u32>,
        /// With `--emit slurm` or `k8s`: CPUs each array task or pod asks for, and its workers.
        #[arg(long, default_value_t = 4, value_parser = crate::thread_count)]
        cpus: usize,
    },
    /// List stage types; `stages describe TYPE` shows one stage's parameters.
    Stages {
        #[command(subcommand)]
        action: Option<StagesAction>,
        /// Print the JSON Schema of pipeline files.
        #[arg(long)]
        json_schema: bool,
    },
    /// fastText quality classifiers (`classifier train`).
    Classifier {
        #[command(subcommand)]
        action: ClassifierAction,
    },
    /// Tokenizers: `tokenizer train`, `tokenizer encode`, `tokenizer eval`.
    Tokenizer {
        #[command(subcommand)]
        action: TokenizerAction,
    },
    /// Show what a data file holds (Parquet, JSON Lines, Megatron .idx/.bin, llm.c .bin, mix.json);
    /// a directory or glob lists row counts.
    Inspect {
        path: String,
        /// Rows (documents) to show.
        #[arg(long, default_value_t = 3)]
        rows: usize,
        /// tokenizer.json to decode token files' samples with.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Train a model (pretrain, continual or long_context, from a YAML config); resumes.
    Train(train_cli::TrainArgs),
    /// Turn a `transformers` folder or a GGUF file into a grist checkpoint.
    Import(train_cli::ImportArgs),
    /// Write a checkpoint as a folder `transformers` loads (LlamaForCausalLM).
    Export(train_cli::ExportArgs),
    /// Sample from a checkpoint (greedy, temperature, top-k, top-p).
    Generate(train_cli::GenerateArgs),
    /// A checkpoint's loss on a `mix` split.
    Evaluate(train_cli::EvaluateArgs),
    /// Serve a checkpoint or GGUF file over an OpenAI-compatible HTTP API.
    Serve(train_cli::ServeArgs),
    /// The CUDA backend: `gpu check` (what is installed, kernels compiled and checked),
    /// `gpu bench` (training speed).
    Gpu {
        #[command(subcommand)]
        action: train_cli::GpuAction,
    },
}

#[derive(Subcommand)]
enum StagesAction {
    /// Parameters, defaults and docs of one stage type.
    Describe { name: String },
}

#[derive(Subcommand)]
enum ClassifierAction {
    /// Train a supervised fastText classifier (as the `classifier_train` stage does): documents
    /// from --positive and --negative files (Parquet, JSON Lines or .txt), or from --input files
    /// with a --label-column. Prints validation precision / recall / F1 and writes the model.
    Train(Box<TrainArgs>),
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Files (or globs) of good documents.
    #[arg(long, num_args = 1..)]
    positive: Vec<String>,
    /// Files (or globs) of bad documents.
    #[arg(long, num_args = 1..)]
    negative: Vec<String>,
    /// Files (or globs) whose documents carry their label in --label-column.
    #[arg(long, num_args = 1..)]
    input: Vec<String>,
    #[arg(long)]
    label_column: Option<String>,
    /// Column (field) of the text in Parquet / JSON Lines inputs.
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "hq")]
    positive_label: String,
    #[arg(long, default_value = "cc")]
    negative_label: String,
    /// Where to write the model (`.bin`); `<output>.work/` keeps the run's state.
    #[arg(long, short)]
    output: PathBuf,
    /// Share of documents held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// Seeds the train / validation split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 100)]
    dim: i32,
    #[arg(long, default_value_t = 5)]
    epoch: i32,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long = "wordNgrams", alias = "word-ngrams", default_value_t = 2)]
    word_ngrams: i32,
    #[arg(long = "minCount", alias = "min-count", default_value_t = 1)]
    min_count: i32,
    #[arg(long, default_value_t = 2_000_000)]
    bucket: i32,
    /// softmax, hs, ns or ova.
    #[arg(long, default_value = "softmax")]
    loss: String,
    /// Training threads (1: deterministic).
    #[arg(long, default_value_t = 1)]
    thread: i32,
}

#[derive(Subcommand)]
enum TokenizerAction {
    /// Train a tokenizer (as the `tokenizer_train` stage does) on --input files (Parquet, JSON
    /// Lines or .txt) and write its tokenizer.json.
    Train(Box<TokenizerTrainArgs>),
    /// Encode documents into a Megatron dataset `<output>/<name>.idx/.bin` (or llm.c `.bin`), as
    /// the `tokenize` stage does.
    Encode(Box<TokenizerEncodeArgs>),
    /// Bytes per token, tokens per word and vocabulary use of tokenizers on given text.
    Eval {
        /// tokenizer.json files.
        #[arg(required = true)]
        tokenizers: Vec<PathBuf>,
        /// Files (or globs) of text: Parquet, JSON Lines or .txt.
        #[arg(long, num_args = 1.., required = true)]
        input: Vec<String>,
        #[arg(long, default_value = "text")]
        text_column: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct TokenizerTrainArgs {
    /// Files (or globs) of documents: Parquet, JSON Lines or .txt.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<String>,
    /// Column (field) of the text in Parquet / JSON Lines inputs.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Where to write tokenizer.json; `<output>.work/` keeps the run's state.
    #[arg(long, short)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = ModelKind::Bpe)]
    model: ModelKind,
    #[arg(long, default_value_t = 32_000)]
    vocab_size: usize,
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Comma-separated special tokens, given the first ids.
    #[arg(long, value_delimiter = ',', default_value = "<|endoftext|>")]
    special_tokens: Vec<String>,
    /// `bpe`: the word-splitting regex (default: GPT-4's).
    #[arg(long)]
    split_pattern: Option<String>,
    /// `wordpiece`: keep case.
    #[arg(long)]
    cased: bool,
    /// Train on a seeded sample of about this many bytes.
    #[arg(long)]
    byte_budget: Option<u64>,
    /// Words longer than this many bytes are left out of training (the trainer is quadratic in
    /// a word's length).
    #[arg(long, default_value_t = grist::tokens::tokenizer::default_max_word_bytes())]
    max_word_bytes: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_parser = crate::thread_count)]
    workers: Option<usize>,
}

#[derive(clap::Args)]
struct TokenizerEncodeArgs {
    /// The tokenizer.json to encode with.
    tokenizer: PathBuf,
    /// A file or glob of documents (Parquet, JSON Lines or .txt): one dataset.
    #[arg(long)]
    input: String,
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Output directory; `<output>.work/` keeps the run's state.
    #[arg(long, short)]
    output: PathBuf,
    /// Dataset name: `<output>/<name>.idx/.bin`.
    #[arg(long, default_value = "tokens")]
    name: String,
    /// Write an llm.c `.bin` instead of a Megatron dataset.
    #[arg(long)]
    llmc: bool,
    /// Token appended to each document.
    #[arg(long, default_value = "<|endoftext|>")]
    eos: String,
    /// Append no EOS.
    #[arg(long, conflicts_with = "eos")]
    no_eos: bool,
    /// Token put before each document.
    #[arg(long)]
    bos: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_parser = crate::thread_count)]
    workers: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Text,
    Json,
    Slurm,
    /// Kubernetes Indexed Jobs, one per phase.
    K8s,
}

/// `-q`: nothing but errors on any output.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    // A panic is a bug whatever the input: report it as one (exit 1), never as exit 101.
    let quiet = cli.quiet;
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| execute(cli.command, quiet)))
            .unwrap_or_else(|payload| {
                Err(GristError::Internal(grist::error::panic_message(payload.as_ref())).into())
            });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", render_error(&e));
            ExitCode::from(e.downcast_ref::<GristError>().map_or(1, |g| g.exit_code()) as u8)
        }
    }
}

/// `-j N`: 1 to 1024 threads (more would only exhaust the machine starting them).
fn thread_count(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if (1..=1024).contains(&n) {
        Ok(n)
    } else {
        Err(format!("{n} is not in 1..=1024"))
    }
}

fn render_error(e: &anyhow::Error) -> String {
    match e.downcast_ref::<GristError>() {
        Some(GristError::Config(d)) => d.to_string(),
        _ => format!("error: {e:#}"),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GRIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("grist={default},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn execute(command: Command, quiet: bool) -> anyhow::Result<()> {
    match command {
        Command::Report { target, output } => {
            let path = grist::commands::report::write(&target, output.as_deref())?;
            if !quiet {
                println!("report: {}", path.display());
            }
        }
        Command::Run {
            file,
            phase,
            task,
            tasks,
            workers,
            no_progress,
            report,
        } => {
            let task = match (task, tasks) {
                (None, Some(_)) => Some(completion_index()?),
                (task, _) => task,
            };
            let (pipeline, plan) = engine::prepare(grist::config::load(&file)?)?;
            let opts = RunOptions {
                selection: Selection {
                    phase,
                    shard: task.zip(tasks),
                },
                workers: workers
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                progress: !no_progress && !quiet,
            };
            let summary = engine::run(&pipeline, &plan, &opts)?;
            let report_path = report
                .then(|| grist::commands::report::write(pipeline.workdir(), None))
                .transpose()?;
            if !quiet {
                print!("{}", stats_table(&summary.stages));
                println!(
                    "{} task(s) run, {} already complete, {:.1}s; stats in {}",
                    summary.tasks_run,
                    summary.tasks_skipped,
                    summary.seconds,
                    pipeline.workdir().join("stats").display()
                );
                match report_path {
                    Some(path) => println!("report: {}", path.display()),
                    None => println!(
                        "report: `grist report {}` writes {}",
                        pipeline.workdir().display(),
                        pipeline.workdir().join("report.html").display()
                    ),
                }
            }
        }
        Command::Validate { file } => {
            let (pipeline, plan) = engine::prepare(grist::config::load(&file)?)?;
            let tasks: usize = plan.phases.iter().map(|p| p.tasks.len()).sum();
            println!(
                "{}: ok ({} stages, {} phase(s), {} task(s))",
                file.display(),
                pipeline.nodes.len(),
                plan.phases.len(),
                tasks
            );
        }
        Command::Plan {
            file,
            emit,
            array_size,
            parallelism,
            cpus,
        } => {
            let parallelism = parallelism.map(|n| n as usize);
            let (pipeline, plan) = engine::prepare(grist::config::load(&file)?)?;
            match emit {
                Emit::Text => print!("{}", plan_text(&pipeline, &plan)),
                Emit::Json => println!("{}", serde_json::to_string_pretty(&plan.phases)?),
                Emit::Slurm => print!(
                    "{}",
                    engine::slurm::scripts(&pipeline, &plan, &file, array_size, cpus)
                ),
                Emit::K8s => print!(
                    "{}",
                    engine::k8s::manifests(&pipeline, &plan, &file, parallelism, cpus)
                ),
            }
        }
        Command::Stages {
            action: None,
            json_schema: true,
        } => {
            print!("{}", grist::config::schema::pipeline_schema_text());
        }
        Command::Stages { action: None, .. } => {
            let types = registry::all();
            let width = types.iter().map(|t| t.name.len()).max().unwrap_or(16);
            for t in types {
                println!("{:<width$} {:<9} {}", t.name, t.kind.name(), t.summary());
            }
            println!("\n`grist stages describe TYPE` shows a stage's parameters.");
        }
        Command::Stages {
            action: Some(StagesAction::Describe { name }),
            ..
        } => {
            let Some(t) = registry::get(&name) else {
                let names: Vec<&str> = registry::all().iter().map(|t| t.name).collect();
                let hint = grist::diagnostic::did_you_mean(&name, names.iter().copied())
                    .unwrap_or_default();
                return Err(
                    GristError::Usage(format!("unknown stage type `{name}` {hint}")).into(),
                );
            };
            print!("{}", describe(&t));
        }
        Command::Train(a) => train_cli::train(a)?,
        Command::Import(a) => train_cli::import(a)?,
        Command::Export(a) => train_cli::export(a)?,
        Command::Generate(a) => train_cli::generate(a)?,
        Command::Evaluate(a) => train_cli::evaluate(a)?,
        Command::Serve(a) => train_cli::serve(a)?,
        Command::Gpu { action } => train_cli::gpu(action)?,
        Command::Inspect {
            path,
            rows,
            tokenizer,
        } => print!(
            "{}",
            grist::commands::inspect::inspect(&path, rows, tokenizer.as_deref())?
        ),
        Command::Classifier {
            action: ClassifierAction::Train(a),
        } => {
            let command = TrainCommand {
                positive: a.positive,
                negative: a.negative,
                labelled: a.input,
                label_column: a.label_column,
                text_column: a.text_column,
                positive_label: a.positive_label,
                negative_label: a.negative_label,
                output: a.output,
                validation_fraction: a.validation_fraction,
                seed: a.seed,
                fasttext: TrainParams {
                    dim: a.dim,
                    epoch: a.epoch,
                    lr: a.lr,
                    word_ngrams: a.word_ngrams,
                    min_count: a.min_count,
                    bucket: a.bucket,
                    loss: a.loss,
                    thread: a.thread,
                },
            };
            run_generated(&command.workdir(), &command.pipeline()?, None)?;
            println!("model: {}", command.output.display());
        }
        Command::Tokenizer {
            action: TokenizerAction::Train(a),
        } => {
            let defaults = TokenizerParams::default();
            let command = grist::commands::tokenizer::TrainCommand {
                inputs: a.input,
                text_column: a.text_column,
                output: a.output,
                params: TokenizerParams {
                    model: a.model,
                    vocab_size: a.vocab_size,
                    min_frequency: a.min_frequency,
                    special_tokens: a.special_tokens,
                    split_pattern: a.split_pattern.unwrap_or(defaults.split_pattern),
                    lowercase: !a.cased,
                    max_word_bytes: a.max_word_bytes,
                },
                byte_budget: a.byte_budget,
                seed: a.seed,
            };
            run_generated(&command.workdir(), &command.pipeline()?, a.workers)?;
            println!("tokenizer: {}", command.output.display());
        }
        Command::Tokenizer {
            action: TokenizerAction::Encode(a),
        } => {
            let command = grist::commands::tokenizer::EncodeCommand {
                tokenizer: a.tokenizer,
                input: a.input,
                text_column: a.text_column,
                output: a.output,
                name: a.name,
                llmc: a.llmc,
                eos: (!a.no_eos).then_some(a.eos),
                bos: a.bos,
            };
            run_generated(&command.workdir(), &command.pipeline()?, a.workers)?;
            println!("dataset: {}", command.output.join(&command.name).display());
        }
        Command::Tokenizer {
            action:
                TokenizerAction::Eval {
                    tokenizers,
                    input,
                    text_column,
                    json,
                },
        } => {
            let texts = grist::io::documents::read_texts(&input, &text_column)?;
            let rows = tokenizers
                .iter()
                .map(|t| tokens::eval::evaluate(t, &texts))
                .collect::<grist::Result<Vec<_>>>()?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&rows)?),
                false => print!("{}", tokens::eval::table(&rows)),
            }
        }
    }
    Ok(())
}

/// The task index of a pod of a Kubernetes Indexed Job, for `--tasks N` without `--task`.
fn completion_index() -> anyhow::Result<usize> {
    let Ok(v) = std::env::var("JOB_COMPLETION_INDEX") else {
        return Err(GristError::Usage(
            "--tasks needs --task (or SLURM_ARRAY_TASK_ID, or JOB_COMPLETION_INDEX in a Kubernetes \
             Indexed Job)"
                .into(),
        )
        .into());
    };
    v.trim().parse().map_err(|e| {
        GristError::Usage(format!(
            "JOB_COMPLETION_INDEX `{v}` is not a task index: {e}"
        ))
        .into()
    })
}

/// Writes the pipeline a command stands for into `workdir` and runs it there, resumably.
fn run_generated(
    workdir: &std::path::Path,
    pipeline_text: &str,
    workers: Option<usize>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(workdir)?;
    let file = workdir.join("pipeline.yaml");
    std::fs::write(&file, pipeline_text)?;
    let (pipeline, plan) = engine::prepare(grist::config::load(&file)?)?;
    let opts = RunOptions {
        selection: Selection::default(),
        workers: workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        progress: !QUIET.load(std::sync::atomic::Ordering::Relaxed),
    };
    let summary = engine::run(&pipeline, &plan, &opts)?;
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        print!("{}", stats_table(&summary.stages));
    }
    Ok(())
}

fn stats_table(stages: &[engine::stats::StageReport]) -> String {
    let id_width = stages
        .iter()
        .map(|r| r.stage.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let type_width = stages
        .iter()
        .map(|r| r.type_name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<id_width$} {:<type_width$} {:>10} {:>10}  rejected\n",
        "stage", "type", "rows in", "kept"
    );
    for r in stages {
        let rejected: Vec<String> = r
            .stats
            .rejected
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<id_width$} {:<type_width$} {:>10} {:>10}  {}",
            r.stage,
            r.type_name,
            r.stats.rows_in,
            r.stats.rows_kept,
            rejected.join(" ")
        );
    }
    for r in stages.iter().filter(|r| !r.stats.metrics.is_empty()) {
        let metrics: Vec<String> = r
            .stats
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={}", format_metric(*v)))
            .collect();
        let _ = writeln!(out, "{}: {}", r.stage, metrics.join(" "));
    }
    out
}

/// Counts as integers, ratios with four decimals.
fn format_metric(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

fn plan_text(p: &engine::Pipeline, plan: &engine::Plan) -> String {
    let mut out = format!(
        "pipeline `{}`, workdir {}\n",
        p.spec.name,
        p.workdir().display()
    );
    for phase in &plan.phases {
        let _ = writeln!(
            out,
            "phase `{}`: {} task(s); stages {}",
            phase.name,
            phase.tasks.len(),
            phase.stages.join(", ")
        );
        for t in &phase.tasks {
            let done = engine::task::completed(p.workdir(), &phase.name, t).is_some();
            let outputs: Vec<String> = t.outputs.iter().map(|o| o.display().to_string()).collect();
            let _ = writeln!(
                out,
                "  task {:>4} {:<14} {} → {}{}",
                t.index,
                t.name,
                t.input.display(),
                outputs.join(", "),
                if done { "  [done]" } else { "" }
            );
        }
    }
    out
}

fn describe(t: &registry::StageType) -> String {
    let schema = (t.schema)();
    let mut out = format!(
        "{} ({})\n\n{}\n\nparameters:\n",
        t.name,
        t.kind.name(),
        wrap(&t.description(), 2)
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if let Some(props) = schema["properties"].as_object() {
        for (name, p) in props {
            let kind = p["type"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    p["type"].as_array().map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .filter(|s| *s != "null")
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                })
                .or_else(|| {
                    p["$ref"]
                        .as_str()
                        .map(|r| r.rsplit('/').next().unwrap_or(r).to_string())
                })
                .unwrap_or_default();
            let default = if required.contains(&name.as_str()) {
                "required".to_string()
            } else {
                match p.get("default") {
                    Some(d) => format!("default {d}"),
                    None => "optional".to_string(),
                }
            };
            let _ = writeln!(out, "  {name} ({kind}, {default})");
            if let Some(d) = p["description"].as_str() {
                let _ = writeln!(out, "{}", wrap(d, 6));
            }
        }
    }
    let _ = writeln!(
        out,
        "\ncommon keys: id (default: the type name), inputs (default: the previous stage)"
    );
    out
}

fn wrap(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() + 1 > 96 - indent {
            lines.push(format!("{pad}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{pad}{line}"));
    }
    lines.join("\n")
}
