//! The T5 embedding cache: per-token encoder outputs of every caption, computed once by
//! `imagen embed` and looked up by sample key during `frozen-cached` training.
//!
//! Layout of a cache directory:
//! - `manifest.json`: the format version and the encoder's identity (weights and tokenizer
//!   hashes, max length, dtype, width); a cache whose identity differs from the configured
//!   encoder is refused.
//! - `<shard>.safetensors`, one per data shard, written atomically (temporary file + rename),
//!   so a finished shard is complete and a killed run redoes only the shards in flight. Tensors:
//!   `embeddings` `[total_tokens, d_model]` (bf16 or f32; only real tokens, no padding) and
//!   `offsets` `[n + 1]` int64 (rows of caption i are `offsets[i]..offsets[i+1]`); metadata
//!   `keys`, a JSON list of cache keys (sample key, `:`, 16 hex digits of the caption's SHA-256),
//!   and `identity`, the SHA-256 of the manifest's encoder identity.
//!
//! This crate has no libtorch: bf16 values are carried as their raw 16 bits.

mod key;
mod manifest;
mod reader;
mod writer;

pub use key::cache_key;
pub use manifest::{CacheDtype, EncoderIdentity, FileStamp, Manifest, MANIFEST_FILE};
pub use reader::{CachedEmbedding, EmbedCache, TextBatch};
pub use writer::{recorded_source, shard_path, ShardWriter};

#[cfg(test)]
mod tests;
