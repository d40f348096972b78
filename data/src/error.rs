//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading shards. Each variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An embedding cache file or directory is unusable; the message says why and what to do.
    #[error("{path}: {message}")]
    EmbedCache { path: PathBuf, message: String },
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
