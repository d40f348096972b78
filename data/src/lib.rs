//! imagen-data: image-caption shards in, decoded and cropped samples out.
//!
//! This crate never links libtorch, so it builds and tests in seconds.

pub mod embed_cache;
pub mod error;

pub use error::{DataError, Result};
