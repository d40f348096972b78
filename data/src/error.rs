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
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
