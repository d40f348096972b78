//! The one error type of the trainer library.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A call into the native shim (libtorch C++) failed.
    #[error("{what}: {message}")]
    Native { what: String, message: String },

    /// A configuration file or override is invalid; the message names the field and the reason.
    #[error("{source_name}: {message}")]
    Config { source_name: String, message: String },

    /// Training kept producing non-finite losses or gradients.
    #[error("training diverged: {0}")]
    Diverged(String),

    /// A checkpoint or optimizer state is missing, damaged or does not fit the model.
    #[error("checkpoint: {0}")]
    Checkpoint(String),

    /// A checkpoint written in a layout this build does not read (not damage: every checkpoint
    /// of that run is in it).
    #[error("checkpoint: {path}: format version {found} (this imagen reads version {expected})")]
    CheckpointVersion { path: PathBuf, found: u32, expected: u32 },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model folder (T5 config or weights) is unusable; the message names what is wrong.
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },

    /// A tokenizer file is unusable or a text could not be tokenized.
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    /// Sampled images do not fit the folder being written (their count or their size).
    #[error("{path}: {message}")]
    Samples { path: PathBuf, message: String },

    /// The text-conditioning path (captions, embedding cache, widths) was given bad input.
    #[error("{0}")]
    Text(String),

    /// Multi-process training could not start or a peer failed; the message names the rank.
    #[error("distributed: {0}")]
    Dist(String),

    #[error(transparent)]
    Torch(#[from] tch::TchError),

    #[error(transparent)]
    Data(#[from] imagen_data::DataError),

    /// A metric could not be computed (weights, images, statistics).
    #[error(transparent)]
    Eval(#[from] imagen_eval::EvalError),
}

pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
