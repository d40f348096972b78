use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::manifest::{CacheDtype, EncoderIdentity};
use crate::error::{DataError, Result};

/// Where the cache file of data shard `shard` lives.
pub fn shard_path(dir: &Path, shard: &str) -> PathBuf {
    dir.join(format!("{shard}.safetensors"))
}

/// Collects the embeddings of one data shard and writes them as one cache file, atomically.
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    identity_digest: String,
    dtype: CacheDtype,
    d_model: usize,
    keys: Vec<String>,
    offsets: Vec<i64>,
    data: Vec<u8>,
    source: Option<String>,
}

/// The `source` a cache file records (see [`ShardWriter::with_source`]), or None when it records
/// none or cannot be read. Reads only the file's header.
pub fn recorded_source(path: &Path) -> Option<String> {
    let (_, meta, _) = super::reader::read_header(path).ok()?;
    meta.metadata().as_ref()?.get("source").cloned()
}

impl ShardWriter {
    /// A writer for `dir/<shard>.safetensors`; `shard` is a plain file stem.
    pub fn new(dir: &Path, shard: &str, identity: &EncoderIdentity) -> Result<Self> {
        if shard.is_empty() || shard.contains(['/', '\\']) || shard.starts_with('.') {
            return Err(DataError::EmbedCache {
                path: dir.to_owned(),
                message: format!("invalid cache shard name {shard:?}"),
            });
        }
        Ok(Self {
            path: shard_path(dir, shard),
            identity_digest: identity.digest(),
            dtype: identity.dtype,
            d_model: identity.d_model,
            keys: Vec::new(),
            offsets: vec![0],
            data: Vec::new(),
            source: None,
        })
    }

    /// Records what the captions were read from (a data shard's size and modification time), so
    /// that a later `imagen embed` re-embeds the shard once it changed.
    pub fn with_source(mut self, source: String) -> Self {
        self.source = Some(source);
        self
    }

    /// Adds one caption: `cache_key` from [`super::cache_key`], `raw` its real tokens' embeddings,
    /// `tokens x d_model` values of the cache dtype in little-endian bytes (bf16 as raw bits).
    pub fn push(&mut self, cache_key: String, raw: &[u8]) -> Result<()> {
        let row = self.d_model * self.dtype.size();
        if raw.is_empty() || raw.len() % row != 0 {
            return Err(DataError::EmbedCache {
                path: self.path.clone(),
                message: format!(
                    "{cache_key}: {} bytes is not a whole number of {row}-byte rows",
                    raw.len()
                ),
            });
        }
        self.data.extend_from_slice(raw);
        let last = *self.offsets.last().expect("offsets start with 0");
        self.offsets.push(last + (raw.len() / row) as i64);
        self.keys.push(cache_key);
        Ok(())
    }

    /// Captions pushed so far.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Writes the file (temporary name, fsync, rename) and returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        let total = *self.offsets.last().expect("offsets start with 0") as usize;
        let offsets: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        let err = |e: safetensors::SafeTensorError| DataError::EmbedCache {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let embeddings =
            TensorView::new(self.dtype.safetensors(), vec![total, self.d_model], &self.data)
                .map_err(err)?;
        let offsets =
            TensorView::new(Dtype::I64, vec![self.offsets.len()], &offsets).map_err(err)?;
        let mut metadata = HashMap::from([
            ("keys".to_owned(), serde_json::to_string(&self.keys).expect("keys serialise")),
            ("identity".to_owned(), self.identity_digest.clone()),
        ]);
        if let Some(source) = &self.source {
            metadata.insert("source".to_owned(), source.clone());
        }
        let bytes = safetensors::serialize(
            [("embeddings", embeddings), ("offsets", offsets)],
            Some(metadata),
        )
        .map_err(err)?;
        write_atomically(&self.path, &bytes)?;
        Ok(self.path)
    }
}

/// Writes `bytes` to a temporary file next to `path`, syncs it and renames it over `path`, so a
/// crash leaves either the old file or the complete new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| DataError::Io { path: p, source }
    };
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))
}
