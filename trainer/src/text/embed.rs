//! `imagen embed`: the frozen encoder over every caption of a set of shards, into the embedding
//! cache. Resumable per shard (a finished cache shard is written atomically and skipped on
//! re-runs, unless its source file changed since); ranks take every `world`-th shard.

use std::path::Path;
use std::time::Instant;

use imagen_data::embed_cache::{
    cache_key, recorded_source, shard_path, FileStamp, Manifest, ShardWriter,
};
use imagen_data::reader::Unit;
use imagen_data::stream::ShardEntry;
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind};

use super::config::{TextConfig, TextDtype};
use super::encode::{encode_captions, real_token_bytes};
use super::identity::{encoder_identity, weight_stamps};
use crate::error::{Result, TrainerError};
use crate::t5::{load::load_weights, Freeze, T5Encoder, T5Tokenizer};

/// One data shard's captions as the embed job sees it.
pub trait CaptionShard {
    /// Stable name, the cache file's stem (e.g. "00042").
    fn name(&self) -> String;
    /// Every (sample key, caption) of the shard.
    fn captions(&self) -> Result<Vec<(String, String)>>;
    /// The source as it is now (its file's size and modification time): a cache file that
    /// recorded another is re-embedded. None: a cache file, once written, stands.
    fn source(&self) -> Option<String> {
        None
    }
}

/// A file's cache name: its stem and 8 hex digits of its path's SHA-256 (stems repeat across
/// datasets and folders).
fn file_shard_name(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let hash = Sha256::digest(path.to_string_lossy().as_bytes());
    format!("{stem}-{}", &hex::encode(hash)[..8])
}

/// A file's size and modification time, "size:nanoseconds".
fn file_source(path: &Path) -> Option<String> {
    let stamp = FileStamp::of(path).ok()?;
    Some(format!("{}:{}", stamp.size, stamp.modified_ns))
}

/// A JSON-lines file, one `{"key": ..., "caption": ...}` object per line, as one shard.
#[derive(Debug, Clone)]
pub struct JsonlShard(pub std::path::PathBuf);

impl CaptionShard for JsonlShard {
    fn name(&self) -> String {
        file_shard_name(&self.0)
    }

    fn source(&self) -> Option<String> {
        file_source(&self.0)
    }

    fn captions(&self) -> Result<Vec<(String, String)>> {
        let text = std::fs::read(&self.0)
            .map_err(|source| TrainerError::Io { path: self.0.clone(), source })?;
        let bad = |line: usize, why: String| {
            TrainerError::Text(format!("{}:{line}: {why}", self.0.display()))
        };
        let mut out = Vec::new();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let line = std::str::from_utf8(line)
                .map_err(|e| bad(i + 1, format!("invalid UTF-8 ({e})")))?;
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
            let field = |name: &str| {
                v.get(name)
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| bad(i + 1, format!("no string \"{name}\"")))
            };
            out.push((field("key")?, field("caption")?));
        }
        Ok(out)
    }
}

/// An img2dataset parquet or WebDataset tar shard of the data config, read with
/// `imagen_data`'s readers; unreadable samples are skipped as the loader skips them (the
/// loader skips them too, so they are never looked up).
#[derive(Debug, Clone)]
pub struct DataShard(pub ShardEntry);

impl CaptionShard for DataShard {
    fn name(&self) -> String {
        file_shard_name(&self.0.path)
    }

    /// The file's size and modification time, and which columns the captions come from.
    fn source(&self) -> Option<String> {
        let columns = &self.0.columns;
        let named = |c: &Option<String>| c.clone().unwrap_or_default();
        let (image, caption) = (named(&columns.image), named(&columns.caption));
        file_source(&self.0.path).map(|file| format!("{file}:{image}:{caption}"))
    }

    fn captions(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .0
            .open()
            .filter_map(|unit| match unit {
                Unit::Sample(s) => Some((s.key, s.caption)),
                Unit::Skip { .. } => None,
            })
            .collect())
    }
}

/// The shards of a data config as caption shards.
pub fn data_shards(cfg: &imagen_data::DataConfig) -> Result<Vec<Box<dyn CaptionShard>>> {
    let (entries, _) = imagen_data::loader::resolve_shards(cfg)?;
    Ok(entries.into_iter().map(|e| Box::new(DataShard(e)) as Box<dyn CaptionShard>).collect())
}

/// What a run of [`embed_shards`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmbedReport {
    pub shards_written: usize,
    /// Shards whose cache file already existed (finished by an earlier run).
    pub shards_skipped: usize,
    /// Of the shards written, those whose source changed since an earlier run cached them.
    pub shards_reembedded: usize,
    pub captions: usize,
    pub truncated: usize,
    pub seconds: f64,
}

/// Embeds the shards of this rank (`i % world == rank`) into `cache_dir`, skipping finished ones.
pub fn embed_shards(
    cfg: &TextConfig,
    cache_dir: &Path,
    shards: &[Box<dyn CaptionShard>],
    rank: usize,
    world: usize,
    device: Device,
) -> Result<EmbedReport> {
    let t5 = cfg.encoder_config()?;
    let identity = encoder_identity(cfg, &t5, cache_dir)?;
    Manifest::create_or_check(
        cache_dir,
        &Manifest::new(
            identity.clone(),
            cfg.model.display().to_string(),
            weight_stamps(&cfg.model)?,
        ),
    )?;
    let kind = match cfg.dtype {
        TextDtype::Bf16 => Kind::BFloat16,
        TextDtype::F32 => Kind::Float,
    };
    let vs = nn::VarStore::new(device);
    let encoder = T5Encoder::with_kind(vs.root(), &t5, Freeze::ALL, kind)?;
    load_weights(&encoder, &cfg.model)?;
    let tokenizer =
        T5Tokenizer::from_file(&cfg.model.join("tokenizer.json"), cfg.max_length, t5.pad_token_id)?;

    let mine: Vec<&dyn CaptionShard> = shards
        .iter()
        .enumerate()
        .filter(|(i, _)| i % world.max(1) == rank)
        .map(|(_, s)| s.as_ref())
        .collect();
    let bar = crate::progress::bar(Some(mine.len() as u64), "embedding shards");
    let start = Instant::now();
    let mut report = EmbedReport::default();
    for shard in mine {
        let name = shard.name();
        let cached = shard_path(cache_dir, &name);
        let source = shard.source();
        if cached.exists() {
            // A cache file without a record (written before they were kept) stands too.
            match (recorded_source(&cached), &source) {
                (Some(then), Some(now)) if &then != now => {
                    tracing::info!("re-embedding {name}: its source changed since it was cached");
                    report.shards_reembedded += 1;
                }
                _ => {
                    report.shards_skipped += 1;
                    bar.inc(1);
                    continue;
                }
            }
        }
        let mut rows = shard.captions()?;
        // Similar lengths together: less padding per batch.
        rows.sort_by_key(|(_, c)| c.len());
        let mut writer = ShardWriter::new(cache_dir, &name, &identity)?;
        if let Some(source) = source {
            writer = writer.with_source(source);
        }
        for batch in rows.chunks(cfg.embed_batch_size.max(1)) {
            let captions: Vec<String> = batch.iter().map(|(_, c)| c.clone()).collect();
            let out =
                tch::no_grad(|| encode_captions(&encoder, &tokenizer, &captions, None, device))?;
            report.truncated += out.truncated;
            // One copy to the host per batch, not one per caption (each a stream sync on CUDA).
            let hidden = out.hidden.f_to_kind(kind)?.f_to_device(Device::Cpu)?;
            for (i, (key, caption)) in batch.iter().enumerate() {
                writer.push(
                    cache_key(key, caption),
                    &real_token_bytes(&hidden, i, out.lengths[i], kind)?,
                )?;
            }
            report.captions += batch.len();
            let rate = report.captions as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "embedding shards ({} captions, {rate:.0} captions/s)",
                report.captions
            ));
        }
        writer.finish()?;
        report.shards_written += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    report.seconds = start.elapsed().as_secs_f64();
    if report.truncated > 0 {
        tracing::warn!(
            "{} captions were longer than {} tokens and were truncated",
            report.truncated,
            cfg.max_length
        );
    }
    Ok(report)
}
