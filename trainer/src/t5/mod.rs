//! The T5 text encoder (Raffel et al. 2020; v1.1 as used by Imagen, Saharia et al. 2022 §2.1),
//! its tokenizer, and loading of Hugging Face model folders.

mod attention;
pub mod config;
pub mod demo;
pub mod encoder;
mod feed_forward;
pub mod init;
mod layer_norm;
pub mod load;
mod param;
pub mod position_bias;
pub mod tokenizer;

pub use config::{FeedForward, T5Config};
pub use encoder::{Freeze, T5Encoder};
pub use tokenizer::{T5Tokenizer, Tokens, DEFAULT_MAX_LENGTH};
