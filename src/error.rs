//! The one error type of the library. The CLI maps it to exit codes: 2 for bad config or usage,
//! 1 for a run failure.

use std::path::PathBuf;

use crate::diagnostic::Diagnostics;

#[derive(Debug, thiserror::Error)]
pub enum GristError {
    /// The pipeline file has errors; the diagnostics carry every one of them.
    #[error("{0}")]
    Config(Box<Diagnostics>),

    #[error("{0}")]
    Usage(String),

    /// No usable GPU for the CUDA backend (no driver, no device, an unsupported one, a CUDA
    /// library missing): the sentence says which.
    #[error("{0}")]
    Device(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A data file that cannot be read as what it claims to be (corrupt Parquet, bad gzip...).
    #[error("{}: {message}", path.display())]
    Data { path: PathBuf, message: String },

    #[error("stage `{stage}`: {message}")]
    Stage { stage: String, message: String },

    /// A stage parameter that is wrong given the files it names (a model that is not one...).
    #[error("stage `{stage}`, `{param}`: {message}")]
    Param {
        stage: String,
        param: &'static str,
        message: String,
    },

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    #[error("sql: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// A bug: a panic caught at a task or request boundary. The message asks for a report.
    #[error(
        "internal error (a bug in grist; please report it with the command that caused it): {0}"
    )]
    Internal(String),

    #[error("{failed} of {total} task(s) of phase `{phase}` failed:\n{details}")]
    TasksFailed {
        phase: String,
        failed: usize,
        total: usize,
        details: String,
    },
}

pub type Result<T, E = GristError> = std::result::Result<T, E>;

impl GristError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GristError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn data(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        GristError::Data {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub fn stage(stage: impl Into<String>, message: impl std::fmt::Display) -> Self {
        GristError::Stage {
            stage: stage.into(),
            message: message.to_string(),
        }
    }

    pub fn param(
        stage: impl Into<String>,
        param: &'static str,
        message: impl std::fmt::Display,
    ) -> Self {
        GristError::Param {
            stage: stage.into(),
            param,
            message: message.to_string(),
        }
    }

    /// Names the stage an error happened in, unless it already does.
    pub fn in_stage(self, stage: &str) -> Self {
        match self {
            GristError::Stage { .. } | GristError::Param { .. } => self,
            other => GristError::stage(stage, other),
        }
    }

    /// Process exit code for this error: 2 for config, usage and a missing GPU, 1 for
    /// everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            GristError::Config(_) | GristError::Usage(_) | GristError::Device(_) => 2,
            _ => 1,
        }
    }
}

/// The message a panic carried (`panic!` with a string or a formatted message).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Adds the path of the file being processed to an I/O result.
pub trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| GristError::io(path, e))
    }
}
