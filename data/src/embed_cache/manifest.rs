use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// The manifest's file name inside a cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT: &str = "imagen-embed-cache";
const VERSION: u32 = 1;

/// Storage dtype of cached embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    Bf16,
    F32,
}

impl CacheDtype {
    pub fn size(self) -> usize {
        match self {
            CacheDtype::Bf16 => 2,
            CacheDtype::F32 => 4,
        }
    }

    pub(crate) fn safetensors(self) -> safetensors::Dtype {
        match self {
            CacheDtype::Bf16 => safetensors::Dtype::BF16,
            CacheDtype::F32 => safetensors::Dtype::F32,
        }
    }
}

/// What produced the embeddings. Two caches are interchangeable only if all fields agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderIdentity {
    /// SHA-256 over the encoder's weight files, in order.
    pub weights_sha256: String,
    /// SHA-256 of `tokenizer.json`.
    pub tokenizer_sha256: String,
    /// Tokens per caption, EOS included.
    pub max_length: usize,
    /// Storage dtype.
    pub dtype: CacheDtype,
    /// Width of one token embedding.
    pub d_model: usize,
    /// SHA-256 of the encoder's `config.json`: its activation, layer-norm epsilon and relative
    /// position buckets change the embeddings without changing the weights. Absent in caches
    /// made before it was recorded, whose shards' digests were taken without it (an absent field
    /// is not serialised, so those digests still match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_sha256: Option<String>,
}

impl EncoderIdentity {
    /// A short digest that each shard carries, so a shard from another encoder is refused too.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).expect("identity serialises");
        hex::encode(Sha256::digest(json.as_bytes()))
    }

    /// The fields that differ from `other`, as "field: this vs other".
    pub fn differences(&self, other: &EncoderIdentity) -> Vec<String> {
        let a = serde_json::to_value(self).expect("serialises");
        let b = serde_json::to_value(other).expect("serialises");
        let (a, b) = (a.as_object().expect("object"), b.as_object().expect("object"));
        let absent = serde_json::Value::Null;
        let mut keys: Vec<&String> =
            a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
        keys.sort();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                format!("{k}: {} vs {}", a.get(k).unwrap_or(&absent), b.get(k).unwrap_or(&absent))
            })
            .collect()
    }
}

/// A weight file of the encoder as `imagen embed` found it. A later start whose weight files all
/// still match takes the manifest's hash of them instead of reading them again (tens of GB for a
/// T5-XXL, on every rank), trusting size and modification time as make and rsync do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    pub name: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u128,
}

impl FileStamp {
    /// The file at `path` as it is now: its name, size and modification time.
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        let meta = std::fs::metadata(path)?;
        let since_epoch =
            meta.modified()?.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Ok(FileStamp {
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            size: meta.len(),
            modified_ns: since_epoch.as_nanos(),
        })
    }
}

/// `manifest.json` of a cache directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always "imagen-embed-cache".
    pub format: String,
    /// Format version, 1.
    pub version: u32,
    /// The encoder that wrote the cache.
    pub encoder: EncoderIdentity,
    /// Where the encoder was loaded from (informative only; not compared).
    pub model: String,
    /// The weight files hashed into `encoder.weights_sha256` (absent in older caches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_files: Vec<FileStamp>,
}

impl Manifest {
    pub fn new(encoder: EncoderIdentity, model: String, weight_files: Vec<FileStamp>) -> Self {
        Self { format: FORMAT.into(), version: VERSION, encoder, model, weight_files }
    }

    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| DataError::Io { path: path.clone(), source })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DataError::EmbedCache {
            path: path.clone(),
            message: format!("invalid manifest: {e}"),
        })?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(DataError::EmbedCache {
                path,
                message: format!("format {} v{} is not {FORMAT} v{VERSION}", m.format, m.version),
            });
        }
        Ok(m)
    }

    /// Fails unless the cache was written by `expected`, naming the differing fields.
    pub fn check(&self, dir: &Path, expected: &EncoderIdentity) -> Result<()> {
        let diff = self.encoder.differences(expected);
        if diff.is_empty() {
            return Ok(());
        }
        Err(DataError::EmbedCache {
            path: dir.join(MANIFEST_FILE),
            message: format!(
                "the cache was written by another encoder ({} in cache vs configured); re-run \
                 `imagen embed` into an empty directory",
                diff.join("; ")
            ),
        })
    }

    /// Creates `dir` and writes the manifest, or checks the one already there (resuming). A
    /// matching manifest whose weight-file stamps are missing (written before they were recorded)
    /// or stale (the same weights copied anew) takes `manifest`'s, whose hash was just computed
    /// from those very files.
    pub fn create_or_check(dir: &Path, manifest: &Manifest) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|source| DataError::Io { path: dir.to_owned(), source })?;
        let path = dir.join(MANIFEST_FILE);
        if path.exists() {
            let existing = Manifest::read(dir)?;
            existing.check(dir, &manifest.encoder)?;
            if existing.weight_files == manifest.weight_files || manifest.weight_files.is_empty() {
                return Ok(());
            }
        }
        let json = serde_json::to_string_pretty(manifest).expect("manifest serialises");
        super::writer::write_atomically(&path, json.as_bytes())
    }
}
