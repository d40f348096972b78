use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::key::cache_key;
use super::manifest::{CacheDtype, EncoderIdentity, Manifest};
use crate::error::{DataError, Result};

/// One caption's cached embeddings, borrowed from the memory-mapped shard.
#[derive(Debug, Clone, Copy)]
pub struct CachedEmbedding<'a> {
    /// Number of real tokens (EOS included).
    pub tokens: usize,
    pub d_model: usize,
    pub dtype: CacheDtype,
    /// `tokens x d_model` little-endian values of `dtype`.
    pub bytes: &'a [u8],
}

impl CachedEmbedding<'_> {
    /// The values as f32 (bf16 widened exactly).
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            CacheDtype::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            CacheDtype::Bf16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Shard {
    mmap: memmap2::Mmap,
    /// Byte range of `embeddings` in the file.
    data_start: usize,
    offsets: Vec<i64>,
}

/// A cache directory opened for random access by key: every shard memory-mapped, one hash map
/// from cache key to (shard, row).
#[derive(Debug)]
pub struct EmbedCache {
    identity: EncoderIdentity,
    shards: Vec<Shard>,
    index: HashMap<String, (u32, u32)>,
}

impl EmbedCache {
    /// Opens `dir`, refusing it unless its manifest names `expected`, and checking every shard.
    pub fn open(dir: &Path, expected: &EncoderIdentity) -> Result<Self> {
        let manifest = Manifest::read(dir)?;
        manifest.check(dir, expected)?;
        let digest = expected.digest();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| DataError::Io { path: dir.to_owned(), source })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "safetensors")
                    && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut shards = Vec::with_capacity(paths.len());
        let mut index = HashMap::new();
        for path in paths {
            let (shard, keys) = open_shard(&path, expected, &digest)?;
            let id = shards.len() as u32;
            for (row, key) in keys.into_iter().enumerate() {
                index.insert(key, (id, row as u32));
            }
            shards.push(shard);
        }
        Ok(Self { identity: expected.clone(), shards, index })
    }

    /// Number of cached captions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn identity(&self) -> &EncoderIdentity {
        &self.identity
    }

    /// The embeddings of sample `key` with caption `caption`, if cached.
    pub fn get(&self, key: &str, caption: &str) -> Option<CachedEmbedding<'_>> {
        let &(shard, row) = self.index.get(&cache_key(key, caption))?;
        let shard = &self.shards[shard as usize];
        let (start, end) =
            (shard.offsets[row as usize] as usize, shard.offsets[row as usize + 1] as usize);
        let row_bytes = self.identity.d_model * self.identity.dtype.size();
        let bytes =
            &shard.mmap[shard.data_start + start * row_bytes..shard.data_start + end * row_bytes];
        Some(CachedEmbedding {
            tokens: end - start,
            d_model: self.identity.d_model,
            dtype: self.identity.dtype,
            bytes,
        })
    }
}

fn open_shard(
    path: &Path,
    identity: &EncoderIdentity,
    digest: &str,
) -> Result<(Shard, Vec<String>)> {
    let damaged = |why: String| DataError::EmbedCache {
        path: path.to_owned(),
        message: format!(
            "damaged cache shard ({why}); delete it and re-run `imagen embed` to re-embed it"
        ),
    };
    let file = std::fs::File::open(path)
        .map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    // SAFETY: cache files are written once (atomic rename) and never modified in place.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let st = SafeTensors::deserialize(&mmap).map_err(|e| damaged(e.to_string()))?;
    let (header_len, meta) =
        SafeTensors::read_metadata(&mmap).map_err(|e| damaged(e.to_string()))?;
    let extra = meta.metadata().as_ref().ok_or_else(|| damaged("no metadata".into()))?;
    if extra.get("identity").map(String::as_str) != Some(digest) {
        return Err(DataError::EmbedCache {
            path: path.to_owned(),
            message:
                "this shard was written by another encoder than the manifest names; delete it and \
                      re-run `imagen embed`"
                    .into(),
        });
    }
    let keys: Vec<String> = extra
        .get("keys")
        .and_then(|k| serde_json::from_str(k).ok())
        .ok_or_else(|| damaged("no readable key list".into()))?;
    let emb = st.tensor("embeddings").map_err(|e| damaged(e.to_string()))?;
    let off = st.tensor("offsets").map_err(|e| damaged(e.to_string()))?;
    if emb.dtype() != identity.dtype.safetensors()
        || emb.shape().len() != 2
        || emb.shape()[1] != identity.d_model
    {
        return Err(damaged(format!(
            "embeddings {:?} {:?}, expected [_, {}]",
            emb.dtype(),
            emb.shape(),
            identity.d_model
        )));
    }
    if off.dtype() != Dtype::I64 || off.shape() != [keys.len() + 1] {
        return Err(damaged(format!("offsets {:?} for {} keys", off.shape(), keys.len())));
    }
    let offsets: Vec<i64> = off
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let total = emb.shape()[0] as i64;
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[1] <= w[0]) || offsets[keys.len()] != total {
        return Err(damaged("offsets are not increasing from 0 to the token count".into()));
    }
    let info = meta.info("embeddings").expect("checked above");
    let data_start = 8 + header_len + info.data_offsets.0;
    Ok((Shard { mmap, data_start, offsets }, keys))
}
