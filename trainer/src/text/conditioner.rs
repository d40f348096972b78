//! The text conditioning the trainer and the U-Net consume: `(embeddings, mask)` per batch,
//! whatever the mode (frozen-cached, frozen-online, finetune).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use imagen_data::embed_cache::{EmbedCache, TextBatch};
use imagen_data::Batch;
use tch::{nn, Device, Kind, Tensor};

use super::config::{TextConfig, TextDtype, TextMode};
use super::encode::encode_captions;
use super::identity::cache_identity;
use crate::error::{Result, TrainerError};
use crate::native::to_device_async;
use crate::t5::{load::load_weights, Freeze, T5Encoder, T5Tokenizer};

/// The VarStore group of the encoder's parameters in "finetune" mode, so that the optimizer can
/// give them `finetune_lr` and `finetune_weight_decay` (`opt.set_lr_group(TEXT_ENCODER_GROUP, lr)`).
pub const TEXT_ENCODER_GROUP: usize = 1;

#[derive(Debug)]
enum Source {
    Online {
        encoder: Box<T5Encoder>,
        tokenizer: Box<T5Tokenizer>,
    },
    Cached {
        cache: Arc<EmbedCache>,
    },
    /// A frozen encoder's embeddings of a fixed set of captions ([`TextConditioner::pre_encode`]):
    /// each caption's real tokens, [l, d_model] f32 on the CPU.
    Table {
        rows: HashMap<String, Tensor>,
    },
}

/// Turns captions (or sample keys, with the cache) into T5 token embeddings and a mask.
#[derive(Debug)]
pub struct TextConditioner {
    mode: TextMode,
    d_model: i64,
    device: Device,
    source: Source,
    truncated: AtomicUsize,
}

impl TextConditioner {
    /// Builds the encoder under `path` and loads the Hugging Face weights of `cfg.model`.
    /// In "finetune" mode `path` should be inside the trained VarStore (so that the encoder is
    /// checkpointed and EMA'd with the U-Net); its parameters take the VarStore's dtype and
    /// group [`TEXT_ENCODER_GROUP`]. For the frozen modes pass a separate VarStore: parameters
    /// are created frozen in `cfg.dtype`. "frozen-cached" builds no encoder: it opens the cache
    /// of `cfg.cache_dir`, refusing it unless it was made by `cfg.model` with these settings.
    pub fn new(path: nn::Path, cfg: &TextConfig, device: Device) -> Result<Self> {
        let t5 = cfg.encoder_config()?;
        let source = match cfg.mode {
            TextMode::FrozenCached => {
                let dir = cfg.cache_dir.clone().ok_or_else(|| {
                    TrainerError::Text("text.mode = \"frozen-cached\" needs text.cache_dir (written by `imagen embed`)".into())
                })?;
                let identity = cache_identity(cfg, &t5, &dir)?;
                Source::Cached { cache: Arc::new(EmbedCache::open(&dir, &identity)?) }
            }
            TextMode::FrozenOnline | TextMode::Finetune => {
                let encoder = if cfg.mode == TextMode::Finetune {
                    let freeze = Freeze {
                        all: false,
                        embedding: cfg.freeze_embedding,
                        lowest_blocks: cfg.freeze_lowest_blocks,
                    };
                    T5Encoder::new(path.set_group(TEXT_ENCODER_GROUP), &t5, freeze)?
                } else {
                    let kind = match cfg.dtype {
                        TextDtype::Bf16 => Kind::BFloat16,
                        TextDtype::F32 => Kind::Float,
                    };
                    T5Encoder::with_kind(path, &t5, Freeze::ALL, kind)?
                };
                load_weights(&encoder, &cfg.model)?;
                let tokenizer = T5Tokenizer::from_file(
                    &cfg.model.join("tokenizer.json"),
                    cfg.max_length,
                    t5.pad_token_id,
                )?;
                Source::Online { encoder: Box::new(encoder), tokenizer: Box::new(tokenizer) }
            }
        };
        Ok(Self {
            mode: cfg.mode,
            d_model: t5.d_model,
            device,
            source,
            truncated: AtomicUsize::new(0),
        })
    }

    pub fn mode(&self) -> TextMode {
        self.mode
    }

    /// Width of the token embeddings.
    pub fn d_model(&self) -> i64 {
        self.d_model
    }

    /// The encoder, in the online modes.
    pub fn encoder(&self) -> Option<&T5Encoder> {
        match &self.source {
            Source::Online { encoder, .. } => Some(encoder),
            Source::Cached { .. } | Source::Table { .. } => None,
        }
    }

    /// Activation checkpointing of the encoder's blocks (online modes; it matters when the
    /// encoder is fine-tuned, the only mode whose forward keeps a graph).
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        if let Source::Online { encoder, .. } = &mut self.source {
            encoder.set_activation_checkpointing(on);
        }
    }

    /// Captions cut to the max length so far (online modes; the cache counted them at `embed`).
    pub fn truncated(&self) -> usize {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Fails, naming both, unless the U-Net's text width `unet_width` (config field `field`)
    /// equals the encoder's.
    pub fn check_width(&self, unet_width: i64, field: &str) -> Result<()> {
        if unet_width == self.d_model {
            return Ok(());
        }
        Err(TrainerError::Text(format!(
            "{field} = {unet_width} does not match the T5 encoder's d_model = {} (text.model); set {field} = {}",
            self.d_model, self.d_model
        )))
    }

    /// `(embeddings [B, L, d_model] f32, mask [B, L] bool)` on the conditioner's device, `L`
    /// the longest caption of the batch, embeddings zero at padded positions. Online modes encode `captions` (without gradients in
    /// "frozen-online"); "frozen-cached" looks up (`keys[i]`, `captions[i]`) in the cache.
    pub fn encode(&self, captions: &[String], keys: &[String]) -> Result<(Tensor, Tensor)> {
        match &self.source {
            Source::Online { encoder, tokenizer } => {
                let run = || encode_captions(encoder, tokenizer, captions, None, self.device);
                let out = if self.mode == TextMode::Finetune { run()? } else { tch::no_grad(run)? };
                self.truncated.fetch_add(out.truncated, Ordering::Relaxed);
                // Zero at padding, as the cache serves it, so all modes give the same tensors.
                let mask = out.mask.to_kind(Kind::Bool);
                Ok((out.hidden.to_kind(Kind::Float) * mask.unsqueeze(-1), mask))
            }
            Source::Cached { cache } => Ok(self.to_tensors(&cache.lookup_batch(keys, captions)?)),
            Source::Table { rows } => {
                let picked = captions
                    .iter()
                    .map(|c| {
                        rows.get(c).ok_or_else(|| {
                            TrainerError::Text(format!("caption {c:?} was not encoded in advance"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let len = picked.iter().map(|r| r.size()[0]).max().unwrap_or(1);
                let b = picked.len() as i64;
                let values = Tensor::zeros([b, len, self.d_model], (Kind::Float, Device::Cpu));
                let mask = Tensor::zeros([b, len], (Kind::Bool, Device::Cpu));
                for (i, row) in picked.iter().enumerate() {
                    let (i, l) = (i as i64, row.size()[0]);
                    values.get(i).narrow(0, 0, l).copy_(row);
                    let _ = mask.get(i).narrow(0, 0, l).fill_(1);
                }
                Ok((values.to_device(self.device), mask.to_device(self.device)))
            }
        }
    }

    /// A conditioner that answers for `captions` alone, from this (online, frozen) encoder's
    /// embeddings of them computed now: how "frozen-cached" training validates on held-out
    /// captions and samples its grid prompts without keeping the encoder in memory.
    pub fn pre_encode(&self, captions: &[String]) -> Result<TextConditioner> {
        let mut unique: Vec<String> = captions.to_vec();
        unique.sort();
        unique.dedup();
        let mut rows = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(32) {
            let (values, mask) = tch::no_grad(|| self.encode(chunk, chunk))?;
            let lens = Vec::<i64>::try_from(
                mask.sum_dim_intlist(1, false, Kind::Int64).to_device(Device::Cpu),
            )
            .map_err(TrainerError::Torch)?;
            for (i, caption) in chunk.iter().enumerate() {
                let row = values.get(i as i64).narrow(0, 0, lens[i].max(1)).to_device(Device::Cpu);
                rows.insert(caption.clone(), row);
            }
        }
        Ok(Self {
            mode: self.mode,
            d_model: self.d_model,
            device: self.device,
            source: Source::Table { rows },
            truncated: AtomicUsize::new(0),
        })
    }

    /// A loaded batch's conditioning: the embeddings the loader already looked up when it was
    /// given [`TextConditioner::cache`], else as [`TextConditioner::encode`].
    pub fn encode_batch(&self, batch: &Batch) -> Result<(Tensor, Tensor)> {
        match (&batch.text, &self.source) {
            (Some(text), Source::Cached { .. }) => Ok(self.to_tensors(text)),
            _ => self.encode(&batch.captions, &batch.keys),
        }
    }

    /// The embedding cache ("frozen-cached" mode), for the data loader to look batches up in.
    pub fn cache(&self) -> Option<Arc<EmbedCache>> {
        match &self.source {
            Source::Cached { cache } => Some(cache.clone()),
            Source::Online { .. } | Source::Table { .. } => None,
        }
    }

    fn to_tensors(&self, text: &TextBatch) -> (Tensor, Tensor) {
        let shape = [(text.mask.len() / text.len) as i64, text.len as i64];
        let values =
            Tensor::from_slice(&text.values).view([shape[0], shape[1], text.d_model as i64]);
        let mask = Tensor::from_slice(&text.mask).view(shape);
        (to_device_async(&values, self.device), to_device_async(&mask, self.device))
    }
}
