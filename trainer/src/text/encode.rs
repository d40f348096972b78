//! Tokenize and encode a batch of captions with a loaded encoder.

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::t5::{T5Encoder, T5Tokenizer};

/// A batch of encoded captions.
#[derive(Debug)]
pub struct Encoded {
    /// `[B, L, d_model]` in the encoder's dtype.
    pub hidden: Tensor,
    /// `[B, L]` int64, 1 for real tokens.
    pub mask: Tensor,
    /// Real tokens per caption (EOS included).
    pub lengths: Vec<usize>,
    /// Captions cut to the max length.
    pub truncated: usize,
}

/// Encodes `captions`, padded to `pad_to` tokens, or to the longest caption when `None`
/// (real tokens' outputs do not depend on the padding length: padded keys are masked).
/// Runs with gradients when the encoder has trainable parameters and grad mode is on.
pub fn encode_captions(
    encoder: &T5Encoder,
    tokenizer: &T5Tokenizer,
    captions: &[String],
    pad_to: Option<usize>,
    device: Device,
) -> Result<Encoded> {
    let tokens = tokenizer.tokenize(captions)?;
    let len = pad_to.unwrap_or(tokens.longest()).max(1);
    let (ids, mask) = tokenizer.pad(&tokens, len, device);
    let hidden = encoder.forward(&ids, &mask);
    Ok(Encoded {
        hidden,
        mask,
        lengths: tokens.ids.iter().map(Vec::len).collect(),
        truncated: tokens.truncated,
    })
}

/// The first `length` rows of `hidden[i]` as little-endian bytes of `kind` (bf16 or f32), the
/// form the embedding cache stores.
pub fn real_token_bytes(hidden: &Tensor, i: usize, length: usize, kind: Kind) -> Result<Vec<u8>> {
    let rows =
        hidden.f_get(i as i64)?.f_narrow(0, 0, length as i64)?.f_to_kind(kind)?.f_contiguous()?;
    let rows = rows.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
    Ok(match kind {
        Kind::BFloat16 => Vec::<i16>::try_from(rows.f_view_dtype(Kind::Int16)?)?
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => Vec::<f32>::try_from(rows.f_to_kind(Kind::Float)?)?
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}
