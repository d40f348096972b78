//! The one error type of this crate.

use std::path::PathBuf;

/// What a user runs to export pytorch-fid's FID Inception weights; quoted by the missing-weights
/// error and by the README.
pub const EXPORT_INCEPTION_HINT: &str = "\
export pytorch-fid's FID Inception weights once (pip install pytorch-fid safetensors):
  python -c \"from pytorch_fid.inception import InceptionV3; from safetensors.torch import save_file; \
save_file(InceptionV3([3]).state_dict(), 'pt_inception-2015-12-05.safetensors')\"";

/// Everything that can go wrong while evaluating. Each variant names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The Inception weights file does not exist.
    #[error("FID Inception weights not found at {path}; {EXPORT_INCEPTION_HINT}")]
    MissingWeights { path: PathBuf },

    /// A weights file exists but does not fit the model (missing tensor, wrong shape).
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },

    /// An image could not be decoded.
    #[error("{path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    /// A statistics file (.npz) could not be read or written, or lacks `mu`/`sigma`.
    #[error("{path}: {message}")]
    Stats { path: PathBuf, message: String },

    /// Arguments that cannot work together (dimension mismatch, too few images).
    #[error("{0}")]
    Invalid(String),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = EvalError> = std::result::Result<T, E>;
