//! The one error type of this crate.

use std::path::{Path, PathBuf};

/// Everything that stops the data pipeline (as opposed to a bad sample or shard, which is skipped
/// and counted in [`crate::SkipStats`]). Each variant names what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: parquet: {message}")]
    Parquet { path: PathBuf, message: String },

    /// A shard list entry names nothing, or the list expands to no shard.
    #[error("shard list: {0}")]
    ShardList(String),

    /// A configuration or option is unusable; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// A saved data cursor that this loader cannot continue exactly.
    #[error("{0}")]
    CursorMismatch(String),

    /// The loader's background thread stopped.
    #[error("data loader stopped: {0}")]
    LoaderStopped(String),

    /// An embedding cache file or directory is unusable; the message says why and what to do.
    #[error("{path}: {message}")]
    EmbedCache { path: PathBuf, message: String },
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> DataError {
        DataError::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// The message a caught panic carries (`panic!` with a literal or a formatted one).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
