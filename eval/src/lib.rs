//! imagen-eval: metrics and reports, independent of how the images were produced.

pub mod clip;
pub mod conditioning;
pub mod error;
pub mod fid;
pub mod frechet;
pub mod images;
pub mod inception;
pub mod stats;
pub mod weights;

pub use error::{EvalError, Result, EXPORT_INCEPTION_HINT};
pub use fid::{fid, folder_activations, folder_statistics, side_statistics, FidSide};
pub use frechet::frechet_distance;
pub use inception::{load_fid_inception, FidDims, FidInception};
pub use stats::ActivationStats;
