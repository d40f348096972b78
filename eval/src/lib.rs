//! imagen-eval: metrics and reports, independent of how the images were produced.

pub mod error;

pub use error::{EvalError, Result};
