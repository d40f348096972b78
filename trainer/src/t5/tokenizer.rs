//! T5 tokenization through the `tokenizers` crate, with Hugging Face's truncation and padding:
//! the post-processor of `tokenizer.json` appends `</s>`, truncation keeps it (the text is cut,
//! not the EOS), padding is on the right with the pad id and mask 0.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Result, TrainerError};
use crate::native::to_device_async;

/// Default maximum number of tokens per caption, EOS included (Imagen uses 128).
pub const DEFAULT_MAX_LENGTH: usize = 128;

#[derive(Debug)]
pub struct T5Tokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: i64,
}

/// Token ids of a batch, not yet padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// One id sequence per caption, EOS included, at most `max_length` long.
    pub ids: Vec<Vec<i64>>,
    /// How many captions were longer than `max_length` and were cut.
    pub truncated: usize,
}

impl T5Tokenizer {
    /// Reads `tokenizer.json`; `pad_id` is the config's `pad_token_id`.
    pub fn from_file(path: &Path, max_length: usize, pad_id: i64) -> Result<Self> {
        let bad = |message: String| TrainerError::Tokenizer { path: path.to_owned(), message };
        if max_length < 2 {
            return Err(bad(format!("max length {max_length} leaves no room for text and EOS")));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| bad(e.to_string()))?;
        // T5 ends every sequence with `</s>`, which the tokenizer's post-processor appends: an
        // empty caption is that token alone. Without it, every embedding would differ from
        // Hugging Face's, and an empty caption would have no token at all.
        let empty = inner.encode("", true).map_err(|e| bad(e.to_string()))?;
        if empty.get_ids().len() != 1 {
            return Err(bad(format!(
                "an empty caption tokenizes to {} tokens, not T5's end-of-sequence token alone: \
                 this tokenizer.json has no T5 post-processor appending `</s>`",
                empty.get_ids().len()
            )));
        }
        Ok(Self { inner, path: path.to_owned(), max_length, pad_id })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes a batch (truncated to `max_length`, EOS kept, not padded).
    pub fn tokenize(&self, captions: &[String]) -> Result<Tokens> {
        let encodings = self.inner.encode_batch(captions.to_vec(), true).map_err(|e| {
            TrainerError::Tokenizer { path: self.path.clone(), message: e.to_string() }
        })?;
        let truncated = encodings.iter().filter(|e| !e.get_overflowing().is_empty()).count();
        let ids =
            encodings.iter().map(|e| e.get_ids().iter().map(|&i| i as i64).collect()).collect();
        Ok(Tokens { ids, truncated })
    }

    /// `(input_ids [B, len] int64, attention_mask [B, len] int64)`, right-padded with the pad id
    /// to `len`, which must be at least the longest sequence.
    pub fn pad(&self, tokens: &Tokens, len: usize, device: Device) -> (Tensor, Tensor) {
        let b = tokens.ids.len();
        let mut ids = vec![self.pad_id; b * len];
        let mut mask = vec![0i64; b * len];
        for (row, seq) in tokens.ids.iter().enumerate() {
            ids[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1);
        }
        let shape = [b as i64, len as i64];
        (
            to_device_async(&Tensor::from_slice(&ids).view(shape), device),
            to_device_async(&Tensor::from_slice(&mask).view(shape).to_kind(Kind::Int64), device),
        )
    }
}

impl Tokens {
    /// Length of the longest sequence (0 for an empty batch).
    pub fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }
}
