//! The identity of an encoder (hashes of its files), which an embedding cache records.

use std::io::Read;
use std::path::Path;

use imagen_data::embed_cache::{CacheDtype, EncoderIdentity, FileStamp, Manifest};
use sha2::{Digest, Sha256};

use super::config::{TextConfig, TextDtype};
use crate::error::{Result, TrainerError};
use crate::t5::{load::weight_files, T5Config};

/// SHA-256 of the concatenation of `paths`' contents, read in 4 MiB chunks (about 2 s per GB).
pub fn sha256_files(paths: &[impl AsRef<Path>]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    for path in paths {
        let path = path.as_ref();
        let io = |source| TrainerError::Io { path: path.to_owned(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A cheap fingerprint of an encoder folder, to recognise it at another path (copied to a
/// node's local disk, or sampled on another machine): SHA-256 over its `config.json`, its
/// `tokenizer.json`, and the names and sizes of its weight files. Not their contents: hashing a
/// T5-XXL's weights would add a minute to every start.
pub fn encoder_fingerprint(model_dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    for name in ["config.json", "tokenizer.json"] {
        hasher.update(sha256_files(&[model_dir.join(name)])?.as_bytes());
    }
    for file in weight_files(model_dir)? {
        let size = std::fs::metadata(&file)
            .map_err(|source| TrainerError::Io { path: file.clone(), source })?
            .len();
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        hasher.update(format!("{name}:{size};").as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The name, size and modification time of each weight file of `model_dir`.
pub fn weight_stamps(model_dir: &Path) -> Result<Vec<FileStamp>> {
    weight_files(model_dir)?
        .into_iter()
        .map(|file| FileStamp::of(&file).map_err(|source| TrainerError::Io { path: file, source }))
        .collect()
}

/// What an embedding cache in `cache_dir` made with `cfg`'s encoder must record: hashes of the
/// weight files, `tokenizer.json` and `config.json`, max length, dtype and width. The weights
/// are hashed afresh (what `imagen embed` writes).
pub fn encoder_identity(
    cfg: &TextConfig,
    t5: &T5Config,
    cache_dir: &Path,
) -> Result<EncoderIdentity> {
    let manifest = Manifest::read(cache_dir).ok();
    identity_with(cfg, t5, sha256_files(&weight_files(&cfg.model)?)?, manifest.as_ref())
}

/// [`encoder_identity`] to open the cache in `cache_dir` with. The weights' hash is the one its
/// manifest recorded when every weight file still has the size and modification time it had
/// then (`FileStamp`), and is computed otherwise (an older cache, or the encoder copied
/// elsewhere).
pub fn cache_identity(
    cfg: &TextConfig,
    t5: &T5Config,
    cache_dir: &Path,
) -> Result<EncoderIdentity> {
    let stamps = weight_stamps(&cfg.model)?;
    let manifest = Manifest::read(cache_dir).ok();
    let recorded = manifest
        .as_ref()
        .filter(|m| !m.weight_files.is_empty() && m.weight_files == stamps)
        .map(|m| m.encoder.weights_sha256.clone());
    let weights_sha256 = match recorded {
        Some(hash) => hash,
        None => sha256_files(&weight_files(&cfg.model)?)?,
    };
    identity_with(cfg, t5, weights_sha256, manifest.as_ref())
}

fn identity_with(
    cfg: &TextConfig,
    t5: &T5Config,
    weights_sha256: String,
    existing: Option<&Manifest>,
) -> Result<EncoderIdentity> {
    // A cache made before config.json's hash was recorded keeps the identity its shards carry.
    let config_sha256 = match existing {
        Some(m) if m.encoder.config_sha256.is_none() => None,
        _ => Some(sha256_files(&[cfg.model.join("config.json")])?),
    };
    Ok(EncoderIdentity {
        weights_sha256,
        tokenizer_sha256: sha256_files(&[cfg.model.join("tokenizer.json")])?,
        max_length: cfg.max_length,
        dtype: match cfg.dtype {
            TextDtype::Bf16 => CacheDtype::Bf16,
            TextDtype::F32 => CacheDtype::F32,
        },
        d_model: t5.d_model as usize,
        config_sha256,
    })
}
