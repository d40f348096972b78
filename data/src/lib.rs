//! imagen-data: image-caption shards in, decoded and cropped samples out.
//!
//! Shard lists ([`shards`]) expand into parquet and WebDataset shards, read as streams of units
//! ([`reader`]) that a deterministic, window-shuffled [`stream`] deals per rank; the [`Loader`]
//! decodes them ([`decode`]) into batches of u8 NHWC pixels. Bad input is skipped and counted
//! ([`SkipStats`]). [`synth`] writes the synthetic scene dataset of the demo and the tests.
//!
//! This crate never links libtorch, so it builds and tests in seconds.

pub mod bench;
pub mod config;
pub mod decode;
pub mod embed_cache;
pub mod error;
mod filter;
pub mod inspect;
mod jpeg_scaled;
pub mod loader;
mod orientation;
pub mod reader;
pub mod shards;
pub mod stats;
pub mod stream;
pub mod synth;

pub use config::{DataConfig, FilterConfig, FormatChoice};
pub use decode::CropMode;
pub use error::{DataError, Result};
pub use loader::{epoch_batches, Batch, Cursor, Loader, StreamSettings};
pub use stats::{SkipReason, SkipStats};
