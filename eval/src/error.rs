//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while evaluating. Each variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
